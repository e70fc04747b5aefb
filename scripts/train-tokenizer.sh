#!/usr/bin/env bash
# Trains the project's SentencePiece BPE tokenizer on a corpus (one sentence or paragraph per line).
#
#   scripts/train-tokenizer.sh CORPUS OUTDIR [VOCAB]      (VOCAB default 2048)
#
# Writes OUTDIR/tokenizer.model (and tokenizer.vocab, the pieces with their scores), loadable by
# TokenizerLoader.FromFolder as a LLaMA tokenizer: BPE, unk 0, bos 1, eos 2, no pad, byte fallback
# (when this spm_train supports it), LLaMA's normalisation (identity: text kept as written, spaces
# kept, digits split). Deterministic: every line is used (--input_sentence_size=0, so nothing is
# sampled or shuffled), a fixed --random_seed, one thread. Prints the exact spm_train command (run in a
# scratch folder where corpus.txt links to CORPUS).
# Needs Debian's sentencepiece (scripts/ensure-tools.sh installs it as root).
set -euo pipefail

die() { echo "train-tokenizer: $*" >&2; exit 1; }

[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: scripts/train-tokenizer.sh CORPUS OUTDIR [VOCAB]"
corpus="$1"; out="$2"; vocab="${3:-2048}"
[ -f "$corpus" ] || die "$corpus: corpus file not found"
[[ "$vocab" =~ ^[0-9]+$ ]] && [ "$vocab" -ge 300 ] || die "VOCAB must be an integer of at least 300 (259 ids are fixed: unk, bos, eos and 256 bytes), got '$vocab'"
command -v spm_train >/dev/null 2>&1 \
    || die "spm_train not found: install Debian's SentencePiece tools (as root: scripts/ensure-tools.sh, or apt-get install -y sentencepiece)"

mkdir -p "$out"
work="$(mktemp -d "${TMPDIR:-/tmp}/klf-spm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# spm_train records --input and --model_prefix inside the model: run in a scratch folder with fixed
# relative names, so the same corpus gives the same bytes wherever it lives.
ln -s "$(cd "$(dirname "$corpus")" && pwd)/$(basename "$corpus")" "$work/corpus.txt"
args=(
    --input=corpus.txt
    --model_prefix=tokenizer
    --model_type=bpe
    --vocab_size="$vocab"
    --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1
    --normalization_rule_name=identity
    --remove_extra_whitespaces=false
    --split_digits=true
    --character_coverage=0.9995
    --max_sentence_length=16384
    --input_sentence_size=0
    --shuffle_input_sentence=false
    --random_seed=1
    --num_threads=1
    --minloglevel=1
)
if spm_train --help 2>&1 | grep -q -- '--byte_fallback'; then
    args+=(--byte_fallback=true)
else
    echo "train-tokenizer: warning: this spm_train has no --byte_fallback; characters outside the vocabulary will be <unk>" >&2
fi

printf 'train-tokenizer: spm_train'
printf ' %q' "${args[@]}"
printf '\n'
(cd "$work" && spm_train "${args[@]}")

mv -f "$work/tokenizer.model" "$out/tokenizer.model"
mv -f "$work/tokenizer.vocab" "$out/tokenizer.vocab"
echo "train-tokenizer: wrote $out/tokenizer.model ($vocab pieces)"

#!/usr/bin/env bash
# Makes sure the command-line tools the tests need are installed; silent when they are.
#   SentencePiece (spm_train, spm_encode, spm_normalize): the tokenizer tests train models with
#   spm_train and compare Klf's ids with spm_encode's. Debian/Ubuntu package: sentencepiece.
# As root, missing tools are installed with apt-get; otherwise the script says what is missing
# and exits 1. Run it (`scripts/ensure-tools.sh || exit 1`) or source it and call
# ensure_sentencepiece; sourcing changes no shell options.

ensure_sentencepiece() {
    local tools=(spm_train spm_encode spm_normalize) missing=() t
    for t in "${tools[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] && return 0

    if [ "${EUID}" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-tools: installing Debian package sentencepiece (missing: ${missing[*]})" >&2
        local log
        if ! log=$( { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sentencepiece; } 2>&1 ); then
            printf '%s\n' "$log" >&2
            echo "ensure-tools: 'apt-get install sentencepiece' failed; the tokenizer tests need ${missing[*]}." >&2
            return 1
        fi
        missing=()
        for t in "${tools[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
        [ ${#missing[@]} -eq 0 ] && return 0
        echo "ensure-tools: still missing after installing sentencepiece: ${missing[*]}" >&2
        return 1
    fi

    echo "ensure-tools: missing ${missing[*]} (SentencePiece command-line tools, needed by the tokenizer tests)." >&2
    echo "ensure-tools: install them as root with: apt-get update && apt-get install -y sentencepiece" >&2
    return 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    ensure_sentencepiece
fi

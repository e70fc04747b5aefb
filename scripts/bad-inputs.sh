#!/usr/bin/env bash
# Tries the bad inputs of docs/errors.md against the built klf and prints the table: each input,
# the exit code and the first line klf printed on stderr. Regenerates the table in docs/errors.md:
#
#   scripts/bad-inputs.sh > /tmp/table.md
#
# Uses the embedded model (models/klf-tiny) and the embedded stream; writes only to a temporary folder.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/klf" --help >/dev/null || exit 1
klf() { dotnet "$root/src/Klf.Scripts/bin/Release/net10.0/klf.dll" "$@"; }
t="$(mktemp -d -t klf-bad-XXXXXX)"
trap 'umount "$t/small" 2>/dev/null; rm -rf "$t"' EXIT
cd "$t"
M="$root/models/klf-tiny"
B="$root/data/standard-cl"

# A copy of the embedded model with one config.json field changed and no manifest.
config_with() { # name field json-value
  mkdir -p "$1"; cp "$M"/* "$1"/; rm -f "$1/manifest.json"
  python3 -c "import json,sys; c=json.load(open('$1/config.json')); c['$2']=json.loads(sys.argv[1]); c.pop('head_dim', None) if '$2'=='hidden_size' else None; json.dump(c, open('$1/config.json','w'))" "$3"
}
config_with eps rms_norm_eps -1e-6
config_with theta rope_theta 0
config_with hidden hidden_size 190
config_with zero num_attention_heads 0
config_with text hidden_size '"192"'
mkdir -p flipped relabelled; cp "$M"/* flipped/; cp "$M"/* relabelled/
M="$M" python3 - <<'EOF'
import json, struct
d = bytearray(open('flipped/model.safetensors', 'rb').read()); d[-3] ^= 1; open('flipped/model.safetensors', 'wb').write(d)
d = bytearray(open('relabelled/model.safetensors', 'rb').read())
n = struct.unpack('<Q', d[:8])[0]
h = d[8:8 + n].replace(b'"BF16"', b'"F16"', 1).replace(b'{"__metadata__"', b' {"__metadata__"', 1)
open('relabelled/model.safetensors', 'wb').write(d[:8] + h + d[8 + n:])
# the embedded weights with two entries overlapping, and with bytes after the data (no manifests)
import os, shutil
for name in ['overlap', 'trailing']:
    os.makedirs(name)
    for f in os.listdir('flipped'):
        if f != 'manifest.json': shutil.copy(os.path.join(os.environ['M'], f), name)
d = open('overlap/model.safetensors', 'rb').read()
n = struct.unpack('<Q', d[:8])[0]
header = json.loads(d[8:8 + n])
entries = sorted([(v['data_offsets'][0], k) for k, v in header.items() if k != '__metadata__'])
first, second = header[entries[0][1]], header[entries[1][1]]
size = second['data_offsets'][1] - second['data_offsets'][0]
second['data_offsets'] = [first['data_offsets'][0], first['data_offsets'][0] + size]
h = json.dumps(header).encode()
open('overlap/model.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + d[8 + n:])
open('trailing/model.safetensors', 'ab').write(b'garbage!')
# benchmark folders: invalid UTF-8 in a .jsonl and a .json task, a task without test examples
import os
ex = [{"id": str(i), "input": "Is %d even? Options: yes, no" % i, "output": "yes" if i % 2 == 0 else "no"} for i in range(12)]
for b in ['utf8', 'utf8json', 'notest']:
    os.makedirs(b + '/train'); os.makedirs(b + '/test')
    for task in ['t1', 't2']:
        json.dump(ex, open('%s/train/%s.json' % (b, task), 'w')); json.dump(ex, open('%s/test/%s.json' % (b, task), 'w'))
os.remove('utf8/train/t2.json')
open('utf8/train/t2.jsonl', 'wb').write(b'{"id":"0","input":"caf\xe9","output":"no"}\n')
open('utf8json/train/t2.json', 'wb').write(b'[{"id":"0","input":"caf\xe9","output":"no"}]')
json.dump([], open('notest/test/t2.json', 'w'))
EOF
touch a-file; mkdir a-folder
small_run() { echo run --model "$M" --benchmark "$B" --tasks agnews,amazon --strategies seqft --steps "$1" --train-examples 8 --validation-examples 0 --test-examples 4 --no-fwt true; }

row() { # description, then the command
  local what="$1"; shift
  local code err
  "$@" >/dev/null 2>err.txt; code=$?
  err=$(grep -v '^$' err.txt | head -1)
  err=${err//$t\//}; err=${err//$root\//}; err=${err//|/\\|}
  printf '| %s | %s | `%s` |\n' "$what" "$code" "$err"
}

echo "| input | exit | klf prints |"
echo "| --- | ---: | --- |"
row '`train --lr inf`' klf train --model "$M" --task agnews --lr inf --out o
row '`train --lr Infinity`' klf train --model "$M" --task agnews --lr Infinity --out o
row '`train --lr nan`' klf train --model "$M" --task agnews --lr nan --out o
row '`train --steps -5`' klf train --model "$M" --task agnews --steps -5 --out o
row '`run --steps 0`' klf run --steps 0 --out o
row '`run --batch 0`' klf run --batch 0 --out o
row '`eval --n -1`' klf eval --model "$M" --tasks agnews --n -1
row '`fuse --top 1.5`' klf fuse --previous "$M" --current "$M" --previous-importance p --current-importance c --top 1.5 --out o
row '`pretrain --heldout-fraction 1`' klf pretrain --corpus c --tokenizer "$M" --steps 5 --heldout-fraction 1 --out o
row '`train --lora-r 4 --lora-dropout 1.5`' klf train --model "$M" --task agnews --lora-r 4 --lora-dropout 1.5 --out o
row '`train --out` an existing file' klf train --model "$M" --task agnews --steps 1 --out a-file
row '`eval --out` an existing folder' klf eval --model "$M" --tasks agnews --out a-folder
row '`run --out` below a file' klf run --out a-file/run
row '`generate --model` a missing folder' klf generate --model no-such-model --task agnews
row 'config.json `rms_norm_eps` −1e-6' klf generate --model eps --task agnews --n 1
row 'config.json `rope_theta` 0' klf generate --model theta --task agnews --n 1
row 'config.json `hidden_size` 190 with 4 heads, no `head_dim`' klf generate --model hidden --task agnews --n 1
row 'config.json `num_attention_heads` 0' klf generate --model zero --task agnews --n 1
row 'config.json `hidden_size` "192" (a string)' klf generate --model text --task agnews --n 1
row 'one flipped byte in `model.safetensors` (with manifest), `generate`' klf generate --model flipped --task agnews --n 1
row 'dtype relabelled BF16 → F16 (with manifest), `train --model`' klf train --model relabelled --task agnews --steps 1 --out o
row 'relabelled dtype, `run --model`' klf run --model relabelled --benchmark "$B" --tasks agnews,amazon --strategies seqft --steps 2 --test-examples 4 --no-fwt true --out r1
row 'safetensors entries that overlap (no manifest)' klf generate --model overlap --task agnews --n 1
row 'safetensors with bytes after the data (no manifest)' klf generate --model trailing --task agnews --n 1
row 'invalid UTF-8 in a `.jsonl` task' klf run --model "$M" --benchmark utf8 --tasks t1,t2 --strategies seqft --steps 1 --test-examples 2 --validation-examples 0 --no-fwt true --out r2
row 'invalid UTF-8 in a `.json` task' klf run --model "$M" --benchmark utf8json --tasks t1,t2 --strategies seqft --steps 1 --test-examples 2 --validation-examples 0 --no-fwt true --out r3
row 'a task with 0 test examples (second of two)' klf run --model "$M" --benchmark notest --tasks t1,t2 --strategies seqft --steps 1 --test-examples 2 --validation-examples 0 --no-fwt true --out r4
klf $(small_run 2) --out r5 >/dev/null 2>&1
row 'resume with other settings (`--steps 3` on a `--steps 2` folder)' klf $(small_run 3) --out r5
row 'a learning rate that diverges (`train --lr 1e30`)' klf train --model "$M" --task agnews --lr 1e30 --steps 5 --warmup 0 --out o
# The sentence encoder of the second embedded default (imported beside klf on first use), and a task it cannot score.
"$root/klf" run --embedded minilm --steps 1 --train-examples 2 --validation-examples 0 --test-examples 2 --no-fwt true --zero-shot false --strategies seqft --out minilm-run >/dev/null 2>&1
E="$root/src/Klf.Scripts/bin/Release/net10.0/embedded/minilm-l6"
python3 - <<'EOF2'
import json, os
os.makedirs('open/train'); os.makedirs('open/test')
ex = [{"id": str(i), "input": "Say the number %d." % i, "output": "number %d" % i} for i in range(60)]
json.dump(ex, open('open/train/say.json', 'w')); json.dump(ex, open('open/test/say.json', 'w'))
EOF2
row '`generate --model` a sentence encoder' klf generate --model "$E" --prompt hi
row '`run --embedded bert`' klf run --embedded bert --out o
row '`run --embedded minilm --model DIR`' klf run --embedded minilm --model "$M" --out o
row '`run --model` a sentence encoder on a task of 60 answers' klf run --model "$E" --benchmark open --tasks say --strategies seqft --steps 1 --test-examples 2 --validation-examples 0 --no-fwt true --out r6
row '`import sentence-transformers bert-large`' klf import sentence-transformers bert-large --out o
row '`import sentence-transformers minilm --assembly` a file that is no assembly' klf import sentence-transformers minilm --assembly a-file --out o
if [ "$(id -u)" = 0 ]; then
  mkdir small; mount -t tmpfs -o size=12m tmpfs small
  row '`run --out` on a disk that fills up (12 MB tmpfs)' klf $(small_run 2) --out small/run
fi

#!/usr/bin/env bash
# Faults, as a user meets them: SIGKILLs a multi-task `klf run` (KIF and IncLoRA, three tasks of the
# embedded stream) at random moments, half of them while a file is being written, resumes it each
# time with the same command, and compares the result with an uninterrupted run byte for byte:
# metrics.json, every run's result.json and loss.csv, and every state file. After each kill it
# checks that every visible file in the run folder is complete (JSON parses, safetensors files hold
# exactly what their header says). Then: a second process on a run folder in use (the lock), and,
# as root, a full disk during a state write (a small tmpfs): the previous states intact, and the run
# resumable once there is space.
#
#   scripts/kill-resume.sh [--trials N (default 12)] [--seed S (default 1)] [--dir DIR]
#
# Needs python3 (standard library) for the file checks. Not part of ./test.sh: it takes several minutes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
trials=12; seed=1; dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    *) echo "usage: scripts/kill-resume.sh [--trials N] [--seed S] [--dir DIR]" >&2; exit 2 ;;
  esac
done
command -v python3 >/dev/null || { echo "kill-resume: python3 is needed for the file checks" >&2; exit 1; }
[ -n "$dir" ] || dir="$(mktemp -d -t klf-kill-resume-XXXXXX)"
mkdir -p "$dir"
"$root/klf" --help >/dev/null   # builds klf when needed
klf=(dotnet "$root/src/Klf.Scripts/bin/Release/net10.0/klf.dll")
args=(run --model "$root/models/klf-tiny" --benchmark "$root/data/standard-cl" --tasks agnews,amazon,yahoo
      --strategies kif,inclora --steps 8 --train-examples 16 --validation-examples 4 --eval-every 4
      --test-examples 8 --no-fwt true)
RANDOM=$seed

# Every visible (not dot-named) file under $1 is complete.
check_complete() {
  python3 - "$1" <<'EOF'
import json, os, struct, sys
bad = []
for base, dirs, files in os.walk(sys.argv[1]):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    for f in files:
        if f.startswith('.'):
            continue
        p = os.path.join(base, f)
        data = open(p, 'rb').read()
        try:
            if f.endswith('.json'):
                json.loads(data.decode('utf-8'))
            elif f.endswith('.safetensors'):
                n = struct.unpack('<Q', data[:8])[0]
                header = json.loads(data[8:8 + n])
                end = max([v['data_offsets'][1] for k, v in header.items() if k != '__metadata__'] or [0])
                if 8 + n + end != len(data):
                    raise ValueError('size %d, header says %d' % (len(data), 8 + n + end))
            elif f.endswith('.png'):
                if not data.endswith(b'IEND\xaeB`\x82'):
                    raise ValueError('truncated PNG')
        except Exception as e:
            bad.append('%s: %s' % (p, e))
if bad:
    print('\n'.join(bad))
    sys.exit(1)
EOF
}

# The files that must be identical between two run folders.
compared() { (cd "$1" && find . -path '*/.*' -prune -o -type f \( -name metrics.json -o -name result.json -o -name loss.csv -o -path '*/state/*' \) -print | sort); }

rm -rf "$dir/reference" "$dir"/killed-* "$dir/locked"
echo "reference run (uninterrupted) in $dir/reference"
start=$(date +%s.%N)
"${klf[@]}" "${args[@]}" --out "$dir/reference" > "$dir/reference.log" 2>&1 || { cat "$dir/reference.log"; exit 1; }
reference_s=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.2f", a - b }')
printf "  %.1f s; %d files compared\n" "$reference_s" "$(compared "$dir/reference" | wc -l)"

# Rounds: each kills a fresh run folder until the run finishes (a kill draws its moment from the
# time the run still needs), then compares it with the reference; rounds go on until $trials kills.
total=$(compared "$dir/reference" | wc -l)
kills=0; attempts=0; round=0; log="$dir/killed.log"; : > "$log"
while [ $kills -lt "$trials" ]; do
  round=$((round + 1))
  out="$dir/killed-$round"
  rm -rf "$out"
  remaining=$reference_s
  while :; do
    attempts=$((attempts + 1))
    started=$(date +%s.%N)
    "${klf[@]}" "${args[@]}" --out "$out" >> "$log" 2>&1 &
    pid=$!
    killed=""
    if [ $kills -lt "$trials" ]; then
      if [ $((kills % 2)) -eq 0 ]; then
        delay=$(awk -v r=$((RANDOM % 1000)) -v t="$remaining" 'BEGIN { printf "%.2f", r / 1000 * t * 0.9 + 1.5 }')
        sleep "$delay"
        what="at ${delay}s"
      else
        wait_s=$(awk -v r=$((RANDOM % 1000)) -v t="$remaining" 'BEGIN { printf "%.2f", r / 1000 * t * 0.7 + 1.5 }')
        sleep "$wait_s"
        what="at the first write after ${wait_s}s"
        for _ in $(seq 1 3000); do
          tmp=$(find "$out" -name ".*.$pid.*.tmp*" -print -quit 2>/dev/null)
          if [ -n "$tmp" ]; then what="$what (${tmp#$out/})"; break; fi
          kill -0 $pid 2>/dev/null || break
          sleep 0.005
        done
      fi
      if kill -0 $pid 2>/dev/null; then
        kill -9 $pid; wait $pid 2>/dev/null || true
        kills=$((kills + 1)); killed=1
        ran=$(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { printf "%.2f", a - b }')
        echo "  round $round, kill $kills: $what"
        if ! check_complete "$out"; then echo "FAIL: a partial file is visible after kill $kills"; exit 1; fi
        # Less is left to do after each kill, roughly: what the killed attempt ran past start-up.
        remaining=$(awk -v r="$remaining" -v x="$ran" 'BEGIN { v = r - (x - 3); if (v < 4) v = 4; printf "%.2f", v }')
      fi
    fi
    [ -n "$killed" ] && continue
    if wait $pid; then break; fi
    echo "FAIL: a resumed run failed (see $log)"; tail -5 "$log"; exit 1
  done
  differ=0
  while read -r f; do
    if ! cmp -s "$dir/reference/$f" "$out/$f"; then echo "  differs: $f"; differ=$((differ + 1)); fi
  done < <(compared "$dir/reference")
  [ "$(compared "$dir/reference")" = "$(compared "$out")" ] || { echo "  the two folders hold different files"; differ=$((differ + 1)); }
  if [ $differ -ne 0 ]; then echo "FAIL: round $round: $differ of $total files differ"; exit 1; fi
  echo "  round $round finished: all $total compared files identical to the uninterrupted run"
done
echo "$kills kills in $round rounds ($attempts starts): every round identical to the uninterrupted run (metrics.json, results, losses, states)"

echo "lock: a second process on a folder in use"
rm -rf "$dir/locked"
"${klf[@]}" "${args[@]}" --out "$dir/locked" > "$dir/locked-1.log" 2>&1 &
first=$!
for _ in $(seq 1 600); do [ -n "$(find "$dir/locked" -name .lock -print -quit 2>/dev/null)" ] && break; sleep 0.05; done
set +e
"${klf[@]}" "${args[@]}" --out "$dir/locked" > "$dir/locked-2.log" 2>&1
code=$?
set -e
kill -9 $first 2>/dev/null || true; wait $first 2>/dev/null || true
if [ $code -ne 1 ] || ! grep -q "in use by another process" "$dir/locked-2.log"; then
  echo "FAIL: the second process was not refused (exit $code)"; cat "$dir/locked-2.log"; exit 1
fi
echo "  refused: $(grep 'klf: error' "$dir/locked-2.log")"

if [ "$(id -u)" = 0 ] && command -v mount >/dev/null; then
  echo "full disk: a tmpfs too small for the run's states"
  mnt="$dir/small"; mkdir -p "$mnt"
  size_kb=$(du -sk "$dir/reference" | cut -f1)
  mount -t tmpfs -o size=$((size_kb * 2 / 3))k tmpfs "$mnt"
  trap 'umount "$mnt" 2>/dev/null || true' EXIT
  set +e
  "${klf[@]}" "${args[@]}" --out "$mnt/run" > "$dir/full.log" 2>&1
  code=$?
  set -e
  echo "  exit $code: $(grep 'klf: error' "$dir/full.log" | head -1)"
  [ $code -eq 1 ] || { echo "FAIL: expected exit 1"; exit 1; }
  if grep -q "   at " "$dir/full.log"; then echo "FAIL: a stack trace"; exit 1; fi
  check_complete "$mnt/run" || { echo "FAIL: a partial file is visible after the full disk"; exit 1; }
  [ -z "$(find "$mnt/run" -name '.*.tmp*' -print -quit)" ] || { echo "FAIL: temporaries left behind"; exit 1; }
  mount -o remount,size=$((size_kb * 3))k "$mnt"
  "${klf[@]}" "${args[@]}" --out "$mnt/run" > "$dir/full-resume.log" 2>&1 || { echo "FAIL: no resume once space is back"; tail -5 "$dir/full-resume.log"; exit 1; }
  while read -r f; do
    cmp -s "$dir/reference/$f" "$mnt/run/$f" || { echo "FAIL: $f differs after the full-disk resume"; exit 1; }
  done < <(compared "$dir/reference")
  echo "  resumed once space was back: all $total compared files identical"
  umount "$mnt"; trap - EXIT
else
  echo "full disk: skipped (needs root to mount a small tmpfs)"
fi
echo "kill-resume: all checks passed ($kills kills, seed $seed, folder $dir)"

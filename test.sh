#!/usr/bin/env bash
# Builds the solution and runs both test projects. Ends with one line "N passed, N failed"
# summed over both, and exits non-zero if anything failed or a test project could not run.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"

"$root/scripts/ensure-tools.sh" || { echo "0 passed, 1 failed"; exit 1; }

if ! dotnet build Klf.sln -c Release --nologo -v q -clp:ErrorsOnly; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

passed=0; failed=0; status=0
for t in Properties Integration; do
  log=$(mktemp)
  # Plain text only (no colour or cursor codes), so the closing line stands alone.
  dotnet "tests/$t/bin/Release/net10.0/Klf.Tests.$t.dll" --summary --colours 0 --no-spinner "$@" 2>&1 \
    | sed -u -E 's/\x1b\[[0-9;?]*[A-Za-z]//g' | tee "$log"
  rc=${PIPESTATUS[0]}
  # Expecto's closing line: "EXPECTO! N tests run in T for L – P passed, I ignored, F failed, E errored. ..."
  line=$(grep -E 'tests run in .* passed, [0-9]+ ignored, [0-9]+ failed, [0-9]+ errored' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "test.sh: $t did not report a summary (exit code $rc)"
    failed=$((failed + 1)); status=1
  else
    p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    e=$(sed -E 's/.* ([0-9]+) errored.*/\1/' <<<"$line")
    passed=$((passed + p)); failed=$((failed + f + e))
    [ "$rc" -eq 0 ] || status=1
  fi
  rm -f "$log"
done
[ "$failed" -eq 0 ] || status=1
printf '\n%s passed, %s failed\n' "$passed" "$failed"
exit $status

#!/usr/bin/env bash
# fail2ban's filters imported as playbooks (#14): what imports, how well, how fast.
#
#   (1) `csirt playbooks import fail2ban /etc/fail2ban/filter.d` into a temp dir: how many filter
#       files import, and each one left out with its reason;
#   (2) the scoring table: every imported filter with a test log in fail2ban's package
#       (fail2ban/tests/files/logs), run through `csirt playbooks test --json` and scored on the
#       `# failJSON:` annotations in the filter's default mode, as fail2ban's own test suite
#       does (match, host, and time, read in CET on 2005-08-14) (the integration test
#       tests/it/fail2ban_import.rs, whose table this prints: filter, cases, recall, false
#       positives, times, rules, or why it was not imported);
#   (3) speed: the imported sshd filter's dry run (`csirt playbooks test`) on a LINES-line
#       auth.log from ../shared/bench/gen_authlog.py (seed 42) against `fail2ban-regex` with the
#       same filter on the same file, in the same run: CPU time (user+sys, /usr/bin/time) of each,
#       the median of RUNS runs, lines/s and the ratio; the matched lines of both. With
#       CALLGRIND=1 also csirt's instruction count (valgrind --tool=callgrind; fail2ban-regex is
#       not run under it: hours).
# Target: >= 85 filters imported; the imported sshd at >= 20x fail2ban-regex's lines/s.
# Figures only; the test in (2) asserts the floors.
#
# Usage (from the repository root):  bash bench/fail2ban_import.sh
# Environment:  LINES=1000000   RUNS=3   GEN=../shared/bench/gen_authlog.py   KEEP=1 (keep the
#               temp dir)   SKIP_SPEED=1 (only (1) and (2))   CALLGRIND=1
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LINES=${LINES:-1000000}
RUNS=${RUNS:-3}
GEN=${GEN:-$ROOT/../shared/bench/gen_authlog.py}
FILTERS=/etc/fail2ban/filter.d
[[ -d "$FILTERS" ]] || { echo "$FILTERS is missing: apt-get install fail2ban" >&2; exit 1; }

echo "== cargo build --release" >&2
cargo build --release >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/csirt"

TMP=$(mktemp -d /tmp/csirt-f2b-bench.XXXXXX)
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then echo "KEEP=1: kept $TMP" >&2; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT

echo "== (1) csirt playbooks import fail2ban $FILTERS --out $TMP/imported"
# Only the filters left out, and the count (each imported one prints its rules and notes).
"$BIN" playbooks import fail2ban "$FILTERS" --out "$TMP/imported" | grep -E '^[^ ].*: 除外 \(left out\)|^[0-9]+ of [0-9]+ filters' || true
"$BIN" playbooks check "$TMP/imported"

echo
echo "== (2) scoring on fail2ban's test logs (cargo test --test it imported_filters -- --nocapture)"
cargo test --test it imported_filters_pass_check_and_score -- --nocapture 2>&1 \
    | sed -n '/^imported [0-9]* of/,/^test fail2ban_import/p' | grep -v '^test fail2ban_import'

[[ "${SKIP_SPEED:-0}" == 1 ]] && exit 0
echo
echo "== (3) the imported sshd filter on a $LINES-line auth.log"
[[ -f "$GEN" ]] || { echo "no generator at $GEN (set GEN=)" >&2; exit 1; }
command -v fail2ban-regex >/dev/null || { echo "fail2ban-regex is missing" >&2; exit 1; }
LOG="$TMP/auth.log"
python3 "$GEN" --lines "$LINES" --seed 42 --out "$LOG" >&2
cpu() { # prints user+sys seconds of the command; its stdout is left in $TMP/out
    /usr/bin/time -f '%U %S' -o "$TMP/time" "$@" >"$TMP/out" 2>"$TMP/err" || {
        cat "$TMP/err" >&2
        exit 1
    }
    awk '{ printf "%.2f", $1 + $2 }' "$TMP/time"
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
cat "$LOG" >/dev/null
CSIRT_CMD=("$BIN" playbooks test "$TMP/imported/fail2ban-sshd.toml" "$LOG")
F2B_CMD=(fail2ban-regex "$LOG" "$FILTERS/sshd.conf")
echo "csirt:          ${CSIRT_CMD[*]}"
echo "fail2ban-regex: ${F2B_CMD[*]}"
CSIRT_ALL=""
F2B_ALL=""
for run in $(seq "$RUNS"); do
    # Alternated, so that both see the same load.
    CSIRT_ALL="$CSIRT_ALL $(cpu "${CSIRT_CMD[@]}")"
    CSIRT_MATCHED=$(head -1 "$TMP/out")
    F2B_ALL="$F2B_ALL $(cpu "${F2B_CMD[@]}")"
    F2B_MATCHED=$(grep -E '^Lines:' "$TMP/out" || true)
    echo "run $run: csirt$(echo "$CSIRT_ALL" | awk '{ print " " $NF }') s, fail2ban-regex$(echo "$F2B_ALL" | awk '{ print " " $NF }') s"
done
echo "csirt matched:          $CSIRT_MATCHED"
echo "fail2ban-regex matched: $F2B_MATCHED"
CSIRT_S=$(echo "$CSIRT_ALL" | median)
F2B_S=$(echo "$F2B_ALL" | median)
awk -v n="$LINES" -v c="$CSIRT_S" -v f="$F2B_S" -v r="$RUNS" 'BEGIN {
    printf "csirt (imported sshd): %.2f s CPU (median of %d), %.0f lines/s\n", c, r, n / c
    printf "fail2ban-regex sshd:   %.2f s CPU (median of %d), %.0f lines/s\n", f, r, n / f
    printf "ratio: %.1fx (target >= 20x)\n", f / c
}'
if [[ "${CALLGRIND:-0}" == 1 ]]; then
    valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" "${CSIRT_CMD[@]}" \
        >/dev/null 2>"$TMP/callgrind.err"
    grep -E 'refs:' "$TMP/callgrind.err" | sed 's/^==[0-9]*== */csirt instructions (callgrind): /'
fi

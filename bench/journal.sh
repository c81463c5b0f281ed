#!/usr/bin/env bash
# Journal source (#10): the daemon end to end on SQLite against journalctl alone, on the same
# journal directory, in one run.
#
# Builds csirt (release) and, in a temp dir:
#   - bench/journal_export.py writes ENTRIES entries of a server under SSH attack (seed 42): sshd
#     failures from a few hundred addresses (about 60 % of the entries), other sshd lines
#     (Accepted, pam_unix sessions, Connection closed, disconnects), other units (cron, systemd,
#     logind, postfix, the kernel's UFW lines) and rare decoys, in the journal export format,
#     piped into systemd-journal-remote --output=DIR/bench.journal (it archives the file at its
#     header limits: the directory holds several files); its truth file gives the counted
#     failures per address;
#   then, after one warm-up of journalctl per variant, RUNS times, for each variant in turn:
#   (a) journalctl alone with the flags the [[journal]] source gives it (src/source/journal.rs
#       command(): --output=json --output-fields=<OUTPUT_FIELDS> --all --merge --no-pager
#       --directory=DIR --no-tail -- MATCHES; without --follow, so that it ends), its output to a
#       file (not /dev/null); wall time, CPU from wait4; the last line's __CURSOR is kept;
#   (b) `csirt --config C daemon` on a fresh SQLite store, the repository's playbooks, contacts
#       as in config/csirt.example.toml, notifications to files, and one source
#       [[journal]] name = "auth.log", directory = DIR, start_at = "beginning", MATCHES; timed from
#       its spawn until `SELECT cursor FROM journal_cursors` is (a)'s last cursor (python3's
#       sqlite3, read-only, every 10 ms). The daemon's CPU and context switches (by thread) and
#       its journalctl's CPU are read from /proc then. Checked: per-address hit counts equal the
#       truth, and still do 1 s later; the journalctl the daemon ran had (a)'s arguments plus
#       --follow.
#   Variants: "all" (no match: every entry goes through the daemon), "unit"
#   (matches = ["_SYSTEMD_UNIT=ssh.service"]: journalctl filters, the sshd entries only), and
#   "fewhits": "all" on a second directory written with --hit-every HIT_EVERY, where all but
#   every HIT_EVERY-th failure is an sshd line the rules read but do not count: the same reading
#   and matching with the store nearly idle, so "all" minus "fewhits" is the cost of the hits.
# Reports each run: entries/s of (a) and (b), their CPU seconds, the ratio (b)/(a); the medians,
# CPU per entry, and the CPU-bound ceilings those imply. The entries of the unit variant are
# those journalctl hands over (the sshd ones).
# Target (#10): (b) at least 50,000 entries/s.
#
# Usage (from the repository root):  bash bench/journal.sh
# Environment:
#   ENTRIES=200000     entries generated
#   RUNS=3             runs of (a) and (b) per variant
#   VARIANTS=all,unit,fewhits  which sources to measure
#   HIT_EVERY=1000     failures kept in the fewhits journal: one in HIT_EVERY
#   STEP_MS=10         mean gap between entries' timestamps (200,000 entries: about 33 minutes)
#   KEEP=1             keep the temp dir (journal, stores, daemon logs, results.json) and say where
# Needs systemd-journal-remote and journalctl (Debian: apt-get install systemd-journal-remote),
# python3. Prints the report only; nothing is written to the repository. About 2-3 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ENTRIES=${ENTRIES:-200000}
RUNS=${RUNS:-3}
VARIANTS=${VARIANTS:-all,unit,fewhits}
HIT_EVERY=${HIT_EVERY:-1000}
STEP_MS=${STEP_MS:-10}
for v in ENTRIES RUNS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, not '${!v}'" >&2; exit 2; }
done

WRITER=""
for w in /usr/lib/systemd/systemd-journal-remote /lib/systemd/systemd-journal-remote; do
    [[ -x $w ]] && WRITER=$w && break
done
[[ -n $WRITER ]] || { echo "systemd-journal-remote is not installed (apt-get install systemd-journal-remote)" >&2; exit 1; }
command -v journalctl >/dev/null || { echo "journalctl is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

# The fields the source asks journalctl for, from the source itself.
FIELDS=$(python3 -c '
import re, sys
m = re.search(r"pub const OUTPUT_FIELDS: &str =\s*\"([^\"]+)\"", open(sys.argv[1]).read())
print(m.group(1) if m else "")' src/source/journal.rs)
[[ -n $FIELDS ]] || { echo "cannot find OUTPUT_FIELDS in src/source/journal.rs" >&2; exit 1; }

echo "== cargo build --release" >&2
cargo build --release >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/csirt"
[[ -x "$BIN" ]] || { echo "no binary at $BIN" >&2; exit 1; }

TMP=$(mktemp -d /tmp/csirt-journal.XXXXXX)
cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then echo "KEEP=1: kept $TMP" >&2; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT

# write_journal DIR ARGS...: ENTRIES entries from journal_export.py ARGS into DIR.
write_journal() {
    local dir=$1; shift
    mkdir -p "$dir"
    echo "== writing $ENTRIES entries into $dir with $WRITER" >&2
    python3 bench/journal_export.py "$ENTRIES" --seed 42 --step-ms "$STEP_MS" "$@" |
        "$WRITER" --output="$dir/bench.journal" - 2>"$dir.writer.log"
    grep -q "Finishing after writing $ENTRIES entries" "$dir.writer.log" || { cat "$dir.writer.log" >&2; exit 1; }
}
write_journal "$TMP/j" --truth "$TMP/truth.json"
FEWHITS=()
if [[ ",$VARIANTS," == *,fewhits,* ]]; then
    write_journal "$TMP/jf" --hit-every "$HIT_EVERY" --truth "$TMP/truth-fewhits.json"
    FEWHITS=(--fewhits-dir "$TMP/jf" --fewhits-truth "$TMP/truth-fewhits.json")
fi

GIT=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
if [[ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock migrations playbooks 2>/dev/null)" ]]; then
    GIT="$GIT + uncommitted changes"
fi
echo "csirt $("$BIN" --version | awk '{print $NF}') at $GIT; $(journalctl --version | head -1)"
python3 bench/journal_run.py --bin "$BIN" --root "$ROOT" --dir "$TMP/j" --truth "$TMP/truth.json" \
    --tmp "$TMP" --fields "$FIELDS" --runs "$RUNS" --variants "$VARIANTS" "${FEWHITS[@]}"

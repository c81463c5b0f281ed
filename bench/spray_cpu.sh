#!/usr/bin/env bash
# One spray run for before/after comparisons of CPU work (#13): N distinct addresses, one
# `Failed password` line each over 60 s (bench/ingest_probe.py spray-distinct), ingested by a
# fresh daemon on a fresh store; prints one JSON line: wall seconds, hits/s, the daemon's CPU
# seconds (user+sys, from the rename of the file until the checkpoint covers it), its CPU per
# thread and its VmHWM. bench/spray.sh measures the targets; this measures one binary cheaply,
# also under a wrapper (callgrind's instruction counts do not move with the machine's load).
#
# Usage (from the repository root):
#   bash bench/spray_cpu.sh BIN sqlite|pg N [WRAPPER...]
#   bash bench/spray_cpu.sh target/release/csirt sqlite 100000 \
#       valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out
# Environment: PG_URL=postgres://postgres@127.0.0.1:5432; SRC=FILE ingests FILE instead of a
# spray, with the repository's playbooks (N is then its failures); KEEP=1 keeps the temp dir.
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 BIN sqlite|pg N [WRAPPER...]" >&2; exit 2; }
BIN=$1 KIND=$2 N=$3
shift 3
WRAP=("$@")
[[ "$KIND" =~ ^(sqlite|pg)$ ]] || { echo "KIND must be sqlite or pg" >&2; exit 2; }
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PROBE=(python3 "$ROOT/bench/ingest_probe.py")
TMP=$(mktemp -d /tmp/csirt-spray-cpu.XXXXXX)
DB=
pid=
cleanup() {
    [[ -z "$pid" ]] || { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; } || true
    [[ -z "$DB" ]] || psql -X -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >&2 || true
    if [[ "${KEEP:-0}" == 1 ]]; then echo "KEEP=1: kept $TMP" >&2; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT

cp -r "$ROOT/playbooks" "$TMP/pb"
if [[ -n "${SRC:-}" ]]; then
    cp "$SRC" "$TMP/src.log"
else
    # The spray's window cut to 2m as in bench/spray.sh; the lines end now, so made here.
    sed -i 's/^window = "10m"/window = "2m"/' "$TMP/pb/ssh-bruteforce.toml"
    "${PROBE[@]}" spray-distinct --out "$TMP/src.log" --addresses "$N" --span 60 --meta "$TMP/src.meta"
fi
if [[ "$KIND" == pg ]]; then
    DB="csirt_spray_cpu_$$"
    psql -X -q "$PG_URL/postgres" -c "CREATE DATABASE $DB" >&2
    URL="$PG_URL/$DB"
else
    URL="sqlite://$TMP/csirt.db"
fi
mkdir -p "$TMP/logs"
cat >"$TMP/csirt.toml" <<EOC
timezone = "Asia/Tokyo"
playbooks = "$TMP/pb"
log_level = "info"

[store]
url = "$URL"

[[logs]]
paths = ["$TMP/logs/*.log"]
start_at = "beginning"

$(bench_notify "$TMP/outbox")
EOC
"$BIN" --config "$TMP/csirt.toml" db migrate >&2
mv "$TMP/src.log" "$TMP/logs/auth.log.partial"
"${WRAP[@]}" "$BIN" --config "$TMP/csirt.toml" daemon 2>"$TMP/daemon.log" &
pid=$!
for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || { cat "$TMP/daemon.log" >&2; echo "the daemon exited" >&2; exit 1; }
    if { "$BIN" --config "$TMP/csirt.toml" status --json 2>/dev/null || true; } |
        python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("daemons") else 1)' 2>/dev/null; then
        break
    fi
    sleep 0.2
done
"${PROBE[@]}" ingest --db "$URL" --src "$TMP/logs/auth.log.partial" --dst "$TMP/logs/auth.log" --mode rename \
    --expect "$N" --until-size "$(stat -c %s "$TMP/logs/auth.log.partial")" --pid "$pid" --timeout 3000 \
    --poll 0.05 --out "$TMP/ingest.json"
hwm=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$pid/status")
kill -TERM "$pid"
wait "$pid" || echo "the daemon exited with status $?" >&2
pid=
python3 - "$TMP/ingest.json" "$N" "$hwm" "$KIND" "$BIN" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
n, hwm = int(sys.argv[2]), int(sys.argv[3])
print(json.dumps({"kind": sys.argv[4], "bin": sys.argv[5], "hits": n, "seconds": round(r["seconds"], 3),
                  "hits_per_s": round(n / r["seconds"]), "daemon_cpu_seconds": round(r["daemon_cpu_seconds"], 2),
                  "threads": r["daemon_threads_cpu"], "vmhwm_mib": round(hwm / 1024, 1)}))
PY

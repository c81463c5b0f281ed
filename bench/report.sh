#!/usr/bin/env bash
# How long `csirt report --fiscal-year` takes on a large SQLite store (#15).
#
# Builds csirt (release), creates a store in a temp dir with the real binary (`db migrate`),
# seeds INCIDENTS incidents over the year before 2026-11-25 (bench/seed_incidents.py
# --first-events: every incident with its first evidence row, ~2% not closed), so that fiscal
# 2026 (April–November) holds about two thirds of them and fiscal 2025, its comparison year, the
# rest. Then runs, after one warm-up run each, RUNS times:
#   csirt report --fiscal-year 2026 --format html --out FILE
#   csirt report --fiscal-year 2026 --format json --out FILE
# and prints the median and the slowest wall time, the peak RSS and CPU time of one more run
# (GNU time, when installed) and the size of the output. Figures only; nothing is asserted on
# time (the issue's target: under 2 s on SQLite with a million incidents).
#
# With PG=1 the same seed is then copied into a fresh PostgreSQL database on PG_URL (default
# postgres://postgres@127.0.0.1:5432, trust auth; needs sqlite3 and psql), migrated by csirt,
# and the same runs are timed there too; the database is dropped at the end.
#
# Usage (from the repository root):  bash bench/report.sh
# Environment:  INCIDENTS=100000   RUNS=5   KEEP=1 (keep the temp dir and the reports)
#               PG=1   PG_URL=postgres://postgres@127.0.0.1:5432
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
cd "$ROOT"
INCIDENTS=${INCIDENTS:-100000}
RUNS=${RUNS:-5}
[[ "$INCIDENTS" =~ ^[1-9][0-9]*$ ]] || { echo "INCIDENTS must be a positive integer" >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
PG=${PG:-0}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
if [[ "$PG" == 1 ]]; then
    for tool in sqlite3 psql; do
        command -v "$tool" >/dev/null || { echo "PG=1 needs $tool" >&2; exit 1; }
    done
fi
PG_DB="csirt_report_bench_$$"

echo "== cargo build --release" >&2
cargo build --release >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/csirt"

TMP=$(mktemp -d /tmp/csirt-report-bench.XXXXXX)
cleanup() {
    if [[ "$PG" == 1 ]]; then
        psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" >&2 || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "KEEP=1: kept $TMP" >&2; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT
mkdir -m 0770 "$TMP/var"
cat >"$TMP/csirt.toml" <<CFG
timezone = "Asia/Tokyo"
playbooks = "$ROOT/playbooks"

[store]
url = "sqlite://$TMP/var/csirt.db"

$(bench_notify "$TMP/mail")
CFG

"$BIN" --config "$TMP/csirt.toml" db migrate >&2
echo "== seeding $INCIDENTS incidents" >&2
python3 bench/seed_incidents.py --db "$TMP/var/csirt.db" --count "$INCIDENTS" \
    --show-id 1 --first-events >&2

if [[ "$PG" == 1 ]]; then
    # The same store in PostgreSQL: the schema from csirt's own migrations, the rows copied
    # table by table (COPY keeps the ids, identity columns included), then ANALYZE as
    # autovacuum would after a bulk load.
    echo "== copying the store into PostgreSQL database $PG_DB" >&2
    psql -q "$PG_URL/postgres" -c "CREATE DATABASE $PG_DB" >&2
    sed "s#^url = .*#url = \"$PG_URL/$PG_DB\"#" "$TMP/csirt.toml" >"$TMP/csirt-pg.toml"
    "$BIN" --config "$TMP/csirt-pg.toml" db migrate >&2
    copy() {  # table, columns
        sqlite3 -csv "$TMP/var/csirt.db" "SELECT $2 FROM $1 ORDER BY id" |
            psql -q "$PG_URL/$PG_DB" -c "\copy $1 ($2) FROM STDIN WITH (FORMAT csv)" >&2
    }
    copy incidents "id, playbook, category, title, severity, status, resolution, dedupe_key, fields, event_count, first_seen, last_seen, opened_at, acknowledged_at, closed_at, assignee, escalation_level, origin"
    copy events "id, incident_id, playbook, rule, dedupe_key, kind, source, locator, observed_at, received_at, text, fields"
    copy timeline "id, incident_id, at, actor, action, detail"
    psql -q "$PG_URL/$PG_DB" -c "ANALYZE" >&2
fi

python3 - "$BIN" "$TMP" "$RUNS" "$PG" <<'PY'
import os, statistics, subprocess, sys, time

binary, tmp, runs, pg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
backends = [("SQLite", "csirt.toml", "")]
if pg:
    backends.append(("PostgreSQL", "csirt-pg.toml", "-pg"))
for backend, config, suffix in backends:
    config = os.path.join(tmp, config)
    print(f"csirt report --fiscal-year 2026 on {binary}, {backend}, {runs} runs after 1 warm-up")
    for fmt in ("html", "json"):
        out = os.path.join(tmp, f"report{suffix}.{fmt}")
        cmd = [binary, "--config", config, "report", "--fiscal-year", "2026", "--format", fmt, "--out", out]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
        rss = ""
        if os.path.exists("/usr/bin/time"):
            # CPU time as well: on a shared machine the wall time says as much about the load.
            r = subprocess.run(["/usr/bin/time", "-f", "%M %U %S"] + cmd, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            kib, user, sys_ = r.stderr.strip().splitlines()[-1].split()
            rss = (f", peak RSS {int(kib) / 1024:.1f} MiB, CPU of one run {float(user) + float(sys_):.2f} s"
                   f" (user {user} + sys {sys_})")
        print(f"  --format {fmt}: median {statistics.median(walls):.3f} s, slowest {max(walls):.3f} s"
              f"{rss}, output {os.path.getsize(out) / 1024:.0f} KiB")
PY

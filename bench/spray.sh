#!/usr/bin/env bash
# Ingest at botnet scale (#13): a spray of distinct addresses none of which reaches its threshold,
# and the headline (the generator's 1M-line auth.log) against fail2ban-regex, for the binary of
# this tree and, side by side in the same run, a binary from before (BEFORE_BIN).
#
# In a temp dir:
#   - the generator's LINES-line auth.log (seed 42) and its truth; fail2ban-regex on it once
#     (/usr/bin/time), the baseline of the headline;
#   - sprays from bench/ingest_probe.py spray-distinct: SPRAY addresses (and SMALL), one
#     `Failed password` line each, spread over 60 s that end when it is generated; the playbooks
#     are a copy of the repository's with ssh-bruteforce's window cut from 10m to 2m, so that the
#     prune below can run two minutes after the spray instead of ten (every window is open
#     during the spray either way: the spray spans 60 s);
#   each pipeline run: a fresh store (SQLite file, or a PostgreSQL database made with psql),
#   `csirt db migrate`, `csirt daemon` watching TMP/NAME/logs/*.log; once its heartbeat is in
#   the store the file, copied beforehand as auth.log.partial (not matched by *.log), is renamed to
#   auth.log (the SSH rules read files named auth.log*) and timed until
#   the checkpoint covers the whole file and SUM(hits) equals its failures (ingest_probe.py
#   ingest --until-size); the daemon's VmHWM (peak RSS since its start) is read, then SIGTERM;
#   - headline: auth.log, SQLite and PostgreSQL, lines/s against fail2ban-regex's;
#   - spray: SPRAY lines on SQLite and PostgreSQL (BEFORE_BIN: BEFORE_SPRAY lines, it is slow),
#     hits/s and VmHWM; SMALL lines on SQLite for VmHWM with SMALL addresses in open windows;
#   - storage, on the SQLite SPRAY store: its size after `db migrate` and VACUUM before the spray;
#     after the spray once two minutes (the window) have passed since its last line and its
#     commit, `csirt db prune`, then the pending events left and the file's size after VACUUM.
# Targets (#13): spray >= 100,000 hits/s SQLite, >= 30,000 PostgreSQL; VmHWM <= 64 MiB with
# 100,000 addresses, <= 256 MiB with 1,000,000; headline >= 80x fail2ban-regex SQLite, >= 50x
# PostgreSQL; after the prune no pending event, the file within 2x of its size before.
#
# Usage (from the repository root):  bash bench/spray.sh
# Environment:
#   LINES=1000000        lines of the generated auth.log (headline)
#   SPRAY=1000000        addresses (= lines) of the large spray;  SMALL=100000 of the small one
#   BIN=                 the csirt binary measured (empty: cargo build --release, target/release/csirt)
#   BEFORE_BIN=          a csirt binary from before, measured the same way (empty: skip)
#   BEFORE_SPRAY=100000  spray lines for BEFORE_BIN
#   PG=auto              auto: PostgreSQL runs if PG_URL answers; 1: required; 0: skip
#   PG_URL=postgres://postgres@127.0.0.1:5432
#   GEN=../shared/bench/gen_authlog.py     KEEP=1 keeps the temp dir
# Takes about 6 minutes (2 of them waiting for the window to pass before the prune).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
cd "$ROOT"
LINES=${LINES:-1000000}
SPRAY=${SPRAY:-1000000}
SMALL=${SMALL:-100000}
BEFORE_BIN=${BEFORE_BIN:-}
BEFORE_SPRAY=${BEFORE_SPRAY:-100000}
PG=${PG:-auto}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_URL=${PG_URL%/}
GEN=${GEN:-$ROOT/../shared/bench/gen_authlog.py}
F2B_FILTER=/etc/fail2ban/filter.d/sshd.conf
for v in LINES SPRAY SMALL BEFORE_SPRAY; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
[[ "$PG" =~ ^(auto|0|1)$ ]] || { echo "PG must be auto, 0 or 1" >&2; exit 2; }
command -v fail2ban-regex >/dev/null || { echo "fail2ban-regex is required (apt-get install fail2ban)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time is required (apt-get install time)" >&2; exit 1; }
[[ -f "$GEN" ]] || { echo "no generator at $GEN (set GEN=)" >&2; exit 1; }
[[ -z "$BEFORE_BIN" || -x "$BEFORE_BIN" ]] || { echo "BEFORE_BIN=$BEFORE_BIN is not executable" >&2; exit 1; }

if [[ -z "${BIN:-}" ]]; then
    echo "== cargo build --release" >&2
    cargo build --release >&2
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/csirt"
fi
PROBE=(python3 "$ROOT/bench/ingest_probe.py")
HAVE_PG=0
if [[ "$PG" != 0 ]] && command -v psql >/dev/null && psql -X -q -A -t "$PG_URL/postgres" -c "SELECT 1" >/dev/null 2>&1; then
    HAVE_PG=1
elif [[ "$PG" == 1 ]]; then
    echo "PG=1 but no PostgreSQL answers at $PG_URL" >&2
    exit 1
fi

TMP=$(mktemp -d /tmp/csirt-spray.XXXXXX)
DAEMON_PIDS=()
PG_DBS=()
cleanup() {
    local pid db
    for pid in "${DAEMON_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    for db in "${PG_DBS[@]}"; do
        psql -X -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >&2 || true
    done
    if [[ "${KEEP:-0}" == 1 ]]; then echo "KEEP=1: kept $TMP" >&2; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT

cp -r "$ROOT/playbooks" "$TMP/playbooks-2m"
sed -i 's/^window = "10m"/window = "2m"/' "$TMP/playbooks-2m/ssh-bruteforce.toml"

# write_config NAME STORE_URL PLAYBOOKS
write_config() {
    local dir="$TMP/$1"
    mkdir -p "$dir/logs"
    cat >"$dir/csirt.toml" <<EOF
timezone = "Asia/Tokyo"
playbooks = "$3"
log_level = "info"

[store]
url = "$2"

[[logs]]
paths = ["$dir/logs/*.log"]
start_at = "beginning"

$(bench_notify "$dir/outbox")
EOF
}

# new_store NAME KIND: sets URL to a fresh store (a new PostgreSQL database for pg, dropped at
# exit). Not called in $( ): PG_DBS must grow in this shell.
new_store() {
    if [[ "$2" == pg ]]; then
        local db="csirt_spray_$$_${1//-/_}"
        psql -X -q "$PG_URL/postgres" -c "CREATE DATABASE $db" >&2
        PG_DBS+=("$db")
        URL="$PG_URL/$db"
    else
        URL="sqlite://$TMP/$1/csirt.db"
    fi
}

# run NAME BIN KIND PLAYBOOKS SRC FAILURES: one pipeline run; writes TMP/NAME.json.
run() {
    local name=$1 bin=$2 kind=$3 playbooks=$4 src=$5 failures=$6 url cfg i pid
    mkdir -p "$TMP/$name"
    new_store "$name" "$kind"
    url=$URL
    write_config "$name" "$url" "$playbooks"
    cfg="$TMP/$name/csirt.toml"
    "$bin" --config "$cfg" db migrate >&2
    if [[ "$kind" == sqlite ]]; then
        python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("VACUUM"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)"); c.close()' "$TMP/$name/csirt.db"
        stat -c %s "$TMP/$name/csirt.db" >"$TMP/$name/size-before"
    fi
    cp "$src" "$TMP/$name/logs/auth.log.partial"
    "$bin" --config "$cfg" daemon 2>"$TMP/daemon-$name.log" &
    pid=$!
    DAEMON_PIDS+=("$pid")
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/daemon-$name.log" >&2; echo "daemon $name exited" >&2; exit 1; }
        if { "$bin" --config "$cfg" status --json 2>/dev/null || true; } |
            python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("daemons") else 1)' 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "== $name: $(basename "$src") on $kind with $bin" >&2
    "${PROBE[@]}" ingest --db "$url" --src "$TMP/$name/logs/auth.log.partial" --dst "$TMP/$name/logs/auth.log" \
        --mode rename --expect "$failures" --until-size "$(stat -c %s "$src")" --pid "$pid" --timeout 1800 \
        --out "$TMP/$name.ingest.json"
    local hwm
    hwm=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$pid/status")
    date +%s >"$TMP/$name/ended"
    kill -TERM "$pid"
    wait "$pid" || echo "daemon $name exited with status $?" >&2
    python3 - "$TMP/$name.ingest.json" "$TMP/$name.json" "$name" "$bin" "$kind" "$(basename "$src")" "$failures" "$hwm" <<'PY'
import json, sys
ing, out, name, binary, kind, src, failures, hwm = sys.argv[1:]
r = json.load(open(ing))
json.dump({"name": name, "bin": binary, "kind": kind, "src": src, "failures": int(failures),
           "seconds": r["seconds"], "hits_per_s": int(failures) / r["seconds"], "vmhwm_kb": int(hwm),
           "daemon_cpu_seconds": r["daemon_cpu_seconds"]}, open(out, "w"), indent=1)
PY
}

LOG="$TMP/gen/auth.log"
echo "== generating $LINES lines" >&2
python3 "$GEN" --lines "$LINES" --seed 42 --out "$LOG" >&2
FAILURES=$(python3 -c 'import json,sys; print(sum(json.load(open(sys.argv[1]))["failures_by_ip"].values()))' "$TMP/gen/auth.truth.json")
echo "== fail2ban-regex (1 run)" >&2
/usr/bin/time -f '%e' -o "$TMP/f2b.time" fail2ban-regex "$LOG" "$F2B_FILTER" >"$TMP/f2b.out" 2>&1

BINS=("after:$BIN")
[[ -z "$BEFORE_BIN" ]] || BINS=("before:$BEFORE_BIN" "${BINS[@]}")
KINDS=(sqlite)
((HAVE_PG)) && KINDS+=(pg)
for entry in "${BINS[@]}"; do
    label=${entry%%:*}
    bin=${entry#*:}
    n=$SPRAY
    [[ "$label" == after ]] || n=$BEFORE_SPRAY
    "${PROBE[@]}" spray-distinct --out "$TMP/spray-$label.log" --addresses "$n" --span 60 --meta "$TMP/spray-$label.meta"
    for kind in "${KINDS[@]}"; do
        run "$label-spray-$kind" "$bin" "$kind" "$TMP/playbooks-2m" "$TMP/spray-$label.log" "$n"
        run "$label-headline-$kind" "$bin" "$kind" "$ROOT/playbooks" "$LOG" "$FAILURES"
    done
    if [[ "$label" == after ]]; then
        "${PROBE[@]}" spray-distinct --out "$TMP/spray-small.log" --addresses "$SMALL" --span 60 --meta "$TMP/spray-small.meta"
        run "after-small-sqlite" "$bin" sqlite "$TMP/playbooks-2m" "$TMP/spray-small.log" "$SMALL"
    fi
done

# Storage: the prune once the 2-minute window has passed since the spray's last line and commit.
NAME=after-spray-sqlite
DB="$TMP/$NAME/csirt.db"
LAST=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["last_epoch"]))' "$TMP/spray-after.meta")
READY=$(( $(cat "$TMP/$NAME/ended") > LAST ? $(cat "$TMP/$NAME/ended") : LAST ))
WAIT=$(( READY + 125 - $(date +%s) ))
SIZE_SPRAYED=$(stat -c %s "$DB")
if ((WAIT > 0)); then echo "== waiting ${WAIT} s for the spray's window to pass" >&2; sleep "$WAIT"; fi
"$BIN" --config "$TMP/$NAME/csirt.toml" db prune --json >"$TMP/prune.json"
python3 - "$DB" "$TMP/$NAME/size-before" "$SIZE_SPRAYED" "$TMP/storage.json" <<'PY'
import json, os, sqlite3, sys
db, before_path, sprayed, out = sys.argv[1:]
c = sqlite3.connect(db)
pending = c.execute("SELECT COUNT(*) FROM events WHERE incident_id IS NULL").fetchone()[0]
counters = c.execute("SELECT COUNT(*) FROM hit_counts").fetchone()[0]
c.execute("VACUUM")
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
json.dump({"pending_after_prune": pending, "hit_counts_after_prune": counters,
           "size_before": int(open(before_path).read()), "size_sprayed": int(sprayed),
           "size_after_vacuum": os.path.getsize(db)}, open(out, "w"), indent=1)
PY

python3 - "$TMP" "$(cat "$TMP/f2b.time" | tail -1)" "$LINES" <<'PY'
import glob, json, os, sys
tmp, f2b, lines = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
runs = {os.path.basename(p)[:-5]: json.load(open(p)) for p in sorted(glob.glob(os.path.join(tmp, "*-*-*.json")))
        if not p.endswith(".ingest.json")}
st = json.load(open(os.path.join(tmp, "storage.json")))
prune = json.load(open(os.path.join(tmp, "prune.json")))
print(f"fail2ban-regex on {lines} lines: {f2b:.1f} s ({lines / f2b:,.0f} lines/s)")
for name, r in runs.items():
    extra = f"  {lines / r['seconds'] / (lines / f2b):.1f}x fail2ban-regex" if "headline" in name else ""
    print(f"{name:24} {r['failures']:>9,} hits in {r['seconds']:7.2f} s = {r['hits_per_s']:>9,.0f} hits/s"
          f"  VmHWM {r['vmhwm_kb'] / 1024:6.1f} MiB{extra}")
print(f"prune: {json.dumps(prune)}")
print(f"storage: pending events after the prune {st['pending_after_prune']}, counters {st['hit_counts_after_prune']}; "
      f"SQLite file {st['size_before']:,} B before the spray (VACUUM), {st['size_sprayed']:,} B sprayed, "
      f"{st['size_after_vacuum']:,} B after prune and VACUUM ({st['size_after_vacuum'] / st['size_before']:.2f}x)")
PY

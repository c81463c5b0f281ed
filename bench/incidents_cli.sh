#!/usr/bin/env bash
# Process wall time of the responder's two read commands on a large SQLite store.
#
# Builds csirt (release), creates a store in a temp dir with the real binary (`db migrate`),
# seeds it with 1,000,000 incidents (bench/seed_incidents.py: ~2% not closed, the rest closed),
# then measures, interleaved, over RUNS runs after 3 warm-up runs each:
#   (a) csirt incidents list          default view: not closed, first page of 50, newest first
#   (b) csirt incidents show ID       an incident in the middle of the id range (20 events,
#                                     5 timeline rows)
#   (c) csirt --version               process start-up floor
# and, for comparison, the same SELECTs run in-process by python3's sqlite3 ("raw query"):
# on an already open connection, and on a fresh connection that also runs the CLI's schema check.
# Reports median and p95 (ms) and the ratio of (a) and (b) to (c). Target: (a), (b) < 50 ms.
# Times are with a warm page cache (the store was just written and the runs repeat).
#
# Usage (from the repository root):  bash bench/incidents_cli.sh
# Environment:
#   RUNS=30          timed runs per command
#   INCIDENTS=1000000
#   KEEP=1           keep the temp dir (store, config) and say where it is
#   INSTALL_HYPERFINE=1  if hyperfine is missing, try `apt-get install hyperfine` (needs root);
#                    otherwise the runs are timed in Python (perf_counter around subprocess.run)
# Prints the report only; nothing is written to the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=${RUNS:-30}
INCIDENTS=${INCIDENTS:-1000000}
WARMUP=3
TARGET_MS=50
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer, not '$RUNS'" >&2; exit 2; }
[[ "$INCIDENTS" =~ ^[1-9][0-9]*$ ]] || { echo "INCIDENTS must be a positive integer" >&2; exit 2; }
SHOW_ID=$(( (INCIDENTS + 1) / 2 ))

command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

echo "== cargo build --release" >&2
cargo build --release >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/csirt"
[[ -x "$BIN" ]] || { echo "no binary at $BIN" >&2; exit 1; }

TMP=$(mktemp -d /tmp/csirt-bench.XXXXXX)
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "KEEP=1: kept $TMP (config $TMP/csirt.toml)" >&2
    else
        rm -rf -- "$TMP"
    fi
}
trap cleanup EXIT

CFG="$TMP/csirt.toml"
DB="$TMP/csirt.db"
# The shape of config/csirt.example.toml, with absolute paths into the temp dir.
cat >"$CFG" <<EOF
timezone = "Asia/Tokyo"
playbooks = "$ROOT/playbooks"
log_level = "info"

[store]
url = "sqlite://$DB"

[notify]
to = ["duty"]
from = "csirt@city.kitakami.example.jp"
transport = "file"
dir = "$TMP/outbox"
update_interval = "15m"

[contacts]
duty = ["csirt-duty@city.kitakami.example.jp"]
lead = ["johoseisaku-lead@city.kitakami.example.jp"]
ciso = ["ciso@city.kitakami.example.jp"]
EOF

echo "== csirt db migrate" >&2
"$BIN" --config "$CFG" db migrate >&2

echo "== seeding $INCIDENTS incidents" >&2
SEED_LINE=$(python3 "$ROOT/bench/seed_incidents.py" --db "$DB" --count "$INCIDENTS" --show-id "$SHOW_ID")
echo "$SEED_LINE" >&2

# Sanity: the commands succeed and return what the benchmark claims to measure.
"$BIN" --config "$CFG" incidents list >/dev/null
"$BIN" --config "$CFG" incidents show "$SHOW_ID" >/dev/null
"$BIN" --config "$CFG" incidents list --json >"$TMP/list.json"
"$BIN" --config "$CFG" incidents show "$SHOW_ID" --json >"$TMP/show.json"
python3 - "$TMP/list.json" "$TMP/show.json" "$SHOW_ID" <<'PY'
import json, sys
def load(path):
    text = open(path, encoding="utf-8").read()
    try:
        return json.loads(text)
    except ValueError as e:
        sys.exit(f"csirt printed no valid JSON into {path} ({e}); it begins: {text[:300]!r}")
items = load(sys.argv[1])
ids = [i["id"] for i in items]
assert len(items) == 50, f"list returned {len(items)} incidents, expected 50"
assert all(i["status"] != "closed" for i in items), "list returned a closed incident"
assert ids == sorted(ids, reverse=True), "list is not newest first"
show = load(sys.argv[2])
assert show["id"] == int(sys.argv[3]), show["id"]
assert len(show["events"]) == 20 and len(show["timeline"]) == 5, (len(show["events"]), len(show["timeline"]))
PY

if ! command -v hyperfine >/dev/null && [[ "${INSTALL_HYPERFINE:-0}" == 1 ]] && command -v apt-get >/dev/null; then
    echo "== apt-get install hyperfine" >&2
    apt-get install -y hyperfine >&2 || echo "could not install hyperfine; timing in Python" >&2
fi

TIMES="$TMP/times.json"
if command -v hyperfine >/dev/null; then
    TIMER="hyperfine $(hyperfine --version | awk '{print $2}') --shell=none"
    q() { printf '%q ' "$@"; }
    hyperfine --shell=none --warmup "$WARMUP" --runs "$RUNS" --style basic --export-json "$TMP/hf.json" \
        --command-name list "$(q "$BIN" --config "$CFG" incidents list)" \
        --command-name show "$(q "$BIN" --config "$CFG" incidents show "$SHOW_ID")" \
        --command-name version "$(q "$BIN" --version)" >&2
    python3 - "$TMP/hf.json" "$TIMES" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
json.dump({x["command"]: [t * 1000 for t in x["times"]] for x in r}, open(sys.argv[2], "w"))
PY
else
    TIMER="python3 time.perf_counter around subprocess.run, runs interleaved (hyperfine not installed)"
    python3 - "$TIMES" "$WARMUP" "$RUNS" "$BIN" "$CFG" "$SHOW_ID" <<'PY'
import json, subprocess, sys, time
out, warmup, runs, binary, cfg, show_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
cmds = {
    "list": [binary, "--config", cfg, "incidents", "list"],
    "show": [binary, "--config", cfg, "incidents", "show", show_id],
    "version": [binary, "--version"],
}
times = {k: [] for k in cmds}
for n in range(warmup + runs):
    for name, argv in cmds.items():  # interleaved, so drift hits every command alike
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"{' '.join(argv)} exited {p.returncode}")
        if n >= warmup:
            times[name].append(dt * 1000)
json.dump(times, open(out, "w"))
PY
fi

# Raw query: the statements src/store/mod.rs issues, in-process, with python3's sqlite3.
python3 - "$DB" "$TIMES" "$WARMUP" "$RUNS" "$SHOW_ID" <<'PY'
import json, sqlite3, sys, time
db, out, warmup, runs, show_id = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
COLS = ("id, title, playbook, category, severity, status, resolution, dedupe_key, fields, event_count, "
        "first_seen, last_seen, opened_at, acknowledged_at, closed_at, assignee, escalation_level")
SCHEMA = ["SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
          "SELECT MAX(version) FROM _sqlx_migrations WHERE success"]
LIST = [(f"SELECT {COLS} FROM incidents WHERE status <> 'closed' ORDER BY id DESC LIMIT ?", (50,))]
SHOW = [(f"SELECT {COLS} FROM incidents WHERE id = ?", (show_id,)),
        ("SELECT kind, rule, source, locator, observed_at, text, fields FROM events WHERE incident_id = ? ORDER BY id", (show_id,)),
        ("SELECT at, actor, action, detail FROM timeline WHERE incident_id = ? ORDER BY id", (show_id,))]

def connect():
    c = sqlite3.connect(db, isolation_level=None)
    for p in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=10000"):
        c.execute(p).fetchall()
    return c

def run(c, stmts):
    for sql, args in stmts:
        c.execute(sql, args).fetchall()

times = json.load(open(out))
warm = connect()
for name, stmts in (("raw_list", LIST), ("raw_show", SHOW)):
    ts, ts_fresh = [], []
    for n in range(warmup + runs):
        t0 = time.perf_counter(); run(warm, stmts); t1 = time.perf_counter()
        c = connect(); run(c, [(s, ()) for s in SCHEMA] + stmts); c.close(); t2 = time.perf_counter()
        if n >= warmup:
            ts.append((t1 - t0) * 1000); ts_fresh.append((t2 - t1) * 1000)
    times[name] = ts
    times[name + "_fresh"] = ts_fresh
plans = {}
for label, (sql, args) in (("list", LIST[0]), ("show: incident", SHOW[0]), ("show: events", SHOW[1]), ("show: timeline", SHOW[2])):
    plans[label] = [r[3] for r in warm.execute("EXPLAIN QUERY PLAN " + sql, args)]
times["_plans"] = plans
times["_sqlite"] = sqlite3.sqlite_version
times["_not_closed"] = warm.execute("SELECT COUNT(*) FROM incidents WHERE status <> 'closed'").fetchone()[0]
times["_db_mb"] = warm.execute("SELECT page_count * page_size / 1048576.0 FROM pragma_page_count, pragma_page_size").fetchone()[0]
warm.close()
json.dump(times, open(out, "w"))
PY

VERSION=$("$BIN" --version)
python3 - "$TIMES" <<PY
import json, math, os, platform, statistics, datetime
t = json.load(open("$TIMES"))
def med(x): return statistics.median(x)
def p95(x): s = sorted(x); return s[max(0, math.ceil(0.95 * len(s)) - 1)]
floor = med(t["version"])
print(f"csirt incidents CLI benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %z}")
print(f"binary   $VERSION (release), $BIN")
print(f"host     {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}")
print(f"store    SQLite, $INCIDENTS incidents ({t['_not_closed']} not closed), {t['_db_mb']:.0f} MiB, warm page cache")
print(f"seeding  $SEED_LINE")
print(f"timer    $TIMER; RUNS=$RUNS, warmup $WARMUP")
print()
rows = [
    ("(a) csirt incidents list", "list", True),
    ("(b) csirt incidents show $SHOW_ID", "show", True),
    ("(c) csirt --version  [floor]", "version", False),
    ("raw query: list  (open connection)", "raw_list", False),
    ("raw query: show  (3 SELECTs, open connection)", "raw_show", False),
    ("raw query: list  (new connection + schema check)", "raw_list_fresh", False),
    ("raw query: show  (new connection + schema check)", "raw_show_fresh", False),
]
print(f"{'':50} {'median ms':>10} {'p95 ms':>9} {'median/(c)':>11} {'median-(c)':>11}")
for label, key, ratio in rows:
    x = t[key]
    extra = f"{med(x) / floor:10.1f}x {med(x) - floor:8.2f} ms" if ratio else ""
    print(f"{label:50} {med(x):10.3f} {p95(x):9.3f} {extra}")
print()
ok = all(p95(t[k]) < $TARGET_MS and med(t[k]) < $TARGET_MS for k in ("list", "show"))
worst = max(p95(t["list"]), p95(t["show"]))
print(f"target   (a) and (b) under $TARGET_MS ms of process wall time: {'MET' if ok else 'NOT MET'} (worst p95 {worst:.1f} ms)")
print("plans    (EXPLAIN QUERY PLAN, python sqlite3 " + t["_sqlite"] + ")")
for label, plan in t["_plans"].items():
    print(f"  {label:16} " + " | ".join(plan))
PY

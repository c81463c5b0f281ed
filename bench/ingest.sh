#!/usr/bin/env bash
# Log ingest: throughput of the whole daemon pipeline against fail2ban-regex and grep on the same
# file, correctness against the generator's ground truth, daemon memory with 100,000 attackers in
# open threshold windows, and the latency from an appended line to its incident's commit.
#
# Builds csirt (release) and, in a temp dir:
#   - generates a LINES-line auth.log with ../shared/bench/gen_authlog.py (seed 42), whose
#     auth.truth.json gives failures_by_ip, banned_sliding_600s and fail2ban-regex's expected summary;
#   baselines on that file (page cache warm, no daemon running):
#   - fail2ban-regex FILE /etc/fail2ban/filter.d/sshd.conf under /usr/bin/time (one run);
#   - LC_ALL=C grep -cE with one expression equal to the playbook's two rules, and the dry run
#     `csirt playbooks test ssh-bruteforce FILE`, interleaved, RUNS runs after one warm-up each;
#     `playbooks test --json` once, to check `matched` and its incidents against the truth;
#   (1) whole pipeline, PIPELINE_RUNS times, each with a fresh daemon and a fresh SQLite store:
#       `csirt daemon` watching TMP/sqlite-N/logs/*.log (the repository's playbooks); once its
#       heartbeat is in the store (`status --json`), the file, copied beforehand as
#       auth.log.partial, is renamed to auth.log and the time is taken until
#       SUM(hits) FROM hit_counts WHERE playbook='ssh-bruteforce' equals the truth's failures
#       (python3 sqlite3, read-only, polled every 20 ms). Then per-address hits must equal
#       failures_by_ip, the incidents' dedupe keys banned_sliding_600s, and each incident's
#       event_count the dry run's;
#   with the last daemon still running:
#   (4) latency: LAT_N single `Failed password` lines for an address whose incident is open,
#       appended (one write(2) each, unique port) at 10/s; each is timed until the incident's
#       event_count grows (polled every 2 ms): p50/p95/p99;
#   (3) memory: ADDRESSES distinct addresses (10.128.0.0/15), 1-4 failures each within a few
#       minutes, all in one 10-minute span (below 5 in 10 minutes), appended in one write; the
#       daemon's peak RSS is reset (/proc/PID/clear_refs) before and VmHWM read once every hit
#       is stored, just before the daemon is stopped with SIGTERM;
#   (PostgreSQL) when a server answers at PG_URL: (1) and (4) again with a fresh database
#       (CREATE DATABASE with psql, dropped at the end), polled through one psql child.
# Targets: pipeline lines/s >= 30x fail2ban-regex's; dry run within 3x of grep's time;
# peak RSS < 64 MiB; latency p99 < 200 ms.
#
# Usage (from the repository root):  bash bench/ingest.sh
# Environment:
#   LINES=1000000      lines of the generated auth.log
#   PIPELINE_RUNS=3    whole-pipeline runs (fresh daemon and store each); the median is reported
#   RUNS=10            timed runs of grep and of the dry run
#   ADDRESSES=100000   distinct addresses for the memory phase
#   LAT_N=200          lines timed in the latency phase
#   PG=auto            auto: PostgreSQL phases if PG_URL answers; 1: required; 0: skip
#   PG_URL=postgres://postgres@127.0.0.1:5432   server URL without a database name
#   GEN=../shared/bench/gen_authlog.py
#   INSTALL_FAIL2BAN=1 if fail2ban-regex is missing, `apt-get install fail2ban` (needs root); 0: fail
#   KEEP=1             keep the temp dir (logs, stores, daemon logs, JSON results) and say where
# Prints the report only; nothing is written to the repository. Takes about 2-3 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
cd "$ROOT"

LINES=${LINES:-1000000}
PIPELINE_RUNS=${PIPELINE_RUNS:-3}
RUNS=${RUNS:-10}
ADDRESSES=${ADDRESSES:-100000}
LAT_N=${LAT_N:-200}
PG=${PG:-auto}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
GEN=${GEN:-$ROOT/../shared/bench/gen_authlog.py}
F2B_FILTER=/etc/fail2ban/filter.d/sshd.conf
for v in LINES PIPELINE_RUNS RUNS ADDRESSES LAT_N; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
(( ADDRESSES <= 131072 )) || { echo "ADDRESSES must be at most 131072 (10.128.0.0/15)" >&2; exit 2; }
[[ "$PG" =~ ^(auto|0|1)$ ]] || { echo "PG must be auto, 0 or 1" >&2; exit 2; }
PG_URL=${PG_URL%/}

command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time is required (apt-get install time)" >&2; exit 1; }
[[ -f "$GEN" ]] || { echo "no generator at $GEN (set GEN=)" >&2; exit 1; }
if ! command -v fail2ban-regex >/dev/null; then
    if [[ "${INSTALL_FAIL2BAN:-1}" == 1 ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        echo "== apt-get install fail2ban (for fail2ban-regex)" >&2
        apt-get update >&2 && apt-get install -y fail2ban >&2
    fi
    command -v fail2ban-regex >/dev/null || { echo "fail2ban-regex is required (apt-get install fail2ban)" >&2; exit 1; }
fi
[[ -f "$F2B_FILTER" ]] || { echo "no $F2B_FILTER" >&2; exit 1; }

echo "== cargo build --release" >&2
cargo build --release >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/csirt"
[[ -x "$BIN" ]] || { echo "no binary at $BIN" >&2; exit 1; }
PROBE=(python3 "$ROOT/bench/ingest_probe.py")

TMP=$(mktemp -d /tmp/csirt-ingest.XXXXXX)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DAEMON_PIDS=()
SAMPLER_PIDS=()
PG_DB=""
cleanup() {
    local pid
    for pid in "${DAEMON_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n "$PG_DB" ]]; then
        psql -X -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >&2 || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "KEEP=1: kept $TMP (results *.json, daemon logs daemon-*.log, stores under sqlite-N/)" >&2
    else
        rm -rf -- "$TMP"
    fi
}
trap cleanup EXIT

# write_config NAME STORE_URL: the shape of config/csirt.example.toml, absolute paths into TMP/NAME.
write_config() {
    local dir="$TMP/$1"
    mkdir -p "$dir/logs"
    cat >"$dir/csirt.toml" <<EOF
timezone = "Asia/Tokyo"
playbooks = "$ROOT/playbooks"
log_level = "info"

[store]
url = "$2"

[[logs]]
paths = ["$dir/logs/*.log"]
start_at = "beginning"

$(bench_notify "$dir/outbox" 'update_interval = "15m"')
EOF
}

# start_daemon NAME: starts `csirt daemon` on TMP/NAME/csirt.toml (log in TMP/daemon-NAME.log), sets
# DAEMON_PID, and returns once its heartbeat is in the store.
start_daemon() {
    local cfg="$TMP/$1/csirt.toml" i
    "$BIN" --config "$cfg" daemon 2>"$TMP/daemon-$1.log" &
    DAEMON_PID=$!
    DAEMON_PIDS+=("$DAEMON_PID")
    # Its threads (TasksMax=) and memory (MemoryMax=) for deploy/csirt.service, until it exits.
    python3 "$ROOT/bench/task_peak.py" "$DAEMON_PID" "$TMP/tasks-$1.json" &
    SAMPLER_PIDS+=("$!")
    for ((i = 0; i < 300; i++)); do
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$TMP/daemon-$1.log" >&2; echo "daemon $1 exited" >&2; exit 1; }
        if { "$BIN" --config "$cfg" status --json 2>/dev/null || true; } |
            python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("daemons") else 1)' 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "no heartbeat from daemon $1 within 30 s" >&2
    exit 1
}

stop_daemon() {
    kill -TERM "$1"
    wait "$1" || echo "daemon $1 exited with status $?" >&2
}

LOG="$TMP/gen/auth.log"
TRUTH="$TMP/gen/auth.truth.json"
echo "== generating $LINES lines" >&2
python3 "$GEN" --lines "$LINES" --seed 42 --out "$LOG" >&2
FAILURES=$(python3 -c 'import json,sys; print(sum(json.load(open(sys.argv[1]))["failures_by_ip"].values()))' "$TRUTH")
LAT_IP=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["banned_sliding_600s"]; print(([i for i in b if ":" not in i] or b or [""])[0])' "$TRUTH")
[[ -n "$LAT_IP" ]] || { echo "the generated log has no banned address to time the latency on (LINES too small?)" >&2; exit 1; }
echo "== generating the spray of $ADDRESSES addresses" >&2
"${PROBE[@]}" spray --out "$TMP/spray.log" --addresses "$ADDRESSES" --meta "$TMP/spray.json"

# The two rules of playbooks/ssh-bruteforce.toml as one POSIX ERE (\d -> [0-9], (?:) -> ()).
GREP_RE='sshd\[[0-9]+\]: (Failed password for (invalid user )?.* from [0-9a-fA-F:.]+ port [0-9]+ ssh2|Invalid user .* from [0-9a-fA-F:.]+ port [0-9]+)$'
CFG1="$TMP/sqlite-1/csirt.toml"
write_config sqlite-1 "sqlite://$TMP/sqlite-1/csirt.db"

echo "== baselines: grep and dry run ($RUNS runs each), fail2ban-regex (1 run)" >&2
python3 - "$TMP/baselines.json" "$RUNS" "$BIN" "$CFG1" "$LOG" "$GREP_RE" "$F2B_FILTER" "$TRUTH" "$TMP/dry.json" <<'PY'
import json, os, re, subprocess, sys, time
out, runs, binary, cfg, log, grep_re, f2b_filter, truth_path, dry_path = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
truth = json.load(open(truth_path))
cmds = {
    "grep": (["grep", "-cE", grep_re, log], {"LC_ALL": "C"}),
    "dry": ([binary, "--config", cfg, "playbooks", "test", "ssh-bruteforce", log], {}),
}
times = {k: [] for k in cmds}
stdout = {}
for n in range(1 + runs):
    for name, (argv, env) in cmds.items():  # interleaved, so drift hits both alike
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})
        dt = time.perf_counter() - t0
        if p.returncode not in (0, 1) or (name == "dry" and p.returncode != 0):
            sys.exit(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode()[:500]}")
        stdout[name] = p.stdout.decode()
        if n >= 1:
            times[name].append(dt)
res = {"grep": {"seconds": times["grep"], "count": int(stdout["grep"].strip())},
       "dry": {"seconds": times["dry"], "output": stdout["dry"].splitlines()[:1]}}
t0 = time.perf_counter()
p = subprocess.run([binary, "--config", cfg, "playbooks", "test", "ssh-bruteforce", log, "--json"],
                   stdout=subprocess.PIPE, check=True)
dt = time.perf_counter() - t0
open(dry_path, "wb").write(p.stdout)
dry = json.loads(p.stdout)
keys = {i["dedupe_key"] for i in dry["incidents"]}
res["dry_json"] = {"seconds": dt, "matched": dry["matched"], "lines": dry["lines"], "incidents": len(keys),
                   "incidents_ok": keys == {f"ip={ip}" for ip in truth["banned_sliding_600s"]}}
tf = out + ".f2b-time"
with open(out + ".f2b-out", "w") as fo:
    subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf, "fail2ban-regex", log, f2b_filter],
                   stdout=fo, stderr=subprocess.STDOUT, check=True)
e, u, s, m = open(tf).read().split()[-4:]
summary = next((l.split("Lines:", 1)[1].strip() for l in open(out + ".f2b-out") if l.startswith("Lines:")), "?")
m2 = re.match(r"(\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", summary)
exp = truth["expected_fail2ban_regex"]
ok = bool(m2) and [int(x) for x in m2.groups()] == [truth["log"]["lines"], exp["ignored"], exp["matched"], exp["missed"]]
res["fail2ban"] = {"seconds": float(e), "cpu": float(u) + float(s), "maxrss_kb": int(m), "summary": summary, "summary_ok": ok}
json.dump(res, open(out, "w"), indent=1)
PY

# (1) whole pipeline on SQLite, PIPELINE_RUNS times; the last daemon stays up for (4) and (3).
for ((run = 1; run <= PIPELINE_RUNS; run++)); do
    name="sqlite-$run"
    [[ $run == 1 ]] || write_config "$name" "sqlite://$TMP/$name/csirt.db"
    echo "== pipeline run $run/$PIPELINE_RUNS (SQLite)" >&2
    start_daemon "$name"
    cp "$LOG" "$TMP/$name/logs/auth.log.partial"  # not matched by *.log; renamed into place below
    sleep 1
    # --idle 2: the daemon's CPU over 2 s with nothing to read, just before the rename.
    "${PROBE[@]}" ingest --db "sqlite://$TMP/$name/csirt.db" --src "$TMP/$name/logs/auth.log.partial" \
        --dst "$TMP/$name/logs/auth.log" --mode rename --expect "$FAILURES" --pid "$DAEMON_PID" --idle 2 \
        --out "$TMP/ingest-sqlite-$run.json"
    "${PROBE[@]}" verify --db "sqlite://$TMP/$name/csirt.db" --truth "$TRUTH" --dry "$TMP/dry.json" \
        --out "$TMP/verify-sqlite-$run.json"
    if ((run < PIPELINE_RUNS)); then
        stop_daemon "$DAEMON_PID"
        rm -f -- "$TMP/$name/logs/auth.log"
    fi
done
LAST="sqlite-$PIPELINE_RUNS"
LAST_DB="sqlite://$TMP/$LAST/csirt.db"

echo "== latency: $LAT_N lines for $LAT_IP at 10/s" >&2
"${PROBE[@]}" latency --db "$LAST_DB" --log "$TMP/$LAST/logs/auth.log" --ip "$LAT_IP" --n "$LAT_N" --rate 10 \
    --out "$TMP/latency-sqlite.json"

echo "== memory: $ADDRESSES addresses below threshold" >&2
status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$DAEMON_PID/status"; }
HWM_BEFORE=$(status_kb VmHWM)
RSS_BEFORE=$(status_kb VmRSS)
RESET=0
if echo 5 >"/proc/$DAEMON_PID/clear_refs" 2>/dev/null; then RESET=1; fi
SPRAY_LINES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lines"])' "$TMP/spray.json")
SIZE_BEFORE=$(stat -c %s "$TMP/$LAST/logs/auth.log")
SIZE_AFTER=$((SIZE_BEFORE + $(stat -c %s "$TMP/spray.log")))
"${PROBE[@]}" ingest --db "$LAST_DB" --src "$TMP/spray.log" --dst "$TMP/$LAST/logs/auth.log" --mode append \
    --expect "$SPRAY_LINES" --delta --until-size "$SIZE_AFTER" --size-base "$SIZE_BEFORE" --pid "$DAEMON_PID" \
    --out "$TMP/ingest-spray.json"
"${PROBE[@]}" spray-check --db "$LAST_DB" --out "$TMP/spray-check.json"
HWM_PHASE=$(status_kb VmHWM)
RSS_END=$(status_kb VmRSS)
stop_daemon "$DAEMON_PID"
cat >"$TMP/memory.json" <<EOF
{"hwm_before_kb": $HWM_BEFORE, "rss_before_kb": $RSS_BEFORE, "reset": $RESET, "hwm_phase_kb": $HWM_PHASE, "rss_end_kb": $RSS_END}
EOF

# PostgreSQL: (1) and (4) again on a fresh database.
PG_NOTE=""
if [[ "$PG" != 0 ]]; then
    if command -v psql >/dev/null && psql -X -q -A -t "$PG_URL/postgres" -c "SELECT 1" >/dev/null 2>&1; then
        PG_DB="csirt_bench_$$"
        psql -X -q "$PG_URL/postgres" -c "CREATE DATABASE $PG_DB" >&2
        PG_STORE="$PG_URL/$PG_DB"
        write_config pg "$PG_STORE"
        echo "== pipeline run (PostgreSQL $PG_DB)" >&2
        start_daemon pg
        cp "$LOG" "$TMP/pg/logs/auth.log.partial"
        sleep 1
        "${PROBE[@]}" ingest --db "$PG_STORE" --src "$TMP/pg/logs/auth.log.partial" --dst "$TMP/pg/logs/auth.log" \
            --mode rename --expect "$FAILURES" --pid "$DAEMON_PID" --idle 2 --out "$TMP/ingest-pg.json"
        "${PROBE[@]}" verify --db "$PG_STORE" --truth "$TRUTH" --dry "$TMP/dry.json" --out "$TMP/verify-pg.json"
        echo "== latency (PostgreSQL)" >&2
        "${PROBE[@]}" latency --db "$PG_STORE" --log "$TMP/pg/logs/auth.log" --ip "$LAT_IP" --n "$LAT_N" --rate 10 \
            --out "$TMP/latency-pg.json"
        stop_daemon "$DAEMON_PID"
    elif [[ "$PG" == 1 ]]; then
        echo "PG=1 but no PostgreSQL answers at $PG_URL" >&2
        exit 1
    else
        PG_NOTE="skipped: no server answers at $PG_URL (PG=auto)"
    fi
fi

# Daemon logs: WARN and ERROR lines are worth a look.
python3 - "$TMP" "$TMP/daemon-log.json" <<'PY'
import glob, json, os, sys
res = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "daemon-*.log"))):
    lines = open(path, errors="replace").read().splitlines()
    bad = [l for l in lines if " WARN " in l or " ERROR " in l]
    res[os.path.basename(path)] = {"lines": len(lines), "warn": sum(" WARN " in l for l in bad),
                                   "error": sum(" ERROR " in l for l in bad), "examples": bad[:5]}
json.dump(res, open(sys.argv[2], "w"), indent=1)
PY

GIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
if [[ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock migrations playbooks 2>/dev/null)" ]]; then
    GIT="$GIT + uncommitted changes"
fi
BIN="$BIN" GIT="$GIT" GEN="$GEN" LOG="$LOG" CFG1="$CFG1" GREP_RE="$GREP_RE" F2B_FILTER="$F2B_FILTER" \
TMP="$TMP" PG_NOTE="$PG_NOTE" LAT_IP="$LAT_IP" \
LOAD_START="$LOAD_START" LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)" \
SETTINGS="LINES=$LINES PIPELINE_RUNS=$PIPELINE_RUNS RUNS=$RUNS ADDRESSES=$ADDRESSES LAT_N=$LAT_N PG=$PG" \
python3 - "$TMP/env.json" <<'PY'
import json, os, platform, shlex, subprocess, sys
e, q = os.environ, shlex.quote
f2b = subprocess.run(["fail2ban-regex", "--version"], capture_output=True, text=True).stdout.strip().splitlines()
grep = subprocess.run(["grep", "--version"], capture_output=True, text=True).stdout.splitlines()
s = dict(kv.split("=", 1) for kv in e["SETTINGS"].split())
env = {
    "version": subprocess.run([e["BIN"], "--version"], capture_output=True, text=True).stdout.strip(),
    "bin": e["BIN"], "git": e["GIT"], "host": platform.node() + " " + platform.machine(), "cpus": os.cpu_count(),
    "kernel": platform.release(), "f2b_version": (f2b or ["fail2ban-regex ?"])[0], "grep_version": (grep or ["grep ?"])[0],
    "pipeline_runs": int(s["PIPELINE_RUNS"]), "pg_note": e["PG_NOTE"],
    "load": f"{e['LOAD_START']} at the start, {e['LOAD_END']} at the end",
    "commands": [
        e["SETTINGS"] + " bash bench/ingest.sh",
        f"python3 {q(e['GEN'])} --lines {s['LINES']} --seed 42 --out {q(e['LOG'])}",
        f"/usr/bin/time -f '%e %U %S %M' fail2ban-regex {q(e['LOG'])} {e['F2B_FILTER']}",
        f"LC_ALL=C grep -cE {q(e['GREP_RE'])} {q(e['LOG'])}",
        f"{q(e['BIN'])} --config {q(e['CFG1'])} playbooks test ssh-bruteforce {q(e['LOG'])}   (and once more with --json)",
        f"{q(e['BIN'])} --config TMP/sqlite-N/csirt.toml daemon   "
        "([[logs]] paths = [\"TMP/sqlite-N/logs/*.log\"], start_at = \"beginning\", store sqlite://TMP/sqlite-N/csirt.db)",
        "mv TMP/sqlite-N/logs/auth.log.partial TMP/sqlite-N/logs/auth.log   (os.rename in bench/ingest_probe.py ingest), then every 20 ms:",
        "  SELECT COALESCE(SUM(hits), 0) FROM hit_counts WHERE playbook = 'ssh-bruteforce'   (python3 sqlite3, file:DB?mode=ro)",
        f"python3 bench/ingest_probe.py latency --ip {e['LAT_IP']} --n {s['LAT_N']} --rate 10   "
        "(one write(2) per line, then SELECT event_count FROM incidents WHERE id = ? every 2 ms)",
        f"python3 bench/ingest_probe.py spray --addresses {s['ADDRESSES']} --seed 7, appended in one write(2); "
        "echo 5 > /proc/PID/clear_refs before, VmHWM from /proc/PID/status after",
        "TMP = " + e["TMP"] + ("" if e.get("KEEP", "0") == "1" else " (removed at exit; KEEP=1 keeps it)"),
    ],
}
json.dump(env, open(sys.argv[1], "w"), indent=1)
PY

"${PROBE[@]}" report --dir "$TMP"
# The task samplers end with their daemons; one still running is stopped (it prints then).
kill -TERM "${SAMPLER_PIDS[@]}" 2>/dev/null || true
wait "${SAMPLER_PIDS[@]}" 2>/dev/null || true
python3 - "$TMP" <<'PY'
import glob, json, sys
runs = {p.split("tasks-")[1][:-5]: json.load(open(p)) for p in sorted(glob.glob(sys.argv[1] + "/tasks-*.json"))}
worst = max(runs.values(), key=lambda t: t["tasks"])
print("tasks    at most %d threads (daemon + children), %.1f MiB resident, over the daemons %s "
      "(bench/task_peak.py every 10 ms; for deploy/csirt.service TasksMax=/MemoryMax=)"
      % (worst["tasks"], max(t["rss_kb"] for t in runs.values()) / 1024, ", ".join(runs)))
PY

#!/usr/bin/env bash
# What the city's playbook set costs: `csirt playbooks test` (the matcher and correlation the
# daemon runs, nothing stored) over the generator's 1,000,000-line auth.log and 1,000,000 nginx
# access-log lines, each playbook alone against the whole set (`all`, which applies each rule to
# the files its `files` globs name, as the daemon does). Median of RUNS runs each.
# Target: the whole set sustains more than half the lines/s of the single SSH playbook.
#
#   bash bench/playbooks.sh            (RUNS=3 LINES=1000000)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
LINES=${LINES:-1000000}
cargo build --release >&2
BIN="$ROOT/target/release/csirt"
TMP=$(mktemp -d /tmp/csirt-playbooks.XXXXXX)
trap 'rm -rf -- "$TMP"' EXIT
python3 ../shared/bench/gen_authlog.py --lines "$LINES" --seed 42 --out "$TMP/auth.log" >/dev/null
python3 bench/access_log.py --lines "$LINES" --seed 42 --out "$TMP/access.log"
python3 - "$BIN" "$ROOT/config/csirt.example.toml" "$TMP" "$RUNS" <<'PY'
import json, statistics, subprocess, sys, time
binary, config, tmp, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
files = [tmp + "/auth.log", tmp + "/access.log"]
ids = [p["id"] for p in json.loads(subprocess.run([binary, "--config", config, "playbooks", "list", "--json"], capture_output=True, check=True).stdout)]
def run(pid):
    """Median seconds over both files, and the matched lines."""
    times, matched = [], 0
    for _ in range(runs):
        t0, m = time.perf_counter(), 0
        for f in files:
            out = subprocess.run([binary, "--config", config, "playbooks", "test", pid, f, "--json"], capture_output=True, check=True).stdout
            m += json.loads(out)["matched"]
        times.append(time.perf_counter() - t0)
        matched = m
    return statistics.median(times), matched
lines = sum(sum(1 for _ in open(f, "rb")) for f in files)
results = {pid: run(pid) for pid in ids}
whole = run("all")
ssh = results["ssh-bruteforce"]
print("csirt playbook set throughput (%s, %d lines: %d auth.log + %d access.log; median of %d; 2-core shared VM)" % (
    subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(), lines, lines // 2, lines // 2, runs))
print("%-16s %8s %12s %9s" % ("playbook", "seconds", "lines/s", "matched"))
for pid in ids:
    s, m = results[pid]
    print("%-16s %8.3f %12s %9d" % (pid, s, format(int(lines / s), ","), m))
s, m = whole
print("%-16s %8.3f %12s %9d" % ("all (the set)", s, format(int(lines / s), ","), m))
ratio = (lines / s) / (lines / ssh[0])
print("the whole set sustains %.2f of the single ssh-bruteforce playbook's lines/s: %s (target > 0.5)" % (ratio, "MET" if ratio > 0.5 else "NOT MET"))
print("command: RUNS=%d LINES=%d bash bench/playbooks.sh" % (runs, lines // 2))
PY

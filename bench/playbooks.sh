#!/usr/bin/env bash
# What the city's playbook set costs: `csirt playbooks test` (the matcher and correlation the
# daemon runs, nothing stored) over the generator's 1,000,000-line auth.log and 1,000,000 nginx
# access-log lines, each playbook alone against the whole set (`all`, which applies each rule to
# the files its `files` globs name, as the daemon does). Median of RUNS runs each.
# Target (#11): the whole set sustains at least 0.8 of the lines/s of the single SSH playbook.
#
#   bash bench/playbooks.sh            (RUNS=3 LINES=1000000)
#   INSTRUCTIONS=1 bash bench/playbooks.sh
#                                      (instructions counted by valgrind's callgrind instead of
#                                       seconds: one run, the same figure on a busy machine)
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
python3 - "$BIN" "$ROOT/config/csirt.example.toml" "$TMP" "$RUNS" "${INSTRUCTIONS:-0}" <<'PY'
import json, re, statistics, subprocess, sys, time
binary, config, tmp, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
instructions = sys.argv[5] == "1"
if instructions:
    runs = 1
files = [tmp + "/auth.log", tmp + "/access.log"]
ids = [p["id"] for p in json.loads(subprocess.run([binary, "--config", config, "playbooks", "list", "--json"], capture_output=True, check=True).stdout)]
def run(pid):
    """Median seconds over both files, and the matched lines."""
    times, matched = [], 0
    for _ in range(runs):
        t0, m, counted = time.perf_counter(), 0, 0
        for f in files:
            command = [binary, "--config", config, "playbooks", "test", pid, f, "--json"]
            if instructions:
                command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + command
            done = subprocess.run(command, capture_output=True, check=True)
            m += json.loads(done.stdout)["matched"]
            if instructions:
                counted += int(re.search(rb"Collected : (\d+)", done.stderr).group(1))
        # With INSTRUCTIONS=1 the "seconds" are billions of instructions.
        times.append(counted / 1e9 if instructions else time.perf_counter() - t0)
        matched = m
    return statistics.median(times), matched
lines = sum(sum(1 for _ in open(f, "rb")) for f in files)
results = {pid: run(pid) for pid in ids}
whole = run("all")
ssh = results["ssh-bruteforce"]
print("csirt playbook set throughput (%s, %d lines: %d auth.log + %d access.log; median of %d; 2-core shared VM)" % (
    subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(), lines, lines // 2, lines // 2, runs))
print("%-16s %8s %12s %9s" % ("playbook", "G instr" if instructions else "seconds", "lines/G" if instructions else "lines/s", "matched"))
for pid in ids:
    s, m = results[pid]
    print("%-16s %8.3f %12s %9d" % (pid, s, format(int(lines / s), ","), m))
s, m = whole
print("%-16s %8.3f %12s %9d" % ("all (the set)", s, format(int(lines / s), ","), m))
ratio = (lines / s) / (lines / ssh[0])
print("the whole set sustains %.2f of the single ssh-bruteforce playbook's lines/s: %s (target >= 0.8, #11)" % (ratio, "MET" if ratio >= 0.8 else "NOT MET"))
print("command: %sRUNS=%d LINES=%d bash bench/playbooks.sh" % ("INSTRUCTIONS=1 " if instructions else "", runs, lines // 2))
PY

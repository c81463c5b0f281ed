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
# and prints the median and the slowest wall time, the peak RSS (GNU time, when installed) and
# the size of the output. Figures only; nothing is asserted on time (the issue's target: under
# 2 s on SQLite with a million incidents).
#
# Usage (from the repository root):  bash bench/report.sh
# Environment:  INCIDENTS=100000   RUNS=5   KEEP=1 (keep the temp dir and the reports)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
INCIDENTS=${INCIDENTS:-100000}
RUNS=${RUNS:-5}
[[ "$INCIDENTS" =~ ^[1-9][0-9]*$ ]] || { echo "INCIDENTS must be a positive integer" >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

echo "== cargo build --release" >&2
cargo build --release >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/csirt"

TMP=$(mktemp -d /tmp/csirt-report-bench.XXXXXX)
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then echo "KEEP=1: kept $TMP" >&2; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT
mkdir -m 0770 "$TMP/var"
cat >"$TMP/csirt.toml" <<CFG
timezone = "Asia/Tokyo"
playbooks = "$ROOT/playbooks"

[store]
url = "sqlite://$TMP/var/csirt.db"

[notify]
to = ["duty"]
from = "csirt@example.jp"
transport = "file"
dir = "$TMP/mail"

[contacts]
duty = ["duty@example.jp"]
lead = ["lead@example.jp"]
tokatsu = ["tokatsu@example.jp"]
ciso = ["ciso@example.jp"]
CFG

"$BIN" --config "$TMP/csirt.toml" db migrate >&2
echo "== seeding $INCIDENTS incidents" >&2
python3 bench/seed_incidents.py --db "$TMP/var/csirt.db" --count "$INCIDENTS" \
    --show-id 1 --first-events >&2

python3 - "$BIN" "$TMP" "$RUNS" <<'PY'
import os, shutil, statistics, subprocess, sys, time

binary, tmp, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
gnu_time = shutil.which("time") if os.path.exists("/usr/bin/time") else None
config = os.path.join(tmp, "csirt.toml")
print(f"csirt report --fiscal-year 2026 on {binary}, SQLite, {runs} runs after 1 warm-up")
for fmt in ("html", "json"):
    out = os.path.join(tmp, f"report.{fmt}")
    cmd = [binary, "--config", config, "report", "--fiscal-year", "2026", "--format", fmt, "--out", out]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
    rss = ""
    if os.path.exists("/usr/bin/time"):
        r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        rss = f", peak RSS {int(r.stderr.strip().splitlines()[-1]) / 1024:.1f} MiB"
    print(f"  --format {fmt}: median {statistics.median(walls):.3f} s, slowest {max(walls):.3f} s"
          f"{rss}, output {os.path.getsize(out) / 1024:.0f} KiB")
PY

#!/usr/bin/env bash
# What the daemon's recompute of the personal-information incidents costs at every start and
# SIGHUP (#16): `csirt incidents pii --recompute-all` on a SQLite store of INCIDENTS incidents,
# PII of them with recorded facts (bench/seed_incidents.py, then facts inserted as csirt stores
# them: persons 1-1000, so about 9 in 10 require a report to 個人情報保護委員会; 覚知 within the
# last 20 days).
#
# Measured, each over RUNS runs (process wall time, python3 perf_counter around subprocess.run):
#   (a) first   --recompute-all on the store as seeded: every incident's clocks computed and
#               written with its timeline entry, and every required report raised and its CISO
#               mail written (the worst case: a rules edit that moves every clock); the store is
#               copied back from the seeded one before each run
#   (b) again   --recompute-all once nothing differs (what a start or a reload costs when the
#               rules did not change)
#   (c) list    csirt incidents list (the baseline: a command that opens the store and reads)
# Reports the median (ms) of each and the ratios (a)/(c) and (b)/(c).
#
# Usage (from the repository root):  bash bench/pii_recompute.sh
# Environment: RUNS=5, INCIDENTS=20000, PII=1000, KEEP=1 (keep the temp dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
cd "$ROOT"
RUNS=${RUNS:-5}
INCIDENTS=${INCIDENTS:-20000}
PII=${PII:-1000}
for v in RUNS INCIDENTS PII; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
(( PII <= INCIDENTS )) || { echo "PII must not exceed INCIDENTS" >&2; exit 2; }

echo "== cargo build --release" >&2
cargo build --release >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/csirt"

TMP=$(mktemp -d /tmp/csirt-bench-pii.XXXXXX)
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then echo "KEEP=1: kept $TMP" >&2; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT
CFG="$TMP/csirt.toml"
DB="$TMP/csirt.db"
cat >"$CFG" <<EOF
timezone = "Asia/Tokyo"
playbooks = "$ROOT/playbooks"
pii_rules = "$ROOT/config/pii-rules.toml"

[store]
url = "sqlite://$DB"

$(bench_notify "$TMP/outbox")
EOF

"$BIN" --config "$CFG" db migrate >&2
END=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) - d.timedelta(hours=1)).replace(tzinfo=None).isoformat(timespec="seconds"))')
python3 "$ROOT/bench/seed_incidents.py" --db "$DB" --count "$INCIDENTS" --show-id 1 --end "$END" >&2
python3 - "$DB" "$PII" <<'PY'
import datetime as dt, random, sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(16)
c = sqlite3.connect(db)
ids = [r[0] for r in c.execute("SELECT id FROM incidents ORDER BY id DESC LIMIT ?", (n,))]
now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
def ts(t): return t.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
rows = [(i, rng.randint(1, 1000), ts(now - dt.timedelta(minutes=rng.randint(60, 20 * 1440))), ts(now))
        for i in ids]
c.executemany("INSERT INTO pii_facts (incident_id, persons, aware_at, updated_at) VALUES (?, ?, ?, ?)", rows)
c.commit()
print(f"{len(rows)} incidents given facts", file=sys.stderr)
PY
cp "$DB" "$TMP/seeded.db"

python3 - "$BIN" "$CFG" "$DB" "$TMP/seeded.db" "$RUNS" <<'PY'
import json, shutil, statistics, subprocess, sys, time
binary, cfg, db, seeded, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def run(args):
    t0 = time.perf_counter()
    p = subprocess.run([binary, "--config", cfg, *args], capture_output=True, text=True)
    t = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        sys.exit(f"{args} exited {p.returncode}: {p.stderr}")
    return t, p.stdout
times = {"first": [], "again": [], "list": []}
for _ in range(runs):
    for suffix in ("", "-wal", "-shm"):
        try:
            shutil.copy(seeded + suffix, db + suffix)
        except FileNotFoundError:
            subprocess.run(["rm", "-f", db + suffix])
    t, out = run(["incidents", "pii", "--recompute-all", "--json"])
    first = json.loads(out)
    times["first"].append(t)
    t, out = run(["incidents", "pii", "--recompute-all", "--json"])
    again = json.loads(out)
    times["again"].append(t)
    times["list"].append(run(["incidents", "list"])[0])
assert first["changed"] and not again["changed"], (len(first["changed"]), again["changed"])
med = {k: statistics.median(v) for k, v in times.items()}
print(f"incidents with facts: {first['incidents']}; first run recomputed {len(first['changed'])}, "
      f"raised and announced {len(first['escalated'])}; second run changed {len(again['changed'])}")
for k, label in (("first", "(a) first --recompute-all"), ("again", "(b) --recompute-all, nothing differs"),
                 ("list", "(c) incidents list (baseline)")):
    print(f"{label:40s} median {med[k]:9.1f} ms  (runs: {', '.join(f'{x:.0f}' for x in times[k])})")
print(f"ratio (a)/(c) {med['first'] / med['list']:.1f}   (b)/(c) {med['again'] / med['list']:.1f}")
PY

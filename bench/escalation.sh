#!/usr/bin/env bash
# One escalator pass with 100,000 open incidents in SQLite (#12, item 2).
#
# Builds examples/escalation_bench.rs (release unless PROFILE=dev), creates a store in a temp dir
# with the repository's playbooks, seeds INCIDENTS open, unacknowledged, already mailed
# ssh-bruteforce incidents (one INSERT … SELECT), opens a ransomware incident (critical, first
# level after 10 min) among them, and times Store::escalate — the daemon's pass — in-process with
# the clock passed in:
#   first pass   after a start or reload, when every open incident is looked at once
#   idle pass    29 passes 10 s apart with nothing due (the daemon's steady state)
#   due pass     at opened + 10 min: the critical incident must escalate in it
# Target: a pass < 100 ms with 100,000 open, and the critical incident escalates on time (the
# example exits 1 if it does not). Figures only; nothing is asserted on time.
#
# Usage (from the repository root):  bash bench/escalation.sh
# Environment:  INCIDENTS=100000   PROFILE=release|dev   KEEP=1 (keep the temp dir)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
INCIDENTS=${INCIDENTS:-100000}
PROFILE=${PROFILE:-release}
[[ "$INCIDENTS" =~ ^[1-9][0-9]*$ ]] || { echo "INCIDENTS must be a positive integer" >&2; exit 2; }
case "$PROFILE" in
    release) FLAG=(--release); DIR=release ;;
    dev) FLAG=(); DIR=debug ;;
    *) echo "PROFILE must be release or dev" >&2; exit 2 ;;
esac

echo "== cargo build ${FLAG[*]} --example escalation_bench" >&2
cargo build "${FLAG[@]}" --example escalation_bench >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$DIR/examples/escalation_bench"

TMP=$(mktemp -d /tmp/csirt-escalation-bench.XXXXXX)
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
from = "csirt@city.kitakami.example.jp"
transport = "file"
dir = "$TMP/outbox"
update_interval = "15m"

[contacts]
duty = ["csirt-duty@city.kitakami.example.jp"]
lead = ["johoseisaku-lead@city.kitakami.example.jp"]
ciso = ["ciso@city.kitakami.example.jp"]
tokatsu = ["tokatsu@city.kitakami.example.jp"]
CFG

echo "escalation pass benchmark, $(date '+%Y-%m-%d %H:%M %z'), $(uname -m), $(nproc) CPUs, profile $PROFILE"
echo "store       SQLite in $TMP (warm page cache)"
"$BIN" "$TMP/csirt.toml" "$INCIDENTS"

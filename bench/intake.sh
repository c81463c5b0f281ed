#!/usr/bin/env bash
# Mail intake: messages per second from Maildir new/ to committed, for a mix of 10 KB Japanese
# text mails and forwarded reports with attachments (bench/intake_corpus.py), on SQLite, with
# Python's email package parsing the same files as the baseline in the same run; and the
# daemon's peak RSS while it takes one 25 MiB message.
#
#   bash bench/intake.sh                 COUNT=2000 by default
# Targets: at least 500 messages/s; peak RSS under 128 MiB with a 25 MiB message.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
cd "$ROOT"
COUNT=${COUNT:-2000}
PY=/usr/bin/python3
echo "== cargo build --release" >&2
cargo build --release >&2
BIN="$ROOT/target/release/csirt"
TMP=$(mktemp -d /tmp/csirt-intake.XXXXXX)
PID=""
cleanup() { [[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf -- "$TMP"; }
trap cleanup EXIT

BYTES=$("$PY" bench/intake_corpus.py --out "$TMP/stage" --count "$COUNT")
BIG_BYTES=$("$PY" bench/intake_corpus.py --big "$TMP/big.eml")

config() {  # config NAME: a daemon on TMP/NAME
    mkdir -p "$TMP/$1/Maildir/new" "$TMP/$1/Maildir/cur" "$TMP/$1/Maildir/tmp"
    cat >"$TMP/$1/csirt.toml" <<TOML
playbooks = "$ROOT/playbooks"
[store]
url = "sqlite://$TMP/$1/csirt.db"
[intake]
maildir = "$TMP/$1/Maildir"
$(bench_notify "$TMP/$1/outbox")
TOML
}
start() {  # start NAME: the daemon, returning once it is ready
    "$BIN" --config "$TMP/$1/csirt.toml" daemon 2>"$TMP/$1/daemon.log" &
    PID=$!
    # Its threads (TasksMax=) and memory (MemoryMax=) for deploy/csirt.service, until it exits.
    "$PY" bench/task_peak.py "$PID" "$TMP/$1/tasks.json" &
    SAMPLER=$!
    for _ in $(seq 1 100); do grep -q " ready" "$TMP/$1/daemon.log" 2>/dev/null && return 0; sleep 0.1; done
    cat "$TMP/$1/daemon.log" >&2; echo "daemon not ready" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=""; wait "$SAMPLER" || true; }
tasks() { "$PY" -c 'import json,sys; t=json.load(open(sys.argv[1])); print("%d tasks, %.1f MiB resident at most (%d samples)" % (t["tasks"], t["rss_kb"] / 1024, t["samples"]))' "$TMP/$1/tasks.json"; }
count_mails() { "$PY" -c 'import sqlite3,sys; print(sqlite3.connect("file:"+sys.argv[1]+"?mode=ro", uri=True).execute("select count(*) from mails").fetchone()[0])' "$1"; }

echo "== baseline: Python's email package parses the $COUNT messages" >&2
BASE=$("$PY" - "$TMP/stage" <<'PY'
import email, os, sys, time
from email import policy
d = sys.argv[1]
t0 = time.perf_counter()
for name in sorted(os.listdir(d)):
    with open(os.path.join(d, name), "rb") as f:
        m = email.message_from_binary_file(f, policy=policy.default)
    str(m["Subject"]); b = m.get_body(("plain",))
    b.get_content() if b else None
    for part in m.walk():
        part.get_payload(decode=True)
print("%.3f" % (time.perf_counter() - t0))
PY
)

echo "== throughput: $COUNT messages into new/" >&2
config run
start run
T0=$(date +%s.%N)
# One process renames them all (2,000 mv processes would take longer than the daemon).
"$PY" -c 'import os,sys; [os.rename(os.path.join(sys.argv[1], f), os.path.join(sys.argv[2], f)) for f in sorted(os.listdir(sys.argv[1]))]' "$TMP/stage" "$TMP/run/Maildir/new"
while :; do
    n=$(count_mails "$TMP/run/csirt.db")
    [[ "$n" -ge "$COUNT" ]] && [[ -z "$(ls -A "$TMP/run/Maildir/new")" ]] && break
    sleep 0.05
done
T1=$(date +%s.%N)
CPU=$(awk '{print ($14+$15)/100}' "/proc/$PID/stat")
stop
INCIDENTS=$("$PY" -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute("select count(*) from incidents").fetchone()[0], c.execute("select count(*) from incidents where playbook=\"phishing-report\"").fetchone()[0])' "$TMP/run/csirt.db")

echo "== 25 MiB message: peak RSS" >&2
config big
start big
echo 5 >"/proc/$PID/clear_refs" 2>/dev/null || true
HWM_BEFORE=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
mv "$TMP/big.eml" "$TMP/big/Maildir/new/1764039999.big.bench"
until [[ "$(count_mails "$TMP/big/csirt.db")" -ge 1 ]] && [[ -z "$(ls -A "$TMP/big/Maildir/new")" ]]; do sleep 0.05; done
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
stop

"$PY" - <<PY
count, total, big = $COUNT, $BYTES, $BIG_BYTES
wall = $T1 - $T0
base = $BASE
print("csirt mail intake benchmark (%s, 2-core shared VM; page cache warm)" % "$(git rev-parse --short HEAD)")
print("mix      %d messages, %.1f MiB: 70%% ~10 KB Japanese text (UTF-8 / ISO-2022-JP / Shift_JIS), 30%% forwarded reports of 20 campaigns with 40 KB attachments" % (count, total / 2**20))
print("csirt    %.3f s from the first rename into new/ to the last commit: %.0f messages/s (daemon CPU %.2f s); incidents opened: %s (text, reports)" % (wall, count / wall, $CPU, "$INCIDENTS"))
print("baseline Python email package, parse + subject + body + every part decoded: %.3f s = %.0f messages/s" % (base, count / base))
print("ratio    csirt committed %.1fx the messages/s Python's parser only parses" % ((count / wall) / (count / base)))
print("target   >= 500 messages/s: %s" % ("MET" if count / wall >= 500 else "NOT MET"))
print("big      one %.1f MiB message: daemon peak RSS %.1f MiB (VmHWM; %.1f MiB before it): %s" % (big / 2**20, $HWM / 1024, $HWM_BEFORE / 1024, "MET (< 128 MiB)" if $HWM < 128 * 1024 else "NOT MET"))
print("tasks    %s: $(tasks run) while taking the %d messages; $(tasks big) with the big one (bench/task_peak.py: threads of the daemon and its children every 10 ms)" % ("deploy/csirt.service TasksMax=/MemoryMax=", count))
print("command  COUNT=%d bash bench/intake.sh" % count)
PY

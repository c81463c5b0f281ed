#!/usr/bin/env bash
# Mail intake under hostile shapes: peak RSS of one `csirt intake` process (the MTA pipe path)
# per message, each message just under the default max_size of 25 MiB (bench/intake_hostile.py):
# 5.2 million empty parts, multipart and message/rfc822 nesting as deep as the size allows,
# a forward carrying 300,000 Received headers, one 25 MiB header, a base64 body of 18 MiB.
# Also prints the exit status (0 stored, 65 quarantined), the incident's fields size and the
# largest notification, which must stay small whatever the mail carried.
#
#   bash bench/intake_hostile.sh            builds and uses target/release/csirt
#   BIN=target/debug/csirt bash bench/intake_hostile.sh
# Target: peak RSS <= 128 MiB for every shape.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
cd "$ROOT"
PY=/usr/bin/python3
if [[ -z "${BIN:-}" ]]; then
    echo "== cargo build --release" >&2
    cargo build --release >&2
    BIN="$ROOT/target/release/csirt"
fi
TMP=$(mktemp -d /tmp/csirt-hostile.XXXXXX)
trap 'rm -rf -- "$TMP"' EXIT
"$PY" bench/intake_hostile.py "$TMP/mail" >"$TMP/shapes"

mkdir -p "$TMP/outbox"
cat >"$TMP/csirt.toml" <<TOML
playbooks = "$ROOT/playbooks"
[store]
url = "sqlite://$TMP/csirt.db"
$(bench_notify "$TMP/outbox")
TOML
"$BIN" --config "$TMP/csirt.toml" db migrate >/dev/null

echo "csirt intake under hostile mail ($(git rev-parse --short HEAD), $(basename "$BIN") build, 2-core shared VM)"
printf '%-15s %9s %6s %12s  %s\n' shape "MiB" exit "peak RSS" "outcome"
worst=0
while read -r shape; do
    file="$TMP/mail/$shape.eml"
    set +e
    /usr/bin/time -f '%M' -o "$TMP/rss" "$BIN" --config "$TMP/csirt.toml" intake <"$file" 2>"$TMP/err"
    code=$?
    set -e
    rss=$(tail -n 1 "$TMP/rss")
    (( rss > worst )) && worst=$rss
    outcome=$(grep -v '^Command exited' "$TMP/err" | tail -n 1 | cut -c1-90)
    printf '%-15s %9.1f %6s %8.1f MiB  %s\n' "$shape" "$(stat -c %s "$file" | awk '{print $1/1048576}')" "$code" "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$outcome"
done <"$TMP/shapes"
"$PY" - "$TMP/csirt.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
f = c.execute("select coalesce(max(length(fields)), 0) from incidents").fetchone()[0]
n = c.execute("select coalesce(max(length(body)), 0) from outbox").fetchone()[0]
print("largest    incident fields %d bytes, notification body %d bytes" % (f, n))
PY
awk -v w="$worst" 'BEGIN{printf "target     peak RSS <= 128 MiB for every shape: %s (worst %.1f MiB)\n", (w <= 131072 ? "MET" : "NOT MET"), w/1024}'
if [[ "$BIN" == "$ROOT/target/release/csirt" ]]; then echo "command    bash bench/intake_hostile.sh"; else echo "command    BIN=${BIN#"$ROOT"/} bash bench/intake_hostile.sh"; fi

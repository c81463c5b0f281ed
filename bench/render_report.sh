#!/usr/bin/env bash
# Renders `csirt report` HTML the way a reader prints it (#15): headless Chromium to an A4 PDF
# and PNGs, then checks what a secretariat member would see on paper.
#
# Builds csirt (debug: speed does not matter here), creates a store in a temp dir with the real
# binary (`db migrate`), seeds a known history: bench/seed_incidents.py's fixed seed (INCIDENTS
# incidents over the year before 2026-09-30, so fiscal 2026 is compared with part of fiscal
# 2025), plus four mail-misdelivery incidents whose personal-information facts and reports go in
# through `csirt incidents pii` / `reported` (#16), so the statutory deadlines have met, missed
# and running clocks. Every deadline but the 速やかに ones has passed on any day after
# 2026-11-30, and the seeding ends before that: the report, hence the page count, is the same
# on every run from then on. Then:
#   csirt report --fiscal-year 2026 --format html --out report.html
#   chromium --headless --no-sandbox --print-to-pdf=report.pdf report.html   (A4: the print CSS)
#   chromium --headless --no-sandbox --screenshot --window-size=412,… (a phone's width)
# and checks, failing (exit 1) on any:
#   - pdfinfo: the page count is EXPECTED_PAGES and the page size A4;
#   - pdffonts: every font embedded with a Unicode map; the PDF's font descriptors name a CJK
#     font (Chromium's Skia embeds CFF-outline OpenType such as Noto CJK as Type 3 fonts, which
#     pdffonts lists as "[none]": the name is read from the descriptor instead);
#   - no missing-glyph box: every character of the HTML's text is covered by an installed font
#     (fontconfig's charsets), since Chromium draws a box for one that no font has and the PDF's
#     text layer does not always keep it; pdftotext holds no U+FFFD;
#   - pdftotext holds the title, the fiscal year's label and every section's heading.
# Prints the figures (times, sizes, pages, fonts). The PNG of page 1 at 72 dpi is what
# docs/report-page1.png shows (OUT_PNG=docs/report-page1.png writes it there); page 2, the first
# charts, is docs/report-page2.png (OUT_CHART_PNG=docs/report-page2.png).
#
# Usage (from the repository root):  bash bench/render_report.sh
# Environment:  INCIDENTS=3000  EXPECTED_PAGES=…  KEEP=1 (keep the temp dir)  OUT_PNG=PATH
#               OUT_CHART_PNG=PATH
#               CHROMIUM=chromium
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
cd "$ROOT"
INCIDENTS=${INCIDENTS:-3000}
# Counted on Debian 12 (Chromium 156, fonts-noto-cjk 1:20220127) for the default INCIDENTS;
# another count gives another report, whose pages are checked only when EXPECTED_PAGES is set.
if [[ "$INCIDENTS" == 3000 ]]; then EXPECTED_PAGES=${EXPECTED_PAGES:-13}; else EXPECTED_PAGES=${EXPECTED_PAGES:-0}; fi
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || echo chromium)}
[[ "$INCIDENTS" =~ ^[1-9][0-9]*$ ]] || { echo "INCIDENTS must be a positive integer" >&2; exit 2; }
for tool in "$CHROMIUM" pdfinfo pdffonts pdftotext pdftoppm fc-list python3; do
    command -v "$tool" >/dev/null || {
        echo "render_report: $tool is missing (apt-get install chromium fonts-noto-cjk poppler-utils fontconfig python3)" >&2
        exit 1
    }
done

echo "== cargo build" >&2
cargo build --quiet >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/csirt"

TMP=$(mktemp -d /tmp/csirt-render.XXXXXX)
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

$(bench_notify "$TMP/mail")
CFG
csirt() { "$BIN" --config "$TMP/csirt.toml" "$@"; }

csirt db migrate >&2
echo "== seeding $INCIDENTS incidents and four misdelivered mails" >&2
python3 bench/seed_incidents.py --db "$TMP/var/csirt.db" --count "$INCIDENTS" \
    --show-id 1 --first-events --end 2026-09-30T00:00:00 >&2
# Mail misdelivery (TO instead of BCC), the city's most frequent leak: opened through SQL as
# the daemon would have, ids INCIDENTS+1.. in this order.
python3 - "$TMP/var/csirt.db" <<'PY' >&2
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
rows = [
    # title, opened, acknowledged, closed
    ("メール誤送信: 説明会の案内を TO で 480 人に送信", "2026-07-01T00:30:00.000000+00:00",
     "2026-07-01T00:40:00.000000+00:00", "2026-08-20T00:00:00.000000+00:00"),
    ("メール誤送信: 健診結果の添付ファイルを別人に送信", "2026-04-01T01:00:00.000000+00:00",
     "2026-04-01T01:20:00.000000+00:00", None),
    ("メール誤送信: 口座振替のお知らせを 150 人に TO で送信", "2026-09-20T02:00:00.000000+00:00",
     "2026-09-20T02:05:00.000000+00:00", None),
    ("メール誤送信: 研修案内を TO で 120 人に送信", "2025-12-01T01:00:00.000000+00:00",
     "2025-12-01T01:10:00.000000+00:00", "2026-01-10T00:00:00.000000+00:00"),
]
for n, (title, opened, acked, closed) in enumerate(rows):
    con.execute(
        "INSERT INTO incidents (playbook, category, title, severity, status, resolution, dedupe_key, "
        "fields, event_count, first_seen, last_seen, opened_at, acknowledged_at, closed_at) "
        "VALUES ('email-misdelivery', '情報漏えい', ?, 'critical', ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
        (title, "closed" if closed else "acknowledged", "resolved" if closed else None,
         "misdelivery-%d" % n, json.dumps({"subject": title}, ensure_ascii=False),
         opened, opened, opened, acked, closed))
con.commit()
PY
first=$((INCIDENTS + 1))
# July: 480 persons; the persons notified and the 速報 in time, the 確報 five days late.
csirt incidents pii "$first" --persons 480 --aware-at 2026-07-01T00:00:00Z >/dev/null
csirt incidents reported "$first" --to person --kind 通知 --at 2026-07-02T00:00:00Z >/dev/null
csirt incidents reported "$first" --to ppc --kind 速報 --at 2026-07-03T00:00:00Z >/dev/null
csirt incidents reported "$first" --to ppc --kind 確報 --at 2026-08-05T00:00:00Z >/dev/null
# April: 要配慮個人情報 (health check results), nothing reported: overdue.
csirt incidents pii $((first + 1)) --sensitive --aware-at 2026-04-01T00:00:00Z >/dev/null
# September: 150 persons, the 速報 made; the 確報 due October 20 not made.
csirt incidents pii $((first + 2)) --persons 150 --aware-at 2026-09-20T00:00:00Z >/dev/null
csirt incidents reported $((first + 2)) --to ppc --kind 速報 --at 2026-09-24T00:00:00Z >/dev/null
# Fiscal 2025: everything in time.
csirt incidents pii $((first + 3)) --persons 120 --aware-at 2025-12-01T00:00:00Z >/dev/null
csirt incidents reported $((first + 3)) --to person --kind 通知 --at 2025-12-02T00:00:00Z >/dev/null
csirt incidents reported $((first + 3)) --to ppc --kind 速報 --at 2025-12-04T00:00:00Z >/dev/null
csirt incidents reported $((first + 3)) --to ppc --kind 確報 --at 2025-12-25T00:00:00Z >/dev/null

now() { date +%s.%N; }
t0=$(now)
csirt report --fiscal-year 2026 --format html --out "$TMP/report.html" >&2
t1=$(now)
# A profile of its own (nothing of the machine's), no GPU, no header/footer lines (the report
# has its own); --no-sandbox because CI runs as root.
chrome() {
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$TMP/profile" \
        --no-pdf-header-footer "$@" "file://$TMP/report.html" >"$TMP/chromium.log" 2>&1 \
        || { cat "$TMP/chromium.log" >&2; echo "render_report: chromium failed" >&2; exit 1; }
}
chrome --print-to-pdf="$TMP/report.pdf"
t2=$(now)
chrome --screenshot="$TMP/phone.png" --window-size=412,2400 --hide-scrollbars
pdftoppm -png -r 72 -f 1 -l 2 "$TMP/report.pdf" "$TMP/page"
page1=$(ls "$TMP"/page-*1.png)
if [[ -n "${OUT_PNG:-}" ]]; then cp "$page1" "$OUT_PNG"; fi
if [[ -n "${OUT_CHART_PNG:-}" ]]; then cp "$(ls "$TMP"/page-*2.png)" "$OUT_CHART_PNG"; fi

python3 - "$TMP" "$EXPECTED_PAGES" "$page1" "$t0" "$t1" "$t2" "$INCIDENTS" <<'PY'
import html, html.parser, os, re, subprocess, sys

tmp, expected, page1 = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t0, t1, t2 = map(float, sys.argv[4:7])
incidents = int(sys.argv[7])
pdf = os.path.join(tmp, "report.pdf")
failures = []

def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

info = dict(
    (k.strip(), v.strip())
    for k, v in (line.split(":", 1) for line in run("pdfinfo", pdf).splitlines() if ":" in line)
)
pages = int(info["Pages"])
size = info.get("Page size", "")
if expected and pages != expected:
    failures.append("%d pages, expected %d (EXPECTED_PAGES)" % (pages, expected))
m = re.match(r"([\d.]+) x ([\d.]+) pts", size)
# A4 is 595.28 x 841.89 pt.
if not m or abs(float(m.group(1)) - 595.3) > 2 or abs(float(m.group(2)) - 841.9) > 2:
    failures.append("page size %r is not A4" % size)

fonts = run("pdffonts", pdf).splitlines()[2:]
embedded = [f for f in fonts if f.split()[-5] == "yes"]
if len(embedded) != len(fonts):
    failures.append("fonts not embedded:\n" + "\n".join(f for f in fonts if f not in embedded))
if any(f.split()[-3] != "yes" for f in fonts):
    failures.append("a font without a Unicode map (its text cannot be searched or copied)")
raw = open(pdf, "rb").read()
names = sorted(set(n.decode("latin-1").split("+", 1)[-1]
                   for n in re.findall(rb"/FontName\s*/([^\s/<>\[\]()]+)", raw)))
if not any("CJK" in n for n in names):
    failures.append("no CJK font in the PDF (fonts: %s): install fonts-noto-cjk" % ", ".join(names))

text = run("pdftotext", "-enc", "UTF-8", pdf, "-")
if "\ufffd" in text:
    failures.append("U+FFFD in the PDF's text")
flat = re.sub(r"\s+", "", text)
for heading in ["北上市CSIRTインシデント対応状況報告", "令和8年度(2026年度)", "1.概要",
                "2.インシデントの件数", "3.対応時間とエスカレーション", "4.期限の遵守",
                "法定の報告期限(個人情報保護法・番号法)", "法定の報告期限を超過したもの",
                "5.職員からの不審メールの報告", "6.攻撃元のネットワークと狙われたアカウント",
                "7.30日を超えて未クローズのインシデント", "8.プレイブック別の誤検知率"]:
    if heading not in flat:
        failures.append("heading not in the PDF's text: " + heading)

# Missing glyphs: every character the HTML shows must be in some installed font.
class Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.chars, self.skip = set(), 0
    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("style", "script")
    def handle_endtag(self, tag):
        self.skip -= tag in ("style", "script")
    def handle_data(self, data):
        if not self.skip:
            self.chars.update(c for c in data if not c.isspace())
parser = Text()
parser.feed(open(os.path.join(tmp, "report.html"), encoding="utf-8").read())
covered = []
for line in run("fc-list", "--format", "%{charset}\n").splitlines():
    for part in line.split():
        lo, _, hi = part.partition("-")
        covered.append((int(lo, 16), int(hi or lo, 16)))
covered.sort()
def has(c):
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in covered)
missing = sorted(c for c in parser.chars if not has(c))
if missing:
    failures.append("characters no installed font has (drawn as boxes): "
                    + " ".join("U+%04X" % ord(c) for c in missing))

kib = lambda p: os.path.getsize(p) / 1024
print("render_report: fiscal 2026 of a store of %d incidents (+4 with personal information)" % incidents)
print("  csirt report --format html: %.2f s, %.0f KiB" % (t1 - t0, kib(os.path.join(tmp, "report.html"))))
print("  chromium --print-to-pdf: %.2f s, %d pages (%s), %.0f KiB" % (t2 - t1, pages, size, kib(pdf)))
print("  fonts: %d embedded (%s); %d distinct characters in the text, all in an installed font"
      % (len(fonts), ", ".join(names), len(parser.chars)) if not missing else
      "  fonts: %d embedded (%s)" % (len(fonts), ", ".join(names)))
print("  page 1 at 72 dpi: %.0f KiB; phone screenshot (412 px wide): %.0f KiB"
      % (kib(page1), kib(os.path.join(tmp, "phone.png"))))
if failures:
    print("render_report: FAILED", file=sys.stderr)
    for f in failures:
        print("  - " + f, file=sys.stderr)
    sys.exit(1)
print("render_report: OK" + ("" if expected else " (EXPECTED_PAGES not set: page count not checked)"))
PY

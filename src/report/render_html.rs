//! The report as one self-contained HTML file in Japanese: inline CSS and SVG charts, no script,
//! no network resource (it is mailed and archived, and read where nothing may be fetched). Laid
//! out for A4 printing (print CSS, a page per section) and readable on a phone (viewport, tables
//! that scroll sideways instead of shrinking to nothing).
//!
//! Every string from the store is escaped here (`esc`): titles, user names and addresses were
//! written by attackers, and `</svg><script>` in an incident title must stay text.

use super::Report;
use super::charts::{self, BEFORE, NOW, SECOND, Series};
use super::summary::{duration_ja, percent};
use super::tables::{Cell, Section, Table, tables};
use chrono_tz::Tz;
use std::fmt::Write as _;

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font-family: "Noto Sans CJK JP", "Hiragino Sans", "Yu Gothic", "Meiryo", sans-serif;
  margin: 0 auto; max-width: 62rem; padding: 1rem; line-height: 1.6; color: #1a1a1a; background: #fff; }
header { border-bottom: 3px solid #1f5fa8; margin-bottom: 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; border-left: 6px solid #1f5fa8; padding-left: .5rem; margin-top: 2rem; }
h3 { font-size: 1rem; margin: 1.25rem 0 .25rem; }
.period { font-size: 1.25rem; font-weight: bold; margin: 0; }
.meta { color: #555; font-size: .85rem; margin: .25rem 0 .75rem; }
.summary p { margin: .4rem 0; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; margin: .25rem 0 .75rem; font-size: .9rem; min-width: 50%; }
th, td { border: 1px solid #b8bec7; padding: .2rem .5rem; vertical-align: top; }
th { background: #eef2f7; font-weight: normal; text-align: center; }
/* Column headings break only where the renderer allows (after 年): `2026年` over `4月`, not
   `2026` over `年4` over `月` in the twelve-month tables. */
thead th { word-break: keep-all; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.blank { color: #999; text-align: center; }
tbody th { text-align: left; }
.empty { color: #555; font-style: italic; }
figure { margin: .5rem 0 1rem; }
svg { max-width: 100%; height: auto; display: block; }
footer { margin-top: 2rem; color: #777; font-size: .8rem; }
@media (max-width: 40rem) {
  body { padding: .5rem; }
  th, td { padding: .15rem .3rem; font-size: .8rem; }
}
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { max-width: none; padding: 0; font-size: 10pt; }
  section { break-before: page; page-break-before: always; }
  section#summary { break-before: auto; page-break-before: auto; }
  .scroll { overflow: visible; }
  table { font-size: 8.5pt; }
  tr, figure, .short { break-inside: avoid; page-break-inside: avoid; }
  /* Twelve months and two totals across A4: smaller type rather than a cut-off column. */
  .wide table { font-size: 7.5pt; }
  .wide th, .wide td { padding: .1rem .25rem; }
  .wide tbody th { min-width: 7em; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
}
"#;

/// Escapes text for HTML element content and attribute values; control and invisible format
/// characters are first made visible (`\x1b`), as on a terminal.
pub fn esc(text: &str) -> String {
    let visible = crate::text::sanitize(text);
    let mut out = String::with_capacity(visible.len());
    for c in visible.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cell(c: &Cell, tz: Tz) -> String {
    match c {
        Cell::Count(n) => format!("<td class=\"n\">{n}</td>"),
        Cell::Duration(Some(s)) => format!("<td class=\"n\">{}</td>", duration_ja(*s)),
        Cell::Rate(Some(r)) => format!("<td class=\"n\">{}</td>", percent(*r)),
        Cell::Duration(None) | Cell::Rate(None) | Cell::Blank => {
            "<td class=\"blank\">—</td>".to_string()
        }
        Cell::Time(t) => format!(
            "<td class=\"n\">{}</td>",
            t.with_timezone(&tz).format("%Y-%m-%d %H:%M")
        ),
        Cell::Text(t) => format!("<td>{}</td>", esc(t)),
    }
}

/// At most this many rows, a table is not split across printed pages.
const SHORT_ROWS: usize = 20;
/// Beyond this many columns (the per-month tables), a table is printed in smaller type.
const WIDE_COLUMNS: usize = 8;

fn table_html(table: &Table, tz: Tz) -> String {
    let mut out = format!("<h3>{}</h3>\n", esc(table.name));
    if table.rows.is_empty() {
        out.push_str("<p class=\"empty\">該当なし</p>\n");
        return out;
    }
    // A short table is kept on one page with its heading; a long one (the lingering
    // incidents) has to break between rows.
    let class = match (
        table.rows.len() <= SHORT_ROWS,
        table.columns.len() > WIDE_COLUMNS,
    ) {
        (true, true) => "scroll short wide",
        (true, false) => "scroll short",
        (false, true) => "scroll wide",
        (false, false) => "scroll",
    };
    let _ = write!(out, "<div class=\"{class}\"><table>\n<thead><tr>");
    for c in &table.columns {
        let _ = write!(
            out,
            "<th scope=\"col\">{}</th>",
            esc(c).replace('年', "年<wbr>")
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        let _ = write!(out, "<tr><th scope=\"row\">{}</th>", esc(&row.label));
        for c in &row.cells {
            out.push_str(&cell(c, tz));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
    out
}

fn figure(svg: Result<String, String>, caption: &str) -> String {
    match svg {
        Ok(svg) => format!(
            "<figure role=\"img\" aria-label=\"{}\">\n{svg}</figure>\n",
            esc(caption)
        ),
        Err(e) => format!(
            "<p class=\"empty\">グラフ「{}」を描けませんでした: {}</p>\n",
            esc(caption),
            esc(&e)
        ),
    }
}

/// The charts a section opens with.
fn charts_of(section: Section, report: &Report) -> String {
    let f = &report.current;
    let p = report.previous.as_ref();
    let previous_series = |values: Vec<f64>| Series {
        name: "前年同期",
        color: BEFORE,
        values,
    };
    match section {
        Section::Incidents if f.incidents > 0 || p.is_some_and(|p| p.incidents > 0) => {
            let labels: Vec<String> = f
                .months
                .iter()
                .map(|m| {
                    m.month
                        .get(5..)
                        .unwrap_or(&m.month)
                        .trim_start_matches('0')
                        .to_string()
                        + "月"
                })
                .collect();
            let mut series = vec![Series {
                name: "今期",
                color: NOW,
                values: f.months.iter().map(|m| m.incidents as f64).collect(),
            }];
            if let Some(p) = p {
                series.push(previous_series(
                    p.months.iter().map(|m| m.incidents as f64).collect(),
                ));
            }
            let mut out = figure(
                charts::bars("月別のインシデント件数", &labels, &series, "件"),
                "月別のインシデント件数",
            );
            let top: Vec<_> = f.by_category.iter().take(8).collect();
            if !top.is_empty() {
                let labels: Vec<String> = top.iter().map(|c| c.label.clone()).collect();
                let mut series = vec![Series {
                    name: "今期",
                    color: NOW,
                    values: top.iter().map(|c| c.count as f64).collect(),
                }];
                if let Some(p) = p {
                    series.push(previous_series(
                        top.iter()
                            .map(|c| {
                                p.by_category
                                    .iter()
                                    .find(|b| b.key == c.key)
                                    .map_or(0.0, |b| b.count as f64)
                            })
                            .collect(),
                    ));
                }
                out.push_str(&figure(
                    charts::bars("カテゴリ別の件数", &labels, &series, "件"),
                    "カテゴリ別の件数",
                ));
            }
            out
        }
        Section::Response
            if f.response
                .iter()
                .any(|r| r.acknowledge.count + r.close.count > 0) =>
        {
            let hours = |s: Option<i64>| s.map_or(0.0, |s| s as f64 / 3600.0);
            let labels: Vec<String> = f.response.iter().map(|r| r.label.clone()).collect();
            let series = vec![
                Series {
                    name: "受付まで",
                    color: NOW,
                    values: f
                        .response
                        .iter()
                        .map(|r| hours(r.acknowledge.median_seconds))
                        .collect(),
                },
                Series {
                    name: "クローズまで",
                    color: SECOND,
                    values: f
                        .response
                        .iter()
                        .map(|r| hours(r.close.median_seconds))
                        .collect(),
                },
            ];
            figure(
                charts::bars("重要度別の対応時間 (中央値)", &labels, &series, "時間"),
                "重要度別の対応時間 (中央値)",
            )
        }
        _ => String::new(),
    }
}

/// The whole document.
pub fn render(report: &Report) -> String {
    let tz: Tz = report.timezone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
    let f = &report.current;
    let local = |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M");
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"ja\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n\
         <p class=\"period\">{}</p>\n<p class=\"meta\">対象: {} から {} まで ({})。{}作成: {}</p>\n</header>\n",
        esc(&report.title),
        esc(&f.period.label),
        esc(&report.title),
        esc(&f.period.label),
        local(f.period.start),
        local(f.period.end),
        esc(&report.timezone),
        match &report.previous {
            Some(p) => format!(
                "比較: {} (前年同期{})。",
                esc(&p.period.label),
                report
                    .previous_records_from
                    .map(|t| format!("、記録は {} から", local(t)))
                    .unwrap_or_default()
            ),
            None => "前年同期の記録はストアにありません。".to_string(),
        },
        local(report.generated_at),
    );
    let all = tables(report);
    for (n, section) in Section::ALL.iter().enumerate() {
        let _ = write!(
            out,
            "<section id=\"{}\">\n<h2>{}. {}</h2>\n",
            section.id(),
            n + 1,
            section.title()
        );
        if *section == Section::Overview {
            out.push_str("<div class=\"summary\">\n");
            for line in &report.summary {
                let _ = writeln!(out, "<p>{}</p>", esc(line));
            }
            out.push_str("</div>\n");
        }
        if *section == Section::Lingering {
            let _ = writeln!(
                out,
                "<p>{} の時点で、起票から 30 日を超えて未クローズのもの: {} 件 (古い順に最大 100 件)。</p>",
                local(f.open_over_30_days.as_of),
                f.open_over_30_days.count
            );
        }
        if *section == Section::Deadlines && !f.deadlines.evaluated {
            out.push_str(
                "<p class=\"empty\">プレイブックを読めなかったため、期限は集計していません。</p>\n",
            );
        }
        out.push_str(&charts_of(*section, report));
        for table in all.iter().filter(|t| t.section == *section) {
            out.push_str(&table_html(table, tz));
        }
        out.push_str("</section>\n");
    }
    let _ = write!(
        out,
        "<footer>csirt {} が作成。期間はインシデントの起票日時で数え、各インシデントの受付・クローズは作成時点の記録による。\
         期限はプレイブックの [[deadline]] で、期日までにクローズしたものを期限内とする。\
         法定の報告期限は個人情報保護法・番号法の規則 (pii-rules) により覚知から数え、期日までに報告・通知を記録したものを期限内とする \
         (「速やかに」は記録した時点で期限内)。</footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_stored_text_stays_text() {
        assert_eq!(
            esc("</svg><script>alert('x')</script> & \"q\""),
            "&lt;/svg&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert!(!esc("\u{1b}[2Jtitle").contains('\u{1b}'));
    }
}

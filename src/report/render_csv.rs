//! The report as CSV for Excel: one file, one line per figure (`表,項目,列,値`), UTF-8 with a
//! byte-order mark, because Excel in Japan opens BOM-less UTF-8 as Shift_JIS and shows mojibake.
//!
//! Every text cell is quoted, and one that starts with `=`, `+`, `-`, `@`, a tab or a carriage
//! return gets a leading `'`: an incident title such as `=HYPERLINK(…)` (attacker-written) must
//! stay text in a spreadsheet, never become a formula (CSV injection). Numbers are written as
//! numbers; durations in seconds, rates as fractions, times in the report's zone.

use super::Report;
use super::tables::{Cell, tables};
use chrono_tz::Tz;

/// The UTF-8 byte-order mark.
pub const BOM: &str = "\u{feff}";
/// The header line.
pub const HEADER: &str = "表,項目,列,値";

/// A text cell, quoted, its quotes doubled, a formula's leading character neutralised.
pub fn text_cell(text: &str) -> String {
    let neutral = match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_string(),
    };
    format!("\"{}\"", neutral.replace('"', "\"\""))
}

fn value(cell: &Cell, tz: Tz) -> String {
    match cell {
        Cell::Count(n) => n.to_string(),
        Cell::Duration(s) => s.map(|s| s.to_string()).unwrap_or_default(),
        Cell::Rate(r) => r.map(|r| format!("{r:.4}")).unwrap_or_default(),
        Cell::Time(t) => text_cell(&t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()),
        Cell::Text(t) => text_cell(t),
        Cell::Blank => String::new(),
    }
}

/// The CSV bytes.
pub fn render(report: &Report) -> Vec<u8> {
    let tz: Tz = report.timezone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
    let mut out = String::from(BOM);
    out.push_str(HEADER);
    out.push_str("\r\n");
    let period = text_cell(&report.current.period.label);
    out.push_str(&format!("\"期間\",{period},\"\",\"\"\r\n"));
    for (i, line) in report.summary.iter().enumerate() {
        out.push_str(&format!(
            "\"概要の文\",\"{}\",\"\",{}\r\n",
            i + 1,
            text_cell(line)
        ));
    }
    for table in tables(report) {
        let name = text_cell(table.name);
        for row in &table.rows {
            let label = text_cell(&row.label);
            for (column, cell) in table.columns.iter().skip(1).zip(&row.cells) {
                // The unit of a bare number, which the HTML shows as 2時間5分 or 95.0%.
                let unit = match cell {
                    Cell::Duration(_) => " (秒)",
                    Cell::Rate(_) => " (割合)",
                    _ => "",
                };
                out.push_str(&format!(
                    "{name},{label},{},{}\r\n",
                    text_cell(&format!("{column}{unit}")),
                    value(cell, tz)
                ));
            }
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_quotes_doubled() {
        assert_eq!(text_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(text_cell("+1"), "\"'+1\"");
        assert_eq!(text_cell("-cmd"), "\"'-cmd\"");
        assert_eq!(text_cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(text_cell("\tx"), "\"'\tx\"");
        assert_eq!(text_cell("SSH総当たり"), "\"SSH総当たり\"");
    }
}

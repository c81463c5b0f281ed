//! The report as JSON, for scripts: the same numbers the HTML and CSV show, times in RFC 3339
//! (UTC), durations in whole seconds, rates as fractions (0.25, not 25%).

use super::Report;

/// Pretty-printed JSON with a final newline, invisible format characters escaped as `csirt …
/// --json` escapes them.
pub fn render(report: &Report) -> String {
    let text = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        // Plain structs of numbers and strings always serialise; say so if one ever does not.
        format!("{{\"error\": {:?}}}", e.to_string())
    });
    let mut out = crate::text::escape_invisible_json(&text);
    out.push('\n');
    out
}

//! The evaluation report for 情報戦略本部 (`csirt report`, and the `[[schedule]]` kind
//! `report` that mails it): the incidents of a month or a fiscal year beside the same period a
//! year before, as one self-contained HTML file with charts, as CSV for Excel, or as JSON.
//!
//! - `period`: fiscal years (April–March) and months in the configured zone, 令和 labels;
//! - `gather`: what the store holds for a period (the SQL itself is in `store::report`);
//! - `figures`: the tally of one period, pure; `stats`: medians and 90th percentiles;
//! - `statutory`: the deadlines of 個人情報保護法 and 番号法 (#16's clocks), met, missed, running;
//! - `summary`: the generated Japanese paragraph (件数の増減, 対応時間の変化, 期限の遵守率);
//! - `tables`: which figure stands in which row and column, once for HTML and CSV;
//! - `render_html` (with `charts`, SVG by plotters), `render_csv`, `render_json`.
//!
//! Everything from the store (titles, user names, addresses) was written by an attacker at some
//! point: the renderers escape it for their format (HTML entities, CSV quoting and formula
//! neutralising), never trusting a string because it came from our own database.

mod charts;
pub mod figures;
pub mod gather;
pub mod period;
pub mod render_csv;
pub mod render_html;
pub mod render_json;
pub mod stats;
pub mod statutory;
pub mod summary;
pub mod tables;

use chrono::{DateTime, Utc};
use figures::Figures;
use serde::Serialize;

/// The report's heading.
pub const TITLE: &str = "北上市CSIRT インシデント対応状況報告";

/// A whole report: one period, the same period a year before (when the store reaches back that
/// far), and the generated summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub title: String,
    pub timezone: String,
    pub generated_at: DateTime<Utc>,
    pub current: Figures,
    /// None when the store holds nothing from before the previous period's end.
    pub previous: Option<Figures>,
    /// When the store's records begin, if that is inside the previous period: its figures then
    /// cover only part of it (the store was started during it), and the report says so.
    pub previous_records_from: Option<DateTime<Utc>>,
    /// Paragraphs a secretariat member can paste into the 本部 material.
    pub summary: Vec<String>,
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Csv,
    Json,
}

impl Format {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

impl Report {
    /// The report in `format`, as bytes to write.
    pub fn render(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Html => render_html::render(self).into_bytes(),
            Format::Csv => render_csv::render(self),
            Format::Json => render_json::render(self).into_bytes(),
        }
    }

    /// A file name for the report: `csirt-report-fy2026.html`.
    pub fn file_name(&self, format: Format) -> String {
        format!(
            "csirt-report-{}.{}",
            self.current.period.slug,
            format.extension()
        )
    }
}

//! The report's tables, once, for both renderers: which figures stand in which row and column,
//! with the previous year's beside them. HTML draws each as a table in its section; CSV writes
//! each cell as a line. Pure.

use super::Report;
use super::figures::{Count, Figures, Month};
use super::stats::Times;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The report's sections, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Incidents,
    Response,
    Deadlines,
    Phishing,
    Attackers,
    Lingering,
    FalsePositives,
}

impl Section {
    pub const ALL: [Section; 8] = [
        Section::Overview,
        Section::Incidents,
        Section::Response,
        Section::Deadlines,
        Section::Phishing,
        Section::Attackers,
        Section::Lingering,
        Section::FalsePositives,
    ];

    /// The HTML id.
    pub fn id(self) -> &'static str {
        match self {
            Section::Overview => "summary",
            Section::Incidents => "incidents",
            Section::Response => "response",
            Section::Deadlines => "deadlines",
            Section::Phishing => "phishing",
            Section::Attackers => "attackers",
            Section::Lingering => "lingering",
            Section::FalsePositives => "false-positives",
        }
    }

    /// The heading.
    pub fn title(self) -> &'static str {
        match self {
            Section::Overview => "概要",
            Section::Incidents => "インシデントの件数",
            Section::Response => "対応時間とエスカレーション",
            Section::Deadlines => "期限の遵守",
            Section::Phishing => "職員からの不審メールの報告",
            Section::Attackers => "攻撃元のネットワークと狙われたアカウント",
            Section::Lingering => "30 日を超えて未クローズのインシデント",
            Section::FalsePositives => "プレイブック別の誤検知率",
        }
    }
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Count(i64),
    /// Whole seconds; None when nothing was measured.
    Duration(Option<i64>),
    /// A fraction; None when undefined (nothing to divide).
    Rate(Option<f64>),
    Time(DateTime<Utc>),
    /// Text from the store (escaped by each renderer).
    Text(String),
    /// No figure (the previous year is not in the store).
    Blank,
}

/// A row: its label (text from the store, escaped by each renderer) and cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub cells: Vec<Cell>,
}

/// A table of one section.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub section: Section,
    pub name: &'static str,
    /// The heading of the label column, then one per cell.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

const PREVIOUS: &str = "前年同期";

/// Counts of a breakdown beside the previous year's count of the same key.
fn breakdown(
    section: Section,
    name: &'static str,
    now: &[Count],
    before: Option<&[Count]>,
) -> Table {
    let mut rows: Vec<Row> = now
        .iter()
        .map(|c| Row {
            label: c.label.clone(),
            cells: vec![
                Cell::Count(c.count),
                before.map_or(Cell::Blank, |b| {
                    Cell::Count(b.iter().find(|p| p.key == c.key).map_or(0, |p| p.count))
                }),
            ],
        })
        .collect();
    // What only the previous year had is shown too (with 0 now): a category that vanished is news.
    if let Some(before) = before {
        for p in before
            .iter()
            .filter(|p| !now.iter().any(|c| c.key == p.key))
        {
            rows.push(Row {
                label: p.label.clone(),
                cells: vec![Cell::Count(0), Cell::Count(p.count)],
            });
        }
    }
    Table {
        section,
        name,
        columns: vec!["".into(), "件数".into(), PREVIOUS.into()],
        rows,
    }
}

/// Per month and key (category, severity…): one row per key, one column per month, the
/// period's total and the previous year's total.
fn per_month(
    name: &'static str,
    f: &Figures,
    previous: Option<&Figures>,
    keys: &[Count],
    pick: impl Fn(&Month) -> &BTreeMap<String, i64>,
) -> Table {
    let mut columns: Vec<String> = vec![String::new()];
    columns.extend(f.months.iter().map(|m| m.label.clone()));
    columns.push("合計".into());
    columns.push(format!("{PREVIOUS}合計"));
    let rows = keys
        .iter()
        .map(|k| {
            let mut cells: Vec<Cell> = f
                .months
                .iter()
                .map(|m| Cell::Count(pick(m).get(&k.key).copied().unwrap_or(0)))
                .collect();
            cells.push(Cell::Count(k.count));
            cells.push(previous.map_or(Cell::Blank, |p| {
                Cell::Count(
                    p.months
                        .iter()
                        .map(|m| pick(m).get(&k.key).copied().unwrap_or(0))
                        .sum(),
                )
            }));
            Row {
                label: k.label.clone(),
                cells,
            }
        })
        .collect();
    Table {
        section: Section::Incidents,
        name,
        columns,
        rows,
    }
}

fn times_cells(t: &Times, before: Option<&Times>) -> Vec<Cell> {
    vec![
        Cell::Count(t.count as i64),
        Cell::Duration(t.median_seconds),
        Cell::Duration(t.p90_seconds),
        before.map_or(Cell::Blank, |b| Cell::Duration(b.median_seconds)),
    ]
}

/// A breakdown: its table's name, its per-month table's name, the period's counts, a month's.
type Dimension = (
    &'static str,
    &'static str,
    fn(&Figures) -> &Vec<Count>,
    fn(&Month) -> &BTreeMap<String, i64>,
);

/// A row of one figure: this period's beside the previous year's (blank without one).
pub(super) fn compared(
    label: &str,
    f: &Figures,
    p: Option<&Figures>,
    value: impl Fn(&Figures) -> Cell,
) -> Row {
    Row {
        label: label.into(),
        cells: vec![value(f), p.map_or(Cell::Blank, &value)],
    }
}

/// A table of such rows.
pub(super) fn compared_table(section: Section, name: &'static str, rows: Vec<Row>) -> Table {
    Table {
        section,
        name,
        columns: vec!["".into(), "今期".into(), PREVIOUS.into()],
        rows,
    }
}

pub(super) fn strings<const N: usize>(columns: [&str; N]) -> Vec<String> {
    columns.map(String::from).to_vec()
}

/// Every table of the report, in section order.
pub fn tables(report: &Report) -> Vec<Table> {
    let f = &report.current;
    let p = report.previous.as_ref();
    let row = |label: &str, value: &dyn Fn(&Figures) -> Cell| compared(label, f, p, value);
    let median = |t: fn(&Figures) -> Option<Times>| {
        move |f: &Figures| Cell::Duration(t(f).and_then(|t| t.median_seconds))
    };
    let mut out = vec![compared_table(
        Section::Overview,
        "主な数値",
        vec![
            row("インシデント件数", &|f| Cell::Count(f.incidents)),
            row(
                "受付までの時間 (中央値)",
                &median(|f| all_times(f).map(|t| t.0)),
            ),
            row(
                "クローズまでの時間 (中央値)",
                &median(|f| all_times(f).map(|t| t.1)),
            ),
            row("期限の遵守率 (プレイブック)", &|f| {
                Cell::Rate(f.deadlines.compliance_rate)
            }),
            row("法定の報告期限の遵守率", &|f| {
                Cell::Rate(f.statutory.compliance_rate)
            }),
            row("受付されなかったインシデント", &|f| {
                Cell::Count(f.never_acknowledged.total)
            }),
            row("不審メールの報告", &|f| {
                Cell::Count(f.phishing.reports)
            }),
        ],
    )];
    out.push(compared_table(
        Section::Incidents,
        "月別の件数",
        f.months
            .iter()
            .enumerate()
            .map(|(i, m)| Row {
                label: m.label.clone(),
                cells: vec![
                    Cell::Count(m.incidents),
                    p.and_then(|p| p.months.get(i))
                        .map_or(Cell::Blank, |pm| Cell::Count(pm.incidents)),
                ],
            })
            .collect(),
    ));
    let dimensions: [Dimension; 4] = [
        (
            "カテゴリ別",
            "月別・カテゴリ別",
            |f| &f.by_category,
            |m| &m.by_category,
        ),
        (
            "重要度別",
            "月別・重要度別",
            |f| &f.by_severity,
            |m| &m.by_severity,
        ),
        (
            "プレイブック別",
            "月別・プレイブック別",
            |f| &f.by_playbook,
            |m| &m.by_playbook,
        ),
        (
            "発生源別",
            "月別・発生源別",
            |f| &f.by_source,
            |m| &m.by_source,
        ),
    ];
    for (name, _, pick, _) in &dimensions {
        out.push(breakdown(
            Section::Incidents,
            name,
            pick(f),
            p.map(|p| pick(p).as_slice()),
        ));
    }
    if f.months.len() > 1 {
        for (_, name, pick, month) in &dimensions {
            out.push(per_month(name, f, p, pick(f), month));
        }
    }
    out.push(Table {
        section: Section::Response,
        name: "重要度別の対応時間",
        columns: strings([
            "",
            "受付 件数",
            "受付まで 中央値",
            "受付まで 90%",
            "受付まで 前年同期中央値",
            "クローズ 件数",
            "クローズまで 中央値",
            "クローズまで 90%",
            "クローズまで 前年同期中央値",
        ]),
        rows: f
            .response
            .iter()
            .map(|r| {
                let before = p.and_then(|p| p.response.iter().find(|b| b.severity == r.severity));
                let mut cells = times_cells(&r.acknowledge, before.map(|b| &b.acknowledge));
                cells.extend(times_cells(&r.close, before.map(|b| &b.close)));
                Row {
                    label: r.label.clone(),
                    cells,
                }
            })
            .collect(),
    });
    let levels: std::collections::BTreeSet<i64> = f
        .escalations
        .keys()
        .chain(p.iter().flat_map(|p| p.escalations.keys()))
        .copied()
        .collect();
    out.push(compared_table(
        Section::Response,
        "エスカレーション (段階別の発生数)",
        levels
            .into_iter()
            .map(|level| {
                row(&format!("第{level}段階"), &|f| {
                    Cell::Count(f.escalations.get(&level).copied().unwrap_or(0))
                })
            })
            .collect(),
    ));
    out.push(compared_table(
        Section::Response,
        "受付されなかったインシデント",
        vec![
            row("合計", &|f| Cell::Count(f.never_acknowledged.total)),
            row("受付なしにクローズ", &|f| {
                Cell::Count(f.never_acknowledged.closed_without_ack)
            }),
            row("未受付のまま未クローズ", &|f| {
                Cell::Count(f.never_acknowledged.still_open)
            }),
        ],
    ));
    out.push(compared_table(
        Section::Deadlines,
        "期限 (プレイブックの [[deadline]])",
        vec![
            row("期限内にクローズ", &|f| {
                Cell::Count(f.deadlines.met)
            }),
            row("超過", &|f| Cell::Count(f.deadlines.missed)),
            row("進行中", &|f| Cell::Count(f.deadlines.running)),
            row("遵守率", &|f| Cell::Rate(f.deadlines.compliance_rate)),
        ],
    ));
    out.push(Table {
        section: Section::Deadlines,
        name: "期限を超過したインシデント",
        columns: strings(["", "インシデント", "期限", "期日", "クローズ"]),
        rows: f
            .deadlines
            .missed_incidents
            .iter()
            .map(|m| Row {
                label: format!("#{}", m.incident),
                cells: vec![
                    Cell::Text(m.title.clone()),
                    Cell::Text(m.deadline.clone()),
                    Cell::Time(m.due),
                    m.closed_at
                        .map_or(Cell::Text("未クローズ".into()), Cell::Time),
                ],
            })
            .collect(),
    });
    out.extend(super::statutory::tables(f, p));
    out.push(compared_table(
        Section::Phishing,
        "不審メールの報告",
        vec![
            row("報告", &|f| Cell::Count(f.phishing.reports)),
            row(
                "キャンペーン (同じメールの報告を 1 件に)",
                &|f| Cell::Count(f.phishing.campaigns),
            ),
            row("報告した職員 (人)", &|f| {
                Cell::Count(f.phishing.reporters)
            }),
            row("最初の報告から受付まで (中央値)", &|f| {
                Cell::Duration(f.phishing.first_report_to_ack.median_seconds)
            }),
            row("最初の報告から受付まで (90%)", &|f| {
                Cell::Duration(f.phishing.first_report_to_ack.p90_seconds)
            }),
        ],
    ));
    out.push(ranking(
        "攻撃元のネットワーク (/24, /48)",
        &f.attacking_networks,
        p.map(|p| p.attacking_networks.as_slice()),
    ));
    out.push(ranking(
        "狙われたアカウント",
        &f.targeted_accounts,
        p.map(|p| p.targeted_accounts.as_slice()),
    ));
    out.push(Table {
        section: Section::Lingering,
        name: "30 日を超えて未クローズ",
        columns: strings([
            "",
            "タイトル",
            "プレイブック",
            "重要度 (市のレベル)",
            "起票",
        ]),
        rows: f
            .open_over_30_days
            .oldest
            .iter()
            .map(|a| Row {
                label: format!("#{}", a.id),
                cells: vec![
                    Cell::Text(a.title.clone()),
                    Cell::Text(a.playbook.clone()),
                    // The severity with the city's level beside it, as the period's
                    // breakdown labels it (`高 (L2)`).
                    Cell::Text(
                        f.by_severity
                            .iter()
                            .find(|c| c.key == a.severity)
                            .map_or_else(|| a.severity.clone(), |c| c.label.clone()),
                    ),
                    Cell::Time(a.opened_at),
                ],
            })
            .collect(),
    });
    out.push(Table {
        section: Section::FalsePositives,
        name: "誤検知率 (クローズしたもののうち誤検知)",
        columns: strings(["", "クローズ", "誤検知", "誤検知率", "前年同期の誤検知率"]),
        rows: f
            .false_positives
            .iter()
            .map(|fp| Row {
                label: fp.playbook.clone(),
                cells: vec![
                    Cell::Count(fp.closed),
                    Cell::Count(fp.false_positive),
                    Cell::Rate(fp.rate),
                    p.map_or(Cell::Blank, |p| {
                        Cell::Rate(
                            p.false_positives
                                .iter()
                                .find(|b| b.playbook == fp.playbook)
                                .and_then(|b| b.rate),
                        )
                    }),
                ],
            })
            .collect(),
    });
    out
}

/// The `all` row's acknowledge and close times.
fn all_times(f: &Figures) -> Option<(Times, Times)> {
    f.response
        .iter()
        .find(|r| r.severity == "all")
        .map(|r| (r.acknowledge, r.close))
}

fn ranking(name: &'static str, now: &[Count], before: Option<&[Count]>) -> Table {
    Table {
        section: Section::Attackers,
        name,
        columns: vec!["".into(), "インシデント".into(), PREVIOUS.into()],
        rows: now
            .iter()
            .map(|c| Row {
                label: c.label.clone(),
                cells: vec![
                    Cell::Count(c.count),
                    // The previous year's ranking keeps its top ten only: a key not in it is
                    // shown as blank, not as zero.
                    before
                        .and_then(|b| b.iter().find(|p| p.key == c.key))
                        .map_or(Cell::Blank, |p| Cell::Count(p.count)),
                ],
            })
            .collect(),
    }
}

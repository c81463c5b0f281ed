//! The generated summary in Japanese: a few sentences a secretariat member can paste into the
//! 本部 material (件数の増減, 対応時間の変化, 期限の遵守率). Pure. An empty period says so; no
//! sentence divides by zero or reports a median of nothing.

use super::figures::Figures;
use super::stats::Times;

/// `3日4時間`, `2時間5分`, `12分`, `40秒`: a duration as a reader says it.
pub fn duration_ja(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 60 => format!("{s}秒"),
        s if s < 3_600 => format!("{}分", s / 60),
        s if s < 86_400 => match (s / 3_600, s % 3_600 / 60) {
            (h, 0) => format!("{h}時間"),
            (h, m) => format!("{h}時間{m}分"),
        },
        s => match (s / 86_400, s % 86_400 / 3_600) {
            (d, 0) => format!("{d}日"),
            (d, h) => format!("{d}日{h}時間"),
        },
    }
}

/// A rate as a percentage with one decimal: `95.0%`.
pub fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// The median of `t` for a sentence, with the previous year's beside it when there is one.
fn median_with(t: &Times, previous: Option<&Times>) -> Option<String> {
    let now = t.median_seconds?;
    let mut text = duration_ja(now);
    if let Some(before) = previous.and_then(|p| p.median_seconds) {
        text.push_str(&format!(" (前年同期 {})", duration_ja(before)));
    }
    Some(text)
}

/// The paragraphs of the summary.
pub fn write(current: &Figures, previous: Option<&Figures>) -> Vec<String> {
    let label = &current.period.label;
    let mut out = Vec::new();
    if current.incidents == 0 {
        let mut text = format!("{label}に起票されたインシデントはありません。");
        if let Some(p) = previous.filter(|p| p.incidents > 0) {
            text.push_str(&format!(
                "前年同期 ({}) は {} 件でした。",
                p.period.label, p.incidents
            ));
        }
        out.push(text);
    } else {
        let mut text = format!("{label}のインシデントは {} 件でした", current.incidents);
        match previous {
            Some(p) if p.incidents > 0 => {
                let diff = current.incidents - p.incidents;
                let change = diff as f64 / p.incidents as f64;
                text.push_str(&match diff {
                    0 => format!("。前年同期 ({}) と同じ件数です。", p.period.label),
                    d if d > 0 => format!(
                        "。前年同期 ({}) の {} 件から {d} 件 ({}) 増えました。",
                        p.period.label,
                        p.incidents,
                        percent(change)
                    ),
                    d => format!(
                        "。前年同期 ({}) の {} 件から {} 件 ({}) 減りました。",
                        p.period.label,
                        p.incidents,
                        -d,
                        percent(-change)
                    ),
                });
            }
            Some(p) => text.push_str(&format!(" (前年同期 ({}) は 0 件)。", p.period.label)),
            None => text.push('。'),
        }
        if let Some(top) = current.by_category.first() {
            text.push_str(&format!(
                "最も多かったのは「{}」の {} 件です。",
                top.label, top.count
            ));
        }
        out.push(text);
        out.push(response_sentence(current, previous));
    }
    out.push(deadline_sentence(current, previous));
    out.push(statutory_sentence(current, previous));
    // The same total as the 主な数値 table's row, so the two never seem to disagree.
    let never = current.never_acknowledged;
    if never.still_open > 0 {
        out.push(format!(
            "受付されなかったインシデントは {} 件で、うち {} 件は受付されないまま未クローズです。",
            never.total, never.still_open
        ));
    }
    let lingering = &current.open_over_30_days;
    if lingering.count > 0 {
        out.push(format!(
            "起票から 30 日を超えて未クローズのインシデントが {} 件あります。",
            lingering.count
        ));
    }
    let phishing = &current.phishing;
    if phishing.campaigns > 0 {
        let mut text = format!(
            "職員からの不審メールの報告は {} 件 (同じメールの報告をまとめて {} 件、報告した職員 {} 人) でした",
            phishing.reports, phishing.campaigns, phishing.reporters
        );
        if let Some(p) = previous.filter(|p| p.phishing.campaigns > 0) {
            text.push_str(&format!(
                " (前年同期 {} 件、{} 人)",
                p.phishing.reports, p.phishing.reporters
            ));
        }
        text.push('。');
        out.push(text);
    }
    out
}

/// The caveat when the store's records begin inside the previous period.
pub fn partial_previous(first: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    format!(
        "前年同期の記録は {} からのもので、期間の一部だけです (比較は参考値)。",
        first.with_timezone(&tz).format("%Y年%-m月%-d日")
    )
}

fn response_sentence(current: &Figures, previous: Option<&Figures>) -> String {
    let all = |f: &Figures| f.response.iter().find(|r| r.severity == "all").cloned();
    let (now, before) = (all(current), previous.and_then(all));
    let Some(now) = now else {
        return String::new();
    };
    let ack = median_with(&now.acknowledge, before.as_ref().map(|b| &b.acknowledge));
    let close = median_with(&now.close, before.as_ref().map(|b| &b.close));
    match (ack, close) {
        (None, None) => "受付・クローズされたインシデントはまだありません。".into(),
        (ack, close) => {
            let mut parts = Vec::new();
            if let Some(a) = ack {
                parts.push(format!("受付までの時間の中央値は {a}"));
            }
            if let Some(c) = close {
                parts.push(format!("クローズまでの時間の中央値は {c}"));
            }
            format!("{}でした。", parts.join("、"))
        }
    }
}

fn deadline_sentence(current: &Figures, previous: Option<&Figures>) -> String {
    let d = &current.deadlines;
    if !d.evaluated {
        return "プレイブックを読めなかったため、期限は集計していません。".into();
    }
    match d.compliance_rate {
        None if d.running > 0 => format!(
            "プレイブックの期限はまだ到来していません (進行中 {} 件)。",
            d.running
        ),
        None => "プレイブックの期限のあるインシデントはありませんでした。".into(),
        Some(rate) => {
            let mut text = format!(
                "プレイブックの期限の遵守率は {} (期限内 {} 件、超過 {} 件、進行中 {} 件) でした",
                percent(rate),
                d.met,
                d.missed,
                d.running
            );
            if let Some(before) = previous.and_then(|p| p.deadlines.compliance_rate) {
                text.push_str(&format!(" (前年同期 {})", percent(before)));
            }
            text.push('。');
            text
        }
    }
}

/// The statutory reports' deadlines: the rate, and what is overdue and still not made (what
/// the 本部 must hear of first).
fn statutory_sentence(current: &Figures, previous: Option<&Figures>) -> String {
    let s = &current.statutory;
    const WHAT: &str = "個人情報保護法・番号法による報告・通知";
    if !s.any() {
        return format!("{WHAT}を要するインシデントはありませんでした。");
    }
    let mut text = match s.compliance_rate {
        None => format!(
            "{WHAT} (インシデント {} 件) の期限はまだ到来していません (進行中 {} 件)",
            s.incidents, s.running
        ),
        Some(rate) => format!(
            "{WHAT} (インシデント {} 件) の期限の遵守率は {} (期限内 {} 件、超過 {} 件、進行中 {} 件) でした",
            s.incidents,
            percent(rate),
            s.met,
            s.missed,
            s.running
        ),
    };
    if let Some(before) = previous.and_then(|p| p.statutory.compliance_rate) {
        text.push_str(&format!(" (前年同期 {})", percent(before)));
    }
    text.push('。');
    if s.outstanding > 0 {
        text.push_str(&format!(
            "うち {} 件は期限を過ぎて、なお報告・通知が記録されていません。",
            s.outstanding
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_ja(40), "40秒");
        assert_eq!(duration_ja(720), "12分");
        assert_eq!(duration_ja(7_200), "2時間");
        assert_eq!(duration_ja(7_500), "2時間5分");
        assert_eq!(duration_ja(86_400 * 3 + 3_600 * 4), "3日4時間");
        assert_eq!(percent(0.95), "95.0%");
    }
}

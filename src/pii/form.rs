//! The report forms, filled from what the store knows: the 個人情報保護委員会's 漏えい等報告
//! (the items of 個人情報保護法施行規則 第44条第1項 for 行政機関等) and the 共通様式 that the
//! 国家サイバー統括室 published for ransomware and DDoS reports to the PPC, the police and the
//! ministries (from 2025-10-01). A field nothing in the store answers is a blank (`None`),
//! which text output marks 【未記入】: the responder sees what is left to write.
//!
//! Pure; the values are raw stored text (an attacker's mail subject among them): whoever prints
//! them sanitises (the CLI's output does).

use super::{Assessment, Facts, Flag, Kind, Party, ReportMade, yes_no};
use crate::model::Incident;
use crate::text::long_time;
use chrono_tz::Tz;
use serde::Serialize;

/// Which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FormKind {
    Ppc,
    Common,
}

/// A filled form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Form {
    pub form: FormKind,
    pub title: &'static str,
    pub incident: i64,
    pub fields: Vec<Field>,
}

/// One field: its label on the published form and what csirt knows (`None`: blank).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub key: &'static str,
    pub label: &'static str,
    pub value: Option<String>,
}

/// How a blank field is written in text output.
pub const BLANK: &str = "【未記入】";

/// What the form is filled from.
pub struct Known<'a> {
    pub incident: &'a Incident,
    pub facts: Option<&'a Facts>,
    pub assessment: Option<&'a Assessment>,
    pub reports: &'a [ReportMade],
    pub tz: Tz,
}

fn field(key: &'static str, label: &'static str, value: Option<String>) -> Field {
    Field { key, label, value }
}

impl Known<'_> {
    fn flag(&self, flag: Flag) -> Option<bool> {
        self.facts.and_then(|f| f.flag(flag))
    }

    fn aware(&self) -> Option<String> {
        self.facts
            .and_then(|f| f.aware_at)
            .map(|t| long_time(t, self.tz))
    }

    fn persons(&self) -> Option<String> {
        self.facts.and_then(|f| f.persons).map(|n| format!("{n}人"))
    }

    /// The 事態 the decision found, each with its rule; `None` before any fact is recorded.
    fn situations(&self) -> Option<String> {
        let a = self.assessment?;
        // The duties that arise; when none does, why not.
        let required = a.decisions.iter().any(|d| d.required);
        let lines: Vec<String> = a
            .decisions
            .iter()
            .filter(|d| d.required || !required)
            .flat_map(|d| {
                d.reasons
                    .iter()
                    .map(move |r| format!("{}: {} ({})", d.name, r.text, r.source))
            })
            .collect();
        Some(lines.join("\n"))
    }

    /// The properties known about the leaked information (its items themselves are the
    /// responder's to write).
    fn items(&self) -> Option<String> {
        let known: Vec<String> = Flag::ALL
            .into_iter()
            .filter(|f| *f != Flag::Encrypted && *f != Flag::Malicious)
            .filter_map(|f| {
                self.flag(f)
                    .map(|v| format!("{}: {}", f.label_ja(), yes_no(Some(v))))
            })
            .collect();
        (!known.is_empty()).then(|| {
            format!(
                "{}\n(漏えい等した項目 (氏名・住所など) は{BLANK})",
                known.join("\n")
            )
        })
    }

    fn reports_to(&self, party: Party) -> Vec<&ReportMade> {
        self.reports.iter().filter(|r| r.to == party).collect()
    }

    fn report_lines(&self, reports: &[&ReportMade]) -> Option<String> {
        (!reports.is_empty()).then(|| {
            reports
                .iter()
                .map(|r| {
                    let mut line = format!(
                        "{} {}へ{}",
                        long_time(r.at, self.tz),
                        r.to.label_ja(),
                        r.kind.as_str()
                    );
                    if let Some(reference) = &r.reference {
                        line.push_str(&format!(" (受付番号等: {reference})"));
                    }
                    if let Some(note) = &r.note {
                        line.push_str(&format!(" {note}"));
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    fn overview(&self) -> String {
        let i = self.incident;
        let mut out = format!(
            "{} (分類: {}、北上市CSIRT インシデント #{})\n検知: {}",
            i.title,
            i.category,
            i.id,
            long_time(i.first_seen, self.tz)
        );
        if let Some(aware) = self.aware() {
            out.push_str(&format!("\n覚知: {aware}"));
        }
        out
    }

    fn cause(&self) -> Option<String> {
        match self.flag(Flag::Malicious) {
            Some(true) => Some(format!(
                "不正の目的をもって行われたおそれがある行為による (詳細は{BLANK})"
            )),
            _ => None,
        }
    }

    fn secondary(&self) -> Option<String> {
        match self.flag(Flag::Financial) {
            Some(true) => Some(format!(
                "あり: 不正に利用されることにより財産的被害が生じるおそれ (内容は{BLANK})"
            )),
            _ => None,
        }
    }

    fn other(&self) -> Option<String> {
        let others: Vec<&ReportMade> = self
            .reports
            .iter()
            .filter(|r| r.to != Party::Person)
            .collect();
        let mut lines = Vec::new();
        if let Some(v) = self.flag(Flag::Encrypted) {
            lines.push(format!("高度な暗号化等の措置: {}", yes_no(Some(v))));
        }
        if let Some(reports) = self.report_lines(&others) {
            lines.push(format!("報告・届出の状況:\n{reports}"));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Which report this would be: the first PPC kind not yet made.
    fn report_kind(&self) -> Option<String> {
        let made = |k: Kind| {
            self.reports
                .iter()
                .any(|r| r.to == Party::Ppc && r.kind == k)
        };
        let a = self.assessment?;
        if !a.ppc_required() {
            return None;
        }
        Some(
            if made(Kind::Preliminary) {
                "確報"
            } else {
                "速報"
            }
            .into(),
        )
    }
}

/// The 個人情報保護委員会's 漏えい等報告 (行政機関等), item by item as 施行規則 第44条第1項
/// lists them, after the report's header.
pub fn ppc(k: &Known<'_>) -> Form {
    let persons_notice = k.reports_to(Party::Person);
    Form {
        form: FormKind::Ppc,
        title: "個人情報保護委員会 漏えい等報告 (行政機関等)",
        incident: k.incident.id,
        fields: vec![
            field("report_kind", "報告の種類 (速報/確報)", k.report_kind()),
            field("organisation", "報告者 (行政機関等の名称)", None),
            field("contact", "担当部署・連絡先", None),
            field(
                "situation",
                "報告対象となる事態 (施行規則第43条各号)",
                k.situations(),
            ),
            field("aware_at", "発覚日 (覚知日時)", k.aware()),
            field("occurred_at", "発生日", None),
            field("overview", "概要", Some(k.overview())),
            field(
                "items",
                "漏えい等が発生し又は発生したおそれがある保有個人情報の項目",
                k.items(),
            ),
            field(
                "persons",
                "漏えい等が発生し又は発生したおそれがある保有個人情報に係る本人の数",
                k.persons(),
            ),
            field("cause", "発生原因", k.cause()),
            field(
                "secondary_damage",
                "二次被害又はそのおそれの有無及びその内容",
                k.secondary(),
            ),
            field(
                "persons_response",
                "本人への対応の実施状況",
                k.report_lines(&persons_notice),
            ),
            field("publication", "公表の実施状況", None),
            field("prevention", "再発防止のための措置", None),
            field("other", "その他参考となる事項", k.other()),
        ],
    }
}

/// The 共通様式 for ransomware and DDoS (国家サイバー統括室, 2025-10-01): one report, the same
/// fields, to the PPC, the police and the ministries.
pub fn common(k: &Known<'_>) -> Form {
    let i = k.incident;
    let indicators: Vec<String> = i
        .fields
        .iter()
        .filter(|(key, _)| matches!(key.as_str(), "ip" | "host" | "domain" | "url" | "hash"))
        .map(|(key, v)| {
            format!(
                "{key}: {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect();
    let pii = k.facts.map(|facts| {
        format!(
            "個人情報保護委員会への報告: {}\n本人の数: {}",
            match k.assessment {
                Some(a) if a.ppc_required() => "必要",
                Some(_) => "不要 (現時点の事実による)",
                None => BLANK,
            },
            facts
                .persons
                .map_or_else(|| BLANK.to_string(), |n| format!("{n}人"))
        )
    });
    Form {
        form: FormKind::Common,
        title: "DDoS・ランサムウェア事案 共通様式 (個人情報保護委員会・警察・所管省庁)",
        incident: i.id,
        fields: vec![
            field("report_kind", "報告の種類 (第一報/続報/最終報)", None),
            field(
                "destinations",
                "報告先",
                k.report_lines(&k.reports.iter().collect::<Vec<_>>()),
            ),
            field("organisation", "組織名", None),
            field("contact", "担当者・連絡先", None),
            field(
                "case_type",
                "事案の種別 (DDoS/ランサムウェア)",
                Some(i.category.clone()),
            ),
            field("aware_at", "認知日時", k.aware()),
            field(
                "first_seen",
                "発生日時 (最初の検知)",
                Some(long_time(i.first_seen, k.tz)),
            ),
            field("overview", "被害の概要", Some(k.overview())),
            field("systems", "被害を受けたシステム・機器", None),
            field("method", "攻撃の手口・侵入経路", k.cause()),
            field(
                "indicators",
                "攻撃に関する情報 (IPアドレス等)",
                (!indicators.is_empty()).then(|| indicators.join("\n")),
            ),
            field("ransom", "脅迫・金銭の要求の有無", None),
            field("personal_information", "個人情報の漏えい等の有無", pii),
            field("impact", "業務への影響", None),
            field("response", "対応状況", None),
            field("other", "その他", k.other()),
        ],
    }
}

/// The form as text for pasting: `■ label` then the value (or 【未記入】), lines indented.
pub fn text(form: &Form) -> Vec<String> {
    let mut lines = vec![format!(
        "{} (北上市CSIRT インシデント #{})",
        form.title, form.incident
    )];
    for f in &form.fields {
        lines.push(format!("■ {}", f.label));
        match &f.value {
            Some(v) => lines.extend(v.lines().map(|l| format!("  {l}"))),
            None => lines.push(format!("  {BLANK}")),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pii::{Edit, assess, rules::Rules};
    use chrono::{DateTime, Utc};

    fn incident() -> Incident {
        let t = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .expect("time")
            .to_utc();
        Incident {
            id: 7,
            title: "メール誤送信 (BCC に入れず 480 件)".into(),
            playbook: "info-leak".into(),
            category: "情報漏えい".into(),
            severity: crate::model::Severity::Critical,
            status: crate::model::Status::Open,
            resolution: None,
            dedupe_key: String::new(),
            fields: Default::default(),
            event_count: 1,
            first_seen: t,
            last_seen: t,
            opened_at: t,
            acknowledged_at: None,
            closed_at: None,
            assignee: None,
            escalation_level: 0,
        }
    }

    #[test]
    fn the_ppc_form_fills_what_is_known_and_marks_the_rest() {
        let rules = Rules::load(None).expect("rules");
        let mut facts = Facts {
            aware_at: Some(Utc::now()),
            ..Facts::default()
        };
        facts.apply(&[Edit::Persons(Some(480))]);
        let made = [ReportMade {
            to: Party::Ppc,
            kind: Kind::Preliminary,
            reference: Some("PPC-123".into()),
            at: Utc::now(),
            note: None,
            actor: "sato".into(),
        }];
        let a = assess(&facts, &rules, &made);
        let i = incident();
        let form = ppc(&Known {
            incident: &i,
            facts: Some(&facts),
            assessment: Some(&a),
            reports: &made,
            tz: chrono_tz::Asia::Tokyo,
        });
        let value = |key: &str| {
            form.fields
                .iter()
                .find(|f| f.key == key)
                .unwrap_or_else(|| panic!("no field {key}"))
                .value
                .clone()
        };
        assert_eq!(value("persons").as_deref(), Some("480人"));
        assert_eq!(value("report_kind").as_deref(), Some("確報"));
        assert!(value("situation").is_some_and(|s| s.contains("第43条第4号")));
        assert_eq!(value("prevention"), None);
        assert!(value("other").is_some_and(|s| s.contains("PPC-123")));
        let text = text(&form).join("\n");
        assert!(
            text.contains("■ 再発防止のための措置\n  【未記入】"),
            "{text}"
        );
        assert!(text.contains("■ 概要\n  メール誤送信"), "{text}");
    }
}

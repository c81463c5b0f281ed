//! Personal-information incidents under 個人情報保護法 (行政機関等) and 番号法: the facts a
//! responder records, the decision whether a report to 個人情報保護委員会 and a notification of
//! the persons are required (with the reason and the rule, in Japanese), and the clocks that run
//! from 覚知 (when any department of the city learned of it).
//!
//! Pure: `assess` takes facts, the rules (data, `rules`) and the reports made, and returns the
//! decision and the clocks; the store runs it inside the transaction that changes a fact or
//! records a report, and keeps its clocks for the escalator's reminders. Never does I/O.
//! `form` fills the published report forms from what the store knows.

pub mod form;
pub mod rules;

#[cfg(test)]
use chrono::TimeDelta;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rules::Rules;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A yes/no fact about the leaked information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    Sensitive,
    Financial,
    Malicious,
    OrdinanceSensitive,
    Mynumber,
    Encrypted,
}

impl Flag {
    /// Every flag, in the order `show` lists them.
    pub const ALL: [Flag; 6] = [
        Flag::Sensitive,
        Flag::Financial,
        Flag::Malicious,
        Flag::OrdinanceSensitive,
        Flag::Mynumber,
        Flag::Encrypted,
    ];

    /// The name in the rules file, the store and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Sensitive => "sensitive",
            Flag::Financial => "financial",
            Flag::Malicious => "malicious",
            Flag::OrdinanceSensitive => "ordinance_sensitive",
            Flag::Mynumber => "mynumber",
            Flag::Encrypted => "encrypted",
        }
    }

    /// What it means, as responders read it.
    pub fn label_ja(self) -> &'static str {
        match self {
            Flag::Sensitive => "要配慮個人情報を含む",
            Flag::Financial => "財産的被害が生じるおそれ",
            Flag::Malicious => "不正の目的をもって行われたおそれ",
            Flag::OrdinanceSensitive => "条例要配慮個人情報を含む",
            Flag::Mynumber => "特定個人情報 (マイナンバー) を含む",
            Flag::Encrypted => "高度な暗号化等の措置あり",
        }
    }
}

impl FromStr for Flag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Flag::ALL
            .into_iter()
            .find(|f| f.as_str() == s || f.as_str().replace('_', "-") == s)
            .ok_or_else(|| {
                format!(
                    "unknown fact `{s}` (expected one of: sensitive, financial, malicious, \
                     ordinance_sensitive, mynumber, encrypted)"
                )
            })
    }
}

/// Whom a report goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    Ppc,
    Police,
    Prefecture,
    Nco,
    Jpcert,
    Ipa,
    Person,
}

impl Party {
    pub const ALL: [Party; 7] = [
        Party::Ppc,
        Party::Police,
        Party::Prefecture,
        Party::Nco,
        Party::Jpcert,
        Party::Ipa,
        Party::Person,
    ];

    /// The stored and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Ppc => "ppc",
            Party::Police => "police",
            Party::Prefecture => "prefecture",
            Party::Nco => "nco",
            Party::Jpcert => "jpcert",
            Party::Ipa => "ipa",
            Party::Person => "person",
        }
    }

    /// The body's name.
    pub fn label_ja(self) -> &'static str {
        match self {
            Party::Ppc => "個人情報保護委員会",
            Party::Police => "警察",
            Party::Prefecture => "岩手県",
            Party::Nco => "国家サイバー統括室",
            Party::Jpcert => "JPCERT/CC",
            Party::Ipa => "IPA",
            Party::Person => "本人",
        }
    }
}

impl FromStr for Party {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Party::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                "unknown party `{s}` (expected one of: ppc, police, prefecture, nco, jpcert, ipa, person)"
            )
            })
    }
}

/// What kind of report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    #[serde(rename = "速報")]
    Preliminary,
    #[serde(rename = "確報")]
    Final,
    #[serde(rename = "届出")]
    Filing,
    #[serde(rename = "通知")]
    Notice,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Preliminary, Kind::Final, Kind::Filing, Kind::Notice];

    /// The stored and CLI spelling (Japanese, as the law says it).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Preliminary => "速報",
            Kind::Final => "確報",
            Kind::Filing => "届出",
            Kind::Notice => "通知",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind `{s}` (expected one of: 速報, 確報, 届出, 通知)"))
    }
}

macro_rules! display_as_str {
    ($($ty:ty),+) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}
display_as_str!(Flag, Party, Kind);

/// What is known about the personal information of one incident. `None` is 未確認: not known yet
/// (never the same as "no": the form says 【未記入】, and the decision says what it waits for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub persons: Option<i64>,
    pub sensitive: Option<bool>,
    pub financial: Option<bool>,
    pub malicious: Option<bool>,
    pub ordinance_sensitive: Option<bool>,
    pub mynumber: Option<bool>,
    pub encrypted: Option<bool>,
    /// 覚知: when the city (any department) learned of it; the clocks run from here.
    pub aware_at: Option<DateTime<Utc>>,
}

/// One change a `csirt incidents pii` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Persons(Option<i64>),
    Flag(Flag, Option<bool>),
    AwareAt(Option<DateTime<Utc>>),
}

impl Facts {
    /// The flag's value.
    pub fn flag(&self, flag: Flag) -> Option<bool> {
        match flag {
            Flag::Sensitive => self.sensitive,
            Flag::Financial => self.financial,
            Flag::Malicious => self.malicious,
            Flag::OrdinanceSensitive => self.ordinance_sensitive,
            Flag::Mynumber => self.mynumber,
            Flag::Encrypted => self.encrypted,
        }
    }

    fn flag_mut(&mut self, flag: Flag) -> &mut Option<bool> {
        match flag {
            Flag::Sensitive => &mut self.sensitive,
            Flag::Financial => &mut self.financial,
            Flag::Malicious => &mut self.malicious,
            Flag::OrdinanceSensitive => &mut self.ordinance_sensitive,
            Flag::Mynumber => &mut self.mynumber,
            Flag::Encrypted => &mut self.encrypted,
        }
    }

    /// Applies `edits` and says what changed, one line each, for the timeline ("本人の数:
    /// 未確認 → 480"). Times are written in UTC here: the timeline is the record, and a reader
    /// in any zone converts.
    pub fn apply(&mut self, edits: &[Edit]) -> Vec<String> {
        let mut changes = Vec::new();
        for edit in edits {
            match *edit {
                Edit::Persons(n) if n != self.persons => {
                    changes.push(format!(
                        "本人の数: {} → {}",
                        persons_text(self.persons),
                        persons_text(n)
                    ));
                    self.persons = n;
                }
                Edit::Flag(flag, value) if value != self.flag(flag) => {
                    changes.push(format!(
                        "{}: {} → {}",
                        flag.label_ja(),
                        yes_no(self.flag(flag)),
                        yes_no(value)
                    ));
                    *self.flag_mut(flag) = value;
                }
                Edit::AwareAt(at) if at != self.aware_at => {
                    let text = |t: Option<DateTime<Utc>>| {
                        t.map_or_else(
                            || "未確認".into(),
                            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        )
                    };
                    changes.push(format!("覚知日時: {} → {}", text(self.aware_at), text(at)));
                    self.aware_at = at;
                }
                _ => {}
            }
        }
        changes
    }
}

fn persons_text(n: Option<i64>) -> String {
    n.map_or_else(|| "未確認".into(), |n| format!("{n}人"))
}

/// はい / いいえ / 未確認.
pub fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "はい",
        Some(false) => "いいえ",
        None => "未確認",
    }
}

/// A report made (or a notification done), as recorded by `csirt incidents reported`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportMade {
    pub to: Party,
    pub kind: Kind,
    /// The receipt number or reference the other side gave.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
    pub actor: String,
}

/// Why a duty does or does not arise: a sentence and the rule it cites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub text: String,
    pub source: String,
}

/// The decision on one duty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub duty: String,
    pub name: String,
    pub source: String,
    pub required: bool,
    /// The triggers that hold (required), or the exclusion that removed them, or why none holds.
    pub reasons: Vec<Reason>,
    /// Facts still 未確認 that could make the duty arise.
    pub waiting_for: Vec<String>,
}

impl Decision {
    /// 必要 / 不要, and for a duty not required on what is known but still possible once the
    /// unknown facts are known, a 不要 that says so: a responder must not read it as settled.
    pub fn verdict_ja(&self) -> &'static str {
        if self.required {
            "必要"
        } else if self.waiting_for.is_empty() {
            "不要"
        } else {
            "未確定 (確認できた事実では不要。未確認の事実しだいで必要になる)"
        }
    }
}

/// One statutory clock: a report or notification a duty requires, due from 覚知.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clock {
    pub duty: String,
    pub name: String,
    pub to: Party,
    pub kind: Kind,
    /// When the reminder comes (the warning).
    pub warn_at: DateTime<Utc>,
    /// The deadline; `None` for 速やかに.
    pub due_at: Option<DateTime<Utc>>,
    pub source: String,
    /// When the report that satisfies it was made.
    pub done_at: Option<DateTime<Utc>>,
}

/// Where a clock stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockState {
    Done,
    Overdue,
    /// Past its warning, not yet due (or 速やかに and past its warning).
    Due,
    Running,
}

impl ClockState {
    /// 済 / 期限超過 / 期限間近 / 未了.
    pub fn label_ja(self) -> &'static str {
        match self {
            ClockState::Done => "済",
            ClockState::Overdue => "期限超過",
            ClockState::Due => "期限間近",
            ClockState::Running => "未了",
        }
    }
}

impl Clock {
    /// Where it stands at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> ClockState {
        if self.done_at.is_some() {
            ClockState::Done
        } else if self.due_at.is_some_and(|d| now >= d) {
            ClockState::Overdue
        } else if now >= self.warn_at {
            ClockState::Due
        } else {
            ClockState::Running
        }
    }

    /// The name the escalator's reminder of a passed deadline is recorded (and mailed) under,
    /// `days` whole days after it: `… (期限超過)` on the day, then `… (期限超過 2日)`, one a day
    /// until the report is recorded. The warning uses `name` itself.
    pub fn overdue_name(&self, days: i64) -> String {
        if days <= 0 {
            format!("{} (期限超過)", self.name)
        } else {
            format!("{}{days}日)", self.overdue_prefix())
        }
    }

    /// What every later overdue name starts with (`overdue_name(days)` for days ≥ 1).
    pub fn overdue_prefix(&self) -> String {
        format!("{} (期限超過 ", self.name)
    }
}

/// How a reason that makes a duty arise begins.
const REQUIRED: &str = "報告が必要: ";

/// The whole decision for one incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub decisions: Vec<Decision>,
    pub clocks: Vec<Clock>,
}

impl Assessment {
    /// Whether a report to 個人情報保護委員会 is required under any duty.
    pub fn ppc_required(&self) -> bool {
        self.clocks.iter().any(|c| c.to == Party::Ppc)
    }

    /// Why a report to 個人情報保護委員会 is required: each reason of each duty that requires
    /// one, with the duty and the rule it cites (empty when none is required).
    pub fn ppc_reasons(&self) -> Vec<String> {
        let duties: Vec<&str> = self
            .clocks
            .iter()
            .filter(|c| c.to == Party::Ppc)
            .map(|c| c.duty.as_str())
            .collect();
        self.decisions
            .iter()
            .filter(|d| d.required && duties.contains(&d.duty.as_str()))
            .flat_map(|d| {
                d.reasons.iter().map(move |r| {
                    let why = r.text.strip_prefix(REQUIRED).unwrap_or(&r.text);
                    format!("{}が必要 — {why} ({})", d.name, r.source)
                })
            })
            .collect()
    }

    /// Whether the persons must be notified under any duty.
    pub fn person_notice_required(&self) -> bool {
        self.clocks.iter().any(|c| c.to == Party::Person)
    }
}

/// What a required report to 個人情報保護委員会 does to an incident (the city's rule: such an
/// incident is L3, and the CISO hears of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// The severity it must have: the mildest at L3, or the one it has when that is worse.
    pub severity: crate::model::Severity,
    /// Why, citing the rules, and what became of the severity: the timeline's and the mail's text.
    pub reason: String,
}

/// The escalation `a` makes of an incident of `severity` under `levels`; `None` when no report
/// to 個人情報保護委員会 is required. Never lowers a severity.
pub fn escalation(
    a: &Assessment,
    severity: crate::model::Severity,
    levels: &crate::level::Levels,
) -> Option<Escalation> {
    if !a.ppc_required() {
        return None;
    }
    let raised = crate::level::more_severe(severity, levels.floor(crate::level::Level::L3));
    let level = levels.of(raised).long_ja();
    let what = if raised == severity {
        format!("重要度は{} (市のレベル {level}) のまま", raised.label_ja())
    } else {
        format!(
            "重要度を{}から{}に引き上げ (市のレベル {level})",
            severity.label_ja(),
            raised.label_ja()
        )
    };
    Some(Escalation {
        severity: raised,
        reason: format!("{}。{what}", a.ppc_reasons().join("; ")),
    })
}

/// Decides, from `facts` under `rules`, which duties arise and their clocks from 覚知; a clock
/// is done once a report to its party of its kind is in `made`. Without 覚知 there are no clocks
/// (the store always sets it: the first `pii` command defaults it to its own time).
pub fn assess(facts: &Facts, rules: &Rules, made: &[ReportMade]) -> Assessment {
    let mut decisions = Vec::new();
    let mut clocks = Vec::new();
    for duty in &rules.duties {
        let excluded = duty
            .exclusions
            .iter()
            .find(|e| facts.flag(e.flag) == Some(true));
        let holding: Vec<&rules::Trigger> =
            duty.triggers.iter().filter(|t| holds(t, facts)).collect();
        let mut waiting_for: Vec<String> = Vec::new();
        if excluded.is_none() {
            for t in duty.triggers.iter().filter(|t| !holds(t, facts)) {
                if could_hold(t, facts) {
                    for what in unknown_in(t, facts) {
                        if !waiting_for.contains(&what) {
                            waiting_for.push(what);
                        }
                    }
                }
            }
        }
        let (required, reasons) = match excluded {
            Some(e) => (
                false,
                vec![Reason {
                    text: format!("報告不要: {}", e.reason),
                    source: e.source.clone(),
                }],
            ),
            None if holding.is_empty() => (
                false,
                vec![Reason {
                    text: if waiting_for.is_empty() {
                        "報告不要: 報告の対象となる事態のいずれにも当たらない".into()
                    } else {
                        "確認できた事実は、報告の対象となる事態のいずれにも当たらない (未確認の事実がある)"
                            .into()
                    },
                    source: join_sources(duty.triggers.iter().map(|t| t.source.as_str())),
                }],
            ),
            None => (
                true,
                holding
                    .iter()
                    .map(|t| Reason {
                        text: format!("{REQUIRED}{}", t.reason),
                        source: t.source.clone(),
                    })
                    .collect(),
            ),
        };
        if required && let Some(aware) = facts.aware_at {
            for r in &duty.reports {
                let (warn, due, source) = match r
                    .longer
                    .iter()
                    .find(|l| holding.iter().any(|t| t.id == l.trigger))
                {
                    Some(l) => (l.warn, Some(l.due), l.source.clone()),
                    None => (r.warn, r.due, r.source.clone()),
                };
                clocks.push(Clock {
                    duty: duty.id.clone(),
                    name: r.name.clone(),
                    to: r.to,
                    kind: r.kind,
                    warn_at: aware + warn.to_chrono(),
                    due_at: due.map(|d| aware + d.to_chrono()),
                    source,
                    done_at: made
                        .iter()
                        .filter(|m| m.to == r.to && m.kind == r.kind)
                        .map(|m| m.at)
                        .min(),
                });
            }
        }
        decisions.push(Decision {
            duty: duty.id.clone(),
            name: duty.name.clone(),
            source: duty.source.clone(),
            required,
            reasons,
            waiting_for,
        });
    }
    Assessment { decisions, clocks }
}

/// The trigger holds on what is known (an unknown fact never makes it hold).
fn holds(t: &rules::Trigger, facts: &Facts) -> bool {
    t.all.iter().all(|f| facts.flag(*f) == Some(true))
        && t.persons_over
            .is_none_or(|over| facts.persons.is_some_and(|n| n > over))
}

/// The trigger may still hold once unknown facts are known (nothing known rules it out).
fn could_hold(t: &rules::Trigger, facts: &Facts) -> bool {
    t.all.iter().all(|f| facts.flag(*f) != Some(false))
        && t.persons_over
            .is_none_or(|over| facts.persons.is_none_or(|n| n > over))
}

fn unknown_in(t: &rules::Trigger, facts: &Facts) -> Vec<String> {
    let mut out: Vec<String> = t
        .all
        .iter()
        .filter(|f| facts.flag(**f).is_none())
        .map(|f| f.label_ja().to_string())
        .collect();
    if t.persons_over.is_some() && facts.persons.is_none() {
        out.push("本人の数".into());
    }
    out
}

fn join_sources<'a>(sources: impl Iterator<Item = &'a str>) -> String {
    let mut all: Vec<&str> = Vec::new();
    for s in sources {
        if !all.contains(&s) {
            all.push(s);
        }
    }
    all.join("、")
}

/// A time as a responder types it: RFC 3339 (`2026-12-01T09:30:00+09:00`), or a local date and
/// time in `tz` (`2026-12-01 09:30`, `2026-12-01T09:30`, with or without seconds).
pub fn parse_time(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    use chrono::{NaiveDateTime, TimeZone};
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.to_utc())
                .ok_or_else(|| format!("`{s}` does not exist in {tz}"));
        }
    }
    Err(format!(
        "`{s}` is not a time (write 2026-12-01 09:30 in {tz}, or RFC 3339 such as 2026-12-01T09:30:00+09:00)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::load(None).expect("built-in rules")
    }

    fn aware() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .expect("time")
            .to_utc()
    }

    fn facts(edits: &[Edit]) -> Facts {
        let mut f = Facts {
            aware_at: Some(aware()),
            ..Facts::default()
        };
        f.apply(edits);
        f
    }

    fn ppc(a: &Assessment) -> &Decision {
        a.decisions.iter().find(|d| d.duty == "ppc").expect("ppc")
    }

    fn clock<'a>(a: &'a Assessment, duty: &str, kind: Kind) -> &'a Clock {
        a.clocks
            .iter()
            .find(|c| c.duty == duty && c.kind == kind)
            .unwrap_or_else(|| panic!("no {duty} {kind} clock in {:?}", a.clocks))
    }

    #[test]
    fn each_trigger_requires_the_report_citing_its_rule() {
        for (flag, article) in [
            (Flag::Sensitive, "第43条第1号"),
            (Flag::Financial, "第43条第2号"),
            (Flag::Malicious, "第43条第3号"),
            (Flag::OrdinanceSensitive, "第43条第5号"),
        ] {
            let a = assess(&facts(&[Edit::Flag(flag, Some(true))]), &rules(), &[]);
            let d = ppc(&a);
            assert!(d.required, "{flag}");
            assert!(
                d.reasons.iter().any(|r| r.source.contains(article)),
                "{flag}: {:?}",
                d.reasons
            );
            assert!(a.ppc_required() && a.person_notice_required(), "{flag}");
        }
        // One person with 要配慮 is enough: the count matters only for 第4号.
        let one = assess(
            &facts(&[
                Edit::Persons(Some(1)),
                Edit::Flag(Flag::Sensitive, Some(true)),
            ]),
            &rules(),
            &[],
        );
        assert!(ppc(&one).required);
    }

    #[test]
    fn the_reasons_for_the_ciso_cite_each_rule_that_requires_the_report() {
        let a = assess(
            &facts(&[
                Edit::Persons(Some(480)),
                Edit::Flag(Flag::Sensitive, Some(true)),
            ]),
            &rules(),
            &[],
        );
        let reasons = a.ppc_reasons();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons[0].starts_with("個人情報保護委員会への漏えい等の報告が必要 — 要配慮個人情報")
                && reasons[0].ends_with("(個人情報の保護に関する法律施行規則 第43条第1号)"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("第43条第4号"), "{reasons:?}");
        let none = assess(&facts(&[Edit::Persons(Some(3))]), &rules(), &[]);
        assert!(none.ppc_reasons().is_empty());
    }

    #[test]
    fn a_required_report_makes_the_incident_l3_and_never_lowers_it() {
        use crate::level::Levels;
        use crate::model::Severity;
        let required = assess(&facts(&[Edit::Persons(Some(480))]), &rules(), &[]);
        let levels = Levels::default();
        let e = escalation(&required, Severity::High, &levels).expect("required");
        assert_eq!(e.severity, Severity::Critical);
        assert!(
            e.reason.contains("第43条第4号")
                && e.reason.ends_with(
                    "重要度を高から緊急に引き上げ (市のレベル L3 住民・外部に影響、個人情報漏えい)"
                ),
            "{}",
            e.reason
        );
        let e = escalation(&required, Severity::Critical, &levels).expect("required");
        assert!(e.reason.ends_with("のまま"), "{}", e.reason);
        // A city whose L3 starts at high raises a low incident to high only; a critical one
        // stays critical.
        let high_l3 = Levels::new(|s| (s == Severity::High).then_some(crate::level::Level::L3))
            .expect("valid");
        assert_eq!(
            escalation(&required, Severity::Low, &high_l3).map(|e| e.severity),
            Some(Severity::High)
        );
        assert_eq!(
            escalation(&required, Severity::Critical, &high_l3).map(|e| e.severity),
            Some(Severity::Critical)
        );
        let not = assess(&facts(&[Edit::Persons(Some(100))]), &rules(), &[]);
        assert_eq!(escalation(&not, Severity::Low, &levels), None);
    }

    #[test]
    fn more_than_100_persons_means_101_or_more() {
        let at = |n| assess(&facts(&[Edit::Persons(Some(n))]), &rules(), &[]);
        let hundred = at(100);
        assert!(!ppc(&hundred).required, "{:?}", ppc(&hundred));
        assert!(hundred.clocks.is_empty());
        let over = at(101);
        assert!(ppc(&over).required);
        assert!(
            ppc(&over).reasons[0].source.contains("第43条第4号"),
            "{:?}",
            ppc(&over)
        );
        assert!(ppc(&over).reasons[0].text.contains("百人を超える"));
        // 480 addresses of a misdelivered mail.
        assert!(ppc(&at(480)).required);
    }

    #[test]
    fn strong_encryption_excludes_every_trigger() {
        let a = assess(
            &facts(&[
                Edit::Persons(Some(5000)),
                Edit::Flag(Flag::Sensitive, Some(true)),
                Edit::Flag(Flag::Mynumber, Some(true)),
                Edit::Flag(Flag::Encrypted, Some(true)),
            ]),
            &rules(),
            &[],
        );
        assert!(a.decisions.iter().all(|d| !d.required), "{a:?}");
        assert!(a.clocks.is_empty());
        assert!(ppc(&a).reasons[0].text.contains("高度な暗号化"));
        assert!(ppc(&a).reasons[0].source.contains("第43条第1号括弧書"));
        // Encryption not known: the report is required (never assume the exclusion).
        let unknown = assess(
            &facts(&[Edit::Flag(Flag::Sensitive, Some(true))]),
            &rules(),
            &[],
        );
        assert!(ppc(&unknown).required);
    }

    #[test]
    fn clocks_run_from_awareness_and_malice_gives_60_days() {
        let plain = assess(
            &facts(&[Edit::Flag(Flag::Sensitive, Some(true))]),
            &rules(),
            &[],
        );
        let sokuhou = clock(&plain, "ppc", Kind::Preliminary);
        assert_eq!(sokuhou.warn_at, aware() + TimeDelta::days(3));
        assert_eq!(sokuhou.due_at, Some(aware() + TimeDelta::days(5)));
        let kakuhou = clock(&plain, "ppc", Kind::Final);
        assert_eq!(kakuhou.due_at, Some(aware() + TimeDelta::days(30)));
        let notice = clock(&plain, "ppc", Kind::Notice);
        assert_eq!(
            (notice.to, notice.due_at),
            (Party::Person, None),
            "速やかに"
        );
        let malicious = assess(
            &facts(&[Edit::Flag(Flag::Malicious, Some(true))]),
            &rules(),
            &[],
        );
        let kakuhou = clock(&malicious, "ppc", Kind::Final);
        assert_eq!(kakuhou.due_at, Some(aware() + TimeDelta::days(60)));
        assert!(kakuhou.source.contains("第44条第2項括弧書"));
        // 速報 stays at 3 to 5 days.
        assert_eq!(
            clock(&malicious, "ppc", Kind::Preliminary).due_at,
            Some(aware() + TimeDelta::days(5))
        );
    }

    #[test]
    fn moving_awareness_earlier_moves_every_clock() {
        let mut f = facts(&[Edit::Persons(Some(480))]);
        let before = assess(&f, &rules(), &[]);
        let earlier = aware() - TimeDelta::days(2);
        let changes = f.apply(&[Edit::AwareAt(Some(earlier))]);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let after = assess(&f, &rules(), &[]);
        for (b, a) in before.clocks.iter().zip(&after.clocks) {
            assert_eq!(a.warn_at, b.warn_at - TimeDelta::days(2), "{}", a.name);
            assert_eq!(
                a.due_at,
                b.due_at.map(|d| d - TimeDelta::days(2)),
                "{}",
                a.name
            );
        }
        // Four days after the old 覚知 the 速報 is now overdue, no longer only near.
        let now = aware() + TimeDelta::days(4);
        assert_eq!(
            clock(&before, "ppc", Kind::Preliminary).state(now),
            ClockState::Due
        );
        assert_eq!(
            clock(&after, "ppc", Kind::Preliminary).state(now),
            ClockState::Overdue
        );
    }

    #[test]
    fn a_report_made_stops_its_clock_only() {
        let f = facts(&[Edit::Persons(Some(480))]);
        let made = [ReportMade {
            to: Party::Ppc,
            kind: Kind::Preliminary,
            reference: None,
            at: aware() + TimeDelta::days(1),
            note: None,
            actor: "sato".into(),
        }];
        let a = assess(&f, &rules(), &made);
        let now = aware() + TimeDelta::days(10);
        assert_eq!(
            clock(&a, "ppc", Kind::Preliminary).state(now),
            ClockState::Done
        );
        assert_eq!(
            clock(&a, "ppc", Kind::Final).state(now),
            ClockState::Running
        );
        assert_eq!(clock(&a, "ppc", Kind::Notice).state(now), ClockState::Due);
    }

    #[test]
    fn mynumber_track_applies_with_malice_or_over_100() {
        let mn = |edits: &[Edit]| {
            assess(&facts(edits), &rules(), &[])
                .decisions
                .into_iter()
                .find(|d| d.duty == "mynumber")
                .expect("mynumber")
        };
        assert!(
            !mn(&[
                Edit::Flag(Flag::Mynumber, Some(true)),
                Edit::Persons(Some(100))
            ])
            .required
        );
        assert!(
            mn(&[
                Edit::Flag(Flag::Mynumber, Some(true)),
                Edit::Persons(Some(101))
            ])
            .required
        );
        assert!(
            mn(&[
                Edit::Flag(Flag::Mynumber, Some(true)),
                Edit::Flag(Flag::Malicious, Some(true))
            ])
            .required
        );
        // Without マイナンバー the track does not arise, however many persons.
        assert!(!mn(&[Edit::Persons(Some(5000))]).required);
    }

    #[test]
    fn unknown_facts_are_named_as_what_the_decision_waits_for() {
        let a = assess(&facts(&[]), &rules(), &[]);
        let d = ppc(&a);
        assert!(!d.required);
        // Not "不要": nothing known rules the report out yet.
        assert!(d.verdict_ja().starts_with("未確定"), "{}", d.verdict_ja());
        assert!(!d.reasons[0].text.contains("報告不要"), "{:?}", d.reasons);
        assert!(d.waiting_for.contains(&"本人の数".to_string()), "{d:?}");
        assert!(
            d.waiting_for
                .contains(&Flag::Sensitive.label_ja().to_string())
        );
        let known = facts(&[
            Edit::Persons(Some(3)),
            Edit::Flag(Flag::Sensitive, Some(false)),
            Edit::Flag(Flag::Financial, Some(false)),
            Edit::Flag(Flag::Malicious, Some(false)),
            Edit::Flag(Flag::OrdinanceSensitive, Some(false)),
        ]);
        let settled = assess(&known, &rules(), &[]);
        assert!(ppc(&settled).waiting_for.is_empty());
        assert_eq!(ppc(&settled).verdict_ja(), "不要");
        assert!(ppc(&settled).reasons[0].text.starts_with("報告不要"));
    }

    #[test]
    fn times_as_typed() {
        let tz = chrono_tz::Asia::Tokyo;
        let jst = parse_time("2026-12-01 09:30", tz).expect("local");
        assert_eq!(jst.to_rfc3339(), "2026-12-01T00:30:00+00:00");
        assert_eq!(parse_time("2026-12-01T09:30:00+09:00", tz), Ok(jst));
        assert!(parse_time("yesterday", tz).is_err());
    }
}

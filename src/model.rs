//! The incident model: severities, statuses, resolutions, incidents, events and the timeline.
//!
//! Owns the lifecycle rules (which action is allowed from which status) as pure functions, so the
//! store applies them and the tests can table-drive them. Never does I/O.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How bad an incident is; ordered from `Critical` (most) to `Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

impl Severity {
    /// Every severity, most severe first.
    pub const ALL: [Severity; 4] = [Self::Critical, Self::High, Self::Medium, Self::Low];

    /// The stored and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }

    /// The label responders read (重要度).
    pub fn label_ja(self) -> &'static str {
        match self {
            Self::Critical => "緊急",
            Self::High => "高",
            Self::Medium => "中",
            Self::Low => "低",
        }
    }
}

/// Where an incident stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Acknowledged,
    Closed,
}

impl Status {
    /// The stored and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Closed => "closed",
        }
    }

    /// The label responders read.
    pub fn label_ja(self) -> &'static str {
        match self {
            Self::Open => "未対応",
            Self::Acknowledged => "対応中",
            Self::Closed => "クローズ",
        }
    }
}

/// Why an incident was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    Resolved,
    FalsePositive,
    Duplicate,
}

impl Resolution {
    /// The stored and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::FalsePositive => "false-positive",
            Self::Duplicate => "duplicate",
        }
    }

    /// The label responders read.
    pub fn label_ja(self) -> &'static str {
        match self {
            Self::Resolved => "解決",
            Self::FalsePositive => "誤検知",
            Self::Duplicate => "重複",
        }
    }
}

/// A stored spelling that is not one of ours: the store was written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}` (expected one of: {expected})")]
pub struct UnknownValue {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

macro_rules! impl_text_enum {
    ($ty:ty, $kind:literal, $expected:literal, [$($variant:expr),+]) => {
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                [$($variant),+]
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue { kind: $kind, value: s.to_string(), expected: $expected })
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

impl_text_enum!(
    Severity,
    "severity",
    "critical, high, medium, low",
    [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low
    ]
);
impl_text_enum!(
    Status,
    "status",
    "open, acknowledged, closed",
    [Status::Open, Status::Acknowledged, Status::Closed]
);
impl_text_enum!(
    Resolution,
    "resolution",
    "resolved, false-positive, duplicate",
    [
        Resolution::Resolved,
        Resolution::FalsePositive,
        Resolution::Duplicate
    ]
);

/// A responder's or the daemon's change to an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Assign(String),
    Note(String),
    Close {
        resolution: Resolution,
        note: Option<String>,
    },
    Reopen,
}

impl Action {
    /// The verb as the timeline records it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledged",
            Self::Assign(_) => "assigned",
            Self::Note(_) => "note",
            Self::Close { .. } => "closed",
            Self::Reopen => "reopened",
        }
    }

    /// What was done, as a notification tells responders (受付, クローズ (誤検知)).
    pub fn label_ja(&self) -> String {
        match self {
            Self::Acknowledge => "受付".into(),
            Self::Assign(name) => format!("担当を {name} に"),
            Self::Note(_) => "メモ".into(),
            Self::Close { resolution, .. } => format!("クローズ ({})", resolution.label_ja()),
            Self::Reopen => "再オープン".into(),
        }
    }

    /// The verb as an error message uses it ("cannot acknowledge").
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Assign(_) => "assign",
            Self::Note(_) => "add a note to",
            Self::Close { .. } => "close",
            Self::Reopen => "reopen",
        }
    }

    /// The statuses this action may start from; the store enforces it in its UPDATE.
    pub fn allowed_from(&self) -> &'static [Status] {
        match self {
            Self::Acknowledge => &[Status::Open],
            Self::Assign(_) => &[Status::Open, Status::Acknowledged],
            Self::Note(_) => &[Status::Open, Status::Acknowledged, Status::Closed],
            Self::Close { .. } => &[Status::Open, Status::Acknowledged],
            Self::Reopen => &[Status::Closed],
        }
    }

    /// Whether a change arriving this way may make this action at all. By mail only
    /// acknowledging and closing: a mail's assignment or reopening would be a new way to act on
    /// an incident, with its own proof to ask for.
    pub fn permitted_by(&self, origin: Origin) -> bool {
        match origin {
            Origin::Responder => true,
            Origin::Mail => matches!(
                self,
                Self::Acknowledge | Self::Close { .. } | Self::Assign(_)
            ),
        }
    }

    /// What the incident's status becomes.
    pub fn next_status(&self, current: Status) -> Status {
        match self {
            Self::Acknowledge => Status::Acknowledged,
            Self::Close { .. } => Status::Closed,
            Self::Reopen => Status::Open,
            Self::Assign(_) | Self::Note(_) => current,
        }
    }

    /// The timeline entry's detail text.
    pub fn detail(&self) -> String {
        match self {
            Self::Acknowledge | Self::Reopen => String::new(),
            Self::Assign(user) => user.clone(),
            Self::Note(text) => text.clone(),
            Self::Close { resolution, note } => match note {
                Some(note) => format!("{resolution}: {note}"),
                None => resolution.to_string(),
            },
        }
    }
}

/// How a change reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A responder at the CLI.
    Responder,
    /// A command in a reply to one of our notifications.
    Mail,
}

/// Who made a change: an operating-system user, the daemon, or a mail sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// The daemon itself.
    pub fn daemon() -> Self {
        Actor("daemon".into())
    }

    /// The user running this process, resolved from the real uid. `$USER` is not consulted: it is
    /// whatever the caller's environment says, and the timeline must say who really acted.
    pub fn current_user() -> Self {
        let uid = nix::unistd::getuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => Actor(user.name),
            _ => Actor(format!("uid:{uid}")),
        }
    }

    /// A rules file that recomputed recorded incidents, recorded as `rules:<file>@<version>#<hash>`.
    pub fn rules(what: &str) -> Self {
        Actor(format!("rules:{what}"))
    }

    /// A mail sender, recorded as `mail:<address>`.
    pub fn mail_sender(address: &str) -> Self {
        Actor(format!("mail:{address}"))
    }

    /// The actor as the timeline stores it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The current time at the precision both backends store (PostgreSQL keeps microseconds), so a
/// value reads back exactly as it was written on either.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Field values captured from a hit (`ip`, `user`, `subject`, ...).
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// A stored incident, as the CLI shows it and `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    pub id: i64,
    pub title: String,
    pub playbook: String,
    pub category: String,
    pub severity: Severity,
    pub status: Status,
    pub resolution: Option<Resolution>,
    pub dedupe_key: String,
    pub fields: Fields,
    pub event_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub assignee: Option<String>,
    pub escalation_level: i64,
}

/// What opening an incident needs.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub playbook: String,
    pub category: String,
    pub title: String,
    pub severity: Severity,
    pub dedupe_key: String,
    pub fields: Fields,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub event_count: i64,
}

/// One entry of an incident's append-only timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// A stored piece of evidence: a matched log line or mail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub kind: String,
    pub rule: String,
    pub source: String,
    pub locator: String,
    pub observed_at: DateTime<Utc>,
    pub text: String,
    pub fields: Fields,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_table() {
        use Status::*;
        let close = Action::Close {
            resolution: Resolution::Resolved,
            note: None,
        };
        let cases: [(Action, Status, Option<Status>); 10] = [
            (Action::Acknowledge, Open, Some(Acknowledged)),
            (Action::Acknowledge, Acknowledged, None),
            (Action::Acknowledge, Closed, None),
            (close.clone(), Open, Some(Closed)),
            (close.clone(), Acknowledged, Some(Closed)),
            (close, Closed, None),
            (Action::Reopen, Closed, Some(Open)),
            (Action::Reopen, Open, None),
            (Action::Assign("sato".into()), Closed, None),
            (Action::Note("x".into()), Closed, Some(Closed)),
        ];
        for (action, from, expected) in cases {
            let got = action
                .allowed_from()
                .contains(&from)
                .then(|| action.next_status(from));
            assert_eq!(got, expected, "{action:?} from {from:?}");
        }
    }

    #[test]
    fn mail_may_only_acknowledge_close_and_assign() {
        let close = Action::Close {
            resolution: Resolution::FalsePositive,
            note: None,
        };
        assert!(Action::Acknowledge.permitted_by(Origin::Mail));
        assert!(close.permitted_by(Origin::Mail));
        assert!(Action::Assign("佐藤".into()).permitted_by(Origin::Mail));
        // Reopening by mail would let a leaked code undo a close; a note is not a command.
        for other in [Action::Reopen, Action::Note("x".into())] {
            assert!(!other.permitted_by(Origin::Mail), "{other:?}");
            assert!(other.permitted_by(Origin::Responder), "{other:?}");
        }
    }

    #[test]
    fn spellings_round_trip() {
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
        }
        assert_eq!(
            "false-positive".parse::<Resolution>(),
            Ok(Resolution::FalsePositive)
        );
        assert!("Closed".parse::<Status>().is_err());
    }

    #[test]
    fn now_is_microsecond_precise() {
        assert_eq!(now().timestamp_subsec_nanos() % 1_000, 0);
    }
}

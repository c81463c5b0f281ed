//! The city's incident levels (北上市の情報セキュリティインシデントのレベル), L0 予兆 to L3
//! 住民・外部に影響 / 個人情報漏えい, and their mapping onto csirt's four severities (the config's
//! `[levels]`). A responder sees the level beside the severity wherever a severity is shown;
//! the mapping also says which severity an incident must at least have to be L3 (a required
//! report to 個人情報保護委員会 makes it L3).
//!
//! Pure: the mapping is validated once at load (every level a known one, a more severe severity
//! never at a lower level, some severity at L3) and then only read.

use crate::model::Severity;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the city's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    L0,
    L1,
    L2,
    L3,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::L0, Level::L1, Level::L2, Level::L3];

    /// `L0` … `L3`, as the config, JSON and a mail subject write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::L0 => "L0",
            Level::L1 => "L1",
            Level::L2 => "L2",
            Level::L3 => "L3",
        }
    }

    /// What the level means, in the city's words.
    pub fn label_ja(self) -> &'static str {
        match self {
            Level::L0 => "予兆",
            Level::L1 => "職員業務",
            Level::L2 => "業務全体",
            Level::L3 => "住民・外部に影響、個人情報漏えい",
        }
    }

    /// `L3 住民・外部に影響、個人情報漏えい`.
    pub fn long_ja(self) -> String {
        format!("{} {}", self.as_str(), self.label_ja())
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("`{s}` is not a level (expected L0, L1, L2 or L3)"))
    }
}

/// The level of each severity (validated: see [`Levels::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    critical: Level,
    high: Level,
    medium: Level,
    low: Level,
}

impl Default for Levels {
    /// low → L0 予兆, medium → L1 職員業務, high → L2 業務全体, critical → L3.
    fn default() -> Levels {
        Levels {
            critical: Level::L3,
            high: Level::L2,
            medium: Level::L1,
            low: Level::L0,
        }
    }
}

impl Levels {
    /// The mapping `of` gives (a severity it leaves out keeps its default level), refused when a
    /// more severe severity would be at a lower level than a less severe one (the two scales
    /// must agree on what is worse) or when no severity is L3 (a required report to
    /// 個人情報保護委員会 could not make an incident L3). The error names the severity whose
    /// level is wrong, for the config to point at its line.
    pub fn new(of: impl Fn(Severity) -> Option<Level>) -> Result<Levels, (Severity, String)> {
        let default = Levels::default();
        let levels = Levels {
            critical: of(Severity::Critical).unwrap_or(default.critical),
            high: of(Severity::High).unwrap_or(default.high),
            medium: of(Severity::Medium).unwrap_or(default.medium),
            low: of(Severity::Low).unwrap_or(default.low),
        };
        // Severity::ALL runs from the most severe down: each level must not exceed the one before.
        for pair in Severity::ALL.windows(2) {
            let (worse, milder) = (pair[0], pair[1]);
            if levels.of(worse) < levels.of(milder) {
                let blamed = if of(milder).is_some() { milder } else { worse };
                return Err((
                    blamed,
                    format!(
                        "{worse} is {} but the milder {milder} is {}: a more severe incident cannot be at a lower level",
                        levels.of(worse),
                        levels.of(milder)
                    ),
                ));
            }
        }
        if levels.of(Severity::Critical) != Level::L3 {
            return Err((
                Severity::Critical,
                format!(
                    "no severity is L3 (critical is {}): an incident that requires a report to \
                     個人情報保護委員会 must be L3, so critical at least must be L3",
                    levels.critical
                ),
            ));
        }
        Ok(levels)
    }

    /// The level of `severity`.
    pub fn of(&self, severity: Severity) -> Level {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
        }
    }

    /// The mildest severity at `level` or above: what an incident must at least have to be at
    /// that level. Critical is always L3 (checked in `new`), so there is one for every level.
    pub fn floor(&self, level: Level) -> Severity {
        Severity::ALL
            .into_iter()
            .rev()
            .find(|s| self.of(*s) >= level)
            .unwrap_or(Severity::Critical)
    }
}

/// The more severe of `a` and `b` (`Severity`'s order runs from critical, the most severe, so
/// this is the smaller): raising to a floor never lowers what is already worse.
pub fn more_severe(a: Severity, b: Severity) -> Severity {
    a.min(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_maps_low_to_l0_and_critical_to_l3() {
        let l = Levels::default();
        assert_eq!(
            Severity::ALL.map(|s| l.of(s)),
            [Level::L3, Level::L2, Level::L1, Level::L0]
        );
        assert_eq!(l.floor(Level::L3), Severity::Critical);
        assert_eq!(l.floor(Level::L0), Severity::Low);
        assert_eq!(Levels::new(|_| None), Ok(l));
    }

    #[test]
    fn a_city_that_counts_high_as_l3_raises_to_high() {
        let l = Levels::new(|s| (s == Severity::High).then_some(Level::L3)).expect("valid");
        assert_eq!(l.floor(Level::L3), Severity::High);
        assert_eq!(
            more_severe(Severity::Medium, l.floor(Level::L3)),
            Severity::High
        );
        // Never lowered: critical stays critical.
        assert_eq!(
            more_severe(Severity::Critical, Severity::High),
            Severity::Critical
        );
    }

    #[test]
    fn disagreeing_scales_and_no_l3_are_refused() {
        let inverted = Levels::new(|s| match s {
            Severity::Medium => Some(Level::L3),
            _ => None,
        });
        assert!(
            inverted.as_ref().is_err_and(|(s, e)| *s == Severity::Medium
                && e.contains("high is L2 but the milder medium is L3")),
            "{inverted:?}"
        );
        let no_l3 = Levels::new(|s| (s == Severity::Critical).then_some(Level::L2));
        assert!(no_l3.is_err_and(|(_, e)| e.contains("no severity is L3")));
        assert_eq!("l2".parse::<Level>(), Ok(Level::L2));
        assert!("L4".parse::<Level>().is_err());
    }
}

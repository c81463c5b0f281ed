//! Durations as the config and playbooks write them: `30s`, `10m`, `2h`, `3d`.
//!
//! One unit per value on purpose: a responder reading `window = "10m"` at 3 a.m. should not have
//! to add up `1h30m`. Zero and overflow are refused.

use std::fmt;
use std::str::FromStr;

/// A positive span of time written as `<number><unit>` with unit `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    seconds: u64,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason} (write a number and one unit: 30s, 10m, 2h, 3d)")]
pub struct SpanError {
    input: String,
    reason: &'static str,
}

impl Span {
    /// The span in whole seconds.
    pub fn as_secs(self) -> u64 {
        self.seconds
    }

    /// The span as a chrono duration, for arithmetic on stored times.
    pub fn to_chrono(self) -> chrono::TimeDelta {
        // Parsing caps the value far below i64::MAX seconds, so this cannot overflow.
        chrono::TimeDelta::seconds(self.seconds as i64)
    }

    /// A span of `seconds`; zero is allowed here for internal defaults only.
    pub const fn from_secs(seconds: u64) -> Self {
        Span { seconds }
    }
}

/// Ten years: anything longer in an incident tracker is a typo.
const MAX_SECONDS: u64 = 10 * 366 * 86_400;

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| SpanError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| err("no unit"))?;
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(err("no number"));
        }
        let n: u64 = number.parse().map_err(|_| err("number too large"))?;
        let factor = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(err("unknown unit")),
        };
        let seconds = n.checked_mul(factor).ok_or_else(|| err("too long"))?;
        if seconds == 0 {
            return Err(err("must be longer than zero"));
        }
        if seconds > MAX_SECONDS {
            return Err(err("longer than ten years"));
        }
        Ok(Span { seconds })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3_600) {
            write!(f, "{}h", s / 3_600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        for (text, secs) in [("30s", 30), ("10m", 600), ("2h", 7_200), ("3d", 259_200)] {
            assert_eq!(text.parse::<Span>().map(Span::as_secs), Ok(secs), "{text}");
        }
    }

    #[test]
    fn refuses_what_a_typo_produces() {
        for text in [
            "",
            "10",
            "m",
            "0m",
            "1.5h",
            "10 m",
            "10M",
            "1h30m",
            "-5m",
            "99999999999999999999d",
            "4000d",
        ] {
            assert!(text.parse::<Span>().is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(
            "120m".parse::<Span>().map(|s| s.to_string()),
            Ok("2h".into())
        );
        assert_eq!(
            "90s".parse::<Span>().map(|s| s.to_string()),
            Ok("90s".into())
        );
    }
}

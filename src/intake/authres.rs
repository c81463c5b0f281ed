//! `Authentication-Results` (RFC 8601) as the city's own mail server writes it: whether the
//! message passed DKIM or SPF for a domain aligned with its `From:`.
//!
//! Only the first header that names the configured authserv-id counts: the receiving server
//! prepends its own above everything the sender wrote, and a sender can write a header naming
//! any server. The server must also remove such headers from incoming mail (OpenDMARC's
//! `AuthservID` with Postfix, for instance), which is why this proof comes in addition to the
//! reply code, never instead of it.

/// Whether `values` (the message's Authentication-Results, top first) hold, in the first one by
/// `authserv_id`, a `dkim=pass` whose `header.d` (or `header.i`), or an `spf=pass` whose
/// `smtp.mailfrom`, is aligned with `from`'s domain (relaxed: the same domain, or one a subdomain
/// of the other).
pub fn aligned_pass(values: &[String], authserv_id: &str, from: &str) -> bool {
    let Some(from_domain) = domain_of(from) else {
        return false;
    };
    let Some(ours) = values
        .iter()
        .map(|v| strip_comments(v))
        .find(|v| server_of(v).is_some_and(|id| id.eq_ignore_ascii_case(authserv_id)))
    else {
        return false;
    };
    ours.split(';').skip(1).any(|result| {
        let mut tokens = result.split_whitespace();
        let Some((method, outcome)) = tokens.next().and_then(|t| t.split_once('=')) else {
            return false;
        };
        if !outcome.eq_ignore_ascii_case("pass") {
            return false;
        }
        let wanted: &[&str] = match method.to_ascii_lowercase().as_str() {
            "dkim" => &["header.d", "header.i"],
            "spf" => &["smtp.mailfrom"],
            _ => return false,
        };
        tokens.any(|prop| {
            prop.split_once('=').is_some_and(|(name, value)| {
                wanted.iter().any(|w| name.eq_ignore_ascii_case(w))
                    && domain_of(value).is_some_and(|d| aligned(&d, &from_domain))
            })
        })
    })
}

/// The authserv-id: the first token before the first `;`.
fn server_of(value: &str) -> Option<&str> {
    value.split(';').next()?.split_whitespace().next()
}

/// The domain of an address (`user@city.example`), or of a bare domain, lower-case.
fn domain_of(value: &str) -> Option<String> {
    let value = value.trim().trim_matches(['"', '<', '>']);
    let domain = value.rsplit('@').next()?.trim_end_matches('.');
    let plausible = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    plausible.then(|| domain.to_ascii_lowercase())
}

fn aligned(a: &str, b: &str) -> bool {
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

/// RFC 5322 comments (parenthesised, nested) removed: `(sender IP is 192.0.2.1)` is not a
/// property.
fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_pass_for_the_from_domain_by_our_server() {
        let ours = "mx.city.example; dkim=pass (2048-bit key) header.d=city.example header.s=s1; spf=fail smtp.mailfrom=x@evil.example";
        assert!(aligned_pass(
            &results(&[ours]),
            "mx.city.example",
            "duty@city.example"
        ));
        assert!(aligned_pass(
            &results(&[ours]),
            "MX.city.example",
            "duty@soumu.city.example"
        ));
        let spf =
            "mx.city.example 1; spf=pass (sender SPF authorized) smtp.mailfrom=duty@city.example";
        assert!(aligned_pass(
            &results(&[spf]),
            "mx.city.example",
            "duty@city.example"
        ));
    }

    #[test]
    fn what_proves_nothing() {
        let id = "mx.city.example";
        for (values, from) in [
            (
                vec!["mx.city.example; dkim=pass header.d=evil.example"],
                "duty@city.example",
            ),
            (
                vec!["mx.city.example; dkim=fail header.d=city.example"],
                "duty@city.example",
            ),
            (
                vec!["mx.city.example; spf=softfail smtp.mailfrom=city.example"],
                "duty@city.example",
            ),
            (
                vec!["mx.city.example; dmarc=pass header.from=city.example"],
                "duty@city.example",
            ),
            (
                vec!["other.example; dkim=pass header.d=city.example"],
                "duty@city.example",
            ),
            (vec!["mx.city.example; none"], "duty@city.example"),
            (
                vec!["mx.city.example; dkim=pass (header.d=city.example)"],
                "duty@city.example",
            ),
            (vec![], "duty@city.example"),
            (
                vec!["mx.city.example; dkim=pass header.d=ity.example"],
                "duty@city.example",
            ),
        ] {
            assert!(!aligned_pass(&results(&values), id, from), "{values:?}");
        }
        // The sender's own header below ours does not count: only the first by our id.
        let forged = results(&[
            "mx.city.example; dkim=none",
            "mx.city.example; dkim=pass header.d=city.example",
        ]);
        assert!(!aligned_pass(&forged, id, "duty@city.example"));
    }
}

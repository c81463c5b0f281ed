//! Proof that a mail command comes from a recipient of our notification.
//!
//! A reply's `From:` is whatever its sender typed, and our notifications' Message-IDs are
//! repeated in every later mail of the thread: neither proves anything. Each copy of an incident
//! mail therefore carries a reply code made for that incident and that recipient alone, an
//! HMAC-SHA256 of both under a key kept in the store. A reply acts (`ack`, `close:`) only when
//! its sender is a contact and it carries the code made for that sender and that incident
//! (quoted, as replies quote, or typed): a forged `From:` without the code, a code of another
//! incident, or another recipient's code, acts on nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// Bytes of the HMAC kept in a code: 96 bits, beyond guessing by mail.
const CODE_BYTES: usize = 12;

/// The literal that starts a code in a mail: `CSIRT-<incident>-<24 hex digits>`.
const PREFIX: &str = "CSIRT-";

/// The key of the reply codes.
#[derive(Clone)]
pub struct Proof {
    key: Vec<u8>,
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proof(<key>)")
    }
}

impl Proof {
    pub fn new(key: Vec<u8>) -> Proof {
        Proof { key }
    }

    /// The code of `recipient` (case does not matter) for `incident`, as it appears in a mail.
    pub fn code(&self, incident: i64, recipient: &str) -> String {
        let mac = self.mac(incident, recipient);
        let mut code = format!("{PREFIX}{incident}-");
        for byte in &mac[..CODE_BYTES] {
            code.push_str(&format!("{byte:02x}"));
        }
        code
    }

    fn mac(&self, incident: i64, recipient: &str) -> Vec<u8> {
        // The key is any length: HMAC takes it as it is. `new_from_slice` fails only for
        // fixed-size-key MACs, never for HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return Vec::new();
        };
        mac.update(b"csirt reply code\0");
        mac.update(incident.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(recipient.trim().to_lowercase().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `text` carries the code of `sender` for `incident`, anywhere (a reply quotes the
    /// notification, and some clients put the quote above the answer).
    pub fn carried_by(&self, incident: i64, sender: &str, text: &str) -> bool {
        let expected = self.mac(incident, sender);
        if expected.len() < CODE_BYTES {
            return false;
        }
        let head = format!("{PREFIX}{incident}-");
        let mut rest = text;
        while let Some(at) = rest.find(&head) {
            let after = &rest[at + head.len()..];
            let hex: String = after
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .take(CODE_BYTES * 2 + 1)
                .collect();
            if let Some(given) = decode_hex(&hex)
                && given.len() == CODE_BYTES
                && constant_time_eq(&given, &expected[..CODE_BYTES])
            {
                return true;
            }
            rest = after;
        }
        false
    }
}

/// The key as the store keeps it (hex).
pub fn key_to_text(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key from the store's text; `None` when it is not an even run of hex digits.
pub fn key_from_text(text: &str) -> Option<Vec<u8>> {
    decode_hex(text.trim()).filter(|k| !k.is_empty())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Compares without stopping at the first difference: how long a check takes says nothing
/// about how much of a guessed code was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new key from the operating system's random source.
pub fn new_key() -> Result<Vec<u8>, getrandom::Error> {
    let mut key = vec![0u8; 32];
    getrandom::getrandom(&mut key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof() -> Proof {
        Proof::new(b"a key that is only for this test".to_vec())
    }

    #[test]
    fn a_code_proves_one_incident_and_one_recipient() {
        let p = proof();
        let code = p.code(42, "Duty@Example.jp");
        assert!(code.starts_with("CSIRT-42-"));
        assert_eq!(code.len(), "CSIRT-42-".len() + 24);
        let reply = format!("ack\n\n> 確認コード: {code}\n> 新しいインシデント");
        assert!(p.carried_by(42, "duty@example.jp", &reply));
        assert!(
            !p.carried_by(42, "lead@example.jp", &reply),
            "another recipient"
        );
        assert!(
            !p.carried_by(43, "duty@example.jp", &reply),
            "another incident"
        );
        assert!(
            !Proof::new(b"another key".to_vec()).carried_by(42, "duty@example.jp", &reply),
            "another store's key"
        );
    }

    #[test]
    fn near_misses_prove_nothing() {
        let p = proof();
        let code = p.code(7, "duty@example.jp");
        let cut = &code[..code.len() - 1];
        let longer = format!("{code}0");
        let flipped = {
            let mut c = code.clone();
            let last = if c.ends_with('0') { '1' } else { '0' };
            c.pop();
            c.push(last);
            c
        };
        for text in [
            "",
            "ack",
            cut,
            longer.as_str(),
            flipped.as_str(),
            "CSIRT-7-",
            "CSIRT-7-zz",
        ] {
            assert!(!p.carried_by(7, "duty@example.jp", text), "{text:?}");
        }
        // Among other codes (a thread quoting several notifications), the right one counts.
        let many = format!("CSIRT-7-{} {code}", "ab".repeat(12));
        assert!(p.carried_by(7, "duty@example.jp", &many));
    }

    #[test]
    fn keys_are_random() {
        let (a, b) = (new_key().expect("key"), new_key().expect("key"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}

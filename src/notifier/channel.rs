//! The seam between the outbox and the way a notification leaves: a `Channel` delivers one
//! outbox row and says whether trying again can help. Mail (`transport::Mailer`: SMTP,
//! sendmail, files) is the one channel today; a chat webhook would be a second file here that
//! implements the same three methods. The notifier owns the retries, the rate digest and the
//! delivery state: a channel only delivers.

use crate::store::outbox::Outgoing;

/// Why one notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Trying again later can help (4xx, connection, disk).
    #[error("{0}")]
    Transient(String),
    /// Refused for good (5xx), or the row cannot become a message.
    #[error("{0}")]
    Permanent(String),
}

/// A way for notifications to leave.
pub trait Channel: Send + Sync {
    /// Where notifications go, for the log.
    fn describe(&self) -> &str;

    /// Delivers `row` to all its recipients; Ok once the other side took it.
    fn deliver(&self, row: &Outgoing) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Whether `row` goes to each recipient on its own from the start (each copy differs, as
    /// an incident mail carrying each recipient's reply code does).
    fn one_by_one(&self, _row: &Outgoing) -> bool {
        false
    }

    /// Delivers `row` to each recipient on its own (after a refusal of the whole, or when
    /// `one_by_one`): one address that no longer exists must not keep it from everyone else.
    fn deliver_each(
        &self,
        row: &Outgoing,
    ) -> impl Future<Output = Vec<(String, Result<(), SendError>)>> + Send;
}

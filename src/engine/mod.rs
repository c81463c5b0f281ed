//! The decisions between a match and what the store records, as plain functions over values,
//! unit-tested without a database (STYLE 18):
//!
//! - `hit`: a rule's match made ready to store (title, dedupe key);
//! - `batch`: what one transaction commits (hits, checkpoints, the mail they came from);
//! - `correlate`: join the open incident, wait below the threshold, or open one (and the dry run);
//! - `evidence`: which events an incident keeps;
//! - `window`: the threshold windows of below-threshold keys, in memory, bounded;
//! - `due`: which update, escalation level or reminder is due;
//! - `rate`: which due mails go out on their own and which are folded into a digest.
//!
//! Lifecycle transitions (which action from which status, by whom) are `model::Action`'s.
//! Nothing here does I/O or knows which backend the store runs.

mod batch;
mod correlate;
pub mod due;
mod evidence;
pub mod gate;
mod hit;
pub mod rate;
pub mod window;

pub use batch::{Batch, Checkpoint, IngestOutcome, JournalCursor, MailRecord, RawMail};
pub use correlate::{
    DryIncident, DryRun, RaiseStep, Step, after_window, on_hit, on_raise, raised_title,
};
pub use evidence::{EVIDENCE_KEEP, worth_storing};
pub use gate::RaiseGate;
pub use hit::{Hit, dedupe_key, fill_step, render_title};
pub use window::{Tally, Windows};

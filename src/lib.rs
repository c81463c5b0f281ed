//! csirt: the security-incident tracker of the 北上市CSIRT.
//!
//! Where things are, in the order data flows:
//! - `config`, `playbook`: what to watch and what counts as an incident (strict TOML, file:line errors)
//! - `model`: incidents, their lifecycle and timeline
//! - `store`: SQLite or PostgreSQL behind one `Store`; all SQL lives there
//! - `intake`: mail to the CSIRT (Maildir, `csirt intake`): replies, reports, rules, quarantine
//! - `notify`: the outbox's notifier (lettre) and the escalator (levels, reminders, cron digests)
//! - `daemon`: the supervisor that runs sources, notifier and escalator
//! - `cli`: what responders type; `cli::output` is the only stdout writer

pub mod cli;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod engine;
pub mod intake;
pub mod live;
pub mod logging;
pub mod model;
pub mod notifier;
pub mod playbook;
pub mod source;
pub mod store;
pub mod systemd;
pub mod text;
pub mod timestamp;
pub mod toml_file;

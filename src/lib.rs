//! csirt: the security-incident tracker of the 北上市CSIRT.
//!
//! The map, in the order data flows (source → matcher → engine → store → notifier/escalator).
//! Lower layers never import upper ones: `text`, `model`, `engine`, `compose` and `store`
//! import nothing from `source`, `intake`, `notifier`, `daemon` or `cli`.
//!
//! - `config`, `playbook`: what to watch and what counts as an incident (strict TOML,
//!   `file:line` errors); `playbook::matcher` compiles the rules once. Never does I/O at run time.
//! - `source`: the `Source` seam. Log files (`logs`, `logfile`), the systemd journal (`journal`),
//!   and the store writer that commits their batches; `intake`: mail to the CSIRT (Maildir, IMAP,
//!   `csirt intake` on a pipe), parsed within limits. A source never advances its own position:
//!   only the store transaction that commits its hits does.
//! - `engine`: the decisions as plain functions: hit → join / wait / open, evidence kept,
//!   what falls due; and the threshold windows held in memory (`engine::window`, bounded).
//!   Never touches the store.
//! - `model`: incidents, their lifecycle (`Action::allowed_from`, `permitted_by`) and timeline;
//!   `level`: the city's levels L0-L3 beside the severities (the config's `[levels]`);
//!   `pii`: personal-information facts, the statutory decision and clocks (rules as data), the
//!   report forms. Pure, like the engine.
//! - `store`: SQLite or PostgreSQL behind one `Store`; all SQL lives there, each shared
//!   statement once (`store::sql`). Never decides policy.
//! - `compose`: the Japanese notifications rendered from templates; pure, never sends.
//! - `notifier`: the outbox's notifier (through the `Channel` seam; mail today) and the
//!   escalator that writes updates, escalations, reminders and digests.
//! - `report`: the evaluation for 情報戦略本部 (`csirt report`, the `report` schedule): a
//!   period's figures beside the previous year's, as HTML with charts, CSV or JSON. Reads the
//!   store through `store::report`; never writes.
//! - `coverage`: which watched files no rule reads and which rules nothing feeds (warnings of
//!   `csirt config check` and the daemon's start).
//! - `daemon`: the supervisor that starts what the config names, reloads, and stops in order.
//! - `cli`: what responders type; `cli::output` is the only stdout writer.
//! - Shared below everything: `access` (who we run as, which permission a path denies us),
//!   `text` (sanitising, time formats, error chains), `live` (values
//!   a reload replaces), `duration`, `timestamp` (and `stamp`, a time read by a pattern's named
//!   groups), `toml_file`, `systemd`, `logging`.

pub mod access;
pub mod cli;
pub mod compose;
pub mod config;
pub mod coverage;
pub mod daemon;
pub mod duration;
pub mod engine;
pub mod intake;
pub mod level;
pub mod live;
pub mod logging;
pub mod model;
pub mod notifier;
pub mod pii;
pub mod playbook;
pub mod proof;
pub mod report;
pub mod source;
pub mod stamp;
pub mod store;
pub mod systemd;
pub mod text;
pub mod timestamp;
pub mod toml_file;

//! Integration tests: the real `csirt` binary against a real store (a SQLite file, and the
//! PostgreSQL at CSIRT_TEST_PG_URL when set), real files and real child processes.

// A test stops loudly at the first surprise: expect and panic are its way of failing.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod helpers;

mod cli;
mod daemon;
mod disk_full;
mod escalation;
mod fail2ban_import;
mod fail2ban_logs;
mod housekeeping;
mod imap;
mod ingest;
mod intake;
mod intake_hostile;
mod journal;
mod journalfile;
mod levels;
mod logrotate;
mod logs;
mod mail_out;
mod notify;
mod pii;
mod pii_escalation;
mod pii_walkthrough;
mod playbooks;
mod postfix;
mod rate;
mod report;
mod spray;
mod store;
mod systemd;

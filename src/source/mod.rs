//! Sources: what turns the outside world into hits with checkpoints.
//!
//! - `logfile`: one file read line by line from a byte offset, with its identity;
//! - `logs`: the configured `[[logs]]` patterns watched, rotated files followed, lines matched
//!   and batched for the store.

pub mod logfile;
pub mod logs;

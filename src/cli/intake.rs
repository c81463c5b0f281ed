//! `csirt intake`: one message on stdin, for an MTA's pipe (Postfix `mailbox_command`, an
//! alias). The exit status is what the MTA acts on (sysexits.h): 0 stored, 65 (EX_DATAERR)
//! quarantined, so the MTA does not retry it; 75 (EX_TEMPFAIL) when the store or the config
//! is unavailable, so the MTA keeps the message and tries again.

use super::{Cli, load_config};
use crate::compose::{Composer, template_dir};
use crate::intake::{Context, Outcome};
use crate::store::{Role, Store};
use anyhow::Context as _;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;

pub(super) async fn run(cli: &Cli) -> ExitCode {
    match take(cli).await {
        Ok(Outcome::Quarantined(why)) => {
            eprintln!("csirt intake: quarantined: {why}");
            ExitCode::from(EX_DATAERR)
        }
        Ok(outcome) => {
            eprintln!("csirt intake: {}", outcome.describe());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "csirt intake: {}; the MTA should retry later",
                crate::text::error_chain(&e)
            );
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}

/// `csirt intake quarantined`: what intake refused, by any path, with the reason.
pub(super) async fn quarantined(cli: &Cli, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let (_, config) = load_config(cli)?;
    let store = super::open_store(&config).await?;
    let mails = store.quarantined_mails(i64::from(limit)).await?;
    let mut out = super::output::Output::stdout(config.timezone);
    if json {
        out.json(&mails)?;
    } else {
        out.quarantined(&mails)?;
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn take(cli: &Cli) -> anyhow::Result<Outcome> {
    let (path, config) = load_config(cli)?;
    let contacts = config.contacts.keys().cloned().collect();
    let playbooks = crate::playbook::load(&config.playbooks, Some(&contacts))
        .with_context(|| format!("playbooks in {} refused", config.playbooks.display()))?;
    let composer = Arc::new(Composer::new(
        &config,
        &playbooks,
        template_dir(&path).as_deref(),
    )?);
    let ctx = Context::new(&config, &playbooks, composer);
    // One byte past the limit is enough to know the message is too large.
    let mut raw = Vec::new();
    std::io::stdin()
        .lock()
        .take(ctx.limits.max_size as u64 + 1)
        .read_to_end(&mut raw)?;
    // Opened, never created: a store made by the MTA's user would lock the daemon out.
    let store = Store::open(&config.store.url, Role::Cli).await?;
    store.ensure_schema_current().await?;
    let outcome = if raw.len() > ctx.limits.max_size {
        // The rest is not read: the MTA keeps the message in its bounce.
        let reason = format!("message over the {}-byte limit", ctx.limits.max_size);
        crate::intake::quarantine(&store, &ctx, raw, "stdin", &reason).await?
    } else {
        crate::intake::take(&store, &ctx, raw, "stdin").await?
    };
    store.close().await;
    Ok(outcome)
}

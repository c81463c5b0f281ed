//! An intake mailbox read over IMAP: TLS with rustls (implicit or STARTTLS), IDLE where the
//! server offers it and polling otherwise, and UID-based so that nothing is read twice.
//!
//! The position (UIDVALIDITY, last UID taken) is kept in the store and advanced after each
//! message's effect is committed; a crash in between reads the message again, which the intake
//! recognises (same key and hash) and leaves alone. Messages are fetched with BODY.PEEK and
//! flagged \Seen once taken, so a person looking at the mailbox sees what csirt has read.
//! Every failure (connection, login, a server that goes away) is logged once and retried with
//! backoff; the daemon never stops for the mailbox.

use super::{Context, Outcome};
use crate::config::{Imap, Tls};
use crate::live::Live;
use crate::store::Store;
use async_imap::extensions::idle::IdleResponse;
use futures_util::TryStreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// An IDLE is renewed this often (RFC 2177: servers may drop it after 30 minutes).
const IDLE_RENEW: Duration = Duration::from_secs(10 * 60);
/// Without IDLE, the mailbox is polled this often.
const POLL: Duration = Duration::from_secs(30);
/// Reconnection backoff, doubled per failure up to the cap.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// One connection, login or fetch may take this long.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The byte stream under the IMAP session: plain TCP (loopback only) or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}
type Session = async_imap::Session<Box<dyn Io>>;

/// Why a session ended or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("IMAP: {0}")]
    Imap(#[from] async_imap::error::Error),
    #[error("login refused: {0}")]
    Login(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("timed out after {}s", IO_TIMEOUT.as_secs())]
    Timeout,
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("password: {0}")]
    Password(String),
}

/// The account's name in the store: `user@host:port/mailbox`.
pub fn account(cfg: &Imap) -> String {
    format!("{}@{}:{}/{}", cfg.username, cfg.host, cfg.port, cfg.mailbox)
}

async fn timed<T, E: Into<ImapError>>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Timeout),
    }
}

/// The IMAP password: `password_file`, else the systemd credential `imap-password` (an empty
/// one counts as absent).
fn password(cfg: &Imap) -> Result<String, ImapError> {
    if let Some(path) = &cfg.password_file {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| ImapError::Password(format!("{}: {e}", path.display())));
    }
    crate::config::credential("imap-password")
        .map_err(|e| ImapError::Password(format!("$CREDENTIALS_DIRECTORY/imap-password: {e}")))?
        .ok_or_else(|| {
            ImapError::Password(
                "no password_file and no (or an empty) $CREDENTIALS_DIRECTORY/imap-password".into(),
            )
        })
}

fn tls_connector(cfg: &Imap) -> Result<tokio_rustls::TlsConnector, ImapError> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &cfg.ca_file {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ImapError::Tls(format!("ca_file {}: {e}", path.display())))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| ImapError::Tls(format!("ca_file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| ImapError::Tls(format!("ca_file {}: {e}", path.display())))?;
        }
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ImapError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn tls_wrap(cfg: &Imap, tcp: TcpStream) -> Result<Box<dyn Io>, ImapError> {
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(cfg.host.clone())
        .map_err(|e| ImapError::Tls(format!("{}: {e}", cfg.host)))?;
    let tls = timed(tls_connector(cfg)?.connect(name, tcp)).await?;
    Ok(Box::new(tls))
}

/// Connects, upgrades, logs in and selects the mailbox; returns the session and UIDVALIDITY.
async fn open(cfg: &Imap) -> Result<(Session, u32, bool), ImapError> {
    let tcp = timed(TcpStream::connect((cfg.host.as_str(), cfg.port))).await?;
    let stream: Box<dyn Io> = match cfg.tls {
        Tls::Tls => tls_wrap(cfg, tcp).await?,
        Tls::Starttls => {
            let mut client = async_imap::Client::new(tcp);
            timed(client.read_response()).await?;
            timed(client.run_command_and_check_ok("STARTTLS", None)).await?;
            tls_wrap(cfg, client.into_inner()).await?
        }
        Tls::None => Box::new(tcp),
    };
    let mut client = async_imap::Client::new(stream);
    if cfg.tls != Tls::Starttls {
        // The greeting (after STARTTLS there is none).
        timed(client.read_response()).await?;
    }
    let password = password(cfg)?;
    let mut session = match timed(async {
        client
            .login(&cfg.username, &password)
            .await
            .map_err(|(e, _)| ImapError::Login(e.to_string()))
    })
    .await
    {
        Ok(s) => s,
        Err(e) => return Err(e),
    };
    let idle = timed(session.capabilities()).await?.has_str("IDLE");
    let mailbox = timed(session.select(&cfg.mailbox)).await?;
    Ok((session, mailbox.uid_validity.unwrap_or(0), idle))
}

/// Takes the messages after the stored position; returns how many.
async fn take_new(
    session: &mut Session,
    store: &Store,
    ctx: &Context,
    account: &str,
    uidvalidity: u32,
) -> Result<usize, ImapError> {
    let last = match store.imap_position(account).await? {
        Some((v, last)) if v == i64::from(uidvalidity) => last,
        Some(_) => {
            warn!(
                account,
                "UIDVALIDITY changed: reading the mailbox again (what was taken before is recognised)"
            );
            0
        }
        None => 0,
    };
    // Sizes first: a message over the limit is never fetched.
    let sizes: Vec<(u32, u32)> = {
        let stream =
            timed(session.uid_fetch(format!("{}:*", last + 1), "(UID RFC822.SIZE)")).await?;
        let fetched: Vec<_> = timed(stream.try_collect::<Vec<_>>()).await?;
        fetched
            .iter()
            .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0))))
            // "n:*" always answers with the last message, even below n.
            .filter(|(uid, _)| i64::from(*uid) > last)
            .collect()
    };
    let mut taken = 0;
    for (uid, size) in sizes {
        let source = format!("imap:{account}#{uid}");
        let outcome = if size as usize > ctx.limits.max_size {
            let record = crate::engine::MailRecord {
                key: format!("unread:{source}"),
                hash: format!("size:{size}"),
                source: source.clone(),
                size: i64::from(size),
                raw: Default::default(),
            };
            let reason = format!(
                "message of {size} bytes is over the {}-byte limit (left on the server)",
                ctx.limits.max_size
            );
            // Left on the server unread: the notice names the account and UID instead.
            store.quarantine_mail(&record, &reason, None, None).await?;
            Outcome::Quarantined(reason)
        } else {
            let raw = {
                let stream = timed(session.uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")).await?;
                let fetched: Vec<_> = timed(stream.try_collect::<Vec<_>>()).await?;
                fetched
                    .iter()
                    .find(|f| f.uid == Some(uid))
                    .and_then(|f| f.body().map(<[u8]>::to_vec))
                    .unwrap_or_default()
            };
            super::take(store, ctx, raw, &source).await?
        };
        match &outcome {
            Outcome::Quarantined(why) => {
                warn!(uid, "IMAP mail quarantined: {why}");
                let message = format!("{source}: quarantined: {why}");
                if let Err(e) = store.record_error(&ctx.node, "intake", &message).await {
                    warn!("cannot record the quarantine: {e}");
                }
            }
            other => info!(uid, "IMAP mail {}", other.describe()),
        }
        store
            .set_imap_position(account, i64::from(uidvalidity), i64::from(uid))
            .await?;
        // Only a courtesy to the people who read the mailbox: a failure changes nothing here.
        if let Ok(stream) = session
            .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Seen)")
            .await
        {
            let _ = stream.try_collect::<Vec<_>>().await;
        }
        taken += 1;
    }
    Ok(taken)
}

/// Reads the mailbox until `stop`.
pub async fn run(
    store: Arc<Store>,
    cfg: Imap,
    ctx: Live<super::Context>,
    stop: CancellationToken,
    health: crate::systemd::Worker,
) {
    let account = account(&cfg);
    let mut backoff = BACKOFF_START;
    let mut reported: Option<String> = None;
    info!(account, tls = ?cfg.tls, "IMAP intake started");
    'outer: while !stop.is_cancelled() {
        health.busy();
        let result: Result<(), ImapError> = async {
            let (mut session, uidvalidity, idle) = open(&cfg).await?;
            if reported.take().is_some() {
                info!(account, "IMAP reachable again");
            }
            backoff = BACKOFF_START;
            loop {
                health.busy();
                let ctx_now = ctx.get();
                take_new(&mut session, &store, &ctx_now, &account, uidvalidity).await?;
                health.idle();
                if idle {
                    let mut handle = session.idle();
                    timed(handle.init()).await?;
                    let (wait, interrupt) = handle.wait_with_timeout(IDLE_RENEW);
                    let woke = tokio::select! {
                        r = wait => Some(r?),
                        _ = stop.cancelled() => None,
                    };
                    drop(interrupt);
                    session = timed(handle.done()).await?;
                    match woke {
                        None => return Ok(()),
                        Some(
                            IdleResponse::NewData(_)
                            | IdleResponse::Timeout
                            | IdleResponse::ManualInterrupt,
                        ) => {}
                    }
                } else {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
            }
        }
        .await;
        health.idle();
        match result {
            Ok(()) => break 'outer,
            Err(e) => {
                let text = e.to_string();
                if reported.as_deref() != Some(text.as_str()) {
                    error!(
                        account,
                        "IMAP intake: {text}; retrying in {}s",
                        backoff.as_secs()
                    );
                    reported = Some(text);
                }
                tokio::select! {
                    _ = stop.cancelled() => break 'outer,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
    }
    info!(account, "IMAP intake stopped");
}

/// An IMAP mailbox as a source.
pub struct ImapMailbox {
    cfg: Imap,
}

impl ImapMailbox {
    pub fn new(cfg: Imap) -> ImapMailbox {
        ImapMailbox { cfg }
    }
}

impl crate::source::Source for ImapMailbox {
    fn name(&self) -> &'static str {
        "IMAP intake"
    }

    fn run(self: Box<Self>, ctx: crate::source::SourceContext) -> crate::source::Running {
        Box::pin(async move {
            // Ready without waiting for the server: a mailbox that is away is retried, and must
            // not hold up the daemon's start.
            let _ = ctx.ready.send(());
            run(ctx.store, self.cfg, ctx.intake, ctx.cancel, ctx.health).await;
            Ok(())
        })
    }
}

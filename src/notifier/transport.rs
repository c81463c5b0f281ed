//! How a mail leaves: SMTP (STARTTLS or implicit TLS with rustls, AUTH, pooled), the local
//! sendmail, or files in a directory (the quick start). A failure says whether trying again
//! can help: a 5xx reply cannot, a 4xx or a lost connection can.

use super::channel::{Channel, SendError};
use crate::config::{Config, Tls, Transport};
use crate::proof::Proof;
use crate::store::outbox::Outgoing;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MessageBuilder, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::{
    AsyncFileTransport, AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message,
    Tokio1Executor,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one SMTP command may take before the attempt counts as failed (and is retried).
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pooled connections are dropped after this long idle, well below the usual server timeouts
/// (Postfix: 300 s), so that a send never starts on a connection the server already closed.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Why the mailer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("[smtp] password_file {path}: {source}")]
    Password {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[smtp] ca_file {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("[smtp] host {host}: {message}")]
    Smtp { host: String, message: String },
    #[error("[notify] from `{from}`: {message}")]
    From { from: String, message: String },
    #[error("[notify] dir {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

enum Inner {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// The configured way out.
pub struct Mailer {
    inner: Inner,
    from: Mailbox,
    describe: String,
    /// With it, each recipient of an incident mail gets a copy of their own that carries their
    /// reply code (`crate::proof`) and says how to answer by mail.
    proof: Option<Proof>,
}

/// `Auto-Submitted: auto-generated` (RFC 3834): vacation responders and other robots do not
/// answer it, so no mail loop can start between csirt and an auto-reply.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

impl Mailer {
    /// Builds the mailer `[notify]` and `[smtp]` describe. The SMTP password comes from
    /// `password_file`, else `$CREDENTIALS_DIRECTORY/smtp-password` (systemd `LoadCredential=`),
    /// else the inline `password`.
    pub fn from_config(config: &Config) -> Result<Mailer, SetupError> {
        let from_text = config.notify.from.get_ref();
        let from: Mailbox = from_text.parse().map_err(|e| SetupError::From {
            from: from_text.clone(),
            message: format!("{e}"),
        })?;
        let (inner, describe) = match config.notify.transport.get_ref() {
            Transport::File => {
                let dir = config
                    .notify
                    .dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("./var/mail/outbox"));
                std::fs::create_dir_all(&dir).map_err(|source| SetupError::Dir {
                    path: dir.clone(),
                    source,
                })?;
                let describe = format!("files in {}", dir.display());
                (Inner::File(AsyncFileTransport::new(dir)), describe)
            }
            Transport::Sendmail => (
                Inner::Sendmail(AsyncSendmailTransport::new()),
                "the local sendmail".to_string(),
            ),
            Transport::Smtp => {
                let Some(smtp) = &config.smtp else {
                    return Err(SetupError::Smtp {
                        host: String::new(),
                        message: "transport = \"smtp\" needs an [smtp] section".into(),
                    });
                };
                let smtp_error = |message: String| SetupError::Smtp {
                    host: smtp.host.clone(),
                    message,
                };
                let mut tls = TlsParameters::builder(smtp.host.clone());
                if let Some(path) = &smtp.ca_file {
                    let pem = std::fs::read(path).map_err(|e| SetupError::Ca {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| SetupError::Ca {
                        path: path.clone(),
                        message: format!("not a PEM certificate: {e}"),
                    })?;
                    tls = tls.add_root_certificate(cert);
                }
                let tls = tls.build_rustls().map_err(|e| smtp_error(e.to_string()))?;
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
                        .port(smtp.port)
                        .timeout(Some(SMTP_TIMEOUT))
                        .pool_config(
                            lettre::transport::smtp::PoolConfig::new()
                                .max_size(4)
                                .idle_timeout(POOL_IDLE),
                        );
                builder = match smtp.tls.get_ref() {
                    Tls::None => builder.tls(lettre::transport::smtp::client::Tls::None),
                    Tls::Starttls => {
                        builder.tls(lettre::transport::smtp::client::Tls::Required(tls))
                    }
                    Tls::Tls => builder.tls(lettre::transport::smtp::client::Tls::Wrapper(tls)),
                };
                if let Some(user) = &smtp.username {
                    let password = smtp_password(smtp.password_file.as_deref(), &smtp.password)?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                let tls_name = match smtp.tls.get_ref() {
                    Tls::None => "no TLS",
                    Tls::Starttls => "STARTTLS",
                    Tls::Tls => "TLS",
                };
                (
                    Inner::Smtp(builder.build()),
                    format!("SMTP {}:{} ({tls_name})", smtp.host, smtp.port),
                )
            }
        };
        Ok(Mailer {
            inner,
            from,
            describe,
            proof: None,
        })
    }

    /// Incident mails go to each recipient on their own, with their reply code.
    pub fn with_proof(mut self, proof: Proof) -> Mailer {
        self.proof = Some(proof);
        self
    }

    /// Builds the message of an outbox row: its stored Message-ID (a resend is recognisable),
    /// threaded under the incident's first mail.
    pub fn message(&self, row: &Outgoing) -> Result<Message, SendError> {
        self.message_to(row, &row.recipients())
    }

    /// The message of `row` addressed to `recipients` only.
    fn message_to(&self, row: &Outgoing, recipients: &[String]) -> Result<Message, SendError> {
        let mut builder: MessageBuilder = Message::builder()
            .from(self.from.clone())
            .subject(row.subject.clone())
            .message_id(Some(row.message_id.clone()))
            // `body` (unlike `singlepart`) adds no MIME-Version, which RFC 2045 requires.
            .header(lettre::message::header::MIME_VERSION_1_0)
            .header(AutoSubmitted);
        if let Some(parent) = &row.in_reply_to {
            builder = builder
                .in_reply_to(parent.clone())
                .references(parent.clone());
        }
        let mut any = false;
        for to in recipients {
            match to.parse::<Mailbox>() {
                Ok(mailbox) => {
                    builder = builder.to(mailbox);
                    any = true;
                }
                Err(e) => {
                    tracing::warn!(outbox = row.id, recipient = %to, "recipient skipped: {e}")
                }
            }
        }
        if !any {
            return Err(SendError::Permanent(format!(
                "no valid recipient in {}",
                row.recipients
            )));
        }
        let body = match (&self.proof, row.incident_id, recipients) {
            (Some(proof), Some(incident), [one]) => {
                format!(
                    "{}{}",
                    row.body,
                    reply_instructions(&proof.code(incident, one))
                )
            }
            _ => row.body.clone(),
        };
        let built = if row.attachments.is_empty() {
            builder.header(ContentType::TEXT_PLAIN).body(body)
        } else {
            // multipart/mixed: the text first (what a phone shows), then each file.
            let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(body));
            for file in &row.attachments {
                let kind = ContentType::parse(&file.content_type).map_err(|e| {
                    SendError::Permanent(format!(
                        "attachment {}: content type {}: {e}",
                        file.name, file.content_type
                    ))
                })?;
                parts = parts.singlepart(
                    lettre::message::Attachment::new(file.name.clone())
                        .body(file.content.clone(), kind),
                );
            }
            builder.multipart(parts)
        };
        built.map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
    }

    /// Hands one built message to the transport.
    async fn transmit(&self, message: Message) -> Result<(), SendError> {
        match &self.inner {
            Inner::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| {
                if e.is_permanent() {
                    SendError::Permanent(format!("the server refused: {e}"))
                } else {
                    SendError::Transient(e.to_string())
                }
            }),
            Inner::Sendmail(t) => t
                .send(message)
                .await
                .map_err(|e| SendError::Transient(format!("sendmail: {e}"))),
            Inner::File(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| SendError::Transient(format!("cannot write the mail file: {e}"))),
        }
    }
}

/// How to answer an incident mail by mail, with the recipient's own code. Plain text that reads
/// on a phone: the commands on lines of their own.
fn reply_instructions(code: &str) -> String {
    format!(
        "\n\n――――――――――――――――――――\n\
         メールの返信でも操作できます。返信の 1 行目に次のどれかを書いてください:\n\
         \x20 ack                … 受け付ける (エスカレーションが止まります)\n\
         \x20 close: resolved    … 対応を終えて閉じる\n\
         \x20 close: false-positive … 誤検知として閉じる\n\
         \x20 assign: 名前        … 担当者を決める\n\
         操作には下の確認コードが要ります。引用したままで構いません。\n\
         確認コードはあなたとこのインシデント専用です。このメールを転送しないでください。\n\
         確認コード: {code}\n"
    )
}

impl Channel for Mailer {
    fn describe(&self) -> &str {
        &self.describe
    }

    fn one_by_one(&self, row: &Outgoing) -> bool {
        self.proof.is_some() && row.incident_id.is_some()
    }

    /// Ok once the server (or the file system) took it.
    async fn deliver(&self, row: &Outgoing) -> Result<(), SendError> {
        self.transmit(self.message(row)?).await
    }

    async fn deliver_each(&self, row: &Outgoing) -> Vec<(String, Result<(), SendError>)> {
        let mut results = Vec::new();
        for to in row.recipients() {
            let result = match self.message_to(row, std::slice::from_ref(&to)) {
                Ok(message) => self.transmit(message).await,
                Err(e) => Err(e),
            };
            results.push((to, result));
        }
        results
    }
}

/// The SMTP password: `password_file`, else the systemd credential `smtp-password` when it is
/// not empty, else the inline `password`.
fn smtp_password(file: Option<&Path>, inline: &Option<String>) -> Result<String, SetupError> {
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|source| SetupError::Password {
                path: path.to_path_buf(),
                source,
            });
    }
    let credential =
        crate::config::credential("smtp-password").map_err(|source| SetupError::Password {
            path: PathBuf::from("$CREDENTIALS_DIRECTORY/smtp-password"),
            source,
        })?;
    Ok(credential.or_else(|| inline.clone()).unwrap_or_default())
}

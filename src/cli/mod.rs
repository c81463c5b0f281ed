//! The command line: what responders and sysadmins type. Parsing (clap), dispatch, exit codes.
//!
//! Exit codes are a contract: 0 ok, 1 operational failure, 2 usage error (clap's own), and the
//! sysexits of `csirt intake`. All output goes through `output`; errors are printed once, by
//! `main`, prefixed `csirt:`.

mod admin;
mod incidents;
mod intake;
pub mod output;
mod pii;
mod playbooks;
mod report;
mod status;

use crate::config::{Config, ConfigError, DEFAULT_PATH, StoreUrl};
use crate::duration::Span;
use crate::model::{Resolution, Severity, Status};
use crate::store::{Role, Store};
use crate::toml_file::TomlError;
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Exit status: 0 success, 1 operational error (store unreachable, incident not found, refused \
change), 2 usage error (also an unknown `csirt report --format` or a period that cannot be \
read). `csirt intake` exits 65 when it quarantines a message and 75 when the store is \
unavailable (the MTA retries). `csirt status` exits 1 when the store is unreachable, its schema \
is not this csirt's, or a daemon's heartbeat is stale; else 3 when a mail failed (as a whole or \
for one recipient) in the last 24 hours and no later mail to the same recipients went out; else \
4 when quarantined intake mail has waited longer than [notify] quarantine_notice (+5 min) \
without being announced.";

/// 北上市CSIRT security-incident tracker: watches logs and intake mail, opens incidents against
/// the playbooks, escalates and notifies.
#[derive(Parser, Debug)]
#[command(name = "csirt", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: /etc/csirt/csirt.toml]
    #[arg(long, global = true, env = "CSIRT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Store URL (sqlite://PATH or postgres://…); overrides [store] url
    #[arg(
        long,
        global = true,
        env = "CSIRT_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT; SIGHUP reloads
    Daemon,
    /// Query and change incidents
    #[command(subcommand)]
    Incidents(IncidentsCommand),
    /// List, check and try out playbooks
    #[command(subcommand)]
    Playbooks(PlaybooksCommand),
    /// Manage the store
    #[command(subcommand)]
    Db(DbCommand),
    /// Check the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the store, the daemons' heartbeats, backlogs, mail failures and recent errors: exit 1
    /// when the store, schema or a daemon (stale heartbeat) is wrong, else 3 when a mail failed
    /// in the last 24 hours (not superseded), else 4 for unannounced quarantined mail overdue
    Status {
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// The evaluation report for 情報戦略本部: a fiscal year (default: the current one), a month
    /// or a range of days, beside the same period a year before, as HTML, CSV or JSON
    Report(ReportArgs),
    /// Take one mail message on stdin (for an MTA's pipe): exit 0 stored, 65 quarantined,
    /// 75 try again later; `intake quarantined` lists what was quarantined
    #[command(args_conflicts_with_subcommands = true)]
    Intake {
        #[command(subcommand)]
        command: Option<IntakeCommand>,
    },
    /// Print a shell completion script (bash, zsh, fish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), for packaging
    #[command(hide = true)]
    Manpage,
}

/// `csirt report`: one period (at most one of --fiscal-year, --month, --from/--to).
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("period").args(["fiscal_year", "month", "from"])))]
pub struct ReportArgs {
    /// A fiscal year (April 1 to March 31) by its Western year: 2026 is 令和8年度
    #[arg(long, value_name = "YEAR", value_parser = clap::value_parser!(i32).range(1989..=9998))]
    pub fiscal_year: Option<i32>,
    /// One month, YYYY-MM
    #[arg(long, value_name = "YYYY-MM", value_parser = parse_month)]
    pub month: Option<crate::report::period::Span>,
    /// The first day of a range, YYYY-MM-DD (with --to)
    #[arg(long, value_name = "DATE", value_parser = parse_date, requires = "to")]
    pub from: Option<chrono::NaiveDate>,
    /// The last day of the range, included
    #[arg(long, value_name = "DATE", value_parser = parse_date, requires = "from")]
    pub to: Option<chrono::NaiveDate>,
    #[arg(long, value_enum, default_value = "html")]
    pub format: FormatArg,
    /// Write the report to FILE instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `--format`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    Html,
    Csv,
    Json,
}

impl From<FormatArg> for crate::report::Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Html => crate::report::Format::Html,
            FormatArg::Csv => crate::report::Format::Csv,
            FormatArg::Json => crate::report::Format::Json,
        }
    }
}

fn parse_month(s: &str) -> Result<crate::report::period::Span, String> {
    crate::report::period::parse_month(s).map_err(|e| e.to_string())
}

fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    crate::report::period::parse_date(s).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum IntakeCommand {
    /// List quarantined intake mail (pipe, Maildir and IMAP alike), newest first, with the reason
    Quarantined {
        /// At most this many
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Print one JSON array
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum IncidentsCommand {
    /// List incidents, newest first (default: those not closed)
    List {
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        #[arg(long, value_enum)]
        severity: Option<SeverityArg>,
        /// Only this playbook's incidents
        #[arg(long, value_name = "ID")]
        playbook: Option<String>,
        /// Only incidents seen within this span (30m, 24h, 7d)
        #[arg(long, value_name = "SPAN")]
        since: Option<Span>,
        /// At most this many
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// The morning check: incidents with a statutory report (個人情報保護法, 番号法) past its
        /// warning or deadline and not yet made, closed ones included
        #[arg(long, conflicts_with_all = ["status", "severity", "playbook", "since"])]
        overdue: bool,
        /// Print one JSON array
        #[arg(long)]
        json: bool,
    },
    /// Show an incident with its fields, steps, evidence and timeline
    Show {
        #[arg(value_parser = parse_id)]
        id: i64,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an open incident (stops escalation)
    Ack {
        #[arg(value_parser = parse_id)]
        id: i64,
    },
    /// Assign an incident to a responder
    Assign {
        #[arg(value_parser = parse_id)]
        id: i64,
        #[arg(value_parser = parse_text)]
        user: String,
    },
    /// Add a note to an incident's timeline
    Note {
        #[arg(value_parser = parse_id)]
        id: i64,
        #[arg(value_parser = parse_text)]
        text: String,
    },
    /// Close an incident with a resolution
    Close {
        #[arg(value_parser = parse_id)]
        id: i64,
        #[arg(long, value_enum)]
        resolution: ResolutionArg,
        /// A closing note for the timeline
        #[arg(long, value_parser = parse_text)]
        note: Option<String>,
    },
    /// Reopen a closed incident
    Reopen {
        #[arg(value_parser = parse_id)]
        id: i64,
    },
    /// Record personal-information facts (個人情報保護法) and show which reports and
    /// notifications they require, why, and by when (from 覚知); without flags, only shows. A
    /// required report to 個人情報保護委員会 raises the incident to L3 and tells the CISO group
    Pii(pii::PiiArgs),
    /// Record a report made or a notification done; the statutory clock it satisfies stops
    Reported(pii::ReportedArgs),
    /// Fill a report form (PPC 漏えい等報告, or the DDoS/ransomware 共通様式) from the store
    Export(pii::ExportArgs),
}

#[derive(Subcommand, Debug)]
pub enum PlaybooksCommand {
    /// List the loaded playbooks
    List {
        #[arg(long)]
        json: bool,
    },
    /// Validate playbooks (the configured directory, or PATH); prints file:line: message
    Check { path: Option<PathBuf> },
    /// Dry run of one playbook over a log file, like fail2ban-regex: nothing is stored
    Test {
        /// A playbook id from the configured set, `all` for the whole set as the daemon applies
        /// it to a file of this name, or the path of a playbook file
        playbook: String,
        /// The log file to read from its beginning
        logfile: PathBuf,
        /// How the file's bytes are decoded
        #[arg(long, value_enum, default_value = "utf-8")]
        encoding: EncodingArg,
        /// Print one JSON object: lines, matched, matches [{line, rule, fields}], incidents
        #[arg(long)]
        json: bool,
    },
    /// Make playbooks of another tool's rules
    #[command(subcommand)]
    Import(ImportCommand),
}

/// `csirt playbooks import …`.
#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// fail2ban filters (a filter file or a filter.d directory) as playbooks, one file each;
    /// prints what each filter became and what was left out and why. Every file written passes
    /// `csirt playbooks check`
    Fail2ban {
        /// Filter files (`sshd.conf`) or directories of them (`/etc/fail2ban/filter.d`)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A jail file (jail.local): its maxretry and findtime become each playbook's threshold
        /// and its filter modes apply (default: fail2ban's 5 within 10m)
        #[arg(long, value_name = "FILE")]
        jail: Option<PathBuf>,
        /// The filter mode for every filter (e.g. aggressive), over the jail's and the filter's own
        #[arg(long)]
        mode: Option<String>,
        /// Where to write the playbooks (review them, then copy them to the playbook directory)
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Print one JSON array: {filter, status, id, file, rules, backtracking, left_out, notes, reason}
        #[arg(long)]
        json: bool,
    },
}

/// `--encoding`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum EncodingArg {
    #[value(name = "utf-8")]
    Utf8,
    #[value(name = "shift_jis")]
    ShiftJis,
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Apply the schema migrations the store lacks
    Migrate,
    /// Remove what retention allows, once (the daemon does it every [retention] interval):
    /// below-threshold evidence and counters whose window has passed, raw mail bytes after
    /// [retention] mails, quarantined mail after [retention] quarantine, and the evidence of
    /// incidents closed longer than [retention] events beyond the first and last ten
    Prune {
        /// Count what would go, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration and playbooks and say what the daemon would watch
    Check,
}

/// `--status`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum StatusArg {
    Open,
    Acknowledged,
    Closed,
    All,
}

/// `--severity`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SeverityArg {
    Critical,
    High,
    Medium,
    Low,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Critical => Severity::Critical,
            SeverityArg::High => Severity::High,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::Low => Severity::Low,
        }
    }
}

impl From<StatusArg> for crate::store::StatusFilter {
    fn from(s: StatusArg) -> Self {
        use crate::store::StatusFilter::{All, Only};
        match s {
            StatusArg::Open => Only(Status::Open),
            StatusArg::Acknowledged => Only(Status::Acknowledged),
            StatusArg::Closed => Only(Status::Closed),
            StatusArg::All => All,
        }
    }
}

/// `--resolution`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ResolutionArg {
    Resolved,
    FalsePositive,
    Duplicate,
}

impl From<ResolutionArg> for Resolution {
    fn from(r: ResolutionArg) -> Self {
        match r {
            ResolutionArg::Resolved => Resolution::Resolved,
            ResolutionArg::FalsePositive => Resolution::FalsePositive,
            ResolutionArg::Duplicate => Resolution::Duplicate,
        }
    }
}

/// An incident id as printed (`42`) or as mail subjects write it (`#42`).
fn parse_id(s: &str) -> Result<i64, String> {
    s.strip_prefix('#')
        .unwrap_or(s)
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("`{s}` is not an incident id (a positive number such as 42)"))
}

/// Free text for the timeline: not empty, and no terminal control characters (newlines and tabs
/// are fine in a note).
fn parse_text(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("contains control characters".into());
    }
    Ok(s.to_string())
}

/// Runs a parsed command line and maps the outcome to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csirt: {}", crate::text::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `head` closing our stdout is a normal end, not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "csirt", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon => {
            let (path, config) = load_config(&cli)?;
            crate::logging::init(config.log_level.as_deref(), "info");
            // Bounded, because the unit's TasksMax= counts every thread: tokio's defaults (a
            // worker per CPU, up to 512 blocking threads) would let a big host or a burst of
            // blocking work (DNS lookups, the log thread's join) reach the limit, and a thread
            // refused by the kernel takes the daemon down. Past these bounds work queues.
            let runtime =
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(crate::daemon::WORKER_THREADS.min(
                        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                    ))
                    .max_blocking_threads(crate::daemon::MAX_BLOCKING_THREADS)
                    .enable_all()
                    .build()?;
            runtime.block_on(crate::daemon::run(
                path,
                config,
                crate::daemon::shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Intake { command: None } => {
            crate::logging::init(None, "warn");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(intake::run(&cli)))
        }
        Command::Incidents(_)
        | Command::Playbooks(_)
        | Command::Db(_)
        | Command::Config(_)
        | Command::Intake { command: Some(_) }
        | Command::Report(_)
        | Command::Status { .. } => {
            // A year's report reads a year of incidents: sqlx's "slow statement" warning (over
            // 1 s) would be noise on the secretariat's terminal, not a problem to act on.
            let filter = match cli.command {
                Command::Report(_) => "warn,sqlx::query=error",
                _ => "warn",
            };
            crate::logging::init(None, filter);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                match &cli.command {
                    Command::Incidents(c) => incidents::run(&cli, c).await,
                    Command::Playbooks(c) => playbooks::run(&cli, c).await,
                    Command::Db(DbCommand::Migrate) => admin::migrate(&cli).await,
                    Command::Db(DbCommand::Prune { dry_run, json }) => {
                        admin::prune(&cli, *dry_run, *json).await
                    }
                    Command::Config(ConfigCommand::Check) => admin::config_check(&cli).await,
                    Command::Status { json } => status::run(&cli, *json).await,
                    Command::Report(args) => report::run(&cli, args).await,
                    Command::Intake {
                        command: Some(IntakeCommand::Quarantined { limit, json }),
                    } => intake::quarantined(&cli, *limit, *json).await,
                    // Each handled by its own arm of the outer match, before any runtime.
                    Command::Daemon
                    | Command::Intake { command: None }
                    | Command::Completions { .. }
                    | Command::Manpage => Ok(ExitCode::from(2)),
                }
            })
        }
    }
}

/// The configuration the command line points at, with `--database` applied.
///
/// Without `--config` or `CSIRT_CONFIG`, a missing `/etc/csirt/csirt.toml` is fine when
/// `--database` says where the store is: a responder on a workstation needs no config file.
pub fn load_config(cli: &Cli) -> anyhow::Result<(PathBuf, Config)> {
    let explicit = cli.config.is_some();
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    let database = cli
        .database
        .as_deref()
        .map(StoreUrl::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    match (Config::load(&path), database) {
        (Ok(mut config), database) => {
            if let Some(url) = database {
                config.store.url = url;
            }
            Ok((path, config))
        }
        (Err(ConfigError::Toml(TomlError::Read { source, .. })), Some(url))
            if !explicit && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok((path, Config::for_database(url)))
        }
        (Err(e), _) if !explicit => {
            Err(e).context("no usable configuration (pass --config PATH, set CSIRT_CONFIG, or give --database URL)")
        }
        (Err(e), _) => Err(e.into()),
    }
}

/// Opens the store for a CLI command and checks that its schema is the one we speak.
async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::open(&config.store.url, Role::Cli).await?;
    store.ensure_schema_current().await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn ids_and_texts() {
        assert_eq!(parse_id("#42"), Ok(42));
        assert!(parse_id("0").is_err() && parse_id("-3").is_err() && parse_id("4x").is_err());
        assert!(parse_text("ok\nsecond line").is_ok());
        assert!(parse_text("\u{1b}[2J").is_err());
        assert!(parse_text("  ").is_err());
    }
}

//! `csirt status`: is the store there, is its schema right, are the daemons alive, what is
//! waiting. Exits 1 when something needs a sysadmin, so it can serve as a monitoring check.

use super::output::Output;
use super::{Cli, load_config};
use crate::daemon::HEARTBEAT_STALE_AFTER;
use crate::model::now;
use crate::store::outbox::OutboxStats;
use crate::store::{
    DaemonError, Heartbeat, JournalPosition, LogPosition, Overview, Role, SchemaVersion, Store,
};
use crate::text::{ago, error_chain, long_time};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct StatusJson {
    store: StoreJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<SchemaVersion>,
    daemons: Vec<DaemonJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overview: Option<Overview>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbox: Option<OutboxStats>,
    sources: Vec<SourceJson>,
    journals: Vec<JournalJson>,
    recent_errors: Vec<DaemonError>,
    ok: bool,
}

/// A `[[journal]]` source as a daemon reads it: its cursor, and how far behind the newest
/// entry the source's matches select now.
#[derive(Serialize)]
struct JournalJson {
    #[serde(flatten)]
    position: JournalPosition,
    /// The newest matching entry's time, when journalctl could tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    newest_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds between the last committed entry and the newest one (0: caught up).
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_seconds: Option<i64>,
    /// Why the newest entry is not known (journalctl missing, no permission, not configured here).
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_unknown: Option<String>,
}

impl JournalJson {
    async fn new(position: JournalPosition, config: &crate::config::Config) -> JournalJson {
        let source = config
            .journal
            .iter()
            .find(|j| j.name.get_ref() == &position.source);
        let newest = match source {
            Some(source) => crate::source::journals::newest_entry(source).await,
            None => Err("not a [[journal]] source of this configuration".to_string()),
        };
        let (newest_at, lag_seconds, lag_unknown) = match newest {
            Ok(Some(e)) if e.cursor == position.cursor => (Some(e.realtime), Some(0), None),
            Ok(Some(e)) => (
                Some(e.realtime),
                Some((e.realtime - position.entry_at).num_seconds().max(0)),
                None,
            ),
            Ok(None) => (
                None,
                None,
                Some("the journal holds no matching entry".into()),
            ),
            Err(e) => (None, None, Some(e)),
        };
        JournalJson {
            position,
            newest_at,
            lag_seconds,
            lag_unknown,
        }
    }
}

/// A log file as the daemons read it: where they stand and how far behind the file's end.
#[derive(Serialize)]
struct SourceJson {
    #[serde(flatten)]
    position: LogPosition,
    /// The file's size now, when it is the file the position is in (not rotated away).
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// Bytes not read yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_bytes: Option<u64>,
}

impl SourceJson {
    fn new(position: LogPosition) -> SourceJson {
        use std::os::unix::fs::MetadataExt;
        // The size says something only while the path still names the file the position is in.
        let size = std::fs::metadata(&position.path)
            .ok()
            .filter(|m| (m.dev(), m.ino()) == (position.dev, position.inode))
            .map(|m| m.len());
        SourceJson {
            lag_bytes: size.map(|s| s.saturating_sub(position.offset)),
            size,
            position,
        }
    }
}

#[derive(Serialize)]
struct StoreJson {
    url: String,
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct DaemonJson {
    #[serde(flatten)]
    heartbeat: Heartbeat,
    age_seconds: i64,
    stale: bool,
    /// The daemon recorded a clean stop as its last beat.
    stopped: bool,
}

pub(super) async fn run(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let (_, config) = load_config(cli)?;
    let url = config.store.url.to_string();
    let mut out = Output::stdout(config.timezone);
    let store = match Store::open(&config.store.url, Role::Cli).await {
        Ok(store) => store,
        Err(e) => {
            let error = error_chain(&e.into());
            if json {
                out.json(&StatusJson {
                    store: StoreJson {
                        url,
                        reachable: false,
                        error: Some(error),
                    },
                    schema: None,
                    daemons: Vec::new(),
                    overview: None,
                    outbox: None,
                    sources: Vec::new(),
                    journals: Vec::new(),
                    recent_errors: Vec::new(),
                    ok: false,
                })?;
            } else {
                out.line(&format!("ストア (store): {url}  接続できません: {error}"))?;
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let schema = store.schema_version().await?;
    let current = schema.applied == schema.expected;
    // Counts need the tables; on a store that was never migrated there is nothing to count.
    let (overview, outbox, errors) = if current {
        (
            Some(store.overview().await?),
            Some(store.outbox_stats().await?),
            store.recent_errors(5).await?,
        )
    } else {
        (None, None, Vec::new())
    };
    let heartbeats = if schema.applied > 0 {
        store.heartbeats().await?
    } else {
        Vec::new()
    };
    let now = now();
    let daemons: Vec<DaemonJson> = heartbeats
        .into_iter()
        .map(|h| {
            let age = (now - h.beat_at).num_seconds();
            DaemonJson {
                stale: age > HEARTBEAT_STALE_AFTER.as_secs() as i64,
                stopped: h.summary == crate::daemon::STOPPED_SUMMARY,
                age_seconds: age,
                heartbeat: h,
            }
        })
        .collect();
    let sources: Vec<SourceJson> = if current {
        store
            .log_positions()
            .await?
            .into_iter()
            .map(SourceJson::new)
            .collect()
    } else {
        Vec::new()
    };
    let mut journals = Vec::new();
    if current {
        for position in store.journal_positions().await? {
            journals.push(JournalJson::new(position, &config).await);
        }
    }
    let ok = current && daemons.iter().all(|d| !d.stale);
    if json {
        out.json(&StatusJson {
            store: StoreJson {
                url,
                reachable: true,
                error: None,
            },
            schema: Some(schema),
            daemons,
            overview,
            outbox,
            sources,
            journals,
            recent_errors: errors,
            ok,
        })?;
    } else {
        let tz = out.tz;
        out.line(&format!(
            "ストア (store):  {url} ({}) 接続OK",
            store.backend_name()
        ))?;
        let schema_note = match schema.applied.cmp(&schema.expected) {
            std::cmp::Ordering::Equal => "最新",
            std::cmp::Ordering::Less => "古い: csirt db migrate を実行してください",
            std::cmp::Ordering::Greater => "このcsirtより新しい: csirt を更新してください",
        };
        out.line(&format!(
            "スキーマ (schema): {} / {} ({schema_note})",
            schema.applied, schema.expected
        ))?;
        if daemons.is_empty() {
            out.line("デーモン (daemon): 記録なし (no heartbeat yet)")?;
        }
        for d in &daemons {
            let h = &d.heartbeat;
            let state = if d.stopped {
                "停止 (stopped)"
            } else if d.stale {
                "応答なし (STALE)"
            } else {
                "稼働中"
            };
            out.line(&format!(
                "デーモン (daemon): {} {state}  pid {}  v{}  起動 {}  最終ハートビート {}",
                h.node,
                h.pid,
                h.version,
                long_time(h.started_at, tz),
                ago(h.beat_at, now)
            ))?;
            if !h.summary.is_empty() {
                out.line(&format!("  {}", h.summary))?;
            }
        }
        if let Some(o) = &overview {
            let counts: Vec<String> = o
                .open_by_severity
                .iter()
                .map(|(s, n)| format!("{} {n}", s.label_ja()))
                .collect();
            out.line(&format!("未クローズ (open): {}", counts.join(" / ")))?;
            out.line(&format!(
                "送信待ち (outbox): {}  送信失敗 (failed): {}  隔離メール (quarantined): {} (一覧: csirt intake quarantined)",
                o.outbox_pending, o.outbox_failed, o.quarantined_mails
            ))?;
        }
        if let Some(x) = &outbox {
            if x.retrying > 0 {
                out.line(&format!(
                    "  再送中 (retrying): {}  最古の送信待ち: {}",
                    x.retrying,
                    x.oldest_pending
                        .map(|t| long_time(t, tz))
                        .unwrap_or_default()
                ))?;
            }
            for (id, subject, error) in &x.failures {
                out.line(&format!("  送信失敗 #{id}: {subject}: {error}"))?;
            }
        }
        for s in &sources {
            let lag = match s.lag_bytes {
                Some(0) => "追いついている (caught up)".to_string(),
                Some(n) => format!("未読 {n} バイト (behind)"),
                None => "ローテート済み (rotated away)".to_string(),
            };
            out.line(&format!(
                "ログ (log): {} {}  位置 {}  {lag}  更新 {}",
                s.position.node,
                s.position.path,
                s.position.offset,
                ago(s.position.updated_at, now)
            ))?;
        }
        for j in &journals {
            let lag = match (j.lag_seconds, &j.lag_unknown) {
                (Some(0), _) => "追いついている (caught up)".to_string(),
                (Some(s), _) => format!("最新より {s} 秒遅れ (behind)"),
                (None, Some(why)) => format!("遅れ不明: {why}"),
                (None, None) => String::new(),
            };
            out.line(&format!(
                "ジャーナル (journal): {} {}  最終エントリ {}  {lag}  更新 {}",
                j.position.node,
                j.position.source,
                long_time(j.position.entry_at, tz),
                ago(j.position.updated_at, now)
            ))?;
        }
        for e in &errors {
            out.line(&format!(
                "エラー: {} {} [{}] {}",
                long_time(e.at, tz),
                e.node,
                e.component,
                e.message
            ))?;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

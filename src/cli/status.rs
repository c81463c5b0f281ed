//! `csirt status`: is the store there, is its schema right, are the daemons alive, what is
//! waiting, what failed. It serves as a monitoring check (a systemd timer, Nagios): exit 1 when
//! the store, its schema or a daemon needs a sysadmin, else 3 when a mail failed (as a whole or
//! for one recipient) in the last 24 hours and nothing has since reached the same recipients,
//! else 4 when quarantined intake mail is overdue for its announcement, else 0. Everything
//! shown from the store comes from one snapshot (`Store::status_snapshot`), so the summary and
//! the lines under it cannot disagree. The text ends with the reason for a non-zero exit;
//! `--json` carries the same reasons in `problems`.

use super::output::Output;
use super::{Cli, load_config};
use crate::daemon::HEARTBEAT_STALE_AFTER;
use crate::level::{Level, Levels};
use crate::model::{Severity, now};
use crate::store::outbox::OutboxStats;
use crate::store::prune::StoreUsage;
use crate::store::space::{DISK_FULL, Disk, LOW_BYTES, bytes};
use crate::store::status::{ANNOUNCE_GRACE, QuarantineBacklog, StatusSnapshot};
use crate::store::{
    DaemonError, Heartbeat, JournalPosition, LogPosition, Overview, Role, SchemaVersion, Store,
};
use crate::text::{ago, error_chain, long_time};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// The exit status when the only problem is a mail that failed in the last 24 hours: distinct
/// from 1 (the store or a daemon is down) and 2 (usage), so a check can tell "mail to a wrong
/// address" from "nothing works".
pub const EXIT_MAIL_FAILED: u8 = 3;

/// The exit status when the only problem is quarantined intake mail the responders have not
/// been told about in time (no daemon announces, or its notice cannot be written).
pub const EXIT_QUARANTINE_BACKLOG: u8 = 4;

#[derive(Serialize)]
struct StatusJson {
    store: StoreJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<SchemaVersion>,
    daemons: Vec<DaemonJson>,
    /// The summary's counts, from the same snapshot as `outbox` and `quarantine`.
    #[serde(skip_serializing_if = "Option::is_none")]
    overview: Option<Overview>,
    /// The city's levels (the config's `[levels]`) beside `overview`'s severities: each
    /// severity's level and the not-closed incidents per level, as the text shows them.
    #[serde(skip_serializing_if = "Option::is_none")]
    levels: Option<LevelsJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbox: Option<OutboxStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantine: Option<QuarantineBacklog>,
    /// The store's size, its oldest rows and what housekeeping has removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<StoreUsage>,
    sources: Vec<SourceJson>,
    journals: Vec<JournalJson>,
    recent_errors: Vec<DaemonError>,
    /// Per daemon whose ingest is stopped (a batch that does not commit: a full disk, a store
    /// that is away), why; empty while every daemon's ingest runs.
    ingest_stopped: Vec<DaemonError>,
    ok: bool,
    /// Why the exit status is not 0, as the text says it.
    problems: Vec<String>,
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
struct LevelsJson {
    /// `{"critical": "L3", "high": "L2", …}`.
    of: BTreeMap<Severity, Level>,
    /// Not-closed incidents per level, every level listed (`{"L0": 0, …}`).
    open: BTreeMap<Level, i64>,
}

impl LevelsJson {
    fn new(levels: &Levels, open_by_severity: &[(Severity, i64)]) -> LevelsJson {
        let mut open: BTreeMap<Level, i64> = Level::ALL.into_iter().map(|l| (l, 0)).collect();
        for (s, n) in open_by_severity {
            *open.entry(levels.of(*s)).or_default() += n;
        }
        LevelsJson {
            of: Severity::ALL
                .into_iter()
                .map(|s| (s, levels.of(s)))
                .collect(),
            open,
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
                        error: Some(error.clone()),
                    },
                    schema: None,
                    daemons: Vec::new(),
                    overview: None,
                    levels: None,
                    outbox: None,
                    quarantine: None,
                    usage: None,
                    sources: Vec::new(),
                    journals: Vec::new(),
                    recent_errors: Vec::new(),
                    ingest_stopped: Vec::new(),
                    ok: false,
                    problems: vec![format!("ストアに接続できません: {error}")],
                })?;
            } else {
                out.line(&format!("ストア (store): {url}  接続できません: {error}"))?;
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let now = now();
    let schema = store.schema_version().await?;
    let current = schema.applied == schema.expected;
    // Counts need the tables; on a store that was never migrated there is nothing to count.
    let overdue_before = now - config.notify.quarantine_notice.to_chrono() - ANNOUNCE_GRACE;
    let (snapshot, usage) = if current {
        (
            Some(store.status_snapshot(now, overdue_before, 5).await?),
            Some(store.usage().await?),
        )
    } else {
        (None, None)
    };
    let heartbeats = match (&snapshot, schema.applied > 0) {
        (Some(s), _) => s.heartbeats.clone(),
        (None, true) => store.heartbeats().await?,
        (None, false) => Vec::new(),
    };
    let (overview, outbox, quarantine, errors, stops) = match snapshot {
        Some(StatusSnapshot {
            open_by_severity,
            outbox,
            quarantine,
            errors,
            ingest_stops,
            heartbeats: _,
        }) => (
            Some(Overview {
                open_by_severity,
                outbox_pending: outbox.pending,
                outbox_failed: outbox.failed,
                outbox_refused: outbox.refused,
                quarantined_mails: quarantine.quarantined,
            }),
            Some(outbox),
            Some(quarantine),
            errors,
            ingest_stops,
        ),
        None => (None, None, None, Vec::new(), Vec::new()),
    };
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
    let disk = usage.as_ref().and_then(|u| u.disk.as_ref());
    let (problems, code) = problems(
        &schema,
        &daemons,
        outbox.as_ref(),
        quarantine.as_ref(),
        (&stops, disk),
    );
    let ok = problems.is_empty();
    if json {
        let levels = overview
            .as_ref()
            .map(|o| LevelsJson::new(&config.levels(), &o.open_by_severity));
        out.json(&StatusJson {
            store: StoreJson {
                url,
                reachable: true,
                error: None,
            },
            schema: Some(schema),
            daemons,
            overview,
            levels,
            outbox,
            quarantine,
            usage,
            sources,
            journals,
            recent_errors: errors,
            ingest_stopped: stops,
            ok,
            problems,
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
                // A snapshot as of the beat: the counts below are the store's now.
                out.line(&format!("  {} (ハートビート時点)", h.summary))?;
            }
        }
        for s in &stops {
            out.line(&format!(
                "取り込み停止 (ingest stopped): {} {} から  {}",
                s.node,
                long_time(s.at, tz),
                s.message
            ))?;
        }
        if let Some(o) = &overview {
            let levels = config.levels();
            let counts: Vec<String> = o
                .open_by_severity
                .iter()
                .map(|(s, n)| format!("{} ({}) {n}", s.label_ja(), levels.of(*s)))
                .collect();
            out.line(&format!("未クローズ (open): {}", counts.join(" / ")))?;
        }
        // The summary and the lines under it come from the same snapshot, so they cannot
        // disagree; the lines list the latest few of what the summary counts.
        if let (Some(q), Some(x)) = (&quarantine, &outbox) {
            out.line(&format!(
                "送信待ち (outbox): {}  送信失敗 (failed): {}  宛先拒否 (refused): {}  隔離メール (quarantined): {} (一覧: csirt intake quarantined)",
                x.pending, x.failed, x.refused, q.quarantined
            ))?;
            if x.failed_resolved + x.refused_resolved > 0 {
                out.line(&format!(
                    "  解決済み (resolved): 送信失敗 {}  宛先拒否 {} (その後同じ宛先への送信が成功)",
                    x.failed_resolved, x.refused_resolved
                ))?;
            }
            if let Some(oldest) = q.oldest_unannounced {
                out.line(&format!(
                    "  未通知の隔離メール (unannounced): {} 件  最古 {}",
                    q.unannounced_overdue,
                    long_time(oldest, tz)
                ))?;
            }
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
            if x.failed > x.failures.len() as i64 {
                out.line(&format!(
                    "  (送信失敗は最新 {} 件を表示、ほか {} 件)",
                    x.failures.len(),
                    x.failed - x.failures.len() as i64
                ))?;
            }
            for r in &x.refusals {
                out.line(&format!(
                    "  宛先拒否 {} ({}、送信 #{}: {}): {}",
                    r.recipient,
                    long_time(r.at, tz),
                    r.outbox_id,
                    r.subject,
                    r.error
                ))?;
            }
            if x.refused > x.refusals.len() as i64 {
                out.line(&format!(
                    "  (宛先拒否は最新 {} 件を表示、ほか {} 件)",
                    x.refusals.len(),
                    x.refused - x.refusals.len() as i64
                ))?;
            }
        }
        if let Some(u) = &usage {
            let size = u.size_bytes.map_or_else(
                || "不明".to_string(),
                |b| format!("{:.1} MiB", b as f64 / 1_048_576.0),
            );
            let oldest = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(|| "なし".to_string(), |t| long_time(t, tz))
            };
            let free = u.disk.as_ref().map_or_else(String::new, |d| {
                format!(
                    "  空き (free) {} / {} ({})",
                    bytes(d.available_bytes),
                    bytes(d.total_bytes),
                    d.dir.display()
                )
            });
            out.line(&format!(
                "容量 (size): {size}{free}  閾値未満のイベント (pending) {} 件 (最古 {})  カウンタ (hit counts) {} 件  最古のメール本文 (oldest raw mail) {}",
                u.pending_events,
                oldest(u.oldest_pending_event),
                u.hit_counts,
                oldest(u.oldest_raw_mail)
            ))?;
            let pruned: Vec<String> = u
                .pruned
                .iter()
                .map(|t| format!("{} {}", t.kind, t.total))
                .collect();
            out.line(&format!(
                "整理 (housekeeping): 最終実行 {}  削除累計: {}",
                u.last_prune_at
                    .map_or_else(|| "未実行".to_string(), |t| ago(t, now)),
                if pruned.is_empty() {
                    "なし".to_string()
                } else {
                    pruned.join(" / ")
                }
            ))?;
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
        for p in &problems {
            out.line(&format!("要対応 (attention): {p}"))?;
        }
    }
    Ok(ExitCode::from(code))
}

/// Why `csirt status` exits non-zero, in words a sysadmin acts on, and the exit status: 1 for
/// the schema, a daemon, a stopped ingest or a store's disk that is (nearly) full, else
/// `EXIT_MAIL_FAILED` for a recent mail failure, else `EXIT_QUARANTINE_BACKLOG` for
/// quarantined mail not announced in time, else 0.
fn problems(
    schema: &SchemaVersion,
    daemons: &[DaemonJson],
    outbox: Option<&OutboxStats>,
    quarantine: Option<&QuarantineBacklog>,
    (stops, disk): (&[DaemonError], Option<&Disk>),
) -> (Vec<String>, u8) {
    let mut problems = Vec::new();
    if schema.applied != schema.expected {
        problems.push(format!(
            "スキーマが {} で、この csirt は {} を必要とします (csirt db migrate、または csirt の更新)",
            schema.applied, schema.expected
        ));
    }
    // A full disk refuses the heartbeat too: a daemon that looks stale may be alive and waiting.
    let low = disk.filter(|d| d.is_low());
    let full_hint = if low.is_some() {
        "。ストアのディスクが一杯で、ハートビートを書けないのかもしれません"
    } else {
        ""
    };
    for d in daemons.iter().filter(|d| d.stale) {
        problems.push(format!(
            "デーモン {} のハートビートが {} 秒前から途絶えています (systemctl status csirt、journalctl -u csirt を確認){full_hint}",
            d.heartbeat.node, d.age_seconds
        ));
    }
    for s in stops {
        let what_to_do = if s.message.starts_with(DISK_FULL) {
            "不要なファイルを消すかファイルシステムを広げて、ストアのディスクに空きを作ってください \
             (csirt db prune では SQLite のファイルは縮みません)"
        } else {
            "journalctl -u csirt でストアのエラーを確認してください"
        };
        // The reason without what the daemon says it does about it: this line says that.
        let why = s.message.split('。').next().unwrap_or(&s.message);
        problems.push(format!(
            "デーモン {} の取り込みが止まっています: {why}。{what_to_do}。ストアが書き込みを受け付ければ、\
             デーモンは止まった位置から自動で再開します (再起動は不要、行を失うことも二重に数えることもありません)",
            s.node
        ));
    }
    if let Some(d) = low
        && stops.is_empty()
    {
        problems.push(format!(
            "ストアのあるファイルシステム {} の空きが {} しかありません ({} 未満、全体 {}): 一杯になると取り込みが止まります。\
             空きを作ってください",
            d.dir.display(),
            bytes(d.available_bytes),
            bytes(LOW_BYTES),
            bytes(d.total_bytes)
        ));
    }
    let mut code = if problems.is_empty() { 0 } else { 1 };
    if let Some(x) = outbox
        && x.failed_recently + x.refused_recently > 0
    {
        problems.push(format!(
            "直近 24 時間にメールの送信失敗が {} 通、宛先の拒否が {} 件あります: 上の「送信失敗」「宛先拒否」の \
             サーバの応答を見て、[notify] to と [contacts] のアドレスを確認してください",
            x.failed_recently, x.refused_recently
        ));
        if code == 0 {
            code = EXIT_MAIL_FAILED;
        }
    }
    if let Some(q) = quarantine
        && q.unannounced_overdue > 0
    {
        problems.push(format!(
            "隔離したメール {} 通が [notify] quarantine_notice を過ぎても通知されていません: デーモンが動いているか \
             (systemctl status csirt)、上の送信待ちを確認し、csirt intake quarantined で中身を見てください",
            q.unannounced_overdue
        ));
        if code == 0 {
            code = EXIT_QUARANTINE_BACKLOG;
        }
    }
    (problems, code)
}

//! What the evaluation report (`crate::report`) reads: the incidents opened in a period with
//! their first acknowledgement and how they came in, the escalations fired, the incidents still
//! open at a time. Reads only.
//!
//! The incidents of a period come as one batch of text per statement (`OpenedIncidents`), not as
//! one row each: on a store of a million incidents, a row through the SQLite driver costs more
//! than everything the report does with it, and grouping in SQL costs SQLite a sort of every row
//! (measured in README「性能」). The report counts in Rust, over the batch, with the same
//! functions as before, so its figures do not depend on how the rows travelled. Everything the
//! backends spell differently (string aggregation, a time as text) is in this module, once per
//! backend.

use super::{Backend, Store, StoreError};
use crate::model::{Resolution, Severity};
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use sqlx::FromRow;
use std::borrow::Cow;
use std::collections::HashMap;

/// An incident as the report counts it, borrowed from its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedIncident<'a> {
    pub id: i64,
    pub playbook: Cow<'a, str>,
    pub category: Cow<'a, str>,
    pub severity: Severity,
    pub resolution: Option<Resolution>,
    pub event_count: i64,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The first acknowledgement: the incident's own time, or (after a reopening cleared it)
    /// the first `acknowledged` entry of its timeline.
    pub first_ack: Option<DateTime<Utc>>,
    /// How it came in: `log`, `journal` or `mail` (`store::sql::origin_of`); for an incident
    /// opened before that was recorded, how its first evidence came; None without evidence.
    pub origin: Option<Cow<'a, str>>,
    /// The fields the report ranks and counts by (text as stored, attacker-written).
    pub ip: Option<Cow<'a, str>>,
    pub user: Option<Cow<'a, str>>,
    /// The staff who reported a suspicious mail (the report path's `reporters` list).
    pub reporters: Vec<String>,
    pub from: Option<Cow<'a, str>>,
}

/// An incident not closed at the report's time.
#[derive(Debug, Clone, PartialEq, FromRow, serde::Serialize)]
pub struct AgedIncident {
    pub id: i64,
    pub title: String,
    pub playbook: String,
    pub severity: String,
    /// The city's level of `severity` (the config's `[levels]`), set by the report: not stored.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<crate::level::Level>,
    pub opened_at: DateTime<Utc>,
}

/// The few fields the report reads, whatever else an incident's fields hold.
#[derive(Debug, Default, Deserialize)]
struct ReportFields<'a> {
    #[serde(default, borrow)]
    ip: Option<FieldText<'a>>,
    #[serde(default, borrow)]
    user: Option<FieldText<'a>>,
    #[serde(default, borrow)]
    reporters: Option<FieldText<'a>>,
    #[serde(default, borrow)]
    from: Option<FieldText<'a>>,
}

/// A field's value as text: a string as it is (borrowed from the batch unless it had escapes),
/// nothing for a blank one or null, anything else written out as JSON.
#[derive(Debug, Default)]
struct FieldText<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for FieldText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(std::marker::PhantomData))
    }
}

struct FieldVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl FieldVisitor<'_> {
    fn text<'a, E>(text: Cow<'a, str>) -> Result<FieldText<'a>, E> {
        Ok(FieldText((!text.trim().is_empty()).then_some(text)))
    }

    fn json<'a, E>(value: serde_json::Value) -> Result<FieldText<'a>, E> {
        Ok(FieldText(Some(Cow::Owned(value.to_string()))))
    }
}

impl<'de: 'a, 'a> Visitor<'de> for FieldVisitor<'a> {
    type Value = FieldText<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Self::text(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Self::text(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Self::text(Cow::Owned(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(FieldText(None))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Self::json(v.into())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::json(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::json(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Self::json(v.into())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Self::json(serde_json::Value::deserialize(
            de::value::SeqAccessDeserializer::new(seq),
        )?)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Self::json(serde_json::Value::deserialize(
            de::value::MapAccessDeserializer::new(map),
        )?)
    }
}

fn text_of(value: Option<FieldText<'_>>) -> Option<Cow<'_, str>> {
    value.and_then(|v| v.0)
}

/// What a batch holds of each incident, in this order. The first acknowledgement and the
/// channel of an incident without a recorded origin are one index lookup each
/// (`timeline_incident`, `events_incident`), only for the incidents that need them (COALESCE
/// stops at a value). `time` writes a time column as text (PostgreSQL's own text form of a
/// timestamptz is not RFC 3339).
fn columns(time: fn(&str) -> String) -> String {
    let origin = "COALESCE(i.origin, (SELECT CASE WHEN e.kind = 'mail' THEN 'mail' WHEN e.source LIKE 'journal:%' THEN 'journal' ELSE 'log' END \
      FROM events e WHERE e.incident_id = i.id ORDER BY e.id LIMIT 1))";
    let ack = time(
        "COALESCE(i.acknowledged_at, (SELECT MIN(t.at) FROM timeline t WHERE t.incident_id = i.id AND t.action = 'acknowledged'))",
    );
    let (opened, closed) = (time("i.opened_at"), time("i.closed_at"));
    format!(
        "i.id, i.severity, i.category, i.playbook, {origin}, i.resolution, {opened}, {ack}, {closed}, \
         i.event_count"
    )
}

/// How many columns `columns` gives.
const COLUMN_COUNT: usize = 10;

/// The incidents opened in `[$1, $2)`, through the index `incidents_opened`, as text: each
/// incident's `columns` written by `format($3, …)` (`RECORD`: joined by U+001F, a missing value
/// empty), the incidents joined by U+001E, and beside it their `fields` joined by U+001E, in the
/// same order (one scan feeds both aggregates). Those columns are the store's own words
/// (playbook names, categories, times, numbers), never a log's or a mail's, so the separators
/// need no escaping; a value that held one anyway shows as a record of the wrong length, which
/// is refused. JSON text never holds U+001E unescaped. Not JSON: writing and parsing a JSON
/// array of a million records was most of a report's work (#15); and SQLite reads `fields` as
/// stored text instead of parsing it (its JSON parser cost more than all the rest of a row).
fn batch_sql(backend: &Backend) -> String {
    let (aggregate, chr, columns, fields) = match backend {
        Backend::Sqlite { .. } => (
            "group_concat",
            "char",
            columns(|t| t.to_string()),
            "i.fields",
        ),
        Backend::Postgres(_) => (
            "string_agg",
            "chr",
            columns(|t| format!("to_json({t}) #>> '{{}}'")),
            "i.fields::text",
        ),
    };
    format!(
        "SELECT {aggregate}(format($3, {columns}), {chr}(30)), {aggregate}({fields}, {chr}(30)) \
         FROM incidents i WHERE i.opened_at >= $1 AND i.opened_at < $2"
    )
}

/// The format of a record: each column as text (NULL as nothing), joined by U+001F.
const RECORD: &str = "%s\u{1f}%s\u{1f}%s\u{1f}%s\u{1f}%s\u{1f}%s\u{1f}%s\u{1f}%s\u{1f}%s\u{1f}%s";

/// The incidents opened in a span of time, as the store sent them (`Store::report_incidents`).
#[derive(Debug, Default)]
pub struct OpenedIncidents {
    records: Option<String>,
    fields: Option<String>,
}

/// U+001E between the incidents (and between their fields) in a batch.
const SEPARATOR: u8 = 0x1e;
/// U+001F between an incident's columns.
const COLUMN_SEPARATOR: u8 = 0x1f;

/// The pieces of `text` between the ASCII `separator`s (SIMD search: `str::split` on a char
/// was an eighth of a report's work on a million incidents). An ASCII byte is never part of
/// another character in UTF-8, so each piece is whole text.
fn pieces(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    debug_assert!(separator.is_ascii());
    let mut start = 0;
    memchr::memchr_iter(separator, text.as_bytes())
        .chain(std::iter::once(text.len()))
        .map(move |end| {
            let piece = &text[start..end];
            start = end + 1;
            piece
        })
}

impl OpenedIncidents {
    /// Calls `f` with each incident; how many there were.
    pub fn each(&self, mut f: impl FnMut(ReportedIncident<'_>)) -> Result<usize, StoreError> {
        let Some(records) = self.records.as_deref() else {
            return Ok(0);
        };
        let mut fields = self
            .fields
            .as_deref()
            .map(|all| pieces(all, SEPARATOR))
            .into_iter()
            .flatten();
        let mut count = 0;
        for record in pieces(records, SEPARATOR) {
            count += 1;
            let mut columns = [""; COLUMN_COUNT];
            let mut parts = pieces(record, COLUMN_SEPARATOR);
            for column in &mut columns {
                *column = parts.next().ok_or_else(|| short_record(count))?;
            }
            if parts.next().is_some() {
                return Err(short_record(count));
            }
            let text = fields.next().ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "incident #{}: its fields are missing from the batch",
                    columns[0]
                ))
            })?;
            f(incident(&columns, text)?);
        }
        if fields.next().is_some() {
            return Err(StoreError::Corrupt(
                "the report's batch holds more incidents' fields than incidents (a field holds U+001E)"
                    .into(),
            ));
        }
        Ok(count)
    }
}

/// The error for the `n`th record of a batch that is not `COLUMN_COUNT` columns long.
fn short_record(n: usize) -> StoreError {
    StoreError::Corrupt(format!(
        "the report's batch of incidents: record {n} does not have {COLUMN_COUNT} columns \
         (a playbook, category or severity holds U+001E or U+001F)"
    ))
}

/// The incident of `columns` (in the order of `columns`) and its `fields` text.
fn incident<'a>(
    columns: &[&'a str; COLUMN_COUNT],
    fields: &'a str,
) -> Result<ReportedIncident<'a>, StoreError> {
    let [
        id,
        severity,
        category,
        playbook,
        origin,
        resolution,
        opened_at,
        first_ack,
        closed_at,
        event_count,
    ] = *columns;
    let corrupt = |what: String| StoreError::Corrupt(format!("incident #{id}: {what}"));
    let id: i64 = id
        .parse()
        .map_err(|_| corrupt("its id is not a number".into()))?;
    let event_count: i64 = event_count
        .parse()
        .map_err(|_| corrupt(format!("its event count `{event_count}` is not a number")))?;
    let parsed: ReportFields<'a> = serde_json::from_str(fields)
        .map_err(|e| corrupt(format!("its fields are not a JSON object: {e}")))?;
    let time = |t: &str| parse_time(t).ok_or_else(|| corrupt(format!("`{t}` is not a time")));
    // Empty text is a missing value (`columns`).
    let given = |t: &'a str| (!t.is_empty()).then_some(t);
    let reporters = text_of(parsed.reporters)
        .map(|list| {
            list.split(", ")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(ReportedIncident {
        id,
        severity: severity.parse().map_err(|e| corrupt(format!("{e}")))?,
        resolution: given(resolution)
            .map(str::parse)
            .transpose()
            .map_err(|e| corrupt(format!("{e}")))?,
        opened_at: time(opened_at)?,
        first_ack: given(first_ack).map(time).transpose()?,
        closed_at: given(closed_at).map(time).transpose()?,
        event_count,
        category: Cow::Borrowed(category),
        playbook: Cow::Borrowed(playbook),
        origin: given(origin).map(Cow::Borrowed),
        ip: text_of(parsed.ip),
        user: text_of(parsed.user),
        reporters,
        from: text_of(parsed.from),
    })
}

/// A time as stored: RFC 3339 as sqlx writes it (and PostgreSQL's JSON writes a timestamptz),
/// else the other forms sqlx reads from SQLite text (`sqlx-sqlite`'s list, naive ones in UTC).
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = parse_utc(text) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.to_utc());
    }
    const FORMATS: [&str; 12] = [
        "%F %T%.f",
        "%F %R",
        "%F %RZ",
        "%F %R%:z",
        "%F %T%.fZ",
        "%F %T%.f%:z",
        "%FT%R",
        "%FT%RZ",
        "%FT%R%:z",
        "%FT%T%.f",
        "%FT%T%.fZ",
        "%FT%T%.f%:z",
    ];
    FORMATS.iter().find_map(|format| {
        DateTime::<FixedOffset>::parse_from_str(text, format)
            .map(|t| t.to_utc())
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(text, format)
                    .ok()
                    .map(|t| Utc.from_utc_datetime(&t))
            })
    })
}

/// The form sqlx writes, `2026-04-10T01:00:00.123456+00:00` (or `Z`, any fraction or none),
/// read without chrono's general parser: three times per incident, a million incidents.
/// None for anything else (the general parsers decide).
fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let digits = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !punctuation.iter().all(|&(at, c)| b.get(at) == Some(&c)) {
        return None;
    }
    let mut rest = b.get(19..)?;
    let mut nanos = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        nanos = digits(20, 20 + n)? * 10u32.pow(9 - n as u32);
        rest = &fraction[n..];
    }
    if rest != b"+00:00" && rest != b"Z" {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(digits(0, 4)?).ok()?,
        digits(5, 7)?,
        digits(8, 10)?,
    )?;
    let time = chrono::NaiveTime::from_hms_nano_opt(
        digits(11, 13)?,
        digits(14, 16)?,
        digits(17, 19)?,
        nanos,
    )?;
    Some(date.and_time(time).and_utc())
}

impl Store {
    /// The incidents opened in `[start, end)`, in one batch (a month of a report at a time
    /// keeps the batch's text to tens of megabytes on a store of a million).
    pub async fn report_incidents(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<OpenedIncidents, StoreError> {
        let sql = batch_sql(&self.backend);
        let (records, fields): (Option<String>, Option<String>) = read!(self, pool => sqlx::query_as(&sql)
                .bind(start)
                .bind(end)
                .bind(RECORD)
                .fetch_one(pool)
                .await?);
        Ok(OpenedIncidents { records, fields })
    }

    /// The titles of incidents `ids` (the few a report lists by name).
    pub async fn incident_titles(&self, ids: &[i64]) -> Result<HashMap<i64, String>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        // Our own numbers, formatted into one statement.
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT id, title FROM incidents WHERE id IN ({})",
            list.join(", ")
        );
        let rows: Vec<(i64, String)> =
            read!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows.into_iter().collect())
    }

    /// How many escalation levels fired in `[start, end)`, per level: `(level, count)`.
    pub async fn report_escalations(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT level, COUNT(*) FROM escalations WHERE fired_at >= $1 AND fired_at < $2 GROUP BY level ORDER BY level",
        )
        .bind(start)
        .bind(end)
        .fetch_all(pool)
        .await?))
    }

    /// The incidents opened before `opened_before` and not closed at `at` (closed later, or not
    /// at all): how many, and the `limit` oldest.
    pub async fn report_open_since(
        &self,
        opened_before: DateTime<Utc>,
        at: DateTime<Utc>,
        limit: i64,
    ) -> Result<(i64, Vec<AgedIncident>), StoreError> {
        const WHERE: &str = "WHERE opened_at < $1 AND (closed_at IS NULL OR closed_at > $2)";
        read!(self, pool => {
            let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM incidents {WHERE}"))
                .bind(opened_before)
                .bind(at)
                .fetch_one(pool)
                .await?;
            let oldest: Vec<AgedIncident> = sqlx::query_as(&format!(
                "SELECT id, title, playbook, severity, opened_at FROM incidents {WHERE} ORDER BY opened_at, id LIMIT $3"
            ))
            .bind(opened_before)
            .bind(at)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok((count, oldest))
        })
    }

    /// When the first incident in the store was opened (None for an empty store): whether a
    /// previous year can be compared with at all.
    pub async fn earliest_incident(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // ORDER BY + LIMIT rather than MIN(): SQLite gives MIN() of a TEXT column no declared
        // type, and the index answers both at once.
        Ok(read!(self, pool => sqlx::query_scalar(
            "SELECT opened_at FROM incidents ORDER BY opened_at LIMIT 1",
        )
        .fetch_optional(pool)
        .await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_text_whatever_their_json_type() {
        let text = |json: &str| -> Option<String> {
            let fields: ReportFields<'_> = serde_json::from_str(json).expect("fields");
            text_of(fields.user).map(Cow::into_owned)
        };
        for (user, expected) in [
            (r#""root""#, Some("root")),
            (r#""r\u00f6\"ot""#, Some("rö\"ot")),
            (r#""  ""#, None),
            ("null", None),
            ("42", Some("42")),
            ("-4", Some("-4")),
            ("1.50", Some("1.5")),
            ("true", Some("true")),
            (r#"["a", 1]"#, Some(r#"["a",1]"#)),
            (r#"{"b": {"c": null}}"#, Some(r#"{"b":{"c":null}}"#)),
        ] {
            let json =
                format!(r#"{{"other": [1, {{"user": "x"}}], "user": {user}, "ip": "192.0.2.1"}}"#);
            assert_eq!(text(&json).as_deref(), expected, "{user}");
        }
        assert_eq!(text("{}"), None);
    }

    #[test]
    fn times_are_read_as_sqlx_reads_them() {
        let t = |s: &str| parse_time(s).map(|t| t.to_rfc3339());
        let at = Some("2026-04-10T01:00:00.123456+00:00".to_string());
        assert_eq!(t("2026-04-10T01:00:00.123456+00:00"), at);
        assert_eq!(t("2026-04-10T10:00:00.123456+09:00"), at);
        assert_eq!(t("2026-04-10 01:00:00.123456"), at);
        assert_eq!(
            t("2026-04-10T01:00:00Z"),
            Some("2026-04-10T01:00:00+00:00".into())
        );
        assert_eq!(
            t("2026-04-10 01:00"),
            Some("2026-04-10T01:00:00+00:00".into())
        );
        assert_eq!(t("yesterday"), None);
        // The fast path reads the form sqlx writes exactly as chrono reads it, and leaves
        // everything else to the general parsers.
        for (text, fast) in [
            ("2026-04-10T01:00:00+00:00", true),
            ("2026-04-10T01:00:00.1+00:00", true),
            ("2026-04-10T01:00:00.123+00:00", true),
            ("2026-04-10T01:00:00.123456789Z", true),
            ("2024-02-29T23:59:59.999999+00:00", true),
            ("2026-12-31T23:59:60+00:00", false),
            ("2026-02-30T01:00:00+00:00", false),
            ("2026-04-10T01:00:00.+00:00", false),
            ("2026-04-10T01:00:00.1234567890+00:00", false),
            ("2026-04-10t01:00:00+00:00", false),
            ("2026-04-10T01:00:00+09:00", false),
            ("2026-04-10T01:00:00", false),
            ("+2026-04-10T01:00:00Z", false),
        ] {
            let general = DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc());
            assert_eq!(parse_utc(text).is_some(), fast, "{text}");
            if fast {
                assert_eq!(parse_utc(text), general, "{text}");
            }
        }
    }

    #[test]
    fn a_batch_is_read_back_incident_by_incident() {
        let batch = OpenedIncidents {
            records: Some(
                [
                    "7\u{1f}high\u{1f}不正\"アクセス\u{1f}ssh-bruteforce\u{1f}journal\u{1f}false-positive\u{1f}2026-04-10T01:00:00+00:00\u{1f}\u{1f}2026-04-10T03:00:00+00:00\u{1f}12",
                    "8\u{1f}low\u{1f}c\u{1f}p\u{1f}\u{1f}\u{1f}2026-04-11T01:00:00+00:00\u{1f}2026-04-11T01:10:00+00:00\u{1f}\u{1f}1",
                ]
                .join("\u{1e}"),
            ),
            fields: Some("{\"ip\":\"203.0.113.5\",\"user\":\"root\"}\u{1e}{\"reporters\":\"a@x.jp, , b@x.jp\",\"from\":\"c@x.jp\"}".into()),
        };
        let mut seen = Vec::new();
        let n = batch
            .each(|i| {
                seen.push(format!(
                    "{} {} {} {:?} {:?} {:?} {:?} {:?} {:?}",
                    i.id,
                    i.category,
                    i.severity.as_str(),
                    i.origin,
                    i.resolution,
                    i.ip,
                    i.user,
                    i.reporters,
                    i.first_ack.map(|t| t.to_rfc3339())
                ))
            })
            .expect("batch");
        assert_eq!(n, 2);
        assert_eq!(
            seen,
            [
                "7 不正\"アクセス high Some(\"journal\") Some(FalsePositive) Some(\"203.0.113.5\") Some(\"root\") [] None",
                "8 c low None None None None [\"a@x.jp\", \"b@x.jp\"] Some(\"2026-04-11T01:10:00+00:00\")",
            ]
        );
        assert_eq!(OpenedIncidents::default().each(|_| {}).expect("empty"), 0);
        let split = |t| pieces(t, b'\x1f').collect::<Vec<_>>();
        assert_eq!(split(""), [""]);
        assert_eq!(split("\u{1f}"), ["", ""]);
        assert_eq!(split("あ\u{1f}\u{1f}い"), ["あ", "", "い"]);
        assert_eq!(RECORD.split('\u{1f}').count(), COLUMN_COUNT);
        assert!(RECORD.split('\u{1f}').all(|c| c == "%s"));
        // A fields text holding the separator would shift every later incident's fields.
        let shifted = OpenedIncidents {
            records: batch.records.clone(),
            fields: Some("{}\u{1e}{}\u{1e}{}".into()),
        };
        assert!(matches!(shifted.each(|_| {}), Err(StoreError::Corrupt(_))));
        // A category holding a separator makes a record of the wrong length: refused, not
        // read with its columns shifted.
        for category in ["a\u{1f}b", "a\u{1e}b"] {
            let split = OpenedIncidents {
                records: Some(format!(
                    "9\u{1f}low\u{1f}{category}\u{1f}p\u{1f}log\u{1f}\u{1f}2026-04-11T01:00:00+00:00\u{1f}\u{1f}\u{1f}1"
                )),
                fields: Some("{}".into()),
            };
            assert!(
                matches!(split.each(|_| {}), Err(StoreError::Corrupt(_))),
                "{category:?}"
            );
        }
    }
}

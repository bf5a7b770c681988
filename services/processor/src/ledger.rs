//! The ledger seam: what the pipeline needs from ClickHouse, as a small trait with the real
//! implementation ([`ClickHouseLedger`]) and an in-memory one for tests ([`MemoryLedger`]).
//!
//! Contract: `insert` is the only write. The pipeline makes it idempotent by asking `existing`
//! which event ids are already stored before writing. The spend totals a write changed (per
//! subject and hour, and per session and minute) come back from one read, [`Ledger::spend_totals`]:
//! one round trip and, in ClickHouse, one `FINAL` scan grouped two ways (`GROUPING SETS`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::aggregate::{BucketKey, BucketTotals, Subject, hour_of};
use crate::session::{self, SessionKey, SessionTotals, minute_of};
use faregate_core::clickhouse::LedgerRow;
use faregate_core::clickhouse::ledger::PricingStatus;
use faregate_core::error::{ErrorClass, FaregateError};
use faregate_core::money::Usd;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    #[error("ledger returned an impossible value: {0}")]
    Corrupt(String),
}

impl FaregateError for LedgerError {
    fn class(&self) -> ErrorClass {
        match self {
            LedgerError::ClickHouse(_) | LedgerError::Unavailable(_) => ErrorClass::External,
            LedgerError::Corrupt(_) => ErrorClass::Internal,
        }
    }
}

/// ClickHouse error codes that no retry can cure: the query or the schema is wrong (syntax,
/// unknown identifier, table, database or column, type mismatch, bad argument, query too large).
const PERMANENT_CODES: [u32; 9] = [62, 47, 60, 81, 16, 53, 43, 36, 44];

impl LedgerError {
    /// Whether trying again later can succeed. Network failures, timeouts, overload and unknown
    /// server errors are transient; a refused query is not.
    pub fn is_transient(&self) -> bool {
        match self {
            LedgerError::ClickHouse(clickhouse::error::Error::BadResponse(body)) => {
                exception_code(body).is_none_or(|code| !PERMANENT_CODES.contains(&code))
            }
            LedgerError::ClickHouse(_) | LedgerError::Unavailable(_) => true,
            LedgerError::Corrupt(_) => false,
        }
    }
}

/// The N of "Code: N." in a ClickHouse error body.
fn exception_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Spend totals read from the ledger in one read: per (subject, hour) and per (org, session,
/// minute).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendTotals {
    pub hourly: Vec<BucketTotals>,
    pub sessions: Vec<SessionTotals>,
}

/// What the pipeline reads from and writes to the ledger.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Which of `rows`' event ids are already stored.
    async fn existing(&self, rows: &[LedgerRow]) -> Result<HashSet<Uuid>, LedgerError>;
    /// Store `rows`.
    async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError>;
    /// The totals of `keys` and of `sessions`, in one read (a key with no rows is absent from
    /// the answer).
    async fn spend_totals(
        &self,
        keys: &[BucketKey],
        sessions: &[SessionKey],
    ) -> Result<SpendTotals, LedgerError>;
    /// The totals of every (subject, hour) from `hours_since` on and of every (org, session,
    /// minute) from `sessions_since` on, in one read.
    async fn spend_totals_since(
        &self,
        hours_since: DateTime<Utc>,
        sessions_since: DateTime<Utc>,
    ) -> Result<SpendTotals, LedgerError>;
    /// The totals of `keys` only (re-pricing republishes these).
    async fn totals(&self, keys: &[BucketKey]) -> Result<Vec<BucketTotals>, LedgerError> {
        Ok(self.spend_totals(keys, &[]).await?.hourly)
    }
}

/// A ClickHouse string literal.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn quoted_list<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut unique: Vec<&str> = values.collect();
    unique.sort_unstable();
    unique.dedup();
    unique.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")
}

/// A ClickHouse `DateTime64(6, 'UTC')` literal.
pub(crate) fn datetime_literal(at: DateTime<Utc>) -> String {
    format!("toDateTime64('{}', 6, 'UTC')", at.format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// The ledger in ClickHouse (`usage_ledger`).
#[derive(Clone)]
pub struct ClickHouseLedger {
    client: clickhouse::Client,
    /// Duplicate checks still to send ids directly, after a range check overflowed (its
    /// ranges were dense with other rows, e.g. many processors writing the same orgs).
    skip_ranges: Arc<AtomicU32>,
}

impl std::fmt::Debug for ClickHouseLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClickHouseLedger")
    }
}

/// Event ids asked about in one query when the ids themselves must be sent: one string literal
/// of 37 bytes per id, so a chunk stays under ClickHouse's max_query_size (256 KiB by default).
const EXISTING_CHUNK: usize = 4_000;

/// The longest org list (bytes of SQL) a duplicate check narrows by.
const MAX_ORG_LIST: usize = 32 * 1024;

/// At most this many `occurred_at` ranges narrow one duplicate check (cut at the widest gaps).
const MAX_RANGES: usize = 16;

/// The range query may return up to `RANGE_SLACK` x the batch (+ `RANGE_EXTRA`) ledger ids
/// before the check falls back to sending the batch's ids.
const RANGE_SLACK: usize = 4;
const RANGE_EXTRA: usize = 1_000;
/// After a range check overflowed, this many checks send the ids without trying ranges first.
const RANGE_BACKOFF: u32 = 15;

/// The batch's `occurred_at` values as at most `max` closed ranges covering every one of them,
/// cut at the widest gaps between consecutive values.
pub(crate) fn time_ranges(
    times: impl Iterator<Item = DateTime<Utc>>,
    max: usize,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut times: Vec<DateTime<Utc>> = times.collect();
    times.sort_unstable();
    times.dedup();
    if times.is_empty() {
        return Vec::new();
    }
    // Indices i where a range ends at times[i] and the next starts at times[i + 1].
    let mut gaps: Vec<(TimeDelta, usize)> =
        times.windows(2).enumerate().map(|(i, w)| (w[1] - w[0], i)).collect();
    let cuts = max.saturating_sub(1).min(gaps.len());
    let mut ends: Vec<usize> = if cuts == 0 {
        Vec::new()
    } else {
        gaps.select_nth_unstable_by(cuts - 1, |a, b| b.0.cmp(&a.0));
        gaps[..cuts].iter().map(|&(_, i)| i).collect()
    };
    ends.sort_unstable();
    let mut ranges = Vec::with_capacity(ends.len() + 1);
    let mut start = 0;
    for end in ends {
        ranges.push((times[start], times[end]));
        start = end + 1;
    }
    ranges.push((times[start], times[times.len() - 1]));
    ranges
}

impl ClickHouseLedger {
    pub fn new(client: clickhouse::Client) -> Self {
        ClickHouseLedger { client, skip_ranges: Arc::default() }
    }

    /// The ledger filter every duplicate of `rows` passes: a duplicate has the same org and
    /// occurred_at as its original (the same event), and the primary key (org, date, event_id)
    /// and the monthly partitions narrow the search by them.
    fn narrowing(rows: &[LedgerRow]) -> String {
        let ranges: Vec<String> = time_ranges(rows.iter().map(|r| r.occurred_at), MAX_RANGES)
            .into_iter()
            .map(|(from, to)| {
                format!(
                    "(occurred_at >= {} AND occurred_at <= {})",
                    datetime_literal(from),
                    datetime_literal(to)
                )
            })
            .collect();
        let orgs = quoted_list(rows.iter().map(|r| r.org.as_str()));
        // Thousands of orgs in one batch: leave the org out rather than risk max_query_size
        // (still exact, only less narrow).
        match orgs.len() <= MAX_ORG_LIST {
            true => format!("org IN ({orgs}) AND ({})", ranges.join(" OR ")),
            false => format!("({})", ranges.join(" OR ")),
        }
    }

    /// The ids of `rows` in the ledger, sending the ids: `IN` a set built from one string
    /// literal (a list of quoted UUID literals costs ClickHouse about 5 times more to parse).
    async fn existing_chunk(
        &self,
        narrowing: &str,
        rows: &[LedgerRow],
    ) -> Result<HashSet<Uuid>, LedgerError> {
        let mut ids = String::with_capacity(rows.len() * 37);
        for row in rows {
            if !ids.is_empty() {
                ids.push(',');
            }
            ids.push_str(row.event_id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        }
        let sql = format!(
            "SELECT event_id FROM usage_ledger WHERE {narrowing} \
             AND event_id IN (SELECT toUUID(arrayJoin(splitByChar(',', '{ids}'))))"
        );
        let found: Vec<EventId> = self.client.query(&sql.replace('?', "??")).fetch_all().await?;
        Ok(found.into_iter().map(|r| r.event_id).collect())
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct EventId {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
}

/// One row of [`TOTALS_SQL`]: a (subject, hour) total (`grouping_set` 3) or an (org, session,
/// minute) total (`grouping_set` 0).
#[derive(Debug, Deserialize, clickhouse::Row)]
struct TotalsRow {
    grouping_set: u64,
    org: String,
    max_team: String,
    max_user: String,
    max_key_id: String,
    max_project: String,
    max_model: String,
    max_tool: String,
    session: String,
    hour: i64,
    minute: i64,
    #[serde(with = "faregate_core::money::ch_decimal")]
    cost: Usd,
    requests: u64,
    unpriced: u64,
    tokens: u64,
}

/// `grouping(session, minute)` of a (subject, hour) row: both aggregated away (standard SQL
/// semantics, pinned by the query's settings).
const HOURLY_SET: u64 = 3;
/// ... of an (org, session, minute) row: both are keys.
const SESSION_SET: u64 = 0;

/// Where a row of [`TOTALS_SQL`] goes.
enum TotalsOf {
    Hour(BucketTotals),
    Session(SessionTotals),
}

impl TotalsRow {
    fn into_totals(self) -> Result<TotalsOf, LedgerError> {
        let at = |seconds: i64, what: &str| {
            DateTime::from_timestamp(seconds, 0)
                .ok_or_else(|| LedgerError::Corrupt(format!("{what} {seconds} out of range")))
        };
        match self.grouping_set {
            HOURLY_SET => Ok(TotalsOf::Hour(BucketTotals {
                key: BucketKey {
                    subject: Subject {
                        org: self.org,
                        team: self.max_team,
                        user: self.max_user,
                        key_id: self.max_key_id,
                        project: self.max_project,
                        model: self.max_model,
                        tool: self.max_tool,
                    },
                    hour: at(self.hour, "hour")?,
                },
                cost: self.cost,
                requests: self.requests as i64,
                unpriced_requests: self.unpriced as i64,
                tokens_total: self.tokens as i64,
            })),
            SESSION_SET => Ok(TotalsOf::Session(SessionTotals {
                key: SessionKey {
                    org: self.org,
                    session_id: self.session,
                    minute: at(self.minute, "minute")?,
                },
                team: self.max_team,
                user: self.max_user,
                key_id: self.max_key_id,
                project: self.max_project,
                tool: self.max_tool,
                cost: self.cost,
                requests: self.requests as i64,
                unpriced_requests: self.unpriced as i64,
                tokens_total: self.tokens as i64,
            })),
            other => Err(LedgerError::Corrupt(format!("totals row of unknown grouping set {other}"))),
        }
    }
}

/// Spend totals of the ledger rows passing `{filter}`, grouped two ways in one scan: per
/// (subject, hour) and per (org, session, minute); `{hourly}` and `{sessions}` choose which
/// groups of each set come back. In a (subject, hour) row every `max_` column is the grouping
/// key itself; in a session row it is the session's attribution (the greatest value among its
/// rows of that minute, see [`crate::session`]). Rows without a session group under `''` and
/// never come back. `FINAL`: re-pricing replaces rows, and only the latest version counts.
const TOTALS_SQL: &str = "SELECT grouping(session, minute) AS grouping_set, org, \
     max(team) AS max_team, max(user) AS max_user, max(key_id) AS max_key_id, \
     max(project) AS max_project, max(model) AS max_model, max(tool) AS max_tool, \
     ifNull(session_id, '') AS session, \
     intDiv(toUnixTimestamp64Micro(occurred_at), 3600000000) * 3600 AS hour, \
     intDiv(toUnixTimestamp64Micro(occurred_at), 60000000) * 60 AS minute, \
     sum(ifNull(cost_total, toDecimal128(0, 18))) AS cost, \
     count() AS requests, \
     countIf(pricing_status = 'unpriced') AS unpriced, \
     sum(input_tokens + output_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens + reasoning_tokens) AS tokens \
     FROM usage_ledger FINAL WHERE {filter} \
     GROUP BY GROUPING SETS ((org, team, user, key_id, project, model, tool, hour), (org, session, minute)) \
     HAVING (grouping_set = 3 AND {hourly}) OR (grouping_set = 0 AND session != '' AND {sessions}) \
     SETTINGS force_grouping_standard_compatibility = 1";

fn totals_sql(filter: &str, hourly: &str, sessions: &str) -> String {
    TOTALS_SQL.replace("{filter}", filter).replace("{hourly}", hourly).replace("{sessions}", sessions)
}

impl ClickHouseLedger {
    /// Run a [`totals_sql`] query; keep the rows `keep_hour` / `keep_session` accept.
    async fn read_totals(
        &self,
        sql: &str,
        keep_hour: impl Fn(&BucketKey) -> bool,
        keep_session: impl Fn(&SessionKey) -> bool,
    ) -> Result<SpendTotals, LedgerError> {
        let rows: Vec<TotalsRow> = self.client.query(&sql.replace('?', "??")).fetch_all().await?;
        let mut totals = SpendTotals::default();
        for row in rows {
            match row.into_totals()? {
                TotalsOf::Hour(t) if keep_hour(&t.key) => totals.hourly.push(t),
                TotalsOf::Session(t) if keep_session(&t.key) => totals.sessions.push(t),
                _ => {}
            }
        }
        Ok(totals)
    }
}

#[async_trait]
impl Ledger for ClickHouseLedger {
    async fn existing(&self, rows: &[LedgerRow]) -> Result<HashSet<Uuid>, LedgerError> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        // First every ledger id in the batch's orgs and time ranges, intersected here: exact
        // (every duplicate passes the filter) and cheap when the ranges hold little besides the
        // batch, as they do for live traffic and a replay. Sending 50,000 ids costs the server
        // far more (parsing them, building the set) than reading back 50,000 ids.
        let skip = self.skip_ranges.load(Ordering::Relaxed);
        if skip == 0 {
            let narrowing = Self::narrowing(rows);
            let cap = rows.len() * RANGE_SLACK + RANGE_EXTRA;
            let sql = format!("SELECT event_id FROM usage_ledger WHERE {narrowing} LIMIT {}", cap + 1);
            let found: Vec<EventId> = self.client.query(&sql.replace('?', "??")).fetch_all().await?;
            if found.is_empty() {
                return Ok(HashSet::new());
            }
            if found.len() <= cap {
                let wanted: HashSet<Uuid> = rows.iter().map(|r| r.event_id).collect();
                return Ok(found.into_iter().map(|r| r.event_id).filter(|id| wanted.contains(id)).collect());
            }
            self.skip_ranges.store(RANGE_BACKOFF, Ordering::Relaxed);
        } else {
            self.skip_ranges.store(skip - 1, Ordering::Relaxed);
        }
        // The ranges are dense with other rows (other partitions' traffic, an old day): send the
        // ids, in chunks that stay under max_query_size.
        let mut found = HashSet::new();
        for chunk in rows.chunks(EXISTING_CHUNK) {
            found.extend(self.existing_chunk(&Self::narrowing(chunk), chunk).await?);
        }
        Ok(found)
    }

    async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        // The ledger feeds three rollup views; pushing a block through them in parallel instead
        // of one after the other shortens every insert (each view still gets every row once).
        let mut insert = self
            .client
            .insert::<LedgerRow>("usage_ledger")
            .await?
            .with_setting("parallel_view_processing", "1");
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    async fn spend_totals(
        &self,
        keys: &[BucketKey],
        sessions: &[SessionKey],
    ) -> Result<SpendTotals, LedgerError> {
        // One filter covering both: the union of the orgs, and the time from the earliest
        // bucket start to the latest bucket end (the pipeline's session minutes lie within its
        // hours, so for it this is the hourly range). The groups are then narrowed by HAVING
        // (sessions) and here (subjects).
        let starts = keys.iter().map(|k| k.hour).chain(sessions.iter().map(|k| k.minute));
        let ends = keys
            .iter()
            .map(|k| k.hour + TimeDelta::hours(1))
            .chain(sessions.iter().map(|k| k.minute + TimeDelta::minutes(1)));
        let (Some(from), Some(to)) = (starts.min(), ends.max()) else {
            return Ok(SpendTotals::default());
        };
        let orgs = quoted_list(
            keys.iter().map(|k| k.subject.org.as_str()).chain(sessions.iter().map(|k| k.org.as_str())),
        );
        let filter = format!(
            "org IN ({orgs}) AND occurred_at >= {} AND occurred_at < {}",
            datetime_literal(from),
            datetime_literal(to)
        );
        let session_filter =
            match sessions.iter().map(|k| k.minute).min().zip(sessions.iter().map(|k| k.minute).max()) {
                None => "0".to_string(),
                Some((first, last)) => format!(
                    "session IN ({}) AND minute >= {} AND minute <= {}",
                    quoted_list(sessions.iter().map(|k| k.session_id.as_str())),
                    first.timestamp(),
                    last.timestamp()
                ),
            };
        let hourly_filter = if keys.is_empty() { "0" } else { "1" };
        let sql = totals_sql(&filter, hourly_filter, &session_filter);
        let wanted: HashSet<&BucketKey> = keys.iter().collect();
        let wanted_sessions: HashSet<&SessionKey> = sessions.iter().collect();
        self.read_totals(&sql, |k| wanted.contains(k), |k| wanted_sessions.contains(k)).await
    }

    async fn spend_totals_since(
        &self,
        hours_since: DateTime<Utc>,
        sessions_since: DateTime<Utc>,
    ) -> Result<SpendTotals, LedgerError> {
        let (hour, minute) = (hour_of(hours_since), minute_of(sessions_since));
        let sql = totals_sql(
            &format!("occurred_at >= {}", datetime_literal(hour.min(minute))),
            &format!("hour >= {}", hour.timestamp()),
            &format!("minute >= {}", minute.timestamp()),
        );
        self.read_totals(&sql, |_| true, |_| true).await
    }
}

/// An in-memory ledger for tests; `set_available(false)` makes every call fail like an outage,
/// `set_refusing(true)` like a query the server will never accept.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    rows: Mutex<Vec<LedgerRow>>,
    down: AtomicBool,
    refusing: AtomicBool,
}

impl MemoryLedger {
    pub fn rows(&self) -> Vec<LedgerRow> {
        self.rows.lock().unwrap().clone()
    }

    pub fn set_available(&self, available: bool) {
        self.down.store(!available, Ordering::SeqCst);
    }

    /// Make every call fail with an error no retry can cure (like a refused query).
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), LedgerError> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err(LedgerError::Corrupt("memory ledger refuses every query".into()));
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(LedgerError::Unavailable("memory ledger is switched off".into()));
        }
        Ok(())
    }

    fn totals_where(&self, keep: impl Fn(&BucketKey) -> bool) -> Vec<BucketTotals> {
        let mut totals: BTreeMap<BucketKey, BucketTotals> = BTreeMap::new();
        let rows = self.rows.lock().unwrap();
        let mut seen = HashSet::new();
        for row in rows.iter().filter(|r| seen.insert(r.event_id)) {
            let key = BucketKey::of(row);
            if !keep(&key) {
                continue;
            }
            let entry = totals.entry(key.clone()).or_insert_with(|| BucketTotals {
                key,
                cost: Usd::ZERO,
                requests: 0,
                unpriced_requests: 0,
                tokens_total: 0,
            });
            entry.cost = Usd(entry.cost.0 + row.cost_total.unwrap_or_default().0);
            entry.requests += 1;
            entry.unpriced_requests += i64::from(row.pricing_status == PricingStatus::Unpriced);
            entry.tokens_total += (row.input_tokens
                + row.output_tokens
                + row.cache_read_tokens
                + row.cache_write_5m_tokens
                + row.cache_write_1h_tokens
                + row.reasoning_tokens) as i64;
        }
        totals.into_values().collect()
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn existing(&self, rows: &[LedgerRow]) -> Result<HashSet<Uuid>, LedgerError> {
        self.check()?;
        let wanted: HashSet<Uuid> = rows.iter().map(|r| r.event_id).collect();
        let stored = self.rows.lock().unwrap();
        Ok(stored.iter().map(|r| r.event_id).filter(|id| wanted.contains(id)).collect())
    }

    async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        self.check()?;
        self.rows.lock().unwrap().extend_from_slice(rows);
        Ok(())
    }

    async fn spend_totals(
        &self,
        keys: &[BucketKey],
        sessions: &[SessionKey],
    ) -> Result<SpendTotals, LedgerError> {
        self.check()?;
        let wanted: HashSet<&BucketKey> = keys.iter().collect();
        let wanted_sessions: HashSet<&SessionKey> = sessions.iter().collect();
        Ok(SpendTotals {
            hourly: self.totals_where(|k| wanted.contains(k)),
            sessions: session::fold(&self.rows.lock().unwrap(), |k| wanted_sessions.contains(k)),
        })
    }

    async fn spend_totals_since(
        &self,
        hours_since: DateTime<Utc>,
        sessions_since: DateTime<Utc>,
    ) -> Result<SpendTotals, LedgerError> {
        self.check()?;
        let (hour, minute) = (hour_of(hours_since), minute_of(sessions_since));
        Ok(SpendTotals {
            hourly: self.totals_where(|k| k.hour >= hour),
            sessions: session::fold(&self.rows.lock().unwrap(), |k| k.minute >= minute),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_queries_are_not_retried() {
        let refused = LedgerError::ClickHouse(clickhouse::error::Error::BadResponse(
            "Code: 62. DB::Exception: Max query size exceeded (SYNTAX_ERROR)".into(),
        ));
        assert!(!refused.is_transient());
        let overloaded = LedgerError::ClickHouse(clickhouse::error::Error::BadResponse(
            "Code: 241. DB::Exception: Memory limit exceeded (MEMORY_LIMIT_EXCEEDED)".into(),
        ));
        assert!(overloaded.is_transient());
        assert!(LedgerError::Unavailable("down".into()).is_transient());
        assert_eq!(exception_code("Code: 60. DB::Exception: x"), Some(60));
        assert_eq!(exception_code("503 Service Unavailable"), None);
    }

    #[test]
    fn time_ranges_cover_every_row_and_cut_at_the_widest_gaps() {
        let base = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |s: i64| base + TimeDelta::seconds(s);
        let rows = || [5, 0, 1, 2, 100, 101, 1_000, 5].into_iter().map(at);
        assert_eq!(time_ranges(rows(), 1), vec![(at(0), at(1_000))]);
        assert_eq!(time_ranges(rows(), 3), vec![(at(0), at(5)), (at(100), at(101)), (at(1_000), at(1_000))]);
        assert_eq!(time_ranges(rows(), 16).len(), 7);
        assert!(time_ranges(std::iter::empty(), 16).is_empty());
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote("it's a \\ test"), "'it\\'s a \\\\ test'");
        assert_eq!(quoted_list(["b", "a", "b"].into_iter()), "'a', 'b'");
    }
}

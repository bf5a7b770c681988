//! The ledger in ClickHouse: the duplicate check (ids of the batch's orgs and time ranges,
//! intersected here), the insert (rollup views in parallel), the rollups' repair (statements
//! from [`super::rollups`]), and the spend totals read back in one `FINAL` scan grouped two ways.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{Ledger, LedgerError, SpendTotals, datetime_literal, quoted_list};
use crate::aggregate::{BucketKey, BucketTotals, Subject, hour_of};
use crate::session::{SessionKey, SessionTotals, minute_of};
use faregate_core::clickhouse::{LedgerRow, Topology};
use faregate_core::money::Usd;

#[derive(Clone)]
pub struct ClickHouseLedger {
    client: clickhouse::Client,
    /// Where the rollups' shard-local tables are (a repair deletes from them).
    topology: Topology,
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
        ClickHouseLedger { client, topology: Topology::SingleNode, skip_ranges: Arc::default() }
    }

    /// The ledger of a cluster's tables (`clickhouse.cluster`), not a single node's.
    pub fn with_topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
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

    async fn repair_rollups(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        let mut rows: Vec<&LedgerRow> = rows.iter().collect();
        rows.sort_unstable_by(|a, b| (&a.org, &a.user, &a.key_id).cmp(&(&b.org, &b.user, &b.key_id)));
        let subjects: Vec<&[&LedgerRow]> =
            rows.chunk_by(|a, b| (&a.org, &a.user, &a.key_id) == (&b.org, &b.user, &b.key_id)).collect();
        // Chunks of whole subjects: a subject's rows all go to the same statements.
        for chunk in subjects.chunks(super::rollups::SUBJECTS_PER_STATEMENT).map(<[_]>::concat) {
            for rollup in super::rollups::ROLLUPS {
                let Some((delete, insert)) = rollup.rebuild(&chunk, &self.topology) else {
                    continue;
                };
                // Synchronous: `lightweight_deletes_sync` defaults to 2 (wait) since ClickHouse
                // 24.4 and does not exist before, where `mutations_sync` decides (23.3+).
                self.client
                    .query(&delete.replace('?', "??"))
                    .with_setting("mutations_sync", "2")
                    .execute()
                    .await?;
                let insert = self.client.query(&insert.replace('?', "??"));
                match self.topology {
                    Topology::SingleNode => insert.execute().await?,
                    Topology::Cluster { .. } => {
                        insert.with_setting("distributed_foreground_insert", "1").execute().await?
                    }
                }
            }
        }
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

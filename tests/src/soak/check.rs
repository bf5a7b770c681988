//! What the soak asserts of the ledger, by reading it as an analyst would (no `FINAL`: a
//! duplicate insert would double the rollups, so raw rows are what must be exact):
//! - no event id on more than one raw row, and no gateway request (its `req` tag) on more than
//!   one row ([`Ledger::doubled`]);
//! - every row's exact cost equals the cost of what the soak sent for it, priced by hand
//!   ([`crate::hand_priced`]; a blocked request costs nothing), and no row is unknown to the
//!   soak ([`Ledger::refresh`]);
//! - every minute, hour and day rollup bucket equals the ledger's rows of that bucket (requests,
//!   every token class, cost), each compared in one query, so no insert falls between the two
//!   sides ([`Ledger::rollup_mismatches`]);
//! - every usage partition has rows processed after a given moment ([`Ledger::partitions_since`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use faregate_core::clickhouse::ClickHouseConfig;
use rust_decimal::Decimal;

use super::load::Book;
use crate::hand_priced;

/// A row as the soak identifies it: a collector record by its id, a gateway request by its tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Record(uuid::Uuid),
    Request(String),
}

/// What the soak has read of the ledger so far.
pub struct Ledger {
    client: clickhouse::Client,
    /// Rows seen, by event id: (identity, cost).
    rows: HashMap<uuid::Uuid, (Identity, Decimal)>,
    /// Identities seen, with their event ids.
    identities: HashMap<Identity, Vec<uuid::Uuid>>,
    /// Rows whose cost is not the oracle's, or that the soak never sent: descriptions.
    pub wrong: Vec<String>,
    /// Sum of the oracle's costs of the rows seen.
    pub oracle_total: Decimal,
    /// Only rows processed at or after this are read again (reads overlap by `margin`).
    watermark: Option<DateTime<Utc>>,
    margin: chrono::TimeDelta,
}

/// A ledger row as read: event id, `req` tag, outcome, cost (empty when unpriced).
pub type RawRow = (String, String, String, String);

impl Ledger {
    /// `margin`: how far back each read reaches before the previous one began (longer than any
    /// batch can wait between being priced and being written).
    pub fn new(clickhouse: &ClickHouseConfig, margin: std::time::Duration) -> Ledger {
        Ledger {
            client: clickhouse.client(),
            rows: HashMap::new(),
            identities: HashMap::new(),
            wrong: Vec::new(),
            oracle_total: Decimal::ZERO,
            watermark: None,
            margin: chrono::TimeDelta::from_std(margin).unwrap(),
        }
    }

    /// Read the rows processed since the last read (all of them with `full`); `None` when the
    /// ledger did not answer. Pass them to [`Ledger::absorb`] with the book as it is *after*
    /// the read, so that it names everything the rows can come from.
    pub async fn fetch(&mut self, full: bool) -> Option<Vec<RawRow>> {
        let began = Utc::now();
        let filter = match (self.watermark, full) {
            (Some(mark), false) => format!(
                "WHERE processed_at >= toDateTime64('{}', 6, 'UTC')",
                (mark - self.margin).format("%Y-%m-%d %H:%M:%S%.6f")
            ),
            _ => String::new(),
        };
        let sql = format!(
            "SELECT toString(event_id), tags['req'], toString(outcome), ifNull(toString(cost_total), '') \
             FROM usage_ledger {filter}"
        );
        let fetched = self.client.query(&sql).fetch_all::<RawRow>().await.ok()?;
        self.watermark = Some(began);
        Some(fetched)
    }

    /// Check each row not seen before against `book`.
    pub fn absorb(&mut self, fetched: Vec<RawRow>, book: &Book) {
        for (id, tag, outcome, cost) in fetched {
            let id: uuid::Uuid = id.parse().expect("a UUID");
            if self.rows.contains_key(&id) {
                continue;
            }
            let identity = if tag.is_empty() { Identity::Record(id) } else { Identity::Request(tag) };
            let sent = match &identity {
                Identity::Record(id) => book.records.get(id),
                Identity::Request(tag) => book.requests.get(tag),
            };
            let cost: Option<Decimal> = cost.parse().ok();
            match (sent, cost) {
                (None, _) => self.wrong.push(format!("{identity:?}: in the ledger, never sent")),
                (Some(_), None) => self.wrong.push(format!("{identity:?}: unpriced")),
                (Some(tokens), Some(cost)) => {
                    let expected = if outcome == "blocked" { Decimal::ZERO } else { hand_priced(tokens) };
                    if cost != expected {
                        self.wrong.push(format!("{identity:?}: cost {cost}, priced by hand {expected}"));
                    }
                    self.oracle_total += expected;
                }
            }
            self.identities.entry(identity.clone()).or_default().push(id);
            self.rows.insert(id, (identity, cost.unwrap_or_default()));
        }
    }

    pub fn contains(&self, identity: &Identity) -> bool {
        self.identities.contains_key(identity)
    }

    /// Rows seen so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Event ids on more than one raw row (SQL, no `FINAL`) plus gateway requests metered under
    /// more than one event id.
    pub async fn doubled(&self) -> Option<u64> {
        let ids: u64 = self
            .client
            .query("SELECT count() FROM (SELECT event_id FROM usage_ledger GROUP BY event_id HAVING count() > 1)")
            .fetch_one()
            .await
            .ok()?;
        let requests = self
            .identities
            .iter()
            .filter(|(identity, ids)| matches!(identity, Identity::Request(_)) && ids.len() > 1)
            .count() as u64;
        Some(ids + requests)
    }

    /// Raw rows in the ledger: a cheap necessary condition before [`Ledger::fetch`] (every
    /// identity owed is a row of its own).
    pub async fn count(&self) -> Option<usize> {
        let rows: u64 = self.client.query("SELECT count() FROM usage_ledger").fetch_one().await.ok()?;
        usize::try_from(rows).ok()
    }

    /// The ledger's exact cost total (raw rows).
    pub async fn total(&self) -> Option<Decimal> {
        let total: String = self
            .client
            .query("SELECT toString(sum(ifNull(cost_total, toDecimal128(0, 18)))) FROM usage_ledger")
            .fetch_one()
            .await
            .ok()?;
        total.parse().ok()
    }

    /// Buckets where a rollup differs from the ledger's raw rows: (minute, hour, day).
    pub async fn rollup_mismatches(&self) -> Option<[u64; 3]> {
        let mut out = [0; 3];
        for (i, (table, start)) in [
            ("usage_rollup_minute", "toStartOfMinute"),
            ("usage_rollup_hour", "toStartOfHour"),
            ("usage_rollup_day", "toStartOfDay"),
        ]
        .into_iter()
        .enumerate()
        {
            let sums = "sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_5m_tokens), \
                        sum(cache_write_1h_tokens), sum(reasoning_tokens)";
            let sql = format!(
                "WITH l AS (SELECT toDateTime({start}(occurred_at), 'UTC') AS b, count() AS n, {sums}, \
                 sum(ifNull(cost_total, toDecimal128(0, 18))) AS c FROM usage_ledger GROUP BY b), \
                 r AS (SELECT bucket AS b, sum(requests) AS n, {sums}, sum(cost_total) AS c FROM {table} GROUP BY b) \
                 SELECT count() FROM ((SELECT * FROM l EXCEPT SELECT * FROM r) UNION ALL (SELECT * FROM r EXCEPT SELECT * FROM l))"
            );
            out[i] = self.client.query(&sql).fetch_one().await.ok()?;
        }
        Some(out)
    }

    /// How many distinct usage partitions have rows processed at or after `since`.
    pub async fn partitions_since(&self, since: DateTime<Utc>) -> Option<u64> {
        let sql = format!(
            "SELECT uniqExact(kafka_partition) FROM usage_ledger WHERE processed_at >= toDateTime64('{}', 6, 'UTC')",
            since.format("%Y-%m-%d %H:%M:%S%.6f")
        );
        self.client.query(&sql).fetch_one().await.ok()
    }
}

//! The ledger seam: what the pipeline needs from ClickHouse, as a small trait with the real
//! implementation ([`ClickHouseLedger`]) and an in-memory one for tests ([`MemoryLedger`]).
//!
//! Contract: `insert` is the only write. The pipeline makes it idempotent by asking `existing`
//! which event ids are already stored before writing. The spend totals a write changed (per
//! subject and hour, and per session and minute) come back from one read, [`Ledger::spend_totals`]:
//! one round trip and, in ClickHouse, one `FINAL` scan grouped two ways (`GROUPING SETS`).
//! After a write whose outcome was uncertain, [`Ledger::repair_rollups`] rebuilds the rollup
//! buckets the write touched from the ledger (see [`rollups`]).

mod clickhouse;
mod memory;
pub mod rollups;

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::aggregate::{BucketKey, BucketTotals};
use crate::session::{SessionKey, SessionTotals};
use faregate_core::clickhouse::LedgerRow;
use faregate_core::error::{ErrorClass, FaregateError};

pub use self::clickhouse::ClickHouseLedger;
pub use self::memory::MemoryLedger;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    #[error("ledger returned an impossible value: {0}")]
    Corrupt(String),
}

/// ClickHouse error codes that no retry can cure: the query or the schema is wrong (syntax,
/// unknown identifier, table, database or column, type mismatch, bad argument, query too large).
const PERMANENT_CODES: [u32; 9] = [62, 47, 60, 81, 16, 53, 43, 36, 44];

impl FaregateError for LedgerError {
    /// Network failures, timeouts, overload and unknown server errors are ClickHouse's
    /// (external, retried); a refused query or an impossible answer is Faregate's (internal:
    /// the query or the schema is wrong, and no retry cures it).
    fn class(&self) -> ErrorClass {
        match self {
            LedgerError::ClickHouse(::clickhouse::error::Error::BadResponse(body))
                if exception_code(body).is_some_and(|code| PERMANENT_CODES.contains(&code)) =>
            {
                ErrorClass::Internal
            }
            LedgerError::ClickHouse(_) | LedgerError::Unavailable(_) => ErrorClass::External,
            LedgerError::Corrupt(_) => ErrorClass::Internal,
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
    /// Rebuild, from the stored rows, the rollup buckets of `rows`' subjects (org, user, key_id)
    /// and times; idempotent. The caller must be the only writer of those subjects meanwhile.
    async fn repair_rollups(&self, rows: &[LedgerRow]) -> Result<(), LedgerError>;
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

/// A ClickHouse `DateTime('UTC')` literal (whole seconds: bucket starts).
pub(crate) fn second_literal(at: DateTime<Utc>) -> String {
    format!("toDateTime('{}', 'UTC')", at.format("%Y-%m-%d %H:%M:%S"))
}

/// A ClickHouse `DateTime64(6, 'UTC')` literal.
pub(crate) fn datetime_literal(at: DateTime<Utc>) -> String {
    format!("toDateTime64('{}', 6, 'UTC')", at.format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// The ledger in ClickHouse (`usage_ledger`).
#[cfg(test)]
mod tests {
    use super::clickhouse::time_ranges;
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn refused_queries_are_not_retried() {
        let refused = LedgerError::ClickHouse(::clickhouse::error::Error::BadResponse(
            "Code: 62. DB::Exception: Max query size exceeded (SYNTAX_ERROR)".into(),
        ));
        assert!(!refused.retryable());
        let overloaded = LedgerError::ClickHouse(::clickhouse::error::Error::BadResponse(
            "Code: 241. DB::Exception: Memory limit exceeded (MEMORY_LIMIT_EXCEEDED)".into(),
        ));
        assert!(overloaded.retryable());
        assert!(LedgerError::Unavailable("down".into()).retryable());
        assert!(!LedgerError::Corrupt("negative count".into()).retryable());
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

//! Where the next import run starts: the end of the last bucket an importer put in the ledger.
//!
//! Contract: [`LedgerCursor::imported_until`] returns, for one importer (`source_name`) and org,
//! the latest `import.bucket_end` tag of the ledger's rows, or `None` when it has none within
//! the lookback. The cursor is derived from the ledger, ClickHouse being Faregate's source of
//! truth, rather than kept in a store of its own: it can never claim a bucket the ledger does
//! not have, there is nothing to migrate or rebuild, and a cursor that lags (events still on
//! the usage topic, or empty buckets after the last row) only makes the next run ask for some
//! buckets again, which changes nothing because their event ids are the same.

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::ImportError;

/// Reads the cursor from `usage_ledger`.
#[derive(Clone)]
pub struct LedgerCursor {
    client: clickhouse::Client,
}

impl std::fmt::Debug for LedgerCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerCursor").finish_non_exhaustive()
    }
}

impl LedgerCursor {
    pub fn new(client: clickhouse::Client) -> Self {
        LedgerCursor { client }
    }

    /// The end of the last bucket of `source_name` for `org` in the ledger, looking back no
    /// further than `lookback` from `now`.
    pub async fn imported_until(
        &self,
        source: &'static str,
        source_name: &str,
        org: &str,
        now: DateTime<Utc>,
        lookback: TimeDelta,
    ) -> Result<Option<DateTime<Utc>>, ImportError> {
        let since = (now - lookback).timestamp();
        let seconds: i64 = self
            .client
            .query(
                "SELECT toInt64(ifNull(max(toUnixTimestamp(parseDateTimeBestEffortOrNull(tags['import.bucket_end']))), 0)) \
                 FROM usage_ledger WHERE org = {org:String} AND source_kind = 'import' \
                 AND source_name = {source_name:String} AND occurred_at >= fromUnixTimestamp64Micro({since:Int64} * 1000000)",
            )
            .param("org", org)
            .param("source_name", source_name)
            .param("since", since)
            .fetch_one()
            .await
            .map_err(|e| ImportError::Sink {
                source_name: source,
                topic: "usage_ledger (the import cursor)".into(),
                message: e.to_string(),
                retryable: true,
            })?;
        Ok((seconds > 0).then(|| DateTime::from_timestamp(seconds, 0)).flatten())
    }
}

//! Spend aggregates: absolute totals per (subject, bucket) published by the processor and consumed
//! by the budget service. A record replaces any earlier record of the same subject and bucket with
//! a lower revision; no record is ever a delta, so replaying the topic cannot double-count.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Usd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BucketWidth {
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendAggregate {
    pub subject: String,
    pub org: String,
    pub team: Option<String>,
    pub user: Option<String>,
    pub key_id: Option<String>,
    pub project: Option<String>,
    pub model: Option<String>,
    pub tool: Option<String>,
    pub session_id: Option<String>,
    #[serde(with = "crate::time::micros")]
    pub bucket_start: DateTime<Utc>,
    pub bucket_width: BucketWidth,
    #[serde(with = "crate::money::avro_decimal")]
    pub cost_usd: Usd,
    pub requests: i64,
    pub unpriced_requests: i64,
    pub tokens_total: i64,
    pub revision: i64,
    #[serde(with = "crate::time::micros")]
    pub computed_at: DateTime<Utc>,
    /// The usage watermarks this record helps to complete (see [`UsageGroup`]); empty for
    /// session totals and for totals republished without a batch (`spend_aggregate.v2`).
    #[serde(default)]
    pub usage_positions: Vec<UsageGroup>,
}

/// One usage-topic partition's part of a publication of spend totals: the processor read the
/// totals after the ledger held every event of that partition before `next_offset`, and
/// published `group_size` hourly records of this org and this revision for the subjects whose
/// events it wrote from that partition. A reader that has applied all of them holds every
/// event of the org on the partition before `next_offset` (its exact usage watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsageGroup {
    pub partition: i32,
    pub next_offset: i64,
    pub group_size: i32,
}

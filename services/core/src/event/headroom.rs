//! Headroom: one budget's position in its current window (limit, spent, remaining) as absolute
//! values as of a spend revision, published by the budget service to the compacted headroom
//! topic keyed by [`Headroom::key`]. Absolute values make a replay or a duplicate harmless: the
//! latest record per key (highest `revision`) is the truth. Gateways read it to tell every
//! developer their remaining budget; admission by reservation (a later stage) subtracts what a
//! replica reserved or spent since `spend_revision`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Usd;

/// One budget's headroom (schema `headroom.v2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headroom {
    /// The budget's scope key, e.g. `org=acme/team=infra`.
    pub scope_key: String,
    pub budget_id: String,
    pub budget_name: String,
    /// `hour`, `day`, `week`, `month`, `quarter` or `days`.
    pub period: String,
    /// The block length when `period` is `days`.
    pub days: Option<i32>,
    pub rolling: bool,
    pub time_zone: String,
    #[serde(with = "crate::money::avro_decimal")]
    pub limit_usd: Usd,
    /// Spend in the current window as of `spend_revision`.
    #[serde(with = "crate::money::avro_decimal")]
    pub spent_usd: Usd,
    /// `limit_usd - spent_usd`; negative when overspent.
    #[serde(with = "crate::money::avro_decimal")]
    pub remaining_usd: Usd,
    #[serde(with = "crate::time::micros")]
    pub window_start: DateTime<Utc>,
    #[serde(with = "crate::time::micros")]
    pub window_end: DateTime<Utc>,
    /// When the window resets (calendar), or when enough spend rolls out (rolling, over the
    /// limit); `None` for a rolling window under its limit.
    #[serde(with = "crate::time::micros::option")]
    pub resets_at: Option<DateTime<Utc>>,
    /// The highest spend aggregate revision applied when this was computed (0 when none).
    pub spend_revision: i64,
    /// Per usage-topic partition, how far `spent_usd` holds the org's events: every event of
    /// the budget's org on `partition` before `next_offset` is in it. `None` from a budget
    /// service that does not track it (`headroom.v1`).
    #[serde(default)]
    pub usage_watermarks: Option<Vec<UsageWatermark>>,
    /// The remaining shared among the gateway replicas that reported demand; `None` when none
    /// did (each then takes `remaining / ingress.reservation.replicas`).
    #[serde(default)]
    pub shares: Option<Vec<ReplicaShare>>,
    #[serde(with = "crate::time::micros")]
    pub published_at: DateTime<Utc>,
    /// Orders the records of one key.
    pub revision: i64,
}

/// See [`Headroom::usage_watermarks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsageWatermark {
    pub partition: i32,
    pub next_offset: i64,
}

/// What one gateway replica may hold against a budget (see [`Headroom::shares`]): its open
/// reservations and the costs it settled after `report_at` together stay within `share_usd`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaShare {
    pub replica: String,
    #[serde(with = "crate::money::avro_decimal")]
    pub share_usd: Usd,
    /// The `published_at` of the demand report the share was computed from.
    #[serde(with = "crate::time::micros")]
    pub report_at: DateTime<Utc>,
}

impl Headroom {
    /// The compaction key of a budget's headroom: `<scope key>#budget=<id>`.
    pub fn key_of(scope_key: &str, budget_id: &str) -> String {
        format!("{scope_key}#budget={budget_id}")
    }

    pub fn key(&self) -> String {
        Headroom::key_of(&self.scope_key, &self.budget_id)
    }
}

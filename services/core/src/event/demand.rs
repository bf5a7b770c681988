//! Demand: one gateway replica's position on one budget (what it holds against the budget's
//! headroom, what its requests asked for lately), published to the compacted demand topic keyed
//! by [`Demand::key`]. The budget service shares each budget's remaining among the replicas
//! from the live records ([`Demand::live_at`]): `Headroom::shares`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Usd;

/// One replica's demand on one budget (schema `demand.v2`: `demand.v1` and the lease fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    /// The gateway replica (`ingress.replica_id`).
    pub replica: String,
    pub scope_key: String,
    pub budget_id: String,
    /// Open reservations (requests in flight).
    #[serde(with = "crate::money::avro_decimal")]
    pub open_usd: Usd,
    /// Settled costs the replica's headroom does not show yet.
    #[serde(with = "crate::money::avro_decimal")]
    pub settled_usd: Usd,
    /// Reservations asked for in the last window (admitted, refused or waiting) and waiting now.
    #[serde(with = "crate::money::avro_decimal")]
    pub demand_usd: Usd,
    /// The largest likely cost of one of those requests.
    #[serde(with = "crate::money::avro_decimal")]
    pub unit_usd: Usd,
    /// How often the replica reports.
    pub interval_ms: i64,
    #[serde(with = "crate::time::micros")]
    pub published_at: DateTime<Utc>,
    /// The revision of the headroom record whose share the replica admitted against when it
    /// reported (`None`: it held none, or a gateway before `demand.v2`; [`Demand::STOPPED`]: it
    /// stopped).
    #[serde(default)]
    pub record_revision: Option<i64>,
    /// What the replica counted against that share when it reported.
    #[serde(default, with = "crate::money::avro_decimal::option")]
    pub used_usd: Option<Usd>,
}

impl Demand {
    /// `record_revision` of a replica that stops: it admits under no record any more.
    pub const STOPPED: i64 = i64::MAX;

    /// The compaction key: `<replica>#<scope key>#budget=<id>`.
    pub fn key(&self) -> String {
        format!("{}#{}", self.replica, crate::event::Headroom::key_of(&self.scope_key, &self.budget_id))
    }

    /// Whether the record is still live at `now`: younger than three of its intervals plus
    /// [`Demand::READ_SLACK_MS`] (the budget service reads the topic in the background lane,
    /// whose fetch wait may hold a record back for most of a second).
    pub fn live_at(&self, now: DateTime<Utc>) -> bool {
        now - self.published_at <= self.lifetime()
    }

    /// How long a record stays live (see [`Demand::live_at`]).
    pub fn lifetime(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::milliseconds(
            self.interval_ms.max(1).saturating_mul(3).saturating_add(Self::READ_SLACK_MS),
        )
    }

    /// See [`Demand::live_at`].
    pub const READ_SLACK_MS: i64 = 2_000;
}

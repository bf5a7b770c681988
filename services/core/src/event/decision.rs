//! Decisions: the enforcement state of one subject, published by the budget service to the
//! compacted decisions topic and enforced by every gateway. The latest record per subject is the
//! state; `revision` orders records of one subject.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Usd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DecisionState {
    Allow,
    Warn,
    Block,
    Downgrade,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub subject: String,
    pub state: DecisionState,
    pub reason: String,
    pub budget_id: Option<String>,
    pub budget_name: Option<String>,
    #[serde(with = "crate::money::avro_decimal")]
    pub spent_usd: Usd,
    #[serde(with = "crate::money::avro_decimal::option")]
    pub limit_usd: Option<Usd>,
    #[serde(with = "crate::time::micros::option")]
    pub window_start: Option<DateTime<Utc>>,
    #[serde(with = "crate::time::micros::option")]
    pub resets_at: Option<DateTime<Utc>>,
    pub downgrade_to: Option<String>,
    #[serde(with = "crate::time::micros")]
    pub decided_at: DateTime<Utc>,
    pub revision: i64,
}

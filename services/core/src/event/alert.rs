//! Alerts: what the budget service raises when a budget crosses a threshold or is forecast to,
//! and when spend looks anomalous (a spike, a burn rate, a runaway session, a model-mix drift).
//! Published to the compacted alerts topic keyed by [`Alert::alert_key`] (one live record per
//! budget threshold or anomaly subject, whose `period_start` says which window it fired for) and
//! delivered to webhooks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Usd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    Threshold,
    Forecast,
    SpendSpike,
    BurnRate,
    RunawaySession,
    ModelMixDrift,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertSeverity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The compaction key: one per budget threshold or anomaly subject.
    pub alert_key: String,
    pub kind: AlertKind,
    pub severity: AlertSeverity,
    /// The scope key of the budget, or the subject of the anomaly.
    pub subject: String,
    pub budget_id: Option<String>,
    pub budget_name: Option<String>,
    pub threshold_pct: Option<i32>,
    #[serde(with = "crate::money::avro_decimal")]
    pub spent_usd: Usd,
    #[serde(with = "crate::money::avro_decimal::option")]
    pub limit_usd: Option<Usd>,
    /// Start of the window or period this alert fires once for.
    #[serde(with = "crate::time::micros")]
    pub period_start: DateTime<Utc>,
    #[serde(with = "crate::time::micros::option")]
    pub resets_at: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    pub notify: Vec<String>,
    pub title: String,
    /// What happened and what to look at.
    pub message: String,
    #[serde(with = "crate::time::micros")]
    pub raised_at: DateTime<Utc>,
    pub revision: i64,
}

//! Decisions: the enforcement state of one subject, published by the budget service to the
//! compacted decisions topic and enforced by every gateway. The latest record per subject is the
//! state; `revision` orders records of one subject.
//!
//! [`Decision`]'s serde is its Avro form (amounts are `decimal` bytes). HTTP APIs serve
//! [`DecisionJson`], the same fields with amounts as exact decimal strings (`"12.5"`).

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

/// A decision as the HTTP APIs serve it: the fields of [`Decision`] with `spent_usd` and
/// `limit_usd` as exact decimal strings, normalized as the CLI prints them (`"12.5"`, never
/// bytes or a float). Converts both ways without loss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionJson {
    pub subject: String,
    pub state: DecisionState,
    pub reason: String,
    pub budget_id: Option<String>,
    pub budget_name: Option<String>,
    #[serde(with = "crate::money::decimal_string")]
    pub spent_usd: Usd,
    #[serde(with = "crate::money::decimal_string::option")]
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

impl From<Decision> for DecisionJson {
    fn from(d: Decision) -> Self {
        DecisionJson {
            subject: d.subject,
            state: d.state,
            reason: d.reason,
            budget_id: d.budget_id,
            budget_name: d.budget_name,
            spent_usd: d.spent_usd,
            limit_usd: d.limit_usd,
            window_start: d.window_start,
            resets_at: d.resets_at,
            downgrade_to: d.downgrade_to,
            decided_at: d.decided_at,
            revision: d.revision,
        }
    }
}

impl From<DecisionJson> for Decision {
    fn from(d: DecisionJson) -> Self {
        Decision {
            subject: d.subject,
            state: d.state,
            reason: d.reason,
            budget_id: d.budget_id,
            budget_name: d.budget_name,
            spent_usd: d.spent_usd,
            limit_usd: d.limit_usd,
            window_start: d.window_start,
            resets_at: d.resets_at,
            downgrade_to: d.downgrade_to,
            decided_at: d.decided_at,
            revision: d.revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_view_has_amounts_as_exact_decimal_strings_and_converts_back() {
        let decision = Decision {
            subject: "org=acme".into(),
            state: DecisionState::Block,
            reason: "over budget".into(),
            budget_id: Some("b1".into()),
            budget_name: None,
            spent_usd: "12.500000000000000001".parse().unwrap(),
            limit_usd: Some("10.00".parse().unwrap()),
            window_start: None,
            resets_at: None,
            downgrade_to: None,
            decided_at: DateTime::from_timestamp_micros(1_800_000_000_000_000).unwrap(),
            revision: 3,
        };
        let json = serde_json::to_value(DecisionJson::from(decision.clone())).unwrap();
        assert_eq!(json["spent_usd"], "12.500000000000000001");
        assert_eq!(json["limit_usd"], "10");
        let back: Decision = serde_json::from_value::<DecisionJson>(json).unwrap().into();
        assert_eq!(back.spent_usd, decision.spent_usd);
        assert_eq!(back.limit_usd.map(|l| l.0.normalize()), decision.limit_usd.map(|l| l.0.normalize()));
        let none =
            serde_json::to_value(DecisionJson::from(Decision { limit_usd: None, ..decision })).unwrap();
        assert!(none["limit_usd"].is_null());
    }
}

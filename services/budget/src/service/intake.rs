//! What comes in: budgets from the config topic and spend aggregates from the spend topic,
//! decoded and checked. A record that cannot be used (undecodable, an invalid budget, an
//! impossible aggregate) goes to the dead-letter topic unchanged with the reason in headers
//! (`faregate_core::kafka::dlq`), is counted in `faregate_budget_dead_letters_total{topic,
//! stage}`, and the service carries on without it. Each bad record is dead-lettered once per
//! process (a re-read after a new partition assignment does not repeat it); a restart, or every
//! instance for the config topic that all of them read, writes it again, with the same source
//! topic, partition and offset in the headers.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DurationRound, TimeDelta};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use faregate_core::avro::AvroCodec;
use faregate_core::event::{BucketWidth, ConfigEntity, ConfigRecord, Demand, SpendAggregate};
use faregate_core::kafka::DeadLetters;
use faregate_core::kafka::dlq::Stage;

use super::publish::retry;
use crate::BudgetError;
use crate::engine::Engine;

/// Why a spend aggregate cannot be used, if it cannot.
pub fn check_aggregate(a: &SpendAggregate) -> Result<(), String> {
    if a.org.trim().is_empty() {
        return Err("field `org`: must not be empty".into());
    }
    if a.cost_usd.0.is_sign_negative() && !a.cost_usd.0.is_zero() {
        return Err(format!("field `cost_usd`: {} is negative", a.cost_usd.0));
    }
    if a.requests < 0 || a.unpriced_requests < 0 || a.tokens_total < 0 {
        return Err("fields `requests`, `unpriced_requests`, `tokens_total`: must not be negative".into());
    }
    let session = a.session_id.as_deref().is_some_and(|s| !s.is_empty());
    let width = match a.bucket_width {
        BucketWidth::Minute if !session => {
            return Err("field `session_id`: a MINUTE aggregate is a session's and needs one".into());
        }
        BucketWidth::Hour if session => {
            return Err("field `session_id`: an HOUR aggregate is a subject's and has none".into());
        }
        BucketWidth::Minute => TimeDelta::minutes(1),
        BucketWidth::Hour => TimeDelta::hours(1),
        BucketWidth::Day => TimeDelta::days(1),
    };
    if a.bucket_start.duration_trunc(width).ok() != Some(a.bucket_start) {
        return Err(format!(
            "field `bucket_start`: {} is not the start of a {:?} bucket",
            a.bucket_start, a.bucket_width
        ));
    }
    Ok(())
}

pub(crate) struct Intake {
    pub(crate) config_codec: AvroCodec<ConfigRecord>,
    pub(crate) spend_codec: AvroCodec<SpendAggregate>,
    pub(crate) demand_codec: AvroCodec<Demand>,
    pub(crate) dlq: DeadLetters,
    /// (topic, partition, offset) of what this process already dead-lettered.
    dead: HashSet<(String, i32, i64)>,
}

impl Intake {
    pub(crate) fn new(
        config_codec: AvroCodec<ConfigRecord>,
        spend_codec: AvroCodec<SpendAggregate>,
        demand_codec: AvroCodec<Demand>,
        dlq: DeadLetters,
    ) -> Intake {
        Intake { config_codec, spend_codec, demand_codec, dlq, dead: HashSet::new() }
    }

    /// Apply one demand-topic message to the engine (or dead-letter it).
    pub(crate) async fn demand<M: Message>(
        &mut self,
        engine: &Mutex<Engine>,
        message: &M,
        now: chrono::DateTime<chrono::Utc>,
        shutdown: &CancellationToken,
    ) -> Result<(), BudgetError> {
        let key = message.key().map(String::from_utf8_lossy).unwrap_or_default().to_string();
        let Some(payload) = message.payload() else {
            engine.lock().unwrap().apply_demand(&key, None, now);
            return Ok(());
        };
        let demand = match self.demand_codec.decode(payload).await {
            Ok(demand) => demand,
            Err(error) => {
                return self
                    .dead_letter("demand", message, Stage::Decode, &error.to_string(), shutdown)
                    .await;
            }
        };
        let mut problems = Vec::new();
        if key != demand.key() {
            problems.push(format!("key {key:?} does not match the record's {:?}", demand.key()));
        }
        for (field, amount) in [
            ("open_usd", demand.open_usd),
            ("settled_usd", demand.settled_usd),
            ("demand_usd", demand.demand_usd),
            ("unit_usd", demand.unit_usd),
        ] {
            if amount.0.is_sign_negative() && !amount.0.is_zero() {
                problems.push(format!("field `{field}`: {} is negative", amount.0));
            }
        }
        if demand.interval_ms <= 0 {
            problems.push(format!("field `interval_ms`: {} is not positive", demand.interval_ms));
        }
        if !problems.is_empty() {
            return self
                .dead_letter("demand", message, Stage::Validate, &problems.join("; "), shutdown)
                .await;
        }
        tracing::debug!(budget = %demand.budget_id, replica = %demand.replica, demand = %demand.demand_usd,
            open = %demand.open_usd, settled = %demand.settled_usd, at = demand.published_at.timestamp_micros(),
            "demand report");
        engine.lock().unwrap().apply_demand(&key, Some(demand), now);
        Ok(())
    }

    /// Apply one config-topic message to the engine (or dead-letter it).
    pub(crate) async fn config<M: Message>(
        &mut self,
        engine: &Mutex<Engine>,
        message: &M,
        shutdown: &CancellationToken,
    ) -> Result<(), BudgetError> {
        let key = message.key().map(String::from_utf8_lossy).unwrap_or_default().to_string();
        let Some(payload) = message.payload() else {
            if let Some(id) = key.strip_prefix("budget/") {
                engine.lock().unwrap().remove_budget(id);
                tracing::info!(budget = id, "budget removed");
            }
            return Ok(());
        };
        let record = match self.config_codec.decode(payload).await {
            Ok(record) => record,
            Err(error) => {
                return self
                    .dead_letter("config", message, Stage::Decode, &error.to_string(), shutdown)
                    .await;
            }
        };
        let expected = record.topic_key();
        let ConfigRecord { entity: ConfigEntity::Budget(budget), .. } = record else {
            return Ok(());
        };
        if key != expected {
            let reason = format!("key {key:?} does not match the budget's key {expected:?}");
            return self.dead_letter("config", message, Stage::Validate, &reason, shutdown).await;
        }
        let id = budget.id.clone();
        let result = engine.lock().unwrap().set_budget(budget);
        match result {
            Ok(()) => tracing::info!(budget = %id, "budget set"),
            Err(error) => {
                let reason = format!("budget {id}: {error}");
                self.dead_letter("config", message, Stage::Validate, &reason, shutdown).await?;
            }
        }
        Ok(())
    }

    /// Decode and check one spend-topic message; `None` if there is nothing to apply (a
    /// tombstone, or a record dead-lettered here).
    pub(crate) async fn spend<M: Message>(
        &mut self,
        message: &M,
        shutdown: &CancellationToken,
    ) -> Result<Option<SpendAggregate>, BudgetError> {
        let Some(payload) = message.payload() else { return Ok(None) };
        let aggregate = match self.spend_codec.decode(payload).await {
            Ok(a) => a,
            Err(error) => {
                self.dead_letter("spend", message, Stage::Decode, &error.to_string(), shutdown).await?;
                return Ok(None);
            }
        };
        if let Err(reason) = check_aggregate(&aggregate) {
            self.dead_letter("spend", message, Stage::Validate, &reason, shutdown).await?;
            return Ok(None);
        }
        Ok(Some(aggregate))
    }

    async fn dead_letter<M: Message>(
        &mut self,
        label: &'static str,
        message: &M,
        stage: Stage,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), BudgetError> {
        let origin = (message.topic().to_string(), message.partition(), message.offset());
        if self.dead.contains(&origin) {
            return Ok(());
        }
        tracing::warn!(topic = %origin.0, partition = origin.1, offset = origin.2, stage = stage.as_str(), %reason, "dead-lettering a record");
        metrics::counter!("faregate_budget_dead_letters_total", "topic" => label, "stage" => stage.as_str())
            .increment(1);
        retry(shutdown, || self.dlq.send(message, stage, reason)).await?;
        self.dead.insert(origin);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use faregate_core::money::Usd;
    use rust_decimal::Decimal;

    fn aggregate() -> SpendAggregate {
        let hour = chrono::Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap();
        SpendAggregate {
            subject: "org=acme".into(),
            org: "acme".into(),
            team: None,
            user: None,
            key_id: None,
            project: None,
            model: None,
            tool: None,
            session_id: None,
            bucket_start: hour,
            bucket_width: BucketWidth::Hour,
            cost_usd: Usd(Decimal::ONE),
            requests: 1,
            unpriced_requests: 0,
            tokens_total: 1,
            revision: 1,
            computed_at: hour,
            usage_positions: Vec::new(),
        }
    }

    #[test]
    fn impossible_aggregates_are_refused_with_the_field() {
        assert_eq!(check_aggregate(&aggregate()), Ok(()));
        let session = SpendAggregate {
            session_id: Some("s".into()),
            bucket_width: BucketWidth::Minute,
            bucket_start: aggregate().bucket_start + TimeDelta::minutes(7),
            ..aggregate()
        };
        assert_eq!(check_aggregate(&session), Ok(()));
        for (bad, field) in [
            (SpendAggregate { org: " ".into(), ..aggregate() }, "`org`"),
            (SpendAggregate { cost_usd: Usd(Decimal::NEGATIVE_ONE), ..aggregate() }, "`cost_usd`"),
            (SpendAggregate { requests: -1, ..aggregate() }, "`requests`"),
            (SpendAggregate { bucket_width: BucketWidth::Minute, ..aggregate() }, "`session_id`"),
            (SpendAggregate { session_id: Some("s".into()), ..aggregate() }, "`session_id`"),
            (SpendAggregate { bucket_start: session.bucket_start, ..aggregate() }, "`bucket_start`"),
        ] {
            let reason = check_aggregate(&bad).unwrap_err();
            assert!(reason.contains(field), "{reason}");
        }
    }
}

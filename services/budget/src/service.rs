//! The running service: topics in, decisions and alerts out.
//!
//! Start: the config topic (budgets), the decisions topic (what was last published per scope),
//! the alerts topic (which windows were already alerted) and the spend topic are each read from
//! the beginning to their end; only then does the engine decide, so a restart publishes only
//! what changed and alerts nothing twice. The processor republishes recent totals from the
//! ledger when it starts, so the spend topic (compacted) holds the truth the state is rebuilt from.
//!
//! Live: budgets and spend keep streaming in; after each record the engine decides the scopes
//! it touched and the result is published at once (decisions keyed by scope, acknowledged by
//! the broker; a failed publication is retried until it succeeds or the service stops). A
//! ticker moves windows on, so a reset is published on time with no traffic.
//!
//! Nothing is committed: every start rebuilds from the compacted topics. Several instances
//! each hold the whole state and publish identical absolute decisions (idempotent on the
//! compacted topic); sharing the work by consumer group is not done yet (see docs/budgets.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::event::{Alert, ConfigEntity, ConfigRecord, Decision, SpendAggregate};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};

use crate::clock::Clock;
use crate::engine::{Engine, Output};
use crate::notify::Notifier;
use crate::topic::TopicReader;
use crate::{BudgetConfig, BudgetError};

/// Where the engine's output goes.
struct Publisher {
    decisions: RecordProducer<Decision>,
    alerts: RecordProducer<Alert>,
    notifier: Notifier,
}

impl Publisher {
    async fn publish(&self, out: Output, shutdown: &CancellationToken) -> Result<(), BudgetError> {
        for decision in &out.decisions {
            tracing::info!(subject = %decision.subject, state = ?decision.state, budget = ?decision.budget_id, spent = %decision.spent_usd, "decision");
            metrics::counter!("faregate_budget_decisions_total", "state" => format!("{:?}", decision.state).to_lowercase()).increment(1);
        }
        let sends = out.decisions.iter().map(|d| retry(shutdown, || self.decisions.send(&d.subject, d)));
        futures::future::try_join_all(sends).await?;
        for alert in &out.alerts {
            tracing::info!(key = %alert.alert_key, kind = ?alert.kind, owner = ?alert.owner, "alert");
            metrics::counter!("faregate_budget_alerts_total", "kind" => format!("{:?}", alert.kind).to_lowercase()).increment(1);
            retry(shutdown, || self.alerts.send(&alert.alert_key, alert)).await?;
            self.notifier.deliver(alert);
        }
        Ok(())
    }
}

async fn retry<T, F, Fut>(shutdown: &CancellationToken, mut attempt: F) -> Result<T, BudgetError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, faregate_core::kafka::ProduceError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(faregate_core::kafka::ProduceError::Avro(e)) => return Err(BudgetError::Avro(e)),
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "publishing failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(BudgetError::Stopped),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Apply one config-topic message to the engine.
async fn apply_config(
    engine: &Mutex<Engine>,
    codec: &AvroCodec<ConfigRecord>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) {
    let key = key.map(String::from_utf8_lossy).unwrap_or_default();
    let Some(payload) = payload else {
        if let Some(id) = key.strip_prefix("budget/") {
            engine.lock().unwrap().remove_budget(id);
            tracing::info!(budget = id, "budget removed");
        }
        return;
    };
    match codec.decode(payload).await {
        Ok(ConfigRecord { entity: ConfigEntity::Budget(budget), .. }) => {
            let id = budget.id.clone();
            match engine.lock().unwrap().set_budget(budget) {
                Ok(()) => tracing::info!(budget = %id, "budget set"),
                Err(error) => {
                    tracing::error!(budget = %id, %error, "invalid budget on the config topic; ignored")
                }
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%key, %error, "undecodable config record; ignored"),
    }
}

/// An owned message: (key, value).
type Owned = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The next message of a reader still catching up, or `None` once it has.
async fn next_until_caught_up(
    reader: &mut TopicReader,
    shutdown: &CancellationToken,
) -> Result<Option<Owned>, BudgetError> {
    loop {
        if reader.caught_up() {
            return Ok(None);
        }
        let topic = reader.topic().to_string();
        tokio::select! {
            _ = shutdown.cancelled() => return Err(BudgetError::Stopped),
            message = reader.next() => match message {
                Ok(m) => return Ok(Some((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)))),
                Err(error) => tracing::warn!(%topic, %error, "consumer error while catching up"),
            }
        }
    }
}

/// The service's loop; see the module docs.
pub async fn serve(
    config: BudgetConfig,
    kafka: KafkaConfig,
    clock: Arc<dyn Clock>,
    engine: Arc<Mutex<Engine>>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), BudgetError> {
    let t = &kafka.topics;
    let specs: Vec<_> = kafka
        .topic_specs()
        .into_iter()
        .filter(|s| [&t.spend, &t.decisions, &t.config, &t.alerts].contains(&&s.name))
        .collect();
    ensure_topics(&kafka, &specs).await.map_err(|e| BudgetError::Kafka(e.to_string()))?;
    let registry = kafka.schema_registry.registry();
    let config_codec =
        AvroCodec::<ConfigRecord>::new(SchemaFamily::ConfigRecord, &t.config, registry.clone()).await?;
    let spend_codec =
        AvroCodec::<SpendAggregate>::new(SchemaFamily::SpendAggregate, &t.spend, registry.clone()).await?;
    let publisher = Publisher {
        decisions: RecordProducer::new(&kafka, "budget", SchemaFamily::Decision, &t.decisions).await?,
        alerts: RecordProducer::new(&kafka, "budget", SchemaFamily::Alert, &t.alerts).await?,
        notifier: Notifier::new(config.webhooks.clone()),
    };
    let open = |topic: String| {
        let kafka = kafka.clone();
        let group = config.group_id.clone();
        async move {
            TopicReader::open(&kafka, &topic, &group)
                .await
                .map_err(|e| BudgetError::Kafka(format!("{topic}: {e}")))
        }
    };

    // Catch up: budgets, what was published, then spend.
    let mut budgets = open(t.config.clone()).await?;
    while let Some((key, payload)) = next_until_caught_up(&mut budgets, &shutdown).await? {
        apply_config(&engine, &config_codec, key.as_deref(), payload.as_deref()).await;
    }
    let decision_codec = publisher.decisions.codec();
    let mut decisions = open(t.decisions.clone()).await?;
    while let Some((key, payload)) = next_until_caught_up(&mut decisions, &shutdown).await? {
        match payload {
            Some(p) => match decision_codec.decode(&p).await {
                Ok(d) => engine.lock().unwrap().restore_decision(d),
                Err(error) => tracing::warn!(%error, "undecodable decision; ignored"),
            },
            None => {
                engine.lock().unwrap().forget_decision(&String::from_utf8_lossy(&key.unwrap_or_default()))
            }
        }
    }
    drop(decisions);
    let alert_codec = publisher.alerts.codec();
    let mut alerts = open(t.alerts.clone()).await?;
    while let Some((_, payload)) = next_until_caught_up(&mut alerts, &shutdown).await? {
        if let Some(p) = payload {
            match alert_codec.decode(&p).await {
                Ok(a) => engine.lock().unwrap().restore_alert(&a),
                Err(error) => tracing::warn!(%error, "undecodable alert; ignored"),
            }
        }
    }
    drop(alerts);
    let mut spend = open(t.spend.clone()).await?;
    let mut caught_up = 0usize;
    while let Some((_, payload)) = next_until_caught_up(&mut spend, &shutdown).await? {
        if let Some(p) = payload {
            match spend_codec.decode(&p).await {
                Ok(a) => {
                    engine.lock().unwrap().apply(&a);
                    caught_up += 1;
                }
                Err(error) => tracing::warn!(%error, "undecodable spend aggregate; ignored"),
            }
        }
    }
    let out = {
        let mut engine = engine.lock().unwrap();
        engine.set_warm();
        let (subjects, bytes) = engine.footprint();
        tracing::info!(aggregates = caught_up, subjects, bytes, "budget state rebuilt");
        engine.tick(clock.now())
    };
    publisher.publish(out, &shutdown).await?;
    ready.store(true, Ordering::Release);
    tracing::info!(budgets = %t.config, spend = %t.spend, decisions = %t.decisions, "budget service deciding");

    let mut ticker = tokio::time::interval(Duration::from_millis(config.tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let out = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                let mut engine = engine.lock().unwrap();
                let out = engine.tick(clock.now());
                let (subjects, bytes) = engine.footprint();
                metrics::gauge!("faregate_budget_subjects").set(subjects as f64);
                metrics::gauge!("faregate_budget_state_bytes").set(bytes as f64);
                out
            }
            message = budgets.next() => {
                match message {
                    Ok(m) => apply_config(&engine, &config_codec, m.key(), m.payload()).await,
                    Err(error) => tracing::warn!(%error, "config consumer error"),
                }
                engine.lock().unwrap().evaluate(clock.now())
            }
            message = spend.next() => {
                match message {
                    Ok(m) => if let Some(p) = m.payload() {
                        match spend_codec.decode(p).await {
                            Ok(a) => engine.lock().unwrap().apply(&a),
                            Err(error) => tracing::warn!(%error, "undecodable spend aggregate; ignored"),
                        }
                    },
                    Err(error) => tracing::warn!(%error, "spend consumer error"),
                }
                engine.lock().unwrap().evaluate(clock.now())
            }
        };
        if !out.is_empty() {
            match publisher.publish(out, &shutdown).await {
                Err(BudgetError::Stopped) => break,
                other => other?,
            }
        }
    }
    let _ = publisher.decisions.flush(Duration::from_secs(5));
    let _ = publisher.alerts.flush(Duration::from_secs(5));
    tracing::info!("budget service stopped");
    Ok(())
}

//! Helpers shared by the budget-service tests against the real broker (`budget_*.rs`): waiting
//! for a condition with a deadline, reading a topic to its end, budgets and spend records, and
//! a service instance whose engine the test can inspect.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::message::Message;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use faregate_budget::topic::TopicReader;
use faregate_budget::{BudgetConfig, Clock, Engine, ManualClock};
use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::event::{
    BucketWidth, Budget, BudgetAction, BudgetScope, BudgetWindow, ConfigEntity, ConfigRecord, SpendAggregate,
    WindowPeriod,
};
use faregate_core::kafka::{KafkaConfig, RecordProducer};
use faregate_core::money::Usd;
use faregate_tests::unique;

pub const DEADLINE: Duration = Duration::from_secs(90);

/// Poll `probe` until it answers, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    faregate_tests::eventually_within(what, DEADLINE, probe).await
}

/// Every value on `topic` (all partitions), read to its end.
pub async fn read_all<T: serde::Serialize + serde::de::DeserializeOwned>(
    kafka: &KafkaConfig,
    topic: &str,
    family: SchemaFamily,
) -> Vec<T> {
    let codec = AvroCodec::<T>::new(family, topic, kafka.schema_registry.registry()).await.unwrap();
    let mut reader = TopicReader::open(kafka, topic, &unique("reader"), false).await.unwrap();
    let mut values = Vec::new();
    while !reader.caught_up() {
        let message = reader.next().await.unwrap();
        if let Some(payload) = message.payload() {
            values.push(codec.decode(payload).await.unwrap());
        }
    }
    values
}

/// A daily UTC budget that blocks at `limit` dollars.
pub fn budget(id: &str, scope: BudgetScope, limit: i64, owner: &str) -> Budget {
    Budget {
        id: id.into(),
        name: id.into(),
        scope,
        window: BudgetWindow {
            period: WindowPeriod::Day,
            days: None,
            rolling: false,
            time_zone: "UTC".into(),
        },
        limit_usd: Usd(Decimal::from(limit)),
        action: BudgetAction::Block,
        downgrade_to: None,
        thresholds_pct: vec![100],
        owner: Some(owner.into()),
        notify: vec![],
    }
}

pub fn org_scope(org: &str) -> BudgetScope {
    BudgetScope { org: org.into(), ..BudgetScope::default() }
}

pub async fn put_budget(producer: &RecordProducer<ConfigRecord>, budget: Budget) {
    let record =
        ConfigRecord { updated_at: Utc::now(), updated_by: None, entity: ConfigEntity::Budget(budget) };
    producer.send(&record.topic_key(), &record).await.unwrap();
}

/// The start of the UTC hour containing `at`.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    at.duration_trunc(chrono::TimeDelta::hours(1)).unwrap()
}

/// An hourly spend total of user `user` of `org`.
pub fn hourly(org: &str, user: &str, hour: DateTime<Utc>, dollars: i64, revision: i64) -> SpendAggregate {
    SpendAggregate {
        subject: format!("org={org}/user={user}"),
        org: org.into(),
        team: None,
        user: Some(user.into()),
        key_id: None,
        project: None,
        model: Some("claude-opus-4-1".into()),
        tool: Some("claude-code".into()),
        session_id: None,
        bucket_start: hour,
        bucket_width: BucketWidth::Hour,
        cost_usd: Usd(Decimal::from(dollars)),
        requests: 1,
        unpriced_requests: 0,
        tokens_total: 1000,
        revision,
        computed_at: hour,
        usage_positions: Vec::new(),
    }
}

/// One budget service instance, with its engine in reach of the test.
pub struct Instance {
    pub engine: Arc<Mutex<Engine>>,
    pub ready: Arc<AtomicBool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), faregate_budget::BudgetError>>,
}

impl Instance {
    pub fn start(config: BudgetConfig, kafka: &KafkaConfig, clock: Arc<ManualClock>) -> Instance {
        let engine = Arc::new(Mutex::new(Engine::new(config.anomaly.settings().unwrap())));
        let ready = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let clock: Arc<dyn Clock> = clock;
        let task = tokio::spawn(faregate_budget::service::serve(
            config,
            kafka.clone(),
            clock,
            engine.clone(),
            ready.clone(),
            stop.clone(),
        ));
        Instance { engine, ready, stop, task }
    }

    pub async fn until_ready(&self) {
        eventually("the budget service to be ready", || {
            let ready = self.ready.load(Ordering::Acquire);
            async move { ready.then_some(()) }
        })
        .await;
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

//! Following a compacted topic as a table: every partition is read from the beginning (no
//! consumer group, nothing committed), each record handed to a callback as (key, value or
//! tombstone). The table is "caught up" once every partition has reached the end it had when
//! reading started (an end-of-partition event), which is what readiness waits for. Freshness:
//! the broker's watermarks are fetched every few seconds; the time of the last success tells
//! the gateway how stale its view may be.
//!
//! Broker trouble is waited out; an error no retry can cure (the topic's authorization refused,
//! an invalid topic: see [`FaregateError::retryable`]) ends the follower with it, and the
//! ingress stops with that reason rather than serve from a table that can never be read.
//!
//! Only the decisions table is on the path of a budget crossing; the others (keys, heartbeats,
//! headroom)
//! follow with `kafka.background_fetch_wait_max_ms` ([`Lane`]), so an idle gateway polls less.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::error::FaregateError;
use faregate_core::kafka::{IdlePacer, KafkaConfig, idle};

/// Reaching the end of a partition is how a table knows it caught up, not an error: librdkafka
/// also reports it as a global error, which the default context would log as one.
#[derive(Debug, Default)]
pub struct TableContext;

impl ClientContext for TableContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF) | KafkaError::PartitionEOF(_))
        {
            tracing::error!(%error, reason, "table consumer error");
        }
    }
}

impl ConsumerContext for TableContext {}

/// How current a followed table is.
#[derive(Debug, Default)]
pub struct Freshness {
    caught_up: AtomicBool,
    last_contact_ms: AtomicI64,
}

impl Freshness {
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Milliseconds since the broker last answered, or `None` before it ever did.
    pub fn silent_for_ms(&self) -> Option<i64> {
        let last = self.last_contact_ms.load(Ordering::Acquire);
        (last > 0).then(|| chrono::Utc::now().timestamp_millis() - last)
    }

    fn contact(&self) {
        self.last_contact_ms.store(chrono::Utc::now().timestamp_millis(), Ordering::Release);
    }

    /// Mark as caught up without a broker (for tests and in-memory use).
    pub fn set_caught_up(&self) {
        self.contact();
        self.caught_up.store(true, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("following topic {topic}: {what}: {source}")]
    Kafka { topic: String, what: &'static str, source: KafkaError },
    #[error("following topic {topic}: {message}")]
    Setup { topic: String, message: String },
}

/// Which fetch wait a table follows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A budget crossing waits on this table (decisions): `kafka.fetch_wait_max_ms`.
    DecisionPath,
    /// Nothing waits on it at request speed (keys, heartbeats): `kafka.background_fetch_wait_max_ms`.
    Background,
}

/// Read `topic` from the beginning until `shutdown`, calling `apply` for every record.
pub async fn follow<T, F>(
    kafka: KafkaConfig,
    lane: Lane,
    topic: String,
    family: SchemaFamily,
    freshness: Arc<Freshness>,
    mut apply: F,
    shutdown: CancellationToken,
) -> Result<(), TableError>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(&str, Option<T>) + Send,
{
    let kafka_err = |what: &'static str| {
        let topic = topic.clone();
        move |source| TableError::Kafka { topic, what, source }
    };
    let codec = AvroCodec::<T>::new(family, &topic, kafka.schema_registry.registry())
        .await
        .map_err(|e| TableError::Setup { topic: topic.clone(), message: e.to_string() })?;
    let group = format!("faregate-table-{}", uuid::Uuid::now_v7());
    let mut config = match lane {
        Lane::DecisionPath => kafka.consumer_config("ingress-table", &group),
        Lane::Background => kafka.background_consumer_config("ingress-table", &group),
    };
    config.set("enable.partition.eof", "true");
    let consumer: Arc<StreamConsumer<TableContext>> =
        Arc::new(config.create_with_context(TableContext).map_err(kafka_err("creating the consumer"))?);
    let partitions = wait_for_partitions(&consumer, &topic, &shutdown).await?;
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment
            .add_partition_offset(&topic, *p, Offset::Beginning)
            .map_err(kafka_err("assigning partitions"))?;
    }
    consumer.assign(&assignment).map_err(kafka_err("assigning partitions"))?;
    freshness.contact();
    let mut pending: HashSet<i32> = partitions.into_iter().collect();
    let mut probe = tokio::time::interval(Duration::from_secs(3));
    // Both lanes are paced: on tansu even the background lane's 1 s fetch costs more than the
    // look that replaces it while asleep (docs/benchmarks.md, "Idle CPU").
    let mut pacer = IdlePacer::new(&kafka, &format!("ingress-table-{topic}"));
    // While the pacer sleeps, the table looks for new records this often (offsets, no fetch).
    let mut look = tokio::time::interval(Duration::from_millis(kafka.ownership.check_interval_ms));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = pacer.due() => pacer.step(&*consumer),
            _ = look.tick(), if pacer.is_asleep() => {
                let asleep = consumer.clone();
                let backlog = tokio::task::spawn_blocking(move || {
                    idle::backlog(&*asleep, Duration::from_secs(2))
                }).await;
                // Unreachable: the freshness probe tells; keep looking.
                if let Ok(Ok(found)) = backlog {
                    freshness.contact();
                    if found {
                        pacer.active(&*consumer);
                    }
                }
            }
            // Asleep, the look above answers for the broker every second.
            _ = probe.tick(), if !pacer.is_asleep() => {
                let (consumer, topic) = (consumer.clone(), topic.clone());
                let reachable = tokio::task::spawn_blocking(move || {
                    consumer.fetch_watermarks(&topic, 0, Duration::from_secs(2)).is_ok()
                }).await.unwrap_or(false);
                if reachable {
                    freshness.contact();
                }
            }
            message = consumer.recv() => match message {
                Ok(message) => {
                    pacer.active(&*consumer);
                    freshness.contact();
                    let key = message.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                    match message.payload() {
                        None => apply(&key, None),
                        Some(bytes) => match codec.decode(bytes).await {
                            Ok(value) => apply(&key, Some(value)),
                            Err(e) => {
                                metrics::counter!("faregate_ingress_table_undecodable_total", "topic" => topic.clone()).increment(1);
                                tracing::error!(%topic, partition = message.partition(), offset = message.offset(),
                                    error = %e, "table record cannot be decoded; skipped");
                            }
                        },
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    freshness.contact();
                    if pending.remove(&partition) && pending.is_empty() {
                        tracing::info!(%topic, "table caught up");
                        freshness.caught_up.store(true, Ordering::Release);
                    }
                }
                Err(e) if !e.retryable() => {
                    return Err(TableError::Kafka { topic: topic.clone(), what: "reading", source: e });
                }
                Err(e) => tracing::warn!(%topic, error = %e, "table consumer error"),
            },
        }
    }
}

async fn wait_for_partitions(
    consumer: &Arc<StreamConsumer<TableContext>>,
    topic: &str,
    shutdown: &CancellationToken,
) -> Result<Vec<i32>, TableError> {
    let mut delay = Duration::from_millis(200);
    loop {
        let (c, t) = (consumer.clone(), topic.to_string());
        let metadata =
            tokio::task::spawn_blocking(move || c.fetch_metadata(Some(&t), Duration::from_secs(5)))
                .await
                .map_err(|e| TableError::Setup { topic: topic.to_string(), message: e.to_string() })?;
        match metadata {
            Ok(metadata) => {
                let refused = metadata
                    .topics()
                    .iter()
                    .find_map(|t| t.error())
                    .map(|code| KafkaError::MetadataFetch(RDKafkaErrorCode::from(code)));
                if let Some(error) = refused.filter(|e| !e.retryable()) {
                    return Err(TableError::Kafka {
                        topic: topic.to_string(),
                        what: "reading metadata",
                        source: error,
                    });
                }
                let partitions: Vec<i32> =
                    metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
                if !partitions.is_empty() {
                    return Ok(partitions);
                }
                tracing::warn!(%topic, "topic has no partitions yet (run `faregate topics create`); waiting");
            }
            Err(e) if !e.retryable() => {
                return Err(TableError::Kafka {
                    topic: topic.to_string(),
                    what: "reading metadata",
                    source: e,
                });
            }
            Err(e) => tracing::warn!(%topic, error = %e, "cannot read topic metadata; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(TableError::Setup { topic: topic.to_string(), message: "stopped before the topic existed".into() }),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

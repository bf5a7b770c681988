//! Reading a compacted topic from its beginning: every partition is assigned (no group
//! rebalancing, nothing is ever committed), and the reader knows when it has caught up with the
//! end offsets it saw when it opened. State built from such a topic is complete once caught up.
//! A background reader is idle-paced (`kafka.idle`, [`faregate_core::kafka::idle`]): with
//! nothing to read it stops fetching, and looks for new records by their offsets instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use faregate_core::kafka::{IdlePacer, KafkaConfig, idle};

const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// A reader of one whole topic.
pub struct TopicReader {
    consumer: Arc<StreamConsumer>,
    /// Partition -> end offset still to reach.
    pending: HashMap<i32, i64>,
    topic: String,
    pacer: IdlePacer,
    /// While the pacer sleeps, the reader looks for new records this often.
    look: tokio::time::Interval,
    /// The look under way. Kept here, not in [`TopicReader::next`]'s future, so that a caller
    /// that drops that future (a branch of a `select!` that another branch won) does not drop
    /// the look's answer with it: the service's loop does that many times a second under load,
    /// and a reader whose every look was dropped stayed asleep with records waiting (a share
    /// 9 s late in the fault soak).
    looking: Option<tokio::task::JoinHandle<Result<bool, KafkaError>>>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader").field("topic", &self.topic).field("pending", &self.pending).finish()
    }
}

/// The partitions of `topic`, and the end offset of each that holds data.
fn ends(consumer: &BaseConsumer, topic: &str) -> Result<(Vec<i32>, HashMap<i32, i64>), KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let mut partitions = Vec::new();
    let mut ends = HashMap::new();
    for t in metadata.topics() {
        if let Some(error) = t.error() {
            return Err(KafkaError::MetadataFetch(error.into()));
        }
        for p in t.partitions() {
            partitions.push(p.id());
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)?;
            if high > low {
                ends.insert(p.id(), high);
            }
        }
    }
    Ok((partitions, ends))
}

impl TopicReader {
    /// Open `topic` from its beginning; `group` is only a label (nothing is committed). A
    /// `background` reader fetches with `kafka.background_fetch_wait_max_ms` (for a topic that
    /// is followed while nothing urgent waits on it), any other with `kafka.fetch_wait_max_ms`.
    pub async fn open(
        kafka: &KafkaConfig,
        topic: &str,
        group: &str,
        background: bool,
    ) -> Result<TopicReader, KafkaError> {
        let group = format!("{group}-{}", uuid::Uuid::now_v7().simple());
        let probe: BaseConsumer = kafka.consumer_config("budget", &group).create()?;
        let topic_name = topic.to_string();
        let (probe, pending) = tokio::task::spawn_blocking(move || {
            let ends = ends(&probe, &topic_name);
            (probe, ends)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?;
        drop(probe);
        let (partitions, pending) = pending?;
        let config = if background {
            kafka.background_consumer_config("budget", &group)
        } else {
            kafka.consumer_config("budget", &group)
        };
        let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
        let mut assignment = TopicPartitionList::new();
        for p in partitions {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let pacer = match background {
            true => IdlePacer::new(kafka, &format!("budget-{topic}")),
            false => IdlePacer::off(),
        };
        let mut look = tokio::time::interval(Duration::from_millis(kafka.ownership.check_interval_ms));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(TopicReader { consumer, pending, topic: topic.to_string(), pacer, look, looking: None })
    }

    /// Whether every message that existed at open was read.
    pub fn caught_up(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next message. Cancel-safe: dropping the future loses no message and no look.
    pub async fn next(&mut self) -> Result<OwnedMessage, KafkaError> {
        loop {
            tokio::select! {
                _ = self.pacer.due() => self.pacer.step(&*self.consumer),
                _ = self.look.tick(), if self.pacer.is_asleep() && self.looking.is_none() => {
                    let consumer = self.consumer.clone();
                    self.looking =
                        Some(tokio::task::spawn_blocking(move || idle::backlog(&*consumer, METADATA_TIMEOUT)));
                }
                found = async { self.looking.as_mut().expect("a look under way").await }, if self.looking.is_some() => {
                    self.looking = None;
                    // Unreachable: the next look tries again, as a fetch would.
                    if let Ok(Ok(true)) = found {
                        self.pacer.active(&*self.consumer);
                    }
                }
                message = self.consumer.recv() => {
                    let message = message?.detach();
                    self.pacer.active(&*self.consumer);
                    if let Some(end) = self.pending.get(&message.partition())
                        && message.offset() + 1 >= *end
                    {
                        self.pending.remove(&message.partition());
                    }
                    return Ok(message);
                }
            }
        }
    }

    /// Whether it is paced asleep (not fetching, looking for records by their offsets).
    pub fn is_asleep(&self) -> bool {
        self.pacer.is_asleep()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Every budget on the config topic, read to its end (for `faregate budgets list`).
pub async fn read_budgets(
    kafka: &KafkaConfig,
    deadline: Duration,
) -> Result<std::collections::BTreeMap<String, faregate_core::event::Budget>, crate::BudgetError> {
    use faregate_core::avro::{AvroCodec, SchemaFamily};
    use faregate_core::event::{ConfigEntity, ConfigRecord};
    let topic = &kafka.topics.config;
    let codec =
        AvroCodec::<ConfigRecord>::new(SchemaFamily::ConfigRecord, topic, kafka.schema_registry.registry())
            .await?;
    let mut reader = TopicReader::open(kafka, topic, "faregate-budgets-cli", false)
        .await
        .map_err(|e| crate::BudgetError::Kafka(e.to_string()))?;
    let mut budgets = std::collections::BTreeMap::new();
    let read = async {
        while !reader.caught_up() {
            let message = reader.next().await.map_err(|e| crate::BudgetError::Kafka(e.to_string()))?;
            let key = message.key().map(String::from_utf8_lossy).unwrap_or_default().to_string();
            match message.payload() {
                None => {
                    if let Some(id) = key.strip_prefix("budget/") {
                        budgets.remove(id);
                    }
                }
                Some(payload) => {
                    if let Ok(ConfigRecord { entity: ConfigEntity::Budget(b), .. }) =
                        codec.decode(payload).await
                    {
                        budgets.insert(b.id.clone(), b);
                    }
                }
            }
        }
        Ok::<_, crate::BudgetError>(())
    };
    tokio::time::timeout(deadline, read).await.map_err(|_| {
        crate::BudgetError::Kafka(format!("could not read {topic} to its end within {deadline:?}"))
    })??;
    Ok(budgets)
}

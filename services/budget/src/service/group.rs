//! The spend topic in a consumer group. Instances of one deployment join the same group
//! (`budget.group_id`, static membership with `budget.instance_id`: tansu needs it, and a
//! restarted instance gets its partitions back at once) and split the partitions; the
//! processor puts all of an org's spend on the org's partition, so an instance owns the orgs of
//! its partitions.
//!
//! Contract: every assignment starts each assigned partition from its beginning (the topic is
//! compacted and nothing is ever committed), and the rebalance is reported to the service as a
//! [`GroupEvent`] before any message of the new assignment is handled, so the service can drop
//! the old state and rebuild. [`SpendGroup::layout`] gives the partition count and the end
//! offsets to read to before the rebuilt state may decide.
//!
//! Ownership: the service runs the shared watchdog ([`faregate_core::kafka::ownership`]) on
//! this consumer; the positions are committed on each check only so that other members see the
//! partitions progress (they are never read back), and [`SpendGroup::rejoin`] closes the
//! consumer and joins again with the same instance id when the watchdog asks for it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use faregate_core::kafka::KafkaConfig;

const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// A change of the group's assignment to this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupEvent {
    Assigned(BTreeSet<i32>),
    Revoked,
}

/// Turns librdkafka's rebalance callbacks (served inside `recv`) into [`GroupEvent`]s.
#[derive(Default)]
pub(crate) struct GroupContext {
    events: Mutex<Vec<GroupEvent>>,
    notify: tokio::sync::Notify,
}

impl GroupContext {
    fn push(&self, event: GroupEvent) {
        self.events.lock().unwrap().push(event);
        self.notify.notify_one();
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Always from the beginning: the state of an assignment is rebuilt from scratch.
                if let Err(error) = tpl.set_all_offsets(Offset::Beginning) {
                    tracing::error!(%error, "cannot start the assigned spend partitions from the beginning");
                }
                if let Err(error) = consumer.assign(tpl) {
                    tracing::error!(%error, "assigning spend partitions failed");
                }
                let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?partitions, "spend partitions assigned");
                self.push(GroupEvent::Assigned(partitions));
            }
            other => {
                if other != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::error!(error = ?other, "spend group rebalance failed; dropping the assignment");
                }
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(%error, "unassigning spend partitions failed");
                }
                tracing::info!("spend partitions revoked");
                self.push(GroupEvent::Revoked);
            }
        }
    }
}

/// The spend topic's group consumer, and a probe for its metadata.
pub(crate) struct SpendGroup {
    pub(crate) consumer: StreamConsumer<GroupContext>,
    probe: Arc<BaseConsumer>,
    topic: String,
    kafka: KafkaConfig,
    group: String,
    instance_id: String,
}

impl SpendGroup {
    /// Join `group` as `instance_id` and subscribe to `topic`.
    pub(crate) fn join(
        kafka: &KafkaConfig,
        group: &str,
        instance_id: &str,
        topic: &str,
    ) -> Result<SpendGroup, KafkaError> {
        let consumer = Self::member(kafka, group, Some(instance_id), topic)?;
        let probe: BaseConsumer =
            kafka.consumer_config("budget-probe", &format!("{group}-probe")).create()?;
        Ok(SpendGroup {
            consumer,
            probe: Arc::new(probe),
            topic: topic.to_string(),
            kafka: kafka.clone(),
            group: group.to_string(),
            instance_id: instance_id.to_string(),
        })
    }

    fn member(
        kafka: &KafkaConfig,
        group: &str,
        instance_id: Option<&str>,
        topic: &str,
    ) -> Result<StreamConsumer<GroupContext>, KafkaError> {
        let mut config = kafka.consumer_config("budget", group);
        if let Some(instance_id) = instance_id {
            config.set("group.instance.id", instance_id);
        }
        let consumer: StreamConsumer<GroupContext> = config.create_with_context(GroupContext::default())?;
        consumer.subscribe(&[topic])?;
        Ok(consumer)
    }

    /// Close the consumer (off the async runtime: closing waits for the broker) and join the
    /// group again, with the same instance id or, if `dynamic`, as a dynamic member. Events of
    /// the old consumer are dropped; the caller drops its assignment's state first.
    pub(crate) async fn rejoin(self, dynamic: bool) -> Result<SpendGroup, KafkaError> {
        let SpendGroup { consumer, probe, topic, kafka, group, instance_id } = self;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        let id = (!dynamic).then_some(instance_id.as_str());
        let consumer = Self::member(&kafka, &group, id, &topic)?;
        Ok(SpendGroup { consumer, probe, topic, kafka, group, instance_id })
    }

    /// Rebalance events since the last call, in order.
    pub(crate) fn take_events(&self) -> Vec<GroupEvent> {
        std::mem::take(&mut *self.consumer.context().events.lock().unwrap())
    }

    /// The spend partitions the consumer holds now, as librdkafka knows its assignment.
    pub(crate) fn owned(&self) -> Result<BTreeSet<i32>, KafkaError> {
        Ok(self.consumer.assignment()?.elements().iter().map(|e| e.partition()).collect())
    }

    /// Resolves when a rebalance event may be waiting (the consumer must be polled meanwhile).
    pub(crate) async fn rebalanced(&self) {
        self.consumer.context().notify.notified().await;
    }

    /// The topic's partition count, and the end offset of each of `assigned` that holds data.
    pub(crate) async fn layout(
        &self,
        assigned: &BTreeSet<i32>,
    ) -> Result<(i32, HashMap<i32, i64>), KafkaError> {
        let (probe, topic, assigned) = (self.probe.clone(), self.topic.clone(), assigned.clone());
        tokio::task::spawn_blocking(move || {
            let metadata = probe.fetch_metadata(Some(&topic), METADATA_TIMEOUT)?;
            let count: usize = metadata.topics().iter().map(|t| t.partitions().len()).sum();
            let mut ends = HashMap::new();
            for p in assigned {
                let (low, high) = probe.fetch_watermarks(&topic, p, METADATA_TIMEOUT)?;
                if high > low {
                    ends.insert(p, high);
                }
            }
            Ok((count as i32, ends))
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}

//! The processor's membership of the usage topic's consumer group: joining (static membership
//! when `processor.instance_id` is set) and rejoining when the ownership watchdog
//! ([`faregate_core::kafka::ownership`]) finds the group's partitions not all consumed.
//!
//! A rejoin closes the consumer and creates it again, with the same `group.instance.id` or, when
//! the watchdog asks for it, as a dynamic member (see [`faregate_core::kafka::ownership::Rejoin`]). The
//! pipeline writes (or drops) its batch before, so no row of the old assignment is written
//! after the rejoin; the new assignment resumes each partition from the group's last commit.

use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::ProcessorError;
use crate::config::ProcessorConfig;
use crate::pipeline::RebalanceContext;
use faregate_core::kafka::KafkaConfig;

/// A consumer of the usage topic in the processor's group, subscribed; a static member when
/// `processor.instance_id` is set, unless `dynamic`.
pub(crate) fn join(
    kafka: &KafkaConfig,
    config: &ProcessorConfig,
    dynamic: bool,
) -> Result<StreamConsumer<RebalanceContext>, ProcessorError> {
    let mut client_config = kafka.consumer_config("processor", &config.group_id);
    client_config.set("max.poll.interval.ms", "600000");
    if !config.instance_id.is_empty() && !dynamic {
        client_config.set("group.instance.id", &config.instance_id);
    }
    let consumer: StreamConsumer<RebalanceContext> = client_config
        .create_with_context(RebalanceContext::default())
        .map_err(|source| ProcessorError::Kafka { what: "creating the usage consumer", source })?;
    consumer
        .subscribe(&[&kafka.topics.usage])
        .map_err(|source| ProcessorError::Kafka { what: "subscribing to the usage topic", source })?;
    Ok(consumer)
}

/// Close `old` off the async runtime (closing waits for the broker) and join again.
pub(crate) async fn rejoin(
    old: StreamConsumer<RebalanceContext>,
    kafka: &KafkaConfig,
    config: &ProcessorConfig,
    dynamic: bool,
) -> Result<StreamConsumer<RebalanceContext>, ProcessorError> {
    let _ = tokio::task::spawn_blocking(move || drop(old)).await;
    join(kafka, config, dynamic)
}

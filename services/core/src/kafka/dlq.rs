//! The dead-letter topic: a value that cannot be decoded or fails validation is written there
//! unchanged, with its key, and the reason and origin in headers. A caller that must not lose
//! it waits for the broker's acknowledgement before it treats the source message as handled.
//! Shared by every consumer of Faregate topics (the processor's usage topic, the budget
//! service's config and spend topics).

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use super::acks::{AckProducer, Outgoing};
use super::config::KafkaConfig;

/// The stage that refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decode,
    Validate,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Validate => "validate",
        }
    }
}

/// Header names on dead letters.
pub mod header {
    pub const ERROR: &str = "faregate-error";
    pub const STAGE: &str = "faregate-stage";
    pub const SOURCE_TOPIC: &str = "faregate-source-topic";
    pub const SOURCE_PARTITION: &str = "faregate-source-partition";
    pub const SOURCE_OFFSET: &str = "faregate-source-offset";
}

/// Writes refused messages to the dead-letter topic.
pub struct DeadLetters {
    producer: AckProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A dead-letter writer with a client of its own, identified as `role`-dlq to the broker.
    pub fn new(config: &KafkaConfig, role: &str) -> Result<Self, KafkaError> {
        Ok(Self::sharing(&AckProducer::new(config, &format!("{role}-dlq"))?, config))
    }

    /// A dead-letter writer through `producer`, shared with the service's other writers.
    pub fn sharing(producer: &AckProducer, config: &KafkaConfig) -> Self {
        DeadLetters { producer: producer.clone(), topic: config.topics.dlq.clone() }
    }

    /// Write `message` with `reason`, and wait for the broker's acknowledgement.
    pub async fn send<M: Message>(&self, message: &M, stage: Stage, reason: &str) -> Result<(), KafkaError> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: header::ERROR, value: Some(reason) })
            .insert(Header { key: header::STAGE, value: Some(stage.as_str()) })
            .insert(Header { key: header::SOURCE_TOPIC, value: Some(message.topic()) })
            .insert(Header { key: header::SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: header::SOURCE_OFFSET, value: Some(&offset) });
        if let Some(original) = message.headers() {
            for i in 0..original.count() {
                let h = original.get(i);
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let record =
            Outgoing { topic: &self.topic, key: message.key(), payload: message.payload(), partition: None };
        self.producer.send(record, headers).await.map(|_| ())
    }
}

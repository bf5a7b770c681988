//! The dead-letter topic: a value that cannot be decoded or fails validation is written there
//! unchanged, with its key, and the reason and origin in headers. The pipeline waits for the
//! broker's acknowledgement before it lets the source offset be committed, so nothing is lost.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use faregate_core::kafka::KafkaConfig;

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
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl DeadLetters {
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        Ok(DeadLetters {
            producer: config.producer_config("processor-dlq").create()?,
            topic: config.topics.dlq.clone(),
        })
    }

    /// Write `message` with `reason`, and wait for the broker's acknowledgement.
    pub async fn send(
        &self,
        message: &BorrowedMessage<'_>,
        stage: Stage,
        reason: &str,
    ) -> Result<(), KafkaError> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: header::ERROR, value: Some(reason) })
            .insert(Header { key: header::STAGE, value: Some(stage.as_str()) })
            .insert(Header { key: header::SOURCE_TOPIC, value: Some(message.topic()) })
            .insert(Header { key: header::SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: header::SOURCE_OFFSET, value: Some(&offset) });
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer.send(record, Duration::from_secs(5)).await.map(|_| ()).map_err(|(e, _)| e)
    }
}

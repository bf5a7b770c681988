//! A producer of one Avro record type to one topic: encodes with the Confluent framing, keys the
//! message, carries the current trace context in headers, and resolves once the broker has
//! acknowledged the write (`acks=all`, idempotent). The caller decides what an acknowledgement
//! unlocks; nothing here retries beyond librdkafka's own idempotent retries.
//!
//! Writers of one service share one [`AckProducer`] ([`RecordProducer::sharing`]): one client,
//! one polling thread, whatever the number of topics written.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::acks::{AckProducer, Outgoing};
use super::config::KafkaConfig;
use crate::avro::{AvroCodec, AvroError, SchemaFamily};
use crate::error::{ErrorClass, FaregateError};

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Avro(#[from] AvroError),
    #[error("cannot create a Kafka producer for {brokers}: {source}")]
    Create { brokers: String, source: KafkaError },
    #[error("writing to topic {topic} failed: {source}")]
    Send { topic: String, source: KafkaError },
}

impl FaregateError for ProduceError {
    fn class(&self) -> ErrorClass {
        match self {
            ProduceError::Avro(e) => e.class(),
            ProduceError::Create { .. } => ErrorClass::User,
            // A broker outage is external; a refusal (message too large, authorization) is not
            // retryable: see `kafka::error`.
            ProduceError::Send { source, .. } => source.class(),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            ProduceError::Avro(e) => e.retryable(),
            ProduceError::Create { .. } => false,
            ProduceError::Send { source, .. } => source.retryable(),
        }
    }
}

/// Where an acknowledged message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Produces `T` records to one topic.
pub struct RecordProducer<T> {
    producer: AckProducer,
    codec: Arc<AvroCodec<T>>,
    topic: String,
}

impl<T> std::fmt::Debug for RecordProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordProducer").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> RecordProducer<T> {
    /// A producer of `family` records to `topic` with a client of its own, identified as `role`
    /// to the broker.
    pub async fn new(
        config: &KafkaConfig,
        role: &str,
        family: SchemaFamily,
        topic: &str,
    ) -> Result<Self, ProduceError> {
        let producer = AckProducer::new(config, role)
            .map_err(|source| ProduceError::Create { brokers: config.brokers.clone(), source })?;
        Self::sharing(&producer, config, family, topic).await
    }

    /// A producer of `family` records to `topic` through `producer`, shared with other writers.
    pub async fn sharing(
        producer: &AckProducer,
        config: &KafkaConfig,
        family: SchemaFamily,
        topic: &str,
    ) -> Result<Self, ProduceError> {
        let codec = Arc::new(AvroCodec::new(family, topic, config.schema_registry.registry()).await?);
        Ok(RecordProducer { producer: producer.clone(), codec, topic: topic.to_string() })
    }

    /// The codec this producer writes with (readers of the same topic can share it).
    pub fn codec(&self) -> Arc<AvroCodec<T>> {
        self.codec.clone()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Write `value` under `key` and wait for the broker's acknowledgement.
    pub async fn send(&self, key: &str, value: &T) -> Result<Delivered, ProduceError> {
        let payload = self.codec.encode(value)?;
        self.send_payload(key, Some(&payload)).await
    }

    /// [`send`](Self::send) to an explicit `partition` instead of the key's hash.
    pub async fn send_to(&self, partition: i32, key: &str, value: &T) -> Result<Delivered, ProduceError> {
        let payload = self.codec.encode(value)?;
        self.send_payload_to(Some(partition), key, Some(&payload)).await
    }

    /// Write a tombstone (null value) for `key`, deleting it from a compacted topic.
    pub async fn send_tombstone(&self, key: &str) -> Result<Delivered, ProduceError> {
        self.send_payload(key, None).await
    }

    /// The topic's partition count, from the broker's metadata.
    pub async fn partition_count(&self) -> Result<i32, ProduceError> {
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        let send_error = |source| ProduceError::Send { topic: self.topic.clone(), source };
        let partitions = tokio::task::spawn_blocking(move || {
            producer.partition_count_blocking(&topic, Duration::from_secs(15))
        })
        .await
        .map_err(|_| send_error(KafkaError::Canceled))?
        .map_err(send_error)?;
        match partitions {
            0 => Err(send_error(KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopic))),
            n => Ok(n as i32),
        }
    }

    async fn send_payload(&self, key: &str, payload: Option<&Vec<u8>>) -> Result<Delivered, ProduceError> {
        self.send_payload_to(None, key, payload).await
    }

    async fn send_payload_to(
        &self,
        partition: Option<i32>,
        key: &str,
        payload: Option<&Vec<u8>>,
    ) -> Result<Delivered, ProduceError> {
        let headers = super::trace::inject_current(OwnedHeaders::new());
        let record = Outgoing {
            topic: &self.topic,
            key: Some(key.as_bytes()),
            payload: payload.map(Vec::as_slice),
            partition,
        };
        self.producer
            .send(record, headers)
            .await
            .map_err(|source| ProduceError::Send { topic: self.topic.clone(), source })
    }

    /// Wait until every message handed to this producer is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), ProduceError> {
        self.producer
            .flush(timeout)
            .map_err(|source| ProduceError::Send { topic: self.topic.clone(), source })
    }
}

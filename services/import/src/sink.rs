//! Where imported usage events go: the usage topic, like every other usage event.
//!
//! Contract: [`EventSink::write`] returns once every event given is durably accepted (for
//! Kafka: acknowledged by the broker with `acks=all`), or fails; a failed write may have
//! written some of the events, which is harmless because the processor counts each event id
//! once and the next run writes them again with the same ids.

use std::sync::Mutex;

use async_trait::async_trait;
use faregate_core::FaregateError;
use faregate_core::event::UsageEvent;
use faregate_core::kafka::RecordProducer;

use crate::error::ImportError;

/// A destination of imported usage events.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Write `events`, each under its partition key; `source_name` names the importer in errors.
    async fn write(&self, events: &[UsageEvent]) -> Result<(), ImportError>;
}

/// The usage topic.
#[derive(Debug)]
pub struct KafkaSink {
    pub producer: RecordProducer<UsageEvent>,
    pub source_name: &'static str,
}

#[async_trait]
impl EventSink for KafkaSink {
    async fn write(&self, events: &[UsageEvent]) -> Result<(), ImportError> {
        let sends =
            events.iter().map(|event| async move { self.producer.send(&event.partition_key(), event).await });
        futures::future::try_join_all(sends).await.map(drop).map_err(|error| ImportError::Sink {
            source_name: self.source_name,
            topic: self.producer.topic().to_string(),
            retryable: error.retryable(),
            message: error.to_string(),
        })
    }
}

/// Keeps what it is given, for tests.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub events: Mutex<Vec<UsageEvent>>,
}

#[async_trait]
impl EventSink for MemorySink {
    async fn write(&self, events: &[UsageEvent]) -> Result<(), ImportError> {
        self.events.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

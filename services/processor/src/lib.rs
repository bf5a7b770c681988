//! The processor: consumes usage events, validates them, prices them with exact decimal money,
//! writes the ClickHouse ledger exactly once per event and publishes absolute spend totals for
//! the budget service. See [`pipeline`] for the effectively-once argument.

pub mod aggregate;
pub mod config;
pub mod dlq;
pub mod ledger;
pub mod pipeline;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

use faregate_core::avro::AvroError;
use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::clickhouse::ledger::Pricing;
use faregate_core::error::{ErrorClass, FaregateError};
use faregate_core::event::UsageEvent;
use faregate_core::kafka::{KafkaConfig, ProduceError};

pub use config::ProcessorConfig;
pub use ledger::{ClickHouseLedger, Ledger, LedgerError, MemoryLedger};
pub use pipeline::Pipeline;

/// Prices one event. Implemented by the price catalog; tests use closures.
pub trait Pricer: Send + Sync {
    fn price(&self, event: &UsageEvent) -> Pricing;
}

impl<F: Fn(&UsageEvent) -> Pricing + Send + Sync> Pricer for F {
    fn price(&self, event: &UsageEvent) -> Pricing {
        self(event)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {what}: {source}")]
    Kafka { what: &'static str, source: KafkaError },
    #[error(transparent)]
    Avro(#[from] AvroError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("price catalog: {0}")]
    Prices(String),
}

impl FaregateError for ProcessorError {
    fn class(&self) -> ErrorClass {
        match self {
            ProcessorError::Kafka { .. } => ErrorClass::External,
            ProcessorError::Avro(e) => e.class(),
            ProcessorError::Produce(e) => e.class(),
            ProcessorError::Prices(_) => ErrorClass::User,
        }
    }
}

/// Run the processor against Kafka and ClickHouse until `shutdown` is cancelled.
pub async fn run(
    config: ProcessorConfig,
    kafka: KafkaConfig,
    clickhouse: ClickHouseConfig,
    pricer: Arc<dyn Pricer>,
    ledger_ok: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let ledger = Arc::new(ClickHouseLedger::new(clickhouse.client()));
    Pipeline::new(config, kafka, ledger, pricer, ledger_ok).run(shutdown).await
}

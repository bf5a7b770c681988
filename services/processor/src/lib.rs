//! The processor: consumes usage events, validates them, prices them with exact decimal money,
//! writes the ClickHouse ledger exactly once per event and publishes absolute spend totals for
//! the budget service. See [`pipeline`] for the effectively-once argument.

pub mod aggregate;
pub mod config;
pub mod dlq;
pub mod fence;
pub mod ledger;
mod membership;
pub mod pipeline;
pub mod reprice;
pub mod session;
pub mod totals_cache;
pub mod validate;
pub mod watermark;

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
use faregate_core::shutdown::Tasks;

pub use config::ProcessorConfig;
pub use ledger::{ClickHouseLedger, Ledger, LedgerError, MemoryLedger, SpendTotals};
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

impl Pricer for faregate_pricing::PriceCatalog {
    fn price(&self, event: &UsageEvent) -> Pricing {
        faregate_pricing::PriceCatalog::price(self, event)
    }
}

impl Pricer for faregate_pricing::CatalogWatcher {
    fn price(&self, event: &UsageEvent) -> Pricing {
        self.current().price(event)
    }
}

/// How often a catalog directory is checked for changes.
pub const CATALOG_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// The pricer `config` asks for: the catalog compiled into the binary when `prices_dir` is
/// empty, otherwise the catalog in that directory, reloaded when its files change (checked every
/// [`CATALOG_POLL`] by the task `catalog-watcher` of `tasks`, until they stop; an invalid edit
/// is logged and the previous catalog kept, a reload that panics stops the process).
pub fn catalog_pricer(config: &ProcessorConfig, tasks: &Tasks) -> Result<Arc<dyn Pricer>, ProcessorError> {
    if config.prices_dir.is_empty() {
        let catalog =
            faregate_pricing::PriceCatalog::embedded().map_err(|e| ProcessorError::Prices(e.to_string()))?;
        return Ok(Arc::new(catalog));
    }
    let watcher = Arc::new(
        faregate_pricing::CatalogWatcher::new(&config.prices_dir)
            .map_err(|e| ProcessorError::Prices(e.to_string()))?,
    );
    let polled = watcher.clone();
    let shutdown = tasks.token().clone();
    tasks.spawn("catalog-watcher", async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(CATALOG_POLL) => {}
            }
            let watcher = polled.clone();
            tokio::task::spawn_blocking(move || watcher.reload_if_changed()).await?;
        }
    });
    Ok(watcher)
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
    #[error("stopped: {0}")]
    Fatal(String),
}

impl FaregateError for ProcessorError {
    fn class(&self) -> ErrorClass {
        match self {
            ProcessorError::Kafka { .. } => ErrorClass::External,
            ProcessorError::Avro(e) => e.class(),
            ProcessorError::Produce(e) => e.class(),
            ProcessorError::Prices(_) => ErrorClass::User,
            ProcessorError::Fatal(_) => ErrorClass::Internal,
        }
    }
}

/// Run the processor against Kafka and ClickHouse until `shutdown` is cancelled. `ledger_ok` is
/// set while the ledger answers, `partitions_ok` while the usage topic's partitions are owned
/// and consumed with a lag within `kafka.ownership.max_lag` (two readiness components).
pub async fn run(
    config: ProcessorConfig,
    kafka: KafkaConfig,
    clickhouse: ClickHouseConfig,
    pricer: Arc<dyn Pricer>,
    ledger_ok: Arc<AtomicBool>,
    partitions_ok: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let ledger = Arc::new(ClickHouseLedger::new(clickhouse.client()).with_topology(clickhouse.topology()));
    Pipeline::new(config, kafka, ledger, pricer, ledger_ok)
        .with_partitions_flag(partitions_ok)
        .run(shutdown)
        .await
}

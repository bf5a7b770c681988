//! The processor: consumes usage events, prices them with exact decimal money, writes the
//! ClickHouse ledger idempotently and publishes absolute spend aggregates.
//!
//! Status: this crate currently provides the service shell (configuration and `run` with its
//! shutdown contract); pricing and the exactly-once pipeline are tracked as their own issue.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use faregate_core::config::{ConfigError, Validate};

/// Processor settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// Consumer group of the usage topic.
    pub group_id: String,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig { group_id: "faregate-processor".into() }
    }
}

impl Validate for ProcessorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::field("processor.group_id", "must not be empty"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {}

/// Run the processor until `shutdown` is cancelled.
pub async fn run(config: ProcessorConfig, shutdown: CancellationToken) -> Result<(), ProcessorError> {
    tracing::info!(group = %config.group_id, "processor started (pipeline not implemented yet)");
    shutdown.cancelled().await;
    tracing::info!("processor stopped");
    Ok(())
}

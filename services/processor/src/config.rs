//! Processor settings.

use serde::{Deserialize, Serialize};

use faregate_core::config::{ConfigError, Validate};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// Consumer group of the usage topic; instances of one group share the partitions.
    pub group_id: String,
    /// Static group membership id (`group.instance.id`), e.g. the pod name of a StatefulSet;
    /// empty for dynamic membership. A restarted instance with the same id takes its partitions
    /// back at once instead of waiting for the dead member's session to expire.
    pub instance_id: String,
    /// Write a batch to the ledger once it holds this many events.
    pub batch_max_rows: usize,
    /// ... or this many bytes of encoded events.
    pub batch_max_bytes: usize,
    /// ... or once its first event has waited this long (milliseconds).
    pub batch_max_wait_ms: u64,
    /// First delay before retrying a failed ClickHouse or Kafka write (milliseconds); doubles up
    /// to `retry_max_ms`. Consumption pauses while a batch is retried, so memory stays bounded.
    pub retry_initial_ms: u64,
    /// Longest delay between retries (milliseconds).
    pub retry_max_ms: u64,
    /// At start, republish the spend totals of this many past hours from the ledger.
    pub rebuild_hours: u32,
    /// Keep the totals of the buckets written for this long (milliseconds) and publish a
    /// batch's totals from memory instead of reading them back from the ledger; each bucket is
    /// read from the ledger again at least this often. 0 reads every batch's totals back.
    /// (`crate::totals_cache` has the argument.)
    pub totals_cache_ms: u64,
    /// Directory of price catalog files; empty uses the catalog compiled into the binary.
    pub prices_dir: String,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            group_id: "faregate-processor".into(),
            instance_id: String::new(),
            batch_max_rows: 10_000,
            batch_max_bytes: 16 << 20,
            batch_max_wait_ms: 50,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            rebuild_hours: 48,
            totals_cache_ms: 10_000,
            prices_dir: String::new(),
        }
    }
}

impl Validate for ProcessorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::field("processor.group_id", "must not be empty"));
        }
        if self.batch_max_rows == 0 {
            return Err(ConfigError::field("processor.batch_max_rows", "must be at least 1"));
        }
        if self.batch_max_bytes < 1024 {
            return Err(ConfigError::field("processor.batch_max_bytes", "must be at least 1024"));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(ConfigError::field(
                "processor.retry_max_ms",
                "retry_initial_ms must be positive and at most retry_max_ms",
            ));
        }
        Ok(())
    }
}

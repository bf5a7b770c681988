//! The budget service: holds budgets, turns spend aggregates into allow / warn / block /
//! downgrade decisions on the compacted decisions topic, and raises alerts.
//!
//! Status: this crate currently provides the service shell (configuration and `run` with its
//! shutdown contract); budgets and decisions are tracked as their own issue.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use faregate_core::config::{ConfigError, Validate};

/// Budget service settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Consumer group of the spend topic.
    pub group_id: String,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { group_id: "faregate-budget".into() }
    }
}

impl Validate for BudgetConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::field("budget.group_id", "must not be empty"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {}

/// Run the budget service until `shutdown` is cancelled.
pub async fn run(config: BudgetConfig, shutdown: CancellationToken) -> Result<(), BudgetError> {
    tracing::info!(group = %config.group_id, "budget service started (decisions not implemented yet)");
    shutdown.cancelled().await;
    tracing::info!("budget service stopped");
    Ok(())
}

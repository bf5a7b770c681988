//! ClickHouse plumbing: connection settings, the versioned migrations of `schemas/clickhouse/`
//! (rendered for a single node or a cluster from one source), and the ledger row type.
//!
//! ClickHouse is Faregate's ledger: every derived state can be rebuilt from it. On one machine it
//! is the chDB engine behind `deploy/local/chfront` (the HTTP interface of clickhouse-server);
//! in production it is clickhouse-server or a cluster, with the same queries.

pub mod ledger;
pub mod migrations;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Secret, Validate};

pub use ledger::LedgerRow;
pub use migrations::{Migration, MigrationError, Topology};

/// How to reach ClickHouse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL of the ClickHouse HTTP interface.
    pub url: String,
    /// Database holding Faregate's tables; created by `faregate schema apply`.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password; never logged.
    pub password: Secret,
    /// Cluster name for `ON CLUSTER` DDL and Distributed tables; empty for a single node.
    pub cluster: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "faregate".into(),
            user: "default".into(),
            password: Secret::default(),
            cluster: String::new(),
        }
    }
}

impl Validate for ClickHouseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(ConfigError::field(
                "clickhouse.url",
                format!("{:?} is not an http(s) URL", self.url),
            ));
        }
        if !is_identifier(&self.database) {
            return Err(ConfigError::field(
                "clickhouse.database",
                format!(
                    "{:?} must be letters, digits and underscores, not starting with a digit",
                    self.database
                ),
            ));
        }
        if !self.cluster.is_empty() && !is_identifier(&self.cluster) {
            return Err(ConfigError::field("clickhouse.cluster", "must be letters, digits and underscores"));
        }
        Ok(())
    }
}

impl ClickHouseConfig {
    /// A client for Faregate's database.
    pub fn client(&self) -> clickhouse::Client {
        self.server_client().with_database(&self.database)
    }

    /// A client not bound to a database (to create it).
    pub fn server_client(&self) -> clickhouse::Client {
        let mut client = clickhouse::Client::default().with_url(&self.url).with_user(&self.user);
        if !self.password.is_empty() {
            client = client.with_password(self.password.expose());
        }
        client
    }

    /// The topology the migrations are rendered for.
    pub fn topology(&self) -> Topology {
        if self.cluster.is_empty() {
            Topology::SingleNode
        } else {
            Topology::Cluster { name: self.cluster.clone() }
        }
    }
}

/// Whether `name` is a plain SQL identifier (safe to splice into DDL unquoted).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

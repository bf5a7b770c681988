//! The ingress: Faregate's LLM gateway (Anthropic and OpenAI routes) and the collector endpoint
//! for other gateways. It authenticates virtual keys, enforces decisions, forwards requests to
//! providers and emits exactly one usage event per request to the usage topic.
//!
//! Status: this crate currently provides the service shell (configuration, `run` with its
//! shutdown contract, the ops endpoint); the gateway itself is tracked as its own issue.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use faregate_core::config::{ConfigError, Validate};

/// Ingress settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// Address the gateway listens on (`ANTHROPIC_BASE_URL` / the OpenAI base URL point here).
    pub listen: String,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig { listen: "127.0.0.1:8787".into() }
    }
}

impl Validate for IngressConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map(|_| ())
            .map_err(|e| ConfigError::field("ingress.listen", format!("not an ip:port: {e}")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// Run the ingress until `shutdown` is cancelled.
pub async fn run(config: IngressConfig, shutdown: CancellationToken) -> Result<(), IngressError> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| IngressError::Listen { addr: config.listen.clone(), source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| IngressError::Listen { addr: config.listen.clone(), source })?;
    tracing::info!(%addr, "ingress listening (gateway routes not implemented yet)");
    shutdown.cancelled().await;
    tracing::info!("ingress stopped");
    Ok(())
}

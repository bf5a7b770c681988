//! The gateway's shared state and its routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::{get, post};

use crate::collector;
use crate::config::{FailMode, IngressConfig};
use crate::decisions::DecisionCache;
use crate::emitter::UsageSink;
use crate::enforcement::Enforcement;
use crate::errors::ApiError;
use crate::headroom::HeadroomCache;
use crate::keys::KeyStore;
use crate::limits::RateLimiter;
use crate::proxy;
use crate::table::Freshness;
use crate::upstream::{ClientError, UpstreamClient};
use crate::usage::Api;

/// Everything a request needs.
pub struct Gateway {
    pub config: Arc<IngressConfig>,
    pub client: UpstreamClient,
    pub keys: Arc<KeyStore>,
    pub decisions: Arc<DecisionCache>,
    pub decisions_freshness: Arc<Freshness>,
    /// Whether the budget service is deciding, from its heartbeats.
    pub enforcement: Arc<Enforcement>,
    /// Each budget's headroom, for the budget headers and `/v1/me`.
    pub headroom: Arc<HeadroomCache>,
    pub limiter: Arc<RateLimiter>,
    pub sink: Arc<dyn UsageSink>,
    /// Admission by reservation; `None` when `ingress.reservation.enabled` is false.
    pub reserver: Option<Arc<crate::reserve::Reserver>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("listen", &self.config.listen).finish_non_exhaustive()
    }
}

/// The reserver `config` asks for (`None` when reservations are off).
pub fn reserver(
    config: &IngressConfig,
    replica: &str,
) -> Result<Option<Arc<crate::reserve::Reserver>>, crate::reserve::ReserveError> {
    if !config.reservation.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(crate::reserve::Reserver::new(&config.reservation, replica)?)))
}

/// This replica's name: `ingress.replica_id`, else `ingress-<host name>:<port>` (a random
/// name where the host has none).
pub fn replica_id(config: &IngressConfig, port: u16) -> String {
    if !config.replica_id.trim().is_empty() {
        return config.replica_id.trim().to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    format!("ingress-{host}:{port}")
}

/// The HTTP client for upstreams (see [`crate::upstream`]).
pub fn upstream_client(config: &IngressConfig) -> Result<UpstreamClient, ClientError> {
    UpstreamClient::new(Duration::from_secs(config.upstream_timeout_secs))
}

impl Gateway {
    /// Whether enforcement is live: `Ok(false)` when it is, `Ok(true)` when it is stale and the
    /// gateway fails open (serve, marked stale), a 503 when it is stale and the gateway fails
    /// closed.
    pub fn check_fresh(&self) -> Result<bool, ApiError> {
        let decisions_stale = self.decisions_stale();
        if !decisions_stale && !self.enforcement.stale() {
            return Ok(false);
        }
        if self.config.fail_mode == FailMode::Open {
            metrics::counter!("faregate_ingress_served_stale_total").increment(1);
            return Ok(true);
        }
        if decisions_stale {
            return Err(ApiError::unavailable(
                "Faregate cannot confirm budget decisions right now (decisions are stale and this gateway fails closed); retry shortly".into(),
            ));
        }
        let status = self.enforcement.status();
        let since = status.stale_since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let why = match status.heartbeat_age_ms {
            Some(age) => format!("the budget service's last heartbeat is {}s old", age / 1000),
            None if status.partition_count == 0 => "no budget service heartbeat was seen".to_string(),
            None => format!("no budget service covers spend partitions {:?}", status.uncovered_partitions),
        };
        Err(ApiError::unavailable(format!(
            "Faregate budget enforcement is stale since {} ({why}; limit {}s) and this gateway fails closed; retry shortly",
            since.as_deref().unwrap_or("start"),
            status.stale_after_secs,
        )))
    }

    pub fn decisions_stale(&self) -> bool {
        let limit = (self.config.decisions_stale_after_secs as i64).saturating_mul(1000);
        !self.decisions_freshness.caught_up()
            || self.decisions_freshness.silent_for_ms().is_none_or(|ms| ms > limit)
    }

    pub fn router(self: Arc<Self>) -> Router {
        fn route(
            api: Api,
        ) -> impl Fn(
            State<Arc<Gateway>>,
            Request,
        ) -> futures::future::BoxFuture<'static, axum::response::Response>
        + Clone {
            move |state, request| Box::pin(proxy::handle(state, api, request))
        }
        Router::new()
            .route("/v1/messages", post(route(Api::AnthropicMessages)))
            .route("/v1/messages/count_tokens", post(route(Api::AnthropicCountTokens)))
            .route("/v1/chat/completions", post(route(Api::OpenaiChat)))
            .route("/v1/responses", post(route(Api::OpenaiResponses)))
            .route("/v1/embeddings", post(route(Api::OpenaiEmbeddings)))
            .route("/v1/models", get(route(Api::OpenaiModels)))
            .route("/v1/me", get(crate::me::me))
            .route("/v1/check", get(crate::check::check).post(crate::check::check))
            .route("/v1/check/{*path}", get(crate::check::check).post(crate::check::check))
            .route("/v1/usage", post(collector::ingest))
            .route("/v1/decisions", get(collector::decisions))
            .route("/v1/decisions/stream", get(collector::decision_stream))
            .route("/v1/decisions/{*subject}", get(collector::decision))
            .fallback(|request: Request| async move {
                let provider = if request.headers().contains_key("anthropic-version") {
                    crate::config::Provider::Anthropic
                } else {
                    crate::config::Provider::Openai
                };
                ApiError::not_found(format!(
                    "Faregate does not route {} {}; see the gateway routes in docs/ingress.md",
                    request.method(),
                    request.uri().path()
                ))
                .into_response(provider)
            })
            .with_state(self)
    }
}

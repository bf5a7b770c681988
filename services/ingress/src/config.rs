//! Ingress settings: where it listens, which providers it forwards to, how it authenticates,
//! what it does when decisions are stale, and where it spools usage events.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use faregate_core::config::{ConfigError, Secret, Validate};

/// The API family of an upstream (and of the routes that reach it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Anthropic,
    Openai,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::Openai => "openai",
        }
    }
}

/// One provider endpoint requests are forwarded to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A name for logs and metrics.
    pub name: String,
    pub provider: Provider,
    /// Base URL without `/v1`, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    /// The provider credential that replaces the client's virtual key. Empty in passthrough mode.
    #[serde(default)]
    pub api_key: Secret,
    /// Model-name prefixes this upstream serves; empty serves every model of its provider. The
    /// first upstream of the route's provider whose prefixes match is used.
    #[serde(default)]
    pub models: Vec<String>,
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Clients present a Faregate virtual key (`faregate keys create`), replaced by the
    /// upstream's credential.
    VirtualKeys,
    /// Clients keep their own provider key, forwarded unchanged; identity is a hash of it plus
    /// the `x-faregate-user` / `x-faregate-team` headers, in `passthrough_org`.
    Passthrough,
}

/// What to do when enforcement is stale: the decisions topic cannot be read, or the budget
/// service's heartbeats stopped covering every spend partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Serve with the last known decisions, marked `x-faregate-enforcement: stale`.
    Open,
    /// Refuse requests with 503 until enforcement is live again.
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// Address the gateway listens on (`ANTHROPIC_BASE_URL` / the OpenAI base URL point here).
    pub listen: String,
    /// Name of this ingress in usage events (`source_name`).
    pub source_name: String,
    /// This replica's name on the demand topic and in the headroom's shares: unique among the
    /// replicas serving the same budgets and stable across restarts. Empty:
    /// `ingress-<host name>:<port>`.
    pub replica_id: String,
    /// Providers to forward to.
    pub upstreams: Vec<UpstreamConfig>,
    pub auth: AuthMode,
    /// The org of passthrough identities.
    pub passthrough_org: String,
    pub fail_mode: FailMode,
    /// Decisions are stale when the decisions topic has not been read for this long.
    pub decisions_stale_after_secs: u64,
    /// Enforcement is stale when no budget service heartbeat newer than this covers every
    /// spend partition (the budget service is dead, blind or cut off); `fail_mode` then applies.
    /// 0 turns the check off (a deployment without a budget service).
    pub enforcement_stale_after_secs: u64,
    /// Largest request body accepted, after decompression (413 above it).
    pub max_body_bytes: usize,
    /// Largest non-streaming upstream response read for metering.
    pub max_response_bytes: usize,
    /// Seconds an upstream request may take in total.
    pub upstream_timeout_secs: u64,
    /// Directory of the on-disk event spool (write-ahead log of usage events).
    pub spool_dir: PathBuf,
    /// Spool size above which new requests are refused with 503 (and an alarm raised) until
    /// the broker catches up.
    pub spool_max_bytes: u64,
    /// Bearer token for the collector (`POST /v1/usage`) and decisions API; empty turns both off.
    pub collector_token: Secret,
    /// Largest collector batch, in bytes (413 above it).
    pub collector_max_bytes: usize,
    /// Admission by reservation against each budget's published headroom.
    pub reservation: ReservationConfig,
}

/// Admission by reservation (docs/ARCHITECTURE.md, "Admission by reservation").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReservationConfig {
    /// Reserve each request's estimated maximum cost against the headroom of every budget
    /// covering it before forwarding; false admits on the budget decision alone.
    pub enabled: bool,
    /// The number of ingress replicas serving the same budgets: each admits within
    /// 1/`replicas` of a budget's remaining headroom, against a budget service that does not
    /// share by demand (`headroom.v1`); otherwise the budget service's shares apply.
    pub replicas: u32,
    /// How often this replica reports its demand on each budget it holds or was asked anything
    /// against (`kafka.topics.demand`), in milliseconds; the budget service shares headroom
    /// from the reports.
    pub demand_interval_ms: u64,
    /// Request body bytes counted as one input token in the estimate.
    pub bytes_per_input_token: u32,
    /// Output tokens reserved when a request sets no limit and nothing is known of its key or
    /// model.
    pub default_output_tokens: i64,
    /// Outputs of a key (else a model) seen on this replica before its history bounds the
    /// output reserved below the request's own limit.
    pub history_min_samples: u32,
    /// The output reserved from history: this many times the largest of the last 32 outputs...
    pub history_factor: u32,
    /// ...and at least this many tokens.
    pub history_floor_tokens: i64,
    /// Only for headroom records without usage watermarks (a budget service before
    /// `headroom.v2`; with them a settled cost leaves exactly when a record shows its event): a
    /// settled cost stops being held once a record computed from a spend read this long after
    /// the settlement shows the budget (the event's way through the pipeline).
    pub settle_margin_ms: u64,
    /// ...or this long after the settlement, if the record was computed from a spend read after
    /// it (a budget with no later spend shows the settlement's own read).
    pub settle_hold_max_ms: u64,
    /// How long a request that does not fit may wait for the replica's own requests in flight
    /// to settle (and free what they reserved beyond their cost) before it is refused; only
    /// when it could fit then. 0 refuses at once.
    pub max_wait_ms: u64,
    /// Price catalog directory for estimates; empty uses the catalog compiled into the binary.
    /// Point it at the processor's `prices_dir` when that is set.
    pub prices_dir: String,
}

impl Default for ReservationConfig {
    fn default() -> Self {
        ReservationConfig {
            enabled: true,
            replicas: 1,
            demand_interval_ms: 250,
            bytes_per_input_token: 3,
            default_output_tokens: 4096,
            history_min_samples: 8,
            history_factor: 2,
            history_floor_tokens: 256,
            settle_margin_ms: 1000,
            settle_hold_max_ms: 1_500,
            max_wait_ms: 10_000,
            prices_dir: String::new(),
        }
    }
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            listen: "127.0.0.1:8787".into(),
            source_name: "ingress".into(),
            replica_id: String::new(),
            upstreams: vec![
                UpstreamConfig {
                    name: "anthropic".into(),
                    provider: Provider::Anthropic,
                    base_url: "https://api.anthropic.com".into(),
                    api_key: Secret::default(),
                    models: vec![],
                },
                UpstreamConfig {
                    name: "openai".into(),
                    provider: Provider::Openai,
                    base_url: "https://api.openai.com".into(),
                    api_key: Secret::default(),
                    models: vec![],
                },
            ],
            auth: AuthMode::VirtualKeys,
            passthrough_org: "default".into(),
            fail_mode: FailMode::Open,
            decisions_stale_after_secs: 30,
            enforcement_stale_after_secs: 10,
            max_body_bytes: 32 << 20,
            max_response_bytes: 64 << 20,
            upstream_timeout_secs: 600,
            spool_dir: PathBuf::from("faregate-spool"),
            spool_max_bytes: 1 << 30,
            collector_token: Secret::default(),
            collector_max_bytes: 8 << 20,
            reservation: ReservationConfig::default(),
        }
    }
}

impl Validate for IngressConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ConfigError::field("ingress.listen", format!("not an ip:port: {e}")))?;
        if self.source_name.trim().is_empty() {
            return Err(ConfigError::field("ingress.source_name", "must not be empty"));
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let field = format!("ingress.upstreams[{i}].base_url");
            // The parser the gateway forwards with (`http::Uri`), so what passes here is what
            // every request will be sent to.
            let url = upstream
                .base_url
                .parse::<axum::http::Uri>()
                .map_err(|e| ConfigError::field(field.clone(), format!("not a URL: {e}")))?;
            if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
                return Err(ConfigError::field(field, "must be http:// or https:// with a host"));
            }
            if url.path().trim_end_matches('/').ends_with("/v1") {
                return Err(ConfigError::field(field, "give the base URL without /v1"));
            }
        }
        if self.auth == AuthMode::Passthrough && self.passthrough_org.trim().is_empty() {
            return Err(ConfigError::field(
                "ingress.passthrough_org",
                "must not be empty in passthrough mode",
            ));
        }
        if self.max_body_bytes == 0 || self.spool_max_bytes < 1 << 20 {
            return Err(ConfigError::field(
                "ingress.spool_max_bytes",
                "must be at least 1 MiB (and max_body_bytes above 0)",
            ));
        }
        let r = &self.reservation;
        if r.demand_interval_ms < 10 {
            return Err(ConfigError::field("ingress.reservation.demand_interval_ms", "must be at least 10"));
        }
        if r.replicas == 0 || r.bytes_per_input_token == 0 || r.history_factor == 0 {
            return Err(ConfigError::field(
                "ingress.reservation",
                "replicas, bytes_per_input_token and history_factor must be at least 1",
            ));
        }
        if r.settle_hold_max_ms < r.settle_margin_ms {
            return Err(ConfigError::field(
                "ingress.reservation.settle_hold_max_ms",
                "must be at least settle_margin_ms",
            ));
        }
        Ok(())
    }
}

impl IngressConfig {
    /// The upstream for a request of `provider` for `model`.
    pub fn upstream_for(&self, provider: Provider, model: &str) -> Option<&UpstreamConfig> {
        self.upstreams
            .iter()
            .filter(|u| u.provider == provider)
            .find(|u| u.models.is_empty() || u.models.iter().any(|p| model.starts_with(p.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_urls_name_the_field() {
        IngressConfig::default().validate().unwrap();
        let mut config = IngressConfig::default();
        config.upstreams[1].base_url = "https://api.openai.com/v1".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ingress.upstreams[1].base_url") && err.contains("without /v1"), "{err}");
        // What the forwarding client could not send to is refused at load, not per request.
        for bad in ["api.anthropic.com", "ftp://api.anthropic.com", "https://äpi.example", "http:///x"] {
            let mut config = IngressConfig::default();
            config.upstreams[0].base_url = bad.into();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("ingress.upstreams[0].base_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn upstreams_are_chosen_by_provider_and_model_prefix() {
        let mut config = IngressConfig::default();
        config.upstreams.insert(
            0,
            UpstreamConfig {
                name: "bedrock-ish".into(),
                provider: Provider::Anthropic,
                base_url: "http://127.0.0.1:1".into(),
                api_key: Secret::default(),
                models: vec!["claude-opus".into()],
            },
        );
        assert_eq!(config.upstream_for(Provider::Anthropic, "claude-opus-4-1").unwrap().name, "bedrock-ish");
        assert_eq!(config.upstream_for(Provider::Anthropic, "claude-sonnet-4-5").unwrap().name, "anthropic");
        assert_eq!(config.upstream_for(Provider::Openai, "gpt-5").unwrap().name, "openai");
    }
}

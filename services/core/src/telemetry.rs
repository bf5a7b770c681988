//! Telemetry in one place: `tracing` logs (text or JSON, lowercase messages with structured
//! fields), optional OpenTelemetry trace export over OTLP/HTTP (off by default), and a
//! Prometheus `/metrics` endpoint beside `/health` and `/ready` that every service serves.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ConfigError, Validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Telemetry settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `tracing` filter directives, e.g. `info,faregate_ingress=debug`; `RUST_LOG` overrides.
    pub log_filter: String,
    /// `text` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// OTLP/HTTP traces endpoint (e.g. `http://collector:4318/v1/traces`); empty disables export.
    pub otlp_endpoint: String,
    /// Address of the `/metrics`, `/health` and `/ready` endpoint; port 0 picks a free port.
    pub metrics_listen: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_filter: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: String::new(),
            metrics_listen: "127.0.0.1:9464".into(),
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        EnvFilter::try_new(&self.log_filter)
            .map_err(|e| ConfigError::field("telemetry.log_filter", e.to_string()))?;
        self.metrics_listen
            .parse::<SocketAddr>()
            .map_err(|e| ConfigError::field("telemetry.metrics_listen", format!("not an ip:port: {e}")))?;
        if !self.otlp_endpoint.is_empty() && !self.otlp_endpoint.starts_with("http") {
            return Err(ConfigError::field("telemetry.otlp_endpoint", "must be an http(s) URL"));
        }
        Ok(())
    }
}

/// Flushes exported traces when dropped; keep it alive for the life of the process.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Install the global log subscriber (and the OTLP exporter when configured). Call once, early.
pub fn init(config: &TelemetryConfig, service: &'static str) -> Result<TelemetryGuard, ConfigError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .map_err(|e| ConfigError::field("telemetry.log_filter", e.to_string()))?;
    let fmt_layer = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).boxed(),
    };
    let mut guard = TelemetryGuard::default();
    let otel_layer = if config.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(&config.otlp_endpoint)
            .build()
            .map_err(|e| ConfigError::field("telemetry.otlp_endpoint", e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
            .build();
        let tracer = provider.tracer(service);
        opentelemetry::global::set_tracer_provider(provider.clone());
        guard.provider = Some(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| ConfigError::Invalid(format!("telemetry already initialised: {e}")))?;
    Ok(guard)
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new().install_recorder().expect("no other metrics recorder is installed")
        })
        .clone()
}

/// A named component's readiness flag.
type Component = (&'static str, Arc<AtomicBool>);

/// Readiness of a service: ready only once every named component says so.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: Arc<std::sync::Mutex<Vec<Component>>>,
}

impl Readiness {
    /// Register a component that starts not ready; set the returned flag when it is.
    pub fn component(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.components.lock().unwrap().push((name, flag.clone()));
        flag
    }

    /// The names of the components not yet ready.
    pub fn pending(&self) -> Vec<&'static str> {
        self.components
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, flag)| !flag.load(Ordering::Acquire))
            .map(|(name, _)| *name)
            .collect()
    }
}

/// The `/metrics`, `/health` and `/ready` routes.
pub fn ops_router(readiness: Readiness) -> Router {
    let handle = prometheus();
    Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let pending = readiness.pending();
                std::future::ready(if pending.is_empty() {
                    (StatusCode::OK, "ready\n".to_string())
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, format!("waiting for: {}\n", pending.join(", ")))
                })
            }),
        )
}

/// Serve `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

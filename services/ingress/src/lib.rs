//! The ingress: Faregate's LLM gateway (Anthropic and OpenAI routes), the collector endpoint
//! for other gateways, and the decisions API. It authenticates virtual keys, enforces budget
//! decisions, forwards requests to providers (streams pass through as they arrive) and emits
//! exactly one usage event per request through an on-disk spool to the usage topic; the request
//! path never waits on Kafka. Docs: docs/ingress.md.
//!
//! Tasks of one ingress: the HTTP server; four table followers (virtual keys from the config
//! topic, decisions from the decisions topic, the budget service's heartbeats from the
//! heartbeats topic, each budget's headroom from the headroom topic, each read from the
//! beginning); the emitter; and a watcher that turns table
//! state into readiness (ready once keys and decisions caught up) and the decisions-stale and
//! enforcement-stale signals. The followers and the watcher are named tasks of the ingress's own
//! shutdown tree ([`Tasks`], below the caller's token): one failing stops the ingress, which
//! returns its reason. The emitter stops last, after the HTTP server, so every request's event
//! reaches the spool.
//!
//! Readiness does not follow enforcement: a stale gateway stays ready and applies
//! `ingress.fail_mode` (open: serves, marked `x-faregate-enforcement: stale`; closed: answers 503
//! saying why), because every replica goes stale together and a clear answer beats no route.
//! The gauge `faregate_ingress_enforcement_stale`, an ERROR log on each change to stale and the
//! decisions API say so.

pub mod attribution;
pub mod check;
pub mod collector;
pub mod config;
pub mod decisions;
pub mod demand;
pub mod emitter;
pub mod enforcement;
pub mod errors;
pub mod funds;
pub mod gateway;
pub mod headroom;
pub mod keys;
pub mod limits;
pub mod me;
pub mod meter;
pub mod proxy;
pub mod reserve;
pub mod spool;
pub mod sse;
pub mod table;
pub mod upstream;
pub mod usage;

use axum::serve::ListenerExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use faregate_core::avro::SchemaFamily;
use faregate_core::event::{ConfigRecord, Decision, Headroom, Heartbeat};
use faregate_core::kafka::KafkaConfig;
use faregate_core::shutdown::Tasks;

pub use config::{AuthMode, FailMode, IngressConfig, Provider, UpstreamConfig};
pub use gateway::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error(transparent)]
    Emitter(#[from] emitter::EmitterError),
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(upstream::ClientError),
    #[error(transparent)]
    Reserve(#[from] reserve::ReserveError),
    #[error(transparent)]
    Table(#[from] table::TableError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Task(String),
}

/// How long the followers and the watcher get to stop once the server has.
const TASKS_DRAIN: Duration = Duration::from_secs(10);

/// Run the ingress on `config.listen` until `shutdown` is cancelled; `ready` turns true once
/// virtual keys and decisions have been read to the end.
pub async fn run(
    config: IngressConfig,
    kafka: KafkaConfig,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| IngressError::Listen { addr: config.listen.clone(), source })?;
    run_on(listener, config, kafka, ready, shutdown).await
}

/// [`run`] on a listener the caller bound (port 0 in tests, so no other process can take the
/// port between choosing and binding it); `config.listen` is not used.
pub async fn run_on(
    listener: tokio::net::TcpListener,
    config: IngressConfig,
    kafka: KafkaConfig,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let addr = listener
        .local_addr()
        .map_err(|source| IngressError::Listen { addr: config.listen.clone(), source })?;
    let tasks = Tasks::new(shutdown.child_token());
    let keys = Arc::new(keys::KeyStore::default());
    let keys_freshness = Arc::new(table::Freshness::default());
    let decisions = Arc::new(decisions::DecisionCache::default());
    let decisions_freshness = Arc::new(table::Freshness::default());
    {
        let keys = keys.clone();
        let follow = table::follow::<ConfigRecord, _>(
            kafka.clone(),
            table::Lane::Background,
            kafka.topics.config.clone(),
            SchemaFamily::ConfigRecord,
            keys_freshness.clone(),
            move |key, record| keys.apply(key, record.as_ref()),
            tasks.token().clone(),
        );
        tasks.spawn("keys-follower", async move { Ok(follow.await?) });
    }
    {
        let decisions = decisions.clone();
        let follow = table::follow::<Decision, _>(
            kafka.clone(),
            table::Lane::DecisionPath,
            kafka.topics.decisions.clone(),
            SchemaFamily::Decision,
            decisions_freshness.clone(),
            move |key, decision| decisions.apply(key, decision),
            tasks.token().clone(),
        );
        tasks.spawn("decisions-follower", async move { Ok(follow.await?) });
    }
    let enforcement = Arc::new(enforcement::Enforcement::new(config.enforcement_stale_after_secs));
    if enforcement.checked() {
        let enforcement = enforcement.clone();
        let follow = table::follow::<Heartbeat, _>(
            kafka.clone(),
            table::Lane::Background,
            kafka.topics.heartbeats.clone(),
            SchemaFamily::Heartbeat,
            Arc::new(table::Freshness::default()),
            move |key, heartbeat| enforcement.apply(key, heartbeat),
            tasks.token().clone(),
        );
        tasks.spawn("heartbeats-follower", async move { Ok(follow.await?) });
    }
    let headroom = Arc::new(headroom::HeadroomCache::default());
    {
        let headroom = headroom.clone();
        let follow = table::follow::<Headroom, _>(
            kafka.clone(),
            // Admission by reservation reads it: as fast as the decisions.
            table::Lane::DecisionPath,
            kafka.topics.headroom.clone(),
            SchemaFamily::Headroom,
            Arc::new(table::Freshness::default()),
            move |key, record| headroom.apply(key, record),
            tasks.token().clone(),
        );
        tasks.spawn("headroom-follower", async move { Ok(follow.await?) });
    }
    // Cancelled after the server stopped (or if this future is dropped), never before it.
    let emitter_stop = CancellationToken::new();
    let _emitter_stop_on_drop = emitter_stop.clone().drop_guard();
    let (sink, emitter_task) =
        match emitter::spawn(&kafka, &config.spool_dir, config.spool_max_bytes, emitter_stop.clone()).await {
            Ok(emitter) => emitter,
            Err(error) => {
                tasks.token().cancel();
                let _ = tasks.drain(TASKS_DRAIN).await;
                return Err(error.into());
            }
        };
    let replica = gateway::replica_id(&config, addr.port());
    let reserver = match gateway::reserver(&config, &replica) {
        Ok(reserver) => reserver,
        Err(error) => {
            tasks.token().cancel();
            let _ = tasks.drain(TASKS_DRAIN).await;
            return Err(error.into());
        }
    };
    let gateway = Arc::new(Gateway {
        reserver,
        client: gateway::upstream_client(&config).map_err(IngressError::Client)?,
        config: Arc::new(config),
        keys,
        decisions,
        decisions_freshness,
        enforcement,
        headroom,
        limiter: Arc::default(),
        sink: Arc::new(sink),
    });
    if let Some(reserver) = gateway.reserver.clone() {
        let report = demand::report(kafka.clone(), gateway.headroom.clone(), reserver, tasks.token().clone());
        tasks.spawn("demand-reporter", async move { Ok(report.await?) });
    }
    {
        let (gateway, token) = (gateway.clone(), tasks.token().clone());
        tasks.spawn("readiness", async move {
            watch(gateway, keys_freshness, ready, token).await;
            Ok(())
        });
    }
    tracing::info!(%addr, upstreams = gateway.config.upstreams.len(), auth = ?gateway.config.auth, "ingress listening");
    let served = serve(gateway, listener, tasks.token().clone()).await;
    tasks.token().cancel();
    let tasks_ended = tasks.drain(TASKS_DRAIN).await;
    emitter_stop.cancel();
    emitter_task.join().await;
    tracing::info!("ingress stopped");
    served?;
    tasks_ended.map_err(IngressError::Task)
}

/// Serve `gateway` on `listener` until `shutdown`, then finish open requests.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    // Responses (and every SSE event) go out as soon as they are written: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
        }
    });
    axum::serve(listener, gateway.router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(IngressError::Serve)
}

/// Readiness (keys and decisions caught up) and the decisions-stale and enforcement-stale
/// alarms, checked four times a second.
async fn watch(
    gateway: Arc<Gateway>,
    keys: Arc<table::Freshness>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut was_stale = false;
    let (started, mut alarmed) = (std::time::Instant::now(), false);
    let grace = Duration::from_secs(gateway.config.enforcement_stale_after_secs);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let caught_up = keys.caught_up() && gateway.decisions_freshness.caught_up();
        if caught_up && !ready.swap(true, Ordering::AcqRel) {
            tracing::info!(
                keys = gateway.keys.len(),
                decisions = gateway.decisions.all().len(),
                "ingress caught up; ready"
            );
        }
        let stale = caught_up && gateway.decisions_stale();
        metrics::gauge!("faregate_ingress_decisions_stale").set(if stale { 1.0 } else { 0.0 });
        if stale != was_stale {
            was_stale = stale;
            if stale {
                tracing::error!(fail_mode = ?gateway.config.fail_mode, "decisions are stale: the decisions topic cannot be read");
            } else {
                tracing::info!("decisions are fresh again");
            }
        }
        let enforcement = &gateway.enforcement;
        // Transitions go to the decisions stream at once; the alarm waits for the tables and,
        // after a start, for one bound (the budget service may be starting beside us).
        enforcement.observe();
        let status = enforcement.status();
        let serving_stale = status.stale || stale;
        metrics::gauge!("faregate_ingress_enforcement_stale").set(if serving_stale { 1.0 } else { 0.0 });
        if let Some(age) = status.heartbeat_age_ms {
            metrics::gauge!("faregate_ingress_enforcement_heartbeat_age_ms").set(age as f64);
        }
        let may_alarm = caught_up && started.elapsed() >= grace;
        if status.stale && !alarmed && may_alarm {
            alarmed = true;
            tracing::error!(
                fail_mode = ?gateway.config.fail_mode,
                since = ?status.stale_since,
                heartbeat_age_ms = ?status.heartbeat_age_ms,
                uncovered_partitions = ?status.uncovered_partitions,
                partitions = status.partition_count,
                stale_after_secs = status.stale_after_secs,
                "budget enforcement is stale: no recent budget service heartbeat covers every spend partition"
            );
        } else if !status.stale && alarmed {
            alarmed = false;
            tracing::info!(heartbeat_age_ms = ?status.heartbeat_age_ms, partitions = status.partition_count, "budget enforcement is live again");
        }
    }
}

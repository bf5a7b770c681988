//! The budget service: holds budgets (org > team > user > key, projects, models, tools and their
//! combinations), keeps each budget's window spend from the processor's spend aggregates, and
//! publishes allow / warn / block / downgrade decisions to the compacted decisions topic, which
//! every gateway enforces. Raises threshold, forecast and anomaly alerts to the alerts topic and
//! to webhooks.
//!
//! Layout: [`window`] (window arithmetic), [`spec`] (the budget format and its validation),
//! [`engine`] (the pure state machine), [`service`] (Kafka in and out), [`admin`] (the HTTP
//! admin API), [`notify`] (webhooks), [`topic`] (whole-topic readers), [`clock`].

pub mod admin;
pub mod clock;
pub mod config;
pub mod engine;
pub mod notify;
pub mod service;
pub mod spec;
pub mod topic;
pub mod window;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use faregate_core::avro::{AvroError, SchemaFamily};
use faregate_core::config::ConfigError;
use faregate_core::error::{ErrorClass, FaregateError};
use faregate_core::kafka::{KafkaConfig, ProduceError, RecordProducer};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{AnomalyConfig, BudgetConfig};
pub use engine::{Engine, Output};

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error(transparent)]
    Avro(#[from] AvroError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("dead-letter topic: {0}")]
    DeadLetter(#[from] rdkafka::error::KafkaError),
    #[error("admin API on {addr}: {source}")]
    Admin { addr: String, source: std::io::Error },
    #[error("stopped")]
    Stopped,
}

impl FaregateError for BudgetError {
    fn class(&self) -> ErrorClass {
        match self {
            BudgetError::Config(_) | BudgetError::Admin { .. } => ErrorClass::User,
            BudgetError::Kafka(_) | BudgetError::DeadLetter(_) => ErrorClass::External,
            BudgetError::Avro(e) => e.class(),
            BudgetError::Produce(e) => e.class(),
            BudgetError::Stopped => ErrorClass::Internal,
        }
    }
}

/// Run the budget service with the system clock until `shutdown` is cancelled; `ready` is set
/// once the state is rebuilt and decisions flow.
pub async fn run(
    config: BudgetConfig,
    kafka: KafkaConfig,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), BudgetError> {
    run_with_clock(config, kafka, Arc::new(SystemClock), ready, shutdown).await
}

/// [`run`] with a clock of the caller's (tests drive window resets with a [`ManualClock`]).
pub async fn run_with_clock(
    config: BudgetConfig,
    kafka: KafkaConfig,
    clock: Arc<dyn Clock>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), BudgetError> {
    let engine = Arc::new(Mutex::new(Engine::new(config.anomaly.settings()?)));
    let shutdown = shutdown.child_token();
    let admin = if config.admin_token.is_empty() {
        tracing::info!("admin API off (no budget.admin_token)");
        None
    } else {
        let producer = Arc::new(
            RecordProducer::new(&kafka, "budget-admin", SchemaFamily::ConfigRecord, &kafka.topics.config)
                .await?,
        );
        let router = admin::router(&config.admin_token, engine.clone(), producer);
        let addr = config.admin_listen.clone();
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| BudgetError::Admin { addr: addr.clone(), source })?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or(addr), "admin API: /v1/budgets /v1/decisions");
        let token = shutdown.clone();
        router.map(|router| {
            tokio::spawn(async move { faregate_core::telemetry::serve(listener, router, token).await })
        })
    };
    let result = service::serve(config, kafka, clock, engine, ready, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    match result {
        Err(BudgetError::Stopped) => Ok(()),
        other => other,
    }
}

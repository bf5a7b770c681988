//! Running services: one per process, or all of them in one process (`up`), under one shutdown
//! tree with a shared ops endpoint (`/metrics`, `/health`, `/ready`).

use std::time::Duration;

use anyhow::Context as _;

use crate::AppConfig;
use faregate_core::clickhouse::migrations;
use faregate_core::kafka::ensure_topics;
use faregate_core::shutdown::Tasks;
use faregate_core::telemetry::{self, Readiness};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ingress,
    Processor,
    Budget,
}

const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

pub async fn up(config: AppConfig) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&config.telemetry, "faregate")?;
    let report = migrations::apply(&config.clickhouse)
        .await
        .with_context(|| format!("applying ClickHouse migrations at {}", config.clickhouse.url))?;
    tracing::info!(applied = ?report.applied, "clickhouse schema is current");
    let created = ensure_topics(&config.kafka, &config.kafka.topic_specs())
        .await
        .with_context(|| format!("creating topics on {}", config.kafka.brokers))?;
    tracing::info!(created = ?created, "kafka topics exist");
    run_services(config, &[Service::Ingress, Service::Processor, Service::Budget]).await
}

pub async fn single(config: AppConfig, service: Service) -> anyhow::Result<()> {
    let name = match service {
        Service::Ingress => "faregate-ingress",
        Service::Processor => "faregate-processor",
        Service::Budget => "faregate-budget",
    };
    let _telemetry = telemetry::init(&config.telemetry, name)?;
    run_services(config, &[service]).await
}

async fn run_services(config: AppConfig, services: &[Service]) -> anyhow::Result<()> {
    let tasks = Tasks::default();
    tasks.cancel_on_signals();
    let readiness = Readiness::default();
    let listener = tokio::net::TcpListener::bind(&config.telemetry.metrics_listen)
        .await
        .with_context(|| format!("binding the ops endpoint on {}", config.telemetry.metrics_listen))?;
    tracing::info!(addr = %listener.local_addr()?, "ops endpoint: /metrics /health /ready");
    let router = telemetry::ops_router(readiness.clone());
    let token = tasks.token().clone();
    tasks.spawn("ops", async move { Ok(telemetry::serve(listener, router, token).await?) });
    for service in services {
        let token = tasks.token().clone();
        let ready = readiness.component(match service {
            Service::Ingress => "ingress",
            Service::Processor => "processor",
            Service::Budget => "budget",
        });
        match service {
            Service::Ingress => {
                let (ingress, kafka) = (config.ingress.clone(), config.kafka.clone());
                tasks.spawn("ingress", async move {
                    Ok(faregate_ingress::run(ingress, kafka, ready, token).await?)
                });
            }
            Service::Processor => {
                let (processor, kafka, clickhouse) =
                    (config.processor.clone(), config.kafka.clone(), config.clickhouse.clone());
                let pricer = faregate_processor::catalog_pricer(&processor, tasks.token())?;
                tasks.spawn("processor", async move {
                    Ok(faregate_processor::run(processor, kafka, clickhouse, pricer, ready, token).await?)
                });
            }
            Service::Budget => {
                let config = config.budget.clone();
                tasks.spawn("budget", async move {
                    ready.store(true, std::sync::atomic::Ordering::Release);
                    Ok(faregate_budget::run(config, token).await?)
                });
            }
        }
    }
    tasks.drain(DRAIN_DEADLINE).await.map_err(anyhow::Error::msg)
}

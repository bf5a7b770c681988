//! `faregate import <source>`: one import run over a window, into the usage topic; and the
//! scheduled imports that run beside the processor.

use anyhow::Context as _;

use crate::AppConfig;
use crate::cli::{ImportCommand, ImportWindow};
use faregate_core::avro::SchemaFamily;
use faregate_core::kafka::RecordProducer;
use faregate_import::KafkaSink;
use faregate_import::anthropic::{self, import_usage};
use faregate_import::cursor::LedgerCursor;

pub async fn import(config: &AppConfig, command: ImportCommand) -> anyhow::Result<()> {
    match command {
        ImportCommand::Anthropic(window) => import_anthropic(config, window).await,
    }
}

async fn import_anthropic(config: &AppConfig, window: ImportWindow) -> anyhow::Result<()> {
    let mut settings = config.import.anthropic.clone();
    if let Some(org) = window.org {
        settings.org = org;
    }
    let topic = &config.kafka.topics.usage;
    let producer = RecordProducer::new(&config.kafka, "import", SchemaFamily::UsageEvent, topic)
        .await
        .with_context(|| format!("connecting to Kafka at {}", config.kafka.brokers))?;
    let sink = KafkaSink { producer, source_name: anthropic::SOURCE };
    let now = chrono::Utc::now();
    let from = match window.from {
        Some(from) => from,
        None => {
            let lookback =
                chrono::TimeDelta::hours(i64::try_from(settings.lookback_hours).unwrap_or(24 * 31));
            let cursor = LedgerCursor::new(config.clickhouse.client());
            let until = cursor
                .imported_until(anthropic::SOURCE, &settings.source_name, &settings.org, now, lookback)
                .await?;
            until.unwrap_or(now - lookback)
        }
    };
    let summary = import_usage(&settings, from, window.to.unwrap_or(now), now, &sink).await?;
    println!("{}", summary.describe(topic, settings.settle_lag_secs));
    Ok(())
}

/// The scheduled imports configured (`interval_secs` > 0), as named tasks of the processor's
/// shutdown tree. A failed run is logged and retried at the next tick, never fatal.
pub async fn spawn_scheduled(
    config: &AppConfig,
    tasks: &faregate_core::shutdown::Tasks,
) -> anyhow::Result<()> {
    let settings = config.import.anthropic.clone();
    if settings.interval_secs == 0 || settings.admin_key.is_empty() {
        return Ok(());
    }
    let topic = config.kafka.topics.usage.clone();
    let producer = RecordProducer::new(&config.kafka, "import", SchemaFamily::UsageEvent, &topic)
        .await
        .with_context(|| format!("connecting the Anthropic importer to Kafka at {}", config.kafka.brokers))?;
    let sink = KafkaSink { producer, source_name: anthropic::SOURCE };
    let cursor = LedgerCursor::new(config.clickhouse.client());
    let token = tasks.token().clone();
    tracing::info!(org = %settings.org, interval_secs = settings.interval_secs, "scheduled anthropic usage import");
    tasks.spawn("import-anthropic", async move {
        faregate_import::schedule::run_anthropic(settings, &sink, cursor, &topic, token).await;
        Ok(())
    });
    Ok(())
}

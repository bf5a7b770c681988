//! `faregate import <source>`: one import run over a window, into the usage topic; and the
//! scheduled imports that run beside the processor.

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::AppConfig;
use crate::cli::{ImportCommand, ImportWindow};
use faregate_core::avro::SchemaFamily;
use faregate_core::kafka::RecordProducer;
use faregate_import::cursor::LedgerCursor;
use faregate_import::{KafkaSink, anthropic, openai};

pub async fn import(config: &AppConfig, command: ImportCommand) -> anyhow::Result<()> {
    match command {
        ImportCommand::Anthropic(window) => import_anthropic(config, window).await,
        ImportCommand::Openai(window) => import_openai(config, window).await,
    }
}

async fn import_anthropic(config: &AppConfig, window: ImportWindow) -> anyhow::Result<()> {
    let mut settings = config.import.anthropic.clone();
    if let Some(org) = window.org {
        settings.org = org;
    }
    let topic = &config.kafka.topics.usage;
    let sink = sink(config, anthropic::SOURCE).await?;
    let now = Utc::now();
    let from = match window.from {
        Some(from) => from,
        None => {
            cursor_or_lookback(
                config,
                anthropic::SOURCE,
                &settings.source_name,
                &settings.org,
                settings.lookback_hours,
                now,
            )
            .await?
        }
    };
    let summary = anthropic::import_usage(&settings, from, window.to.unwrap_or(now), now, &sink).await?;
    println!("{}", summary.describe(topic, settings.settle_lag_secs));
    Ok(())
}

async fn import_openai(config: &AppConfig, window: ImportWindow) -> anyhow::Result<()> {
    let mut settings = config.import.openai.clone();
    if let Some(org) = window.org {
        settings.org = org;
    }
    let topic = &config.kafka.topics.usage;
    let sink = sink(config, openai::SOURCE).await?;
    let now = Utc::now();
    let from = match window.from {
        Some(from) => from,
        None => {
            cursor_or_lookback(
                config,
                openai::SOURCE,
                &settings.source_name,
                &settings.org,
                settings.lookback_hours,
                now,
            )
            .await?
        }
    };
    let summary = openai::import_usage(&settings, from, window.to.unwrap_or(now), now, &sink).await?;
    println!("{}", summary.describe(topic, settings.settle_lag_secs));
    Ok(())
}

/// A producer to the usage topic for `source`'s events.
async fn sink(config: &AppConfig, source: &'static str) -> anyhow::Result<KafkaSink> {
    let topic = &config.kafka.topics.usage;
    let producer = RecordProducer::new(&config.kafka, "import", SchemaFamily::UsageEvent, topic)
        .await
        .with_context(|| format!("connecting the {source} importer to Kafka at {}", config.kafka.brokers))?;
    Ok(KafkaSink { producer, source_name: source })
}

/// Where a run without `--from` starts: the end of the ledger's last imported bucket of this
/// importer and org, else `lookback_hours` ago.
async fn cursor_or_lookback(
    config: &AppConfig,
    source: &'static str,
    source_name: &str,
    org: &str,
    lookback_hours: u64,
    now: DateTime<Utc>,
) -> anyhow::Result<DateTime<Utc>> {
    let lookback = chrono::TimeDelta::hours(i64::try_from(lookback_hours).unwrap_or(24 * 31));
    let cursor = LedgerCursor::new(config.clickhouse.client());
    let until = cursor.imported_until(source, source_name, org, now, lookback).await?;
    Ok(until.unwrap_or(now - lookback))
}

/// The scheduled imports configured (`interval_secs` > 0), as named tasks of the processor's
/// shutdown tree. A failed run is logged and retried at the next tick, never fatal.
pub async fn spawn_scheduled(
    config: &AppConfig,
    tasks: &faregate_core::shutdown::Tasks,
) -> anyhow::Result<()> {
    let topic = config.kafka.topics.usage.clone();
    let settings = config.import.anthropic.clone();
    if settings.interval_secs > 0 && !settings.admin_key.is_empty() {
        let sink = sink(config, anthropic::SOURCE).await?;
        let cursor = LedgerCursor::new(config.clickhouse.client());
        let (token, topic) = (tasks.token().clone(), topic.clone());
        tracing::info!(org = %settings.org, interval_secs = settings.interval_secs, "scheduled anthropic usage import");
        tasks.spawn("import-anthropic", async move {
            faregate_import::schedule::run_anthropic(settings, &sink, cursor, &topic, token).await;
            Ok(())
        });
    }
    let settings = config.import.openai.clone();
    if settings.interval_secs > 0 && !settings.admin_key.is_empty() {
        let sink = sink(config, openai::SOURCE).await?;
        let cursor = LedgerCursor::new(config.clickhouse.client());
        let token = tasks.token().clone();
        tracing::info!(org = %settings.org, interval_secs = settings.interval_secs, "scheduled openai usage import");
        tasks.spawn("import-openai", async move {
            faregate_import::schedule::run_openai(settings, &sink, cursor, &topic, token).await;
            Ok(())
        });
    }
    Ok(())
}

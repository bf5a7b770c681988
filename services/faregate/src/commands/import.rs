//! `faregate import <source>`: one import run over a window, into the usage topic; and the
//! scheduled imports that run beside the processor.

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::AppConfig;
use crate::cli::{ImportCommand, ImportWindow};
use faregate_core::avro::SchemaFamily;
use faregate_core::kafka::RecordProducer;
use faregate_import::KafkaSink;
use faregate_import::cursor::LedgerCursor;
use faregate_import::run::{self, Report};

pub async fn import(config: &AppConfig, command: ImportCommand) -> anyhow::Result<()> {
    match command {
        ImportCommand::Anthropic(window) => {
            let mut settings = config.import.anthropic.clone();
            if let Some(org) = &window.org {
                settings.org.clone_from(org);
            }
            import_window(config, &settings, window).await
        }
        ImportCommand::Openai(window) => {
            let mut settings = config.import.openai.clone();
            if let Some(org) = &window.org {
                settings.org.clone_from(org);
            }
            import_window(config, &settings, window).await
        }
    }
}

/// One run of `report`'s import over the window (from the cursor without `--from`).
async fn import_window<R: Report>(
    config: &AppConfig,
    report: &R,
    window: ImportWindow,
) -> anyhow::Result<()> {
    let settings = report.settings();
    let topic = &config.kafka.topics.usage;
    let sink = sink(config, R::SOURCE).await?;
    let now = Utc::now();
    let from = match window.from {
        Some(from) => from,
        None => {
            cursor_or_lookback(
                config,
                R::SOURCE,
                settings.source_name,
                settings.org,
                settings.lookback_hours,
                now,
            )
            .await?
        }
    };
    let summary = run::import_usage(report, from, window.to.unwrap_or(now), now, &sink).await?;
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
    spawn_every(config, tasks, "import-anthropic", config.import.anthropic.clone()).await?;
    spawn_every(config, tasks, "import-openai", config.import.openai.clone()).await
}

/// `report`'s scheduled import as the task `name`, when it has an interval and a key.
async fn spawn_every<R: Report + Send + 'static>(
    config: &AppConfig,
    tasks: &faregate_core::shutdown::Tasks,
    name: &'static str,
    report: R,
) -> anyhow::Result<()> {
    let settings = report.settings();
    if settings.interval_secs == 0 || settings.admin_key.is_empty() {
        return Ok(());
    }
    let sink = sink(config, R::SOURCE).await?;
    let cursor = LedgerCursor::new(config.clickhouse.client());
    let (token, topic) = (tasks.token().clone(), config.kafka.topics.usage.clone());
    tracing::info!(org = %settings.org, interval_secs = settings.interval_secs, "scheduled {} usage import", R::SOURCE);
    tasks.spawn(name, async move {
        faregate_import::schedule::run_every(&report, &sink, cursor, &topic, token).await;
        Ok(())
    });
    Ok(())
}

//! The scheduled import loops, run inside `faregate processor` and `faregate up` when an importer
//! has an interval configured (`[import.anthropic] interval_secs`, `[import.openai]
//! interval_secs`).
//!
//! Contract: at start and then every interval, one run imports from the cursor (the end of the
//! last bucket in the ledger, [`crate::cursor`], else `lookback_hours` ago) to now, settled
//! buckets only. A failed run (provider down, malformed page, budget spent) is logged and
//! counted and the next tick tries again from the cursor: a provider's trouble never stops the
//! process that meters the gateway's traffic. Cancelling the shutdown token ends the loop at
//! once, mid-run if need be, which is safe because a run's events are idempotent.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::anthropic::{self, AnthropicImportConfig};
use crate::cursor::LedgerCursor;
use crate::error::ImportError;
use crate::openai::{self, OpenAiImportConfig};
use crate::sink::EventSink;
use crate::telemetry;
use crate::window::Summary;

/// Run the Anthropic import every `config.interval_secs` until `shutdown`.
pub async fn run_anthropic(
    config: AnthropicImportConfig,
    sink: &dyn EventSink,
    cursor: LedgerCursor,
    topic: &str,
    shutdown: CancellationToken,
) {
    let every = Every {
        source: anthropic::SOURCE,
        source_name: &config.source_name,
        org: &config.org,
        interval_secs: config.interval_secs,
        lookback_hours: config.lookback_hours,
        settle_lag_secs: config.settle_lag_secs,
    };
    let config = &config;
    every
        .run(cursor, topic, shutdown, |from, now| anthropic::import_usage(config, from, now, now, sink))
        .await;
}

/// Run the OpenAI import every `config.interval_secs` until `shutdown`.
pub async fn run_openai(
    config: OpenAiImportConfig,
    sink: &dyn EventSink,
    cursor: LedgerCursor,
    topic: &str,
    shutdown: CancellationToken,
) {
    let every = Every {
        source: openai::SOURCE,
        source_name: &config.source_name,
        org: &config.org,
        interval_secs: config.interval_secs,
        lookback_hours: config.lookback_hours,
        settle_lag_secs: config.settle_lag_secs,
    };
    let config = &config;
    every.run(cursor, topic, shutdown, |from, now| openai::import_usage(config, from, now, now, sink)).await;
}

/// The settings every importer's loop reads.
struct Every<'a> {
    source: &'static str,
    source_name: &'a str,
    org: &'a str,
    interval_secs: u64,
    lookback_hours: u64,
    settle_lag_secs: u64,
}

impl Every<'_> {
    /// `import(from, now)` at start and every interval, from the cursor, until `shutdown`.
    async fn run<F, R>(&self, cursor: LedgerCursor, topic: &str, shutdown: CancellationToken, import: F)
    where
        F: Fn(DateTime<Utc>, DateTime<Utc>) -> R,
        R: Future<Output = Result<Summary, ImportError>>,
    {
        let interval = Duration::from_secs(self.interval_secs.max(1));
        let lookback = TimeDelta::hours(i64::try_from(self.lookback_hours).unwrap_or(24 * 31));
        loop {
            let now = Utc::now();
            let run = async {
                let from = cursor
                    .imported_until(self.source, self.source_name, self.org, now, lookback)
                    .await?
                    .unwrap_or(now - lookback);
                import(from, now).await
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = run => match outcome {
                    Ok(summary) => telemetry::run_succeeded(self.source, &summary.describe(topic, self.settle_lag_secs), summary.events),
                    Err(error) => telemetry::run_failed(self.source, &error),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

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

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::anthropic::AnthropicImportConfig;
use crate::cursor::LedgerCursor;
use crate::openai::OpenAiImportConfig;
use crate::run::{self, Report};
use crate::sink::EventSink;
use crate::telemetry;

/// Run the Anthropic import every `config.interval_secs` until `shutdown`.
pub async fn run_anthropic(
    config: AnthropicImportConfig,
    sink: &dyn EventSink,
    cursor: LedgerCursor,
    topic: &str,
    shutdown: CancellationToken,
) {
    run_every(&config, sink, cursor, topic, shutdown).await;
}

/// Run the OpenAI import every `config.interval_secs` until `shutdown`.
pub async fn run_openai(
    config: OpenAiImportConfig,
    sink: &dyn EventSink,
    cursor: LedgerCursor,
    topic: &str,
    shutdown: CancellationToken,
) {
    run_every(&config, sink, cursor, topic, shutdown).await;
}

/// Run `report`'s import at start and every `interval_secs`, from the cursor, until `shutdown`.
pub async fn run_every<R: Report>(
    report: &R,
    sink: &dyn EventSink,
    cursor: LedgerCursor,
    topic: &str,
    shutdown: CancellationToken,
) {
    let settings = report.settings();
    let interval = Duration::from_secs(settings.interval_secs.max(1));
    let lookback = TimeDelta::hours(i64::try_from(settings.lookback_hours).unwrap_or(24 * 31));
    loop {
        let now = Utc::now();
        let run = async {
            let from = cursor
                .imported_until(R::SOURCE, settings.source_name, settings.org, now, lookback)
                .await?
                .unwrap_or(now - lookback);
            run::import_usage(report, from, now, now, sink).await
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = run => match outcome {
                Ok(summary) => telemetry::run_succeeded(R::SOURCE, &summary.describe(topic, settings.settle_lag_secs), summary.events),
                Err(error) => telemetry::run_failed(R::SOURCE, &error),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

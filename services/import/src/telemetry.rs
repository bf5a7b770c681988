//! The importers' logs and metrics, in one place: each event logs and counts in one call.
//!
//! Metrics: `faregate_import_runs_total{source, outcome}` (outcome `ok` or `failed`) and
//! `faregate_import_events_total{source}`.

use faregate_core::FaregateError;

use crate::error::ImportError;

/// A run imported what it could.
pub fn run_succeeded(source: &'static str, summary: &str, events: usize) {
    tracing::info!(source, events, summary, "import run done");
    metrics::counter!("faregate_import_runs_total", "source" => source, "outcome" => "ok").increment(1);
    metrics::counter!("faregate_import_events_total", "source" => source).increment(events as u64);
}

/// A run failed; the next one starts from the cursor again.
pub fn run_failed(source: &'static str, error: &ImportError) {
    tracing::warn!(source, %error, retryable = error.retryable(), "import run failed");
    metrics::counter!("faregate_import_runs_total", "source" => source, "outcome" => "failed").increment(1);
}

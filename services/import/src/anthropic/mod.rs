//! The Anthropic importer: the Admin API's messages usage report
//! (`GET /v1/organizations/usage_report/messages`) into usage events.
//!
//! Contract: [`import_usage`] reads the report for a window, page by page, grouped by every
//! dimension of [`report::GROUP_BY`], and writes one usage event per non-empty result to the
//! sink, a page at a time: a page is checked whole before any of its events is written, and a
//! malformed page stops the run with every problem of it named (the pages before it stay
//! written; importing again is harmless, see below).
//!
//! **Settled buckets only.** A bucket's numbers grow until it has ended and Anthropic has
//! counted it (its guide says usage appears within minutes). A bucket imported while still
//! growing would be imported again later with the same event id and bigger numbers, and the
//! processor, which counts an id once, would keep the smaller ones. So a run only asks for
//! buckets that ended at least `settle_lag_secs` (default one hour) before now; the rest of the
//! window is left for a later run and the [`Summary`] says so. Everything imported is final,
//! so a re-import of any window changes nothing in the ledger.
//!
//! The run itself (paging, checks, skips, summary) is the one every importer shares,
//! [`crate::run`]; this module says what is Anthropic's ([`Report`]).

pub mod events;
pub mod report;

use chrono::{DateTime, Utc};
use faregate_core::config::{ConfigError, Secret, Validate};
use faregate_core::event::UsageEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ImportError, Problem};
use crate::run::{self, Report, RunSettings, run_settings};
use crate::sink::EventSink;
use crate::window::rfc3339 as time;
use events::Attribution;

/// The source's name in errors and logs.
pub const SOURCE: &str = "anthropic";
/// The report's path.
pub const USAGE_REPORT_PATH: &str = "/v1/organizations/usage_report/messages";

pub use crate::window::{BucketWidth, Summary};

/// `[import.anthropic]`: the Anthropic Admin API importer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicImportConfig {
    /// The Admin API key (`sk-ant-admin...`), created by an organization admin in the Claude
    /// Console (Settings > Admin keys). Prefer `FAREGATE__IMPORT__ANTHROPIC__ADMIN_KEY` to the
    /// file. Empty: the importer is not configured.
    pub admin_key: Secret,
    /// The Faregate org the imported usage is attributed to (also part of the event ids).
    pub org: String,
    /// The API's base URL, without `/v1`.
    pub base_url: String,
    /// The `anthropic-version` header.
    pub api_version: String,
    /// The events' `source_name`.
    pub source_name: String,
    /// The report's time granularity: `1m`, `1h` or `1d`. Part of the event ids: keep it once
    /// chosen, or a window imported at two widths counts twice.
    pub bucket_width: BucketWidth,
    /// Only buckets that ended at least this long ago are imported (see the module doc).
    pub settle_lag_secs: u64,
    /// Requests one run may send, retries included.
    pub max_requests: u32,
    /// No request starts later than this after the run began.
    pub deadline_secs: u64,
    /// One request's timeout.
    pub request_timeout_secs: u64,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The first backoff after a failure without `Retry-After`; doubles up to 30 s.
    pub retry_initial_ms: u64,
    /// The longest `Retry-After` honoured; a longer one ends the run with the error.
    pub max_retry_after_secs: u64,
    /// API key ids (`apikey_...`) whose usage is not imported: the keys the Faregate ingress
    /// itself forwards with (`ingress.upstreams`), whose requests are metered already.
    /// Importing them would count that traffic twice.
    pub skip_api_key_ids: Vec<String>,
    /// Workspace ids (`wrkspc_...`) whose usage is not imported, for the same reason: a
    /// workspace that holds only the gateway's keys.
    pub skip_workspace_ids: Vec<String>,
    /// Run the import every this many seconds inside `faregate processor` / `faregate up`,
    /// from where the ledger's imported buckets end; 0: no scheduled import.
    pub interval_secs: u64,
    /// Where a run without a start begins (the scheduled loop's first run for an org, or
    /// `faregate import anthropic` without `--from`) when the ledger has no bucket of this
    /// importer and org yet, and how far back the cursor is looked for.
    pub lookback_hours: u64,
}

impl Default for AnthropicImportConfig {
    fn default() -> Self {
        AnthropicImportConfig {
            admin_key: Secret::default(),
            org: String::new(),
            base_url: "https://api.anthropic.com".to_string(),
            api_version: "2023-06-01".to_string(),
            source_name: "anthropic-admin-api".to_string(),
            bucket_width: BucketWidth::Hour,
            settle_lag_secs: 3600,
            max_requests: 500,
            deadline_secs: 900,
            request_timeout_secs: 60,
            max_attempts: 6,
            retry_initial_ms: 1000,
            max_retry_after_secs: 300,
            skip_api_key_ids: Vec::new(),
            skip_workspace_ids: Vec::new(),
            interval_secs: 0,
            lookback_hours: 24 * 7,
        }
    }
}

impl Validate for AnthropicImportConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_settings()
    }
}

impl Report for AnthropicImportConfig {
    const SOURCE: &'static str = SOURCE;
    const PATH: &'static str = USAGE_REPORT_PATH;
    const PAGE_OF: &'static str = "usage report";
    const ENDLESS: &'static str = "report";
    const SKIPPED_WHAT: &'static str = "keys or workspaces (skip_api_key_ids, skip_workspace_ids)";
    const KEY_PREFIX: &'static str = "sk-ant-admin";
    const KEY_REFUSED: &'static str = "must be an Admin API key (sk-ant-admin...), not a regular API key";
    type Bucket = report::Bucket;

    fn settings(&self) -> RunSettings<'_> {
        run_settings!(self)
    }

    fn headers(&self) -> Vec<(&'static str, Secret)> {
        vec![("x-api-key", self.admin_key.clone()), ("anthropic-version", Secret::new(&self.api_version))]
    }

    fn query(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(&'static str, String)> {
        let mut query: Vec<(&str, String)> = vec![
            ("starting_at", time(start)),
            ("ending_at", time(end)),
            ("bucket_width", self.bucket_width.as_str().to_string()),
        ];
        query.extend(report::GROUP_BY.iter().map(|d| ("group_by[]", d.to_string())));
        query
    }

    fn parse_page(body: &Value) -> Result<report::Page, Vec<Problem>> {
        report::parse_page(body)
    }

    fn skip_lists(&self) -> Vec<(&[String], &'static str)> {
        vec![(&self.skip_api_key_ids, "api_key_id"), (&self.skip_workspace_ids, "workspace_id")]
    }

    fn usage_event(
        attribution: &Attribution,
        bucket: &report::Bucket,
        result: &report::UsageResult,
        received_at: DateTime<Utc>,
    ) -> UsageEvent {
        events::usage_event(attribution, bucket, result, received_at)
    }
}

/// Import the usage report's buckets in `[from, to)` that have settled by `now`.
pub async fn import_usage(
    config: &AnthropicImportConfig,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    sink: &dyn EventSink,
) -> Result<Summary, ImportError> {
    run::import_usage(config, from, to, now, sink).await
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::window::bucket_problems;
    use report::{Bucket, Page};

    /// The run's check of a page's buckets against the window asked for.
    fn window_problems(
        page: &Page,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        width: BucketWidth,
    ) -> Vec<Problem> {
        bucket_problems(page.buckets.iter().map(crate::run::UsageBucket::span), start, end, width)
    }

    #[test]
    fn buckets_outside_the_window_or_of_another_width_are_problems() {
        let start = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        let bucket = |from: i64, hours: i64| Bucket {
            starting_at: start + TimeDelta::hours(from),
            ending_at: start + TimeDelta::hours(from + hours),
            results: vec![],
        };
        let page = Page {
            buckets: vec![bucket(0, 1), bucket(1, 24), bucket(9, 1), bucket(-1, 1)],
            has_more: false,
            next_page: None,
        };
        let problems = window_problems(&page, start, start + TimeDelta::hours(10), BucketWidth::Hour);
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].starts_with("data[1]: ") && shown[0].contains("outside the window"), "{shown:?}");
        assert!(shown[1].starts_with("data[3]: ") && shown[1].contains("outside the window"), "{shown:?}");
        let page = Page { buckets: vec![bucket(0, 2)], has_more: false, next_page: None };
        let problems = window_problems(&page, start, start + TimeDelta::hours(10), BucketWidth::Hour);
        assert!(problems[0].to_string().contains("is not 1h wide"), "{problems:?}");
    }
}

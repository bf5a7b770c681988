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

pub mod events;
pub mod report;

use std::time::Duration;

use chrono::{DateTime, Utc};
use faregate_core::config::{ConfigError, Secret, Validate};
use faregate_core::retry::RetryPolicy;
use serde::{Deserialize, Serialize};

use crate::error::ImportError;
use crate::http::{AdminClient, Limits};
use crate::sink::EventSink;
use crate::window::{bucket_problems, rfc3339 as time, settled_window};
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
        let field =
            |name: &str, message: &str| ConfigError::field(format!("import.anthropic.{name}"), message);
        if self.admin_key.is_empty() {
            return Ok(());
        }
        if !self.admin_key.expose().starts_with("sk-ant-admin") {
            return Err(field(
                "admin_key",
                "must be an Admin API key (sk-ant-admin...), not a regular API key",
            ));
        }
        if self.org.trim().is_empty() {
            return Err(field("org", "must name the Faregate org the usage is attributed to"));
        }
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return Err(field("base_url", "must be an http(s) URL"));
        }
        if self.max_requests == 0 || self.max_attempts == 0 {
            return Err(field("max_requests", "max_requests and max_attempts must be at least 1"));
        }
        Ok(())
    }
}

impl AnthropicImportConfig {
    fn limits(&self) -> Limits {
        Limits {
            max_requests: self.max_requests,
            deadline: Duration::from_secs(self.deadline_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            retry: RetryPolicy {
                initial: Duration::from_millis(self.retry_initial_ms),
                max: Duration::from_secs(30),
                max_attempts: self.max_attempts,
                max_hint: Duration::from_secs(self.max_retry_after_secs),
                deadline: Duration::from_secs(self.deadline_secs),
            },
        }
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
    let invalid = |message: String| ImportError::Invalid { source_name: SOURCE, message };
    if config.admin_key.is_empty() {
        return Err(invalid(
            "no admin key: set import.anthropic.admin_key (FAREGATE__IMPORT__ANTHROPIC__ADMIN_KEY)".into(),
        ));
    }
    config.validate().map_err(|e| invalid(e.to_string()))?;
    let window =
        settled_window(from, to, now, config.bucket_width, config.settle_lag_secs).map_err(invalid)?;
    let (start, end) = (window.start, window.end);
    let mut summary = Summary::new(SOURCE, "keys or workspaces (skip_api_key_ids, skip_workspace_ids)");
    summary.left_for_later = window.left_for_later;
    if end <= start {
        return Ok(summary);
    }
    let client = AdminClient::new(
        SOURCE,
        &config.base_url,
        vec![
            ("x-api-key", config.admin_key.clone()),
            ("anthropic-version", Secret::new(&config.api_version)),
        ],
        config.limits(),
    )?;
    let attribution = Attribution {
        org: config.org.clone(),
        source_name: config.source_name.clone(),
        bucket_width: config.bucket_width.as_str(),
    };
    let mut page_token: Option<String> = None;
    let outcome = loop {
        let mut query: Vec<(&str, String)> = vec![
            ("starting_at", time(start)),
            ("ending_at", time(end)),
            ("bucket_width", config.bucket_width.as_str().to_string()),
        ];
        query.extend(report::GROUP_BY.iter().map(|d| ("group_by[]", d.to_string())));
        if let Some(token) = &page_token {
            query.push(("page", token.clone()));
        }
        let (request, body) = match client.get_json(USAGE_REPORT_PATH, &query).await {
            Ok(answer) => answer,
            Err(error) => break Err(error),
        };
        let page = match report::parse_page(&body) {
            Ok(page) => page,
            Err(problems) => break Err(ImportError::Malformed { source_name: SOURCE, request, problems }),
        };
        let outside = window_problems(&page, start, end, config.bucket_width);
        if !outside.is_empty() {
            break Err(ImportError::Malformed { source_name: SOURCE, request, problems: outside });
        }
        let received_at = Utc::now();
        let mut events = Vec::new();
        for bucket in &page.buckets {
            summary.buckets += 1;
            for result in &bucket.results {
                if result.is_empty() {
                    summary.empty_results += 1;
                    continue;
                }
                let skipped = |list: &[String], dimension: &str| {
                    result.dimension(dimension).is_some_and(|id| list.iter().any(|s| s == id))
                };
                if skipped(&config.skip_api_key_ids, "api_key_id")
                    || skipped(&config.skip_workspace_ids, "workspace_id")
                {
                    summary.skipped_results += 1;
                    continue;
                }
                events.push(events::usage_event(&attribution, bucket, result, received_at));
            }
        }
        if let Err(error) = sink.write(&events).await {
            break Err(error);
        }
        summary.pages += 1;
        summary.events += events.len();
        tracing::info!(source = SOURCE, %request, buckets = page.buckets.len(), events = events.len(), "imported a usage report page");
        match (page.has_more, page.next_page) {
            (true, Some(next)) if page_token.as_deref() != Some(next.as_str()) => page_token = Some(next),
            (true, Some(next)) => {
                break Err(ImportError::Malformed {
                    source_name: SOURCE,
                    request,
                    problems: vec![crate::error::Problem {
                        path: "next_page".into(),
                        message: format!("{next:?} is the page just read; the report would never end"),
                    }],
                });
            }
            _ => break Ok(()),
        }
    };
    summary.requests = client.requests_sent();
    outcome?;
    summary.imported = Some((start, end));
    Ok(summary)
}

/// A bucket outside the window asked for, or of another width, is not the documented answer:
/// its page is refused whole, like any other malformed page.
fn window_problems(
    page: &report::Page,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    width: BucketWidth,
) -> Vec<crate::error::Problem> {
    bucket_problems(page.buckets.iter().map(|b| (b.starting_at, b.ending_at)), start, end, width)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use report::{Bucket, Page};

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

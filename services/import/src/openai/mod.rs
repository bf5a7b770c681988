//! The OpenAI importer: the organization usage API for completions
//! (`GET /v1/organization/usage/completions`) into usage events.
//!
//! Contract: [`import_usage`] reads the usage for a window, page by page, grouped by every
//! dimension of [`usage::GROUP_BY`], and writes one usage event per non-empty result to the
//! sink, a page at a time: a page is checked whole before any of its events is written, and a
//! malformed page stops the run with every problem of it named (the pages before it stay
//! written; importing again is harmless). Results of the gateway's own API keys or projects
//! (`skip_api_key_ids`, `skip_project_ids`) are not imported: the ingress metered them already.
//!
//! **Settled buckets only**, as for Anthropic (see [`crate::window::settled_window`]): a bucket
//! is asked for once it ended at least `settle_lag_secs` (default one hour) ago, so a re-import
//! of any window changes nothing in the ledger.
//!
//! The request follows OpenAI's API reference, "Usage > Completions"
//! (<https://developers.openai.com/api/reference/resources/organization/subresources/audit_logs/subresources/usage/methods/get_completions>):
//! an Admin API key as `Authorization: Bearer`; `start_time` (Unix seconds, inclusive),
//! `end_time` (exclusive), `bucket_width` (`1m`, `1h`, `1d`), `group_by` (an array, sent as
//! repeated keys), `limit` (buckets per page; at most 1440, 168 and 31 for the three widths)
//! and `page` (the previous answer's `next_page`).

pub mod events;
pub mod usage;

use std::time::Duration;

use chrono::{DateTime, Utc};
use faregate_core::config::{ConfigError, Secret, Validate};
use faregate_core::retry::RetryPolicy;
use serde::{Deserialize, Serialize};

use crate::error::{ImportError, Problem};
use crate::http::{AdminClient, Limits};
use crate::sink::EventSink;
use crate::window::{BucketWidth, Summary, bucket_problems, settled_window};
use events::Attribution;

/// The source's name in errors and logs.
pub const SOURCE: &str = "openai";
/// The usage API's path.
pub const USAGE_PATH: &str = "/v1/organization/usage/completions";

/// `[import.openai]`: the OpenAI organization usage importer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiImportConfig {
    /// The Admin API key (`sk-admin-...`), created by an organization owner in the platform's
    /// organization settings (Admin keys). Prefer `FAREGATE__IMPORT__OPENAI__ADMIN_KEY` to the
    /// file. Empty: the importer is not configured.
    pub admin_key: Secret,
    /// The Faregate org the imported usage is attributed to (also part of the event ids).
    pub org: String,
    /// The API's base URL, without `/v1`.
    pub base_url: String,
    /// The events' `source_name`.
    pub source_name: String,
    /// The time granularity: `1m`, `1h` or `1d`. Part of the event ids: keep it once chosen,
    /// or a window imported at two widths counts twice.
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
    /// API key ids (`key_...`) whose usage is not imported: the keys the Faregate ingress itself
    /// forwards with (`ingress.upstreams`), whose requests are metered already. Importing them
    /// would count that traffic twice.
    pub skip_api_key_ids: Vec<String>,
    /// Project ids (`proj_...`) whose usage is not imported, for the same reason: a project
    /// that holds only the gateway's keys.
    pub skip_project_ids: Vec<String>,
    /// Run the import every this many seconds inside `faregate processor` / `faregate up`,
    /// from where the ledger's imported buckets end; 0: no scheduled import.
    pub interval_secs: u64,
    /// Where a run without a start begins (the scheduled loop's first run for an org, or
    /// `faregate import openai` without `--from`) when the ledger has no bucket of this
    /// importer and org yet, and how far back the cursor is looked for.
    pub lookback_hours: u64,
}

impl Default for OpenAiImportConfig {
    fn default() -> Self {
        OpenAiImportConfig {
            admin_key: Secret::default(),
            org: String::new(),
            base_url: "https://api.openai.com".to_string(),
            source_name: "openai-usage-api".to_string(),
            bucket_width: BucketWidth::Hour,
            settle_lag_secs: 3600,
            max_requests: 500,
            deadline_secs: 900,
            request_timeout_secs: 60,
            max_attempts: 6,
            retry_initial_ms: 1000,
            max_retry_after_secs: 300,
            skip_api_key_ids: Vec::new(),
            skip_project_ids: Vec::new(),
            interval_secs: 0,
            lookback_hours: 24 * 7,
        }
    }
}

impl Validate for OpenAiImportConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let field = |name: &str, message: &str| ConfigError::field(format!("import.openai.{name}"), message);
        if self.admin_key.is_empty() {
            return Ok(());
        }
        if !self.admin_key.expose().starts_with("sk-admin-") {
            return Err(field(
                "admin_key",
                "must be an Admin API key (sk-admin-...), not a project or user API key",
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

impl OpenAiImportConfig {
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

    /// The most buckets one page may hold at this width, per the reference.
    fn page_limit(&self) -> u32 {
        match self.bucket_width {
            BucketWidth::Minute => 1440,
            BucketWidth::Hour => 168,
            BucketWidth::Day => 31,
        }
    }
}

/// Import the usage's buckets in `[from, to)` that have settled by `now`.
pub async fn import_usage(
    config: &OpenAiImportConfig,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    sink: &dyn EventSink,
) -> Result<Summary, ImportError> {
    let invalid = |message: String| ImportError::Invalid { source_name: SOURCE, message };
    if config.admin_key.is_empty() {
        return Err(invalid(
            "no admin key: set import.openai.admin_key (FAREGATE__IMPORT__OPENAI__ADMIN_KEY)".into(),
        ));
    }
    config.validate().map_err(|e| invalid(e.to_string()))?;
    let window =
        settled_window(from, to, now, config.bucket_width, config.settle_lag_secs).map_err(invalid)?;
    let (start, end) = (window.start, window.end);
    let mut summary = Summary::new(SOURCE, "keys or projects (skip_api_key_ids, skip_project_ids)");
    summary.left_for_later = window.left_for_later;
    if end <= start {
        return Ok(summary);
    }
    let bearer = Secret::new(format!("Bearer {}", config.admin_key.expose()));
    let client =
        AdminClient::new(SOURCE, &config.base_url, vec![("authorization", bearer)], config.limits())?;
    let attribution = Attribution {
        org: config.org.clone(),
        source_name: config.source_name.clone(),
        bucket_width: config.bucket_width.as_str(),
    };
    let mut page_token: Option<String> = None;
    let outcome = loop {
        let mut query: Vec<(&str, String)> = vec![
            ("start_time", start.timestamp().to_string()),
            ("end_time", end.timestamp().to_string()),
            ("bucket_width", config.bucket_width.as_str().to_string()),
            ("limit", config.page_limit().to_string()),
        ];
        query.extend(usage::GROUP_BY.iter().map(|d| ("group_by", d.to_string())));
        if let Some(token) = &page_token {
            query.push(("page", token.clone()));
        }
        let (request, body) = match client.get_json(USAGE_PATH, &query).await {
            Ok(answer) => answer,
            Err(error) => break Err(error),
        };
        let page = match usage::parse_page(&body) {
            Ok(page) => page,
            Err(problems) => break Err(ImportError::Malformed { source_name: SOURCE, request, problems }),
        };
        let spans = page.buckets.iter().map(|b| (b.start_time, b.end_time));
        let outside = bucket_problems(spans, start, end, config.bucket_width);
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
                    || skipped(&config.skip_project_ids, "project_id")
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
        tracing::info!(source = SOURCE, %request, buckets = page.buckets.len(), events = events.len(), "imported a usage page");
        match (page.has_more, page.next_page) {
            (true, Some(next)) if page_token.as_deref() != Some(next.as_str()) => page_token = Some(next),
            (true, Some(next)) => {
                break Err(ImportError::Malformed {
                    source_name: SOURCE,
                    request,
                    problems: vec![Problem {
                        path: "next_page".into(),
                        message: format!("{next:?} is the page just read; the usage would never end"),
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

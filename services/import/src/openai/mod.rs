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
//! of any window changes nothing in the ledger. The run itself (paging, checks, skips, summary)
//! is the one every importer shares, [`crate::run`]; this module says what is OpenAI's
//! ([`Report`]).
//!
//! The request follows OpenAI's API reference, "Usage > Completions"
//! (<https://developers.openai.com/api/reference/resources/organization/subresources/audit_logs/subresources/usage/methods/get_completions>):
//! an Admin API key as `Authorization: Bearer`; `start_time` (Unix seconds, inclusive),
//! `end_time` (exclusive), `bucket_width` (`1m`, `1h`, `1d`), `group_by` (an array, sent as
//! repeated keys), `limit` (buckets per page; at most 1440, 168 and 31 for the three widths)
//! and `page` (the previous answer's `next_page`).

pub mod events;
pub mod usage;

use chrono::{DateTime, Utc};
use faregate_core::config::{ConfigError, Secret, Validate};
use faregate_core::event::UsageEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ImportError, Problem};
use crate::run::{self, Report, RunSettings, run_settings};
use crate::sink::EventSink;
use crate::window::{BucketWidth, Summary};
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
        self.validate_settings()
    }
}

impl OpenAiImportConfig {
    /// The most buckets one page may hold at this width, per the reference.
    fn page_limit(&self) -> u32 {
        match self.bucket_width {
            BucketWidth::Minute => 1440,
            BucketWidth::Hour => 168,
            BucketWidth::Day => 31,
        }
    }
}

impl Report for OpenAiImportConfig {
    const SOURCE: &'static str = SOURCE;
    const PATH: &'static str = USAGE_PATH;
    const PAGE_OF: &'static str = "usage";
    const ENDLESS: &'static str = "usage";
    const SKIPPED_WHAT: &'static str = "keys or projects (skip_api_key_ids, skip_project_ids)";
    const KEY_PREFIX: &'static str = "sk-admin-";
    const KEY_REFUSED: &'static str =
        "must be an Admin API key (sk-admin-...), not a project or user API key";
    type Bucket = usage::Bucket;

    fn settings(&self) -> RunSettings<'_> {
        run_settings!(self)
    }

    fn headers(&self) -> Vec<(&'static str, Secret)> {
        vec![("authorization", Secret::new(format!("Bearer {}", self.admin_key.expose())))]
    }

    fn query(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(&'static str, String)> {
        let mut query: Vec<(&str, String)> = vec![
            ("start_time", start.timestamp().to_string()),
            ("end_time", end.timestamp().to_string()),
            ("bucket_width", self.bucket_width.as_str().to_string()),
            ("limit", self.page_limit().to_string()),
        ];
        query.extend(usage::GROUP_BY.iter().map(|d| ("group_by", d.to_string())));
        query
    }

    fn parse_page(body: &Value) -> Result<usage::Page, Vec<Problem>> {
        usage::parse_page(body)
    }

    fn skip_lists(&self) -> Vec<(&[String], &'static str)> {
        vec![(&self.skip_api_key_ids, "api_key_id"), (&self.skip_project_ids, "project_id")]
    }

    fn usage_event(
        attribution: &Attribution,
        bucket: &usage::Bucket,
        result: &usage::UsageResult,
        received_at: DateTime<Utc>,
    ) -> UsageEvent {
        events::usage_event(attribution, bucket, result, received_at)
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
    run::import_usage(config, from, to, now, sink).await
}

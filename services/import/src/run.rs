//! The run every bucketed usage importer shares, and the settings it reads.
//!
//! Contract: [`import_usage`] checks the settings, cuts the window at the settled buckets
//! ([`settled_window`]), then reads the source's report page by page through one
//! [`AdminClient`] and writes one usage event per non-empty, not skipped result to the sink, a
//! page at a time: a page is parsed and checked whole (its documented shape, and every bucket
//! inside the window and of the width asked, [`bucket_problems`]) before any of its events is
//! written, and a malformed page stops the run with every problem of it named (the pages before
//! it stay written; a re-import is harmless since ids are the source's own). A page that names
//! itself as the next one stops the run too, since the report would never end.
//!
//! What differs per provider (the path, the credential headers, the query, the page's shape, the
//! skip lists, the event of a result) is its [`Report`], implemented by its config section;
//! the settings every importer has are read through [`RunSettings`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use faregate_core::config::{ConfigError, Secret};
use faregate_core::event::UsageEvent;
use faregate_core::retry::RetryPolicy;
use serde_json::Value;

use crate::error::{ImportError, Problem};
use crate::http::{AdminClient, Limits};
use crate::sink::EventSink;
use crate::window::{BucketWidth, Summary, bucket_problems, settled_window};

/// The settings every importer's config section has, under the same keys (a view of them).
#[derive(Debug, Clone, Copy)]
pub struct RunSettings<'a> {
    pub admin_key: &'a Secret,
    pub org: &'a str,
    pub base_url: &'a str,
    pub source_name: &'a str,
    pub bucket_width: BucketWidth,
    pub settle_lag_secs: u64,
    pub max_requests: u32,
    pub deadline_secs: u64,
    pub request_timeout_secs: u64,
    pub max_attempts: u32,
    pub retry_initial_ms: u64,
    pub max_retry_after_secs: u64,
    pub interval_secs: u64,
    pub lookback_hours: u64,
}

/// The [`RunSettings`] of a config section that has every one of its fields.
macro_rules! run_settings {
    ($config:expr) => {
        $crate::run::RunSettings {
            admin_key: &$config.admin_key,
            org: &$config.org,
            base_url: &$config.base_url,
            source_name: &$config.source_name,
            bucket_width: $config.bucket_width,
            settle_lag_secs: $config.settle_lag_secs,
            max_requests: $config.max_requests,
            deadline_secs: $config.deadline_secs,
            request_timeout_secs: $config.request_timeout_secs,
            max_attempts: $config.max_attempts,
            retry_initial_ms: $config.retry_initial_ms,
            max_retry_after_secs: $config.max_retry_after_secs,
            interval_secs: $config.interval_secs,
            lookback_hours: $config.lookback_hours,
        }
    };
}
pub(crate) use run_settings;

impl RunSettings<'_> {
    /// The client's limits: the request budget, the deadline and the retry policy.
    pub fn limits(&self) -> Limits {
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

    /// The checks of `[import.<source>]`: none without a key (the importer is not configured),
    /// else a key starting with `key_prefix` (`key_refused` otherwise), an org, an http(s) URL
    /// and at least one request and attempt.
    pub fn validate(&self, source: &str, key_prefix: &str, key_refused: &str) -> Result<(), ConfigError> {
        let field =
            |name: &str, message: &str| ConfigError::field(format!("import.{source}.{name}"), message);
        if self.admin_key.is_empty() {
            return Ok(());
        }
        if !self.admin_key.expose().starts_with(key_prefix) {
            return Err(field("admin_key", key_refused));
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

/// One page of a bucketed report, as its parser checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<B> {
    pub buckets: Vec<B>,
    pub has_more: bool,
    pub next_page: Option<String>,
}

/// One time bucket of a report.
pub trait UsageBucket {
    type Result: UsageRow;
    /// The bucket's start and end.
    fn span(&self) -> (DateTime<Utc>, DateTime<Utc>);
    fn results(&self) -> &[Self::Result];
}

/// One result of a bucket: the usage of one combination of the grouped dimensions.
pub trait UsageRow {
    /// The dimensions the report is grouped by, in the order they enter event ids.
    const GROUP_BY: &'static [&'static str];
    /// The value of each of [`UsageRow::GROUP_BY`], in its order (`None`: null or absent).
    fn dimensions(&self) -> &[Option<String>];
    /// Whether the result carries no usage at all.
    fn is_empty(&self) -> bool;
    /// The value of a grouped dimension (`None`: null or absent, or not a dimension).
    fn dimension(&self, name: &str) -> Option<&str> {
        let index = Self::GROUP_BY.iter().position(|d| *d == name)?;
        self.dimensions()[index].as_deref()
    }
}

/// Where the events of one import run come from and go to.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// The Faregate org the usage is attributed to.
    pub org: String,
    /// The events' `source_name`.
    pub source_name: String,
    /// The bucket width as requested (`1h`, `1d`, `1m`).
    pub bucket_width: &'static str,
}

/// What one provider's importer adds to the shared run; implemented by its config section.
pub trait Report: Sync {
    /// The importer's name in errors, logs and metrics; its config section is `import.<SOURCE>`.
    const SOURCE: &'static str;
    /// The report's path.
    const PATH: &'static str;
    /// What the report is called in the page log line, e.g. `usage report`.
    const PAGE_OF: &'static str;
    /// What would never end when a page names itself as the next one, e.g. `report`.
    const ENDLESS: &'static str;
    /// What the skip lists hold and their settings (see [`Summary::skipped_what`]).
    const SKIPPED_WHAT: &'static str;
    /// How the source's Admin API keys start.
    const KEY_PREFIX: &'static str;
    /// Why a key without [`Report::KEY_PREFIX`] is refused.
    const KEY_REFUSED: &'static str;
    type Bucket: UsageBucket + Send + Sync;

    /// The settings every importer has.
    fn settings(&self) -> RunSettings<'_>;
    /// The credential headers of every request.
    fn headers(&self) -> Vec<(&'static str, Secret)>;
    /// The query of the first page of `[start, end)`; the run adds `page` for the next ones.
    fn query(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(&'static str, String)>;
    /// Read and check one page; every problem of the page, or the page.
    fn parse_page(body: &Value) -> Result<Page<Self::Bucket>, Vec<Problem>>;
    /// Ids whose results are not imported (the gateway's own), each with its dimension.
    fn skip_lists(&self) -> Vec<(&[String], &'static str)>;
    /// The checks of the section (see [`RunSettings::validate`]).
    fn validate_settings(&self) -> Result<(), ConfigError> {
        self.settings().validate(Self::SOURCE, Self::KEY_PREFIX, Self::KEY_REFUSED)
    }
    /// The usage event of one non-empty result.
    fn usage_event(
        attribution: &Attribution,
        bucket: &Self::Bucket,
        result: &<Self::Bucket as UsageBucket>::Result,
        received_at: DateTime<Utc>,
    ) -> UsageEvent;
}

/// Import `report`'s buckets in `[from, to)` that have settled by `now` (see the module doc).
pub async fn import_usage<R: Report>(
    report: &R,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
    sink: &dyn EventSink,
) -> Result<Summary, ImportError> {
    let source = R::SOURCE;
    let settings = report.settings();
    let invalid = |message: String| ImportError::Invalid { source_name: source, message };
    if settings.admin_key.is_empty() {
        let variable = format!("FAREGATE__IMPORT__{}__ADMIN_KEY", source.to_uppercase());
        return Err(invalid(format!("no admin key: set import.{source}.admin_key ({variable})")));
    }
    report.validate_settings().map_err(|e| invalid(e.to_string()))?;
    let width = settings.bucket_width;
    let window = settled_window(from, to, now, width, settings.settle_lag_secs).map_err(invalid)?;
    let (start, end) = (window.start, window.end);
    let mut summary = Summary::new(source, R::SKIPPED_WHAT);
    summary.left_for_later = window.left_for_later;
    if end <= start {
        return Ok(summary);
    }
    let client = AdminClient::new(source, settings.base_url, report.headers(), settings.limits())?;
    let attribution = Attribution {
        org: settings.org.to_string(),
        source_name: settings.source_name.to_string(),
        bucket_width: width.as_str(),
    };
    let skip_lists = report.skip_lists();
    let malformed = |request, problems| ImportError::Malformed { source_name: source, request, problems };
    let mut page_token: Option<String> = None;
    let outcome = loop {
        let mut query = report.query(start, end);
        if let Some(token) = &page_token {
            query.push(("page", token.clone()));
        }
        let (request, body) = match client.get_json(R::PATH, &query).await {
            Ok(answer) => answer,
            Err(error) => break Err(error),
        };
        let page = match R::parse_page(&body) {
            Ok(page) => page,
            Err(problems) => break Err(malformed(request, problems)),
        };
        let outside = bucket_problems(page.buckets.iter().map(UsageBucket::span), start, end, width);
        if !outside.is_empty() {
            break Err(malformed(request, outside));
        }
        let received_at = Utc::now();
        let mut events = Vec::new();
        for bucket in &page.buckets {
            summary.buckets += 1;
            for result in bucket.results() {
                if result.is_empty() {
                    summary.empty_results += 1;
                    continue;
                }
                let skipped = skip_lists.iter().any(|(list, dimension)| {
                    result.dimension(dimension).is_some_and(|id| list.iter().any(|s| s == id))
                });
                if skipped {
                    summary.skipped_results += 1;
                    continue;
                }
                events.push(R::usage_event(&attribution, bucket, result, received_at));
            }
        }
        if let Err(error) = sink.write(&events).await {
            break Err(error);
        }
        summary.pages += 1;
        summary.events += events.len();
        tracing::info!(source, %request, buckets = page.buckets.len(), events = events.len(), "imported a {} page", R::PAGE_OF);
        match (page.has_more, page.next_page) {
            (true, Some(next)) if page_token.as_deref() != Some(next.as_str()) => page_token = Some(next),
            (true, Some(next)) => {
                let problem = Problem {
                    path: "next_page".into(),
                    message: format!("{next:?} is the page just read; the {} would never end", R::ENDLESS),
                };
                break Err(malformed(request, vec![problem]));
            }
            _ => break Ok(()),
        }
    };
    summary.requests = client.requests_sent();
    outcome?;
    summary.imported = Some((start, end));
    Ok(summary)
}

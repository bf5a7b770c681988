//! The HTTP client of provider admin APIs, shared by every importer.
//!
//! Contract: [`AdminClient::get_json`] sends one GET and returns the JSON body of a `2xx`, or an
//! [`ImportError`] naming the source, the request line and the status. Failures that another
//! attempt can cure (`429`, `408`, `5xx`, `529`, no answer) are retried under the project's one
//! retry authority ([`faregate_core::retry`]): a `Retry-After` the provider sends (seconds or an
//! HTTP date) is honoured in full, otherwise the backoff paces. Every attempt counts against the
//! run's request budget and none starts past the run's deadline, so a run always ends. The
//! credentials are [`Secret`]s sent only as headers: never in the request line, an error or a
//! log (`Debug` prints `*****`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use faregate_core::config::Secret;
use faregate_core::retry::{Retry, RetryPolicy};
use tokio::time::Instant;

use crate::error::{ImportError, RequestLine};

/// Limits of one import run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests (attempts, retries included) one run may send.
    pub max_requests: u32,
    /// No request starts later than this after the run began.
    pub deadline: Duration,
    /// One request's timeout, connection to last byte.
    pub request_timeout: Duration,
    /// Retries of one request.
    pub retry: RetryPolicy,
}

/// A client of one provider's admin API for one run.
pub struct AdminClient {
    source_name: &'static str,
    base_url: String,
    http: reqwest::Client,
    headers: Vec<(&'static str, Secret)>,
    limits: Limits,
    started: Instant,
    sent: AtomicU32,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &Secret)> = self.headers.iter().map(|(n, v)| (*n, v)).collect();
        f.debug_struct("AdminClient")
            .field("source", &self.source_name)
            .field("base_url", &self.base_url)
            .field("headers", &headers)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client of `base_url` (no trailing slash) sending `headers` (credentials included)
    /// with every request.
    pub fn new(
        source_name: &'static str,
        base_url: &str,
        headers: Vec<(&'static str, Secret)>,
        limits: Limits,
    ) -> Result<Self, ImportError> {
        let http = reqwest::Client::builder()
            .timeout(limits.request_timeout)
            .user_agent(concat!("faregate-import/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ImportError::Invalid { source_name, message: format!("HTTP client: {e}") })?;
        Ok(AdminClient {
            source_name,
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
            headers,
            limits,
            started: Instant::now(),
            sent: AtomicU32::new(0),
        })
    }

    /// Requests sent so far in this run (retries included).
    pub fn requests_sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }

    /// GET `path` with `query` (repeated keys allowed, e.g. `group_by[]`), retried as the module
    /// doc says; the body of the first `2xx` answer as JSON.
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(RequestLine, serde_json::Value), ImportError> {
        let url =
            reqwest::Url::parse_with_params(&format!("{}{path}", self.base_url), query).map_err(|e| {
                ImportError::Invalid {
                    source_name: self.source_name,
                    message: format!("bad URL for {path}: {e}"),
                }
            })?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let request = RequestLine { method: "GET", target };
        let remaining = self.limits.deadline.saturating_sub(self.started.elapsed());
        let mut retry = Retry::new(RetryPolicy {
            deadline: remaining.min(self.limits.retry.deadline),
            ..self.limits.retry
        });
        loop {
            self.take_budget(&request)?;
            let failure = match self.attempt(&url).await {
                Ok(Ok(body)) => return Ok((request, body)),
                Ok(Err(failure)) | Err(failure) => failure,
            };
            if !failure.retryable {
                return Err(failure.to_error(self.source_name, &request, retry.attempts()));
            }
            let attempt = retry.attempts();
            match retry.next_delay(failure.retry_after) {
                Ok(delay) => {
                    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(
                        source = self.source_name, %request, status = failure.status, attempt, delay_ms,
                        "admin API request failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(give_up) => {
                    tracing::warn!(source = self.source_name, %request, %give_up, "admin API request failed, giving up");
                    let failure = Failure { message: format!("{} ({give_up})", failure.message), ..failure };
                    return Err(failure.to_error(self.source_name, &request, attempt));
                }
            }
        }
    }

    fn take_budget(&self, request: &RequestLine) -> Result<(), ImportError> {
        let budget = |message: String| ImportError::Budget {
            source_name: self.source_name,
            request: request.clone(),
            message,
        };
        if self.started.elapsed() >= self.limits.deadline {
            return Err(budget(format!("the run's deadline of {:?} has passed", self.limits.deadline)));
        }
        let sent = self.sent.fetch_add(1, Ordering::Relaxed);
        if sent >= self.limits.max_requests {
            self.sent.fetch_sub(1, Ordering::Relaxed);
            return Err(budget(format!(
                "the run's budget of {} requests is spent",
                self.limits.max_requests
            )));
        }
        Ok(())
    }

    /// One attempt: `Ok(Ok(body))`, or the failure.
    async fn attempt(&self, url: &reqwest::Url) -> Result<Result<serde_json::Value, Failure>, Failure> {
        let mut builder = self.http.get(url.clone());
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.expose());
        }
        let response = builder.send().await.map_err(|e| Failure::transport(&e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| Failure::transport(&e))?;
        if (200..300).contains(&status) {
            return Ok(serde_json::from_slice(&body).map_err(|e| Failure {
                status: Some(status),
                message: format!("the body is not JSON: {e}"),
                retryable: false,
                retry_after: None,
                malformed: true,
            }));
        }
        Err(Failure {
            status: Some(status),
            message: error_message(&body),
            retryable: matches!(status, 408 | 429 | 500..=599),
            retry_after,
            malformed: false,
        })
    }
}

/// A failed attempt, before it becomes an [`ImportError`].
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
    malformed: bool,
}

impl Failure {
    fn transport(error: &reqwest::Error) -> Failure {
        // reqwest's message names the URL, which carries no credential; show its cause chain.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        Failure { status: None, message, retryable: true, retry_after: None, malformed: false }
    }

    fn to_error(&self, source_name: &'static str, request: &RequestLine, attempts: u32) -> ImportError {
        let request = request.clone();
        match self.status {
            _ if self.malformed => ImportError::Malformed {
                source_name,
                request,
                problems: vec![crate::error::Problem {
                    path: "(body)".into(),
                    message: self.message.clone(),
                }],
            },
            Some(status) => ImportError::Status {
                source_name,
                request,
                status,
                message: self.message.clone(),
                retryable: self.retryable,
                attempts,
            },
            None => ImportError::Transport { source_name, request, message: self.message.clone(), attempts },
        }
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 10.2.3); `None` when absent or unreadable.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The provider's own error message (`{"error": {"message": ...}}`, as Anthropic and OpenAI
/// send it), else the start of the body.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(message) = parsed.as_ref().and_then(|v| v.pointer("/error/message")).and_then(|m| m.as_str())
    {
        return message.to_string();
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(200).collect();
    if text.trim().is_empty() { "no error message".to_string() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO), "a date in the past means now");
        let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(120)).to_rfc2822();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&soon).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn debug_never_shows_a_credential() {
        let limits = Limits {
            max_requests: 1,
            deadline: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
        };
        let client = AdminClient::new(
            "anthropic",
            "http://x",
            vec![("x-api-key", Secret::new("sk-ant-admin-SECRET"))],
            limits,
        )
        .unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("SECRET") && shown.contains("x-api-key"), "{shown}");
    }

    #[test]
    fn error_messages_come_from_the_provider_shape() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        assert_eq!(error_message(body), "slow down");
        assert_eq!(error_message(b"<html>bad gateway</html>"), "<html>bad gateway</html>");
        assert_eq!(error_message(b""), "no error message");
    }
}

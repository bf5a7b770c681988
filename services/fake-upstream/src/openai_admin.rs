//! A fake of OpenAI's organization usage API for completions
//! (`GET /v1/organization/usage/completions`), for the OpenAI importer's tests and the demo.
//!
//! Built from the documented shapes only (OpenAI's API reference, "Usage > Completions"): the
//! admin key as `Authorization: Bearer` is required; `start_time` (required, Unix seconds),
//! `end_time`, `bucket_width`, `group_by`, `limit` and `page` select the buckets; an answer is
//! `{"object": "page", "data": [...], "has_more": bool, "next_page": string|null}`, errors are
//! OpenAI's `{"error": {"message", "type", "param", "code"}}`. The fake holds buckets of one
//! width (those it was given, see [`completions_bucket`]) and answers them a page at a time
//! ([`FakeAdminConfig::page_size`] buckets at most, fewer when `limit` says so).
//!
//! The server is the Anthropic fake's core ([`FakeAdmin`] in the [`OpenAi`] dialect): requests
//! are recorded the same way ([`crate::admin::AdminRequest`], with the instant each arrived),
//! and the same [`crate::admin::AdminScript`]s change the next answers: an error status with
//! headers, or the normal page with a field changed (a malformed page).

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::admin::{AdminDialect, FakeAdmin, FakeAdminConfig, Window, param};

/// The usage API's path.
pub const USAGE_PATH: &str = "/v1/organization/usage/completions";

/// Settings of the fake usage API (the admin key is sent as `Authorization: Bearer`).
pub type FakeOpenAiAdminConfig = FakeAdminConfig;

/// A running fake usage API.
pub type FakeOpenAiAdmin = FakeAdmin<OpenAi>;

/// OpenAI's usage API, as the module doc says.
#[derive(Debug)]
pub struct OpenAi;

impl AdminDialect for OpenAi {
    const PATH: &'static str = USAGE_PATH;
    const PAGE_OBJECT: Option<&'static str> = Some("page");
    const UNAUTHORIZED: (&'static str, &'static str) =
        ("invalid_request_error", "Incorrect API key provided");
    const NOT_FOUND: &'static str = "invalid_request_error";
    const UNKNOWN_PAGE: &'static str = "page: unknown cursor";

    fn authorized(headers: &HeaderMap, admin_key: &str) -> bool {
        let expected = format!("Bearer {admin_key}");
        headers.get("authorization").is_some_and(|v| v.as_bytes() == expected.as_bytes())
    }

    fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
        let body = json!({"error": {"message": message, "type": error_type, "param": null, "code": null}});
        (status, axum::Json(body)).into_response()
    }

    fn window(query: &[(String, String)]) -> Result<Window, String> {
        let seconds = |name: &str| {
            param(query, name).map(|v| v.parse::<i64>().ok().and_then(|s| DateTime::from_timestamp(s, 0)))
        };
        let Some(Some(start_time)) = seconds("start_time") else {
            return Err("start_time: Unix seconds are required".to_string());
        };
        match seconds("end_time") {
            None => Ok((start_time, None)),
            Some(Some(t)) => Ok((start_time, Some(t))),
            Some(None) => Err("end_time: not Unix seconds".to_string()),
        }
    }

    fn check(query: &[(String, String)]) -> Result<(), String> {
        const DIMENSIONS: [&str; 6] =
            ["project_id", "user_id", "api_key_id", "model", "batch", "service_tier"];
        match query.iter().find(|(k, v)| k == "group_by" && !DIMENSIONS.contains(&v.as_str())) {
            Some((_, unknown)) => Err(format!("group_by: unknown field {unknown}")),
            None => Ok(()),
        }
    }

    fn span(bucket: &Value) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let at = |field: &str| {
            bucket.get(field).and_then(Value::as_i64).and_then(|s| DateTime::from_timestamp(s, 0))
        };
        (at("start_time"), at("end_time"))
    }
}

/// A bucket of `width` starting at `start`, holding `results` (see [`completions_result`]).
pub fn completions_bucket(start: DateTime<Utc>, width: TimeDelta, results: Vec<Value>) -> Value {
    json!({
        "object": "bucket",
        "start_time": start.timestamp(),
        "end_time": (start + width).timestamp(),
        "results": results,
    })
}

/// Token counts of one result, as the usage API names them: `input` includes `input_cached`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompletionsTokens {
    pub input: i64,
    pub input_cached: i64,
    pub output: i64,
    pub input_audio: i64,
    pub output_audio: i64,
    pub requests: i64,
}

/// The grouped dimensions of one result (`None`: null).
#[derive(Debug, Clone, Copy, Default)]
pub struct CompletionsGroup<'a> {
    pub project_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub model: &'a str,
    pub batch: bool,
    /// `default` when `None` is not wanted; null here is sent as null.
    pub service_tier: Option<&'a str>,
}

/// One result grouped by every dimension.
pub fn completions_result(group: CompletionsGroup<'_>, tokens: CompletionsTokens) -> Value {
    json!({
        "object": "organization.usage.completions.result",
        "input_tokens": tokens.input,
        "output_tokens": tokens.output,
        "input_cached_tokens": tokens.input_cached,
        "input_audio_tokens": tokens.input_audio,
        "output_audio_tokens": tokens.output_audio,
        "num_model_requests": tokens.requests,
        "project_id": group.project_id,
        "user_id": group.user_id,
        "api_key_id": group.api_key_id,
        "model": group.model,
        "batch": group.batch,
        "service_tier": group.service_tier,
    })
}

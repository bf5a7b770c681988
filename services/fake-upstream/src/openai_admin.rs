//! A fake of OpenAI's organization usage API for completions
//! (`GET /v1/organization/usage/completions`), for the OpenAI importer's tests and the demo.
//!
//! Built from the documented shapes only (OpenAI's API reference, "Usage > Completions"): the
//! admin key as `Authorization: Bearer` is required; `start_time` (required, Unix seconds),
//! `end_time`, `bucket_width`, `group_by`, `limit` and `page` select the buckets; an answer is
//! `{"object": "page", "data": [...], "has_more": bool, "next_page": string|null}`, errors are
//! OpenAI's `{"error": {"message", "type", "param", "code"}}`. The fake holds buckets of one
//! width (those it was given, see [`completions_bucket`]) and answers them a page at a time
//! ([`FakeOpenAiAdminConfig::page_size`] buckets at most, fewer when `limit` says so).
//!
//! Requests are recorded like the Anthropic fake's ([`AdminRequest`], with the instant each
//! arrived), and the same [`AdminScript`]s change the next answers: an error status with
//! headers, or the normal page with a field changed (a malformed page).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminRequest, AdminScript};

/// The usage API's path.
pub const USAGE_PATH: &str = "/v1/organization/usage/completions";

/// Settings of the fake usage API.
#[derive(Debug, Clone)]
pub struct FakeOpenAiAdminConfig {
    /// The admin key requests must present as `Authorization: Bearer`.
    pub admin_key: String,
    /// `1m`, `1h` or `1d`: the width of the buckets held; other widths are refused.
    pub bucket_width: String,
    /// Buckets per page at most.
    pub page_size: usize,
    /// The buckets, in time order (see [`completions_bucket`]).
    pub buckets: Vec<Value>,
}

/// A running fake usage API.
pub struct FakeOpenAiAdmin {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

struct Shared {
    config: Mutex<FakeOpenAiAdminConfig>,
    scripts: Mutex<VecDeque<AdminScript>>,
    recorded: Mutex<Vec<AdminRequest>>,
}

impl FakeOpenAiAdmin {
    /// Serve on `listener` (bound by the caller) in a spawned task.
    pub fn start(listener: TcpListener, config: FakeOpenAiAdminConfig) -> std::io::Result<FakeOpenAiAdmin> {
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            scripts: Mutex::default(),
            recorded: Mutex::default(),
        });
        let shutdown = CancellationToken::new();
        let router = Router::new()
            .route(USAGE_PATH, axum::routing::get(completions_usage))
            .fallback(|| async {
                error(StatusCode::NOT_FOUND, "invalid_request_error", "no such route in the fake")
            })
            .with_state(shared.clone());
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await
        });
        Ok(FakeOpenAiAdmin { address, shared, shutdown, server })
    }

    /// `http://127.0.0.1:PORT`, without `/v1`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<AdminRequest> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// Queue a behaviour for the next request without one queued before it.
    pub fn push_script(&self, script: AdminScript) {
        self.shared.scripts.lock().unwrap().push_back(script);
    }

    /// Replace the buckets held (a provider whose numbers changed).
    pub fn set_buckets(&self, buckets: Vec<Value>) {
        self.shared.config.lock().unwrap().buckets = buckets;
    }

    /// Stop serving and wait for the server task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
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

fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": error_type, "param": null, "code": null}});
    (status, axum::Json(body)).into_response()
}

async fn completions_usage(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let at = Instant::now();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let config = shared.config.lock().unwrap().clone();
    let expected = format!("Bearer {}", config.admin_key);
    let authorized = headers.get("authorization").is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let response = answer(&shared, &config, authorized, &query);
    shared.recorded.lock().unwrap().push(AdminRequest {
        at,
        path: USAGE_PATH.to_string(),
        query,
        authorized,
        status: response.status().as_u16(),
    });
    response
}

fn answer(
    shared: &Shared,
    config: &FakeOpenAiAdminConfig,
    authorized: bool,
    query: &[(String, String)],
) -> Response {
    let bad = |message: &str| error(StatusCode::BAD_REQUEST, "invalid_request_error", message);
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "invalid_request_error", "Incorrect API key provided");
    }
    let edit = match shared.scripts.lock().unwrap().pop_front() {
        None | Some(AdminScript::Pass) => None,
        Some(AdminScript::Status { status, error_type, headers }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error(status, &error_type, "scripted by the test");
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    response.headers_mut().insert(name, value);
                }
            }
            return response;
        }
        Some(AdminScript::Edit { pointer, value }) => Some((pointer, value)),
    };
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let seconds =
        |name: &str| param(name).map(|v| v.parse::<i64>().ok().and_then(|s| DateTime::from_timestamp(s, 0)));
    let Some(Some(start_time)) = seconds("start_time") else {
        return bad("start_time: Unix seconds are required");
    };
    let end_time = match seconds("end_time") {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => return bad("end_time: not Unix seconds"),
    };
    let width = param("bucket_width").unwrap_or("1d");
    if width != config.bucket_width {
        return bad(&format!("the fake holds {} buckets, not {width}", config.bucket_width));
    }
    const DIMENSIONS: [&str; 6] = ["project_id", "user_id", "api_key_id", "model", "batch", "service_tier"];
    if let Some((_, unknown)) =
        query.iter().find(|(k, v)| k == "group_by" && !DIMENSIONS.contains(&v.as_str()))
    {
        return bad(&format!("group_by: unknown field {unknown}"));
    }
    let (default_limit, max_limit) = match width {
        "1m" => (60, 1440),
        "1h" => (24, 168),
        _ => (7, 31),
    };
    let limit = match param("limit").map(str::parse::<usize>) {
        None => default_limit,
        Some(Ok(n)) if (1..=max_limit).contains(&n) => n,
        Some(_) => return bad("limit: out of range"),
    };
    let offset = match param("page") {
        None => 0,
        Some(token) => match token.strip_prefix("page_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return bad("page: unknown cursor"),
        },
    };
    let bucket_time = |b: &Value, field: &str| {
        b.get(field).and_then(Value::as_i64).and_then(|s| DateTime::from_timestamp(s, 0))
    };
    let selected: Vec<&Value> = config
        .buckets
        .iter()
        .filter(|b| bucket_time(b, "start_time").is_some_and(|s| s >= start_time))
        .filter(|b| end_time.is_none_or(|end| bucket_time(b, "end_time").is_some_and(|e| e <= end)))
        .collect();
    let size = limit.min(config.page_size.max(1));
    let page: Vec<Value> = selected.iter().skip(offset).take(size).map(|b| (*b).clone()).collect();
    let has_more = offset + page.len() < selected.len();
    let mut body = json!({
        "object": "page",
        "data": page,
        "has_more": has_more,
        "next_page": if has_more { Value::String(format!("page_{}", offset + size)) } else { Value::Null },
    });
    if let Some((pointer, value)) = edit {
        let Some(slot) = body.pointer_mut(&pointer) else {
            return bad(&format!("the script's edit points at {pointer}, which this page does not have"));
        };
        *slot = value;
    }
    axum::Json(body).into_response()
}

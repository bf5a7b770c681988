//! A fake of Anthropic's Admin API messages usage report
//! (`GET /v1/organizations/usage_report/messages`), for the importer's tests and the demo.
//!
//! Built from the documented shapes only ("Get Messages Usage Report",
//! <https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages>): the
//! `x-api-key` admin key and the `anthropic-version` header are required; `starting_at`
//! (required), `ending_at`, `bucket_width`, `limit` and `page` select the buckets; an answer is
//! `{"data": [...], "has_more": bool, "next_page": string|null}`, errors are Anthropic's
//! `{"type": "error", "error": {"type", "message"}}`. The fake holds buckets of one width (those
//! it was given, see [`usage_bucket`]) and answers them a page at a time
//! ([`FakeAdminConfig::page_size`] buckets at most, fewer when `limit` says so).
//!
//! Every request is recorded with the instant it arrived ([`AdminRequest`]), so a test can
//! check that a retry came after the `Retry-After` it was given. [`AdminScript`]s queued with
//! [`FakeAnthropicAdmin::push_script`] change the next answers, one per request: an error
//! status with headers, or the normal page with a field changed (a malformed page).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The report's path.
pub const USAGE_REPORT_PATH: &str = "/v1/organizations/usage_report/messages";

/// Settings of the fake Admin API.
#[derive(Debug, Clone)]
pub struct FakeAdminConfig {
    /// The admin key requests must present in `x-api-key`.
    pub admin_key: String,
    /// `1m`, `1h` or `1d`: the width of the buckets held; other widths are refused.
    pub bucket_width: String,
    /// Buckets per page at most.
    pub page_size: usize,
    /// The buckets, in time order (see [`usage_bucket`]).
    pub buckets: Vec<Value>,
}

/// A behaviour for the next request, instead of its normal answer.
#[derive(Debug, Clone)]
pub enum AdminScript {
    /// Answer normally (to let a request through before the next script).
    Pass,
    /// Answer with this status, headers and an Anthropic error body of `error_type`.
    Status { status: u16, error_type: String, headers: Vec<(String, String)> },
    /// The normal answer with the value at the JSON pointer replaced (a malformed page).
    Edit { pointer: String, value: Value },
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct AdminRequest {
    pub at: Instant,
    pub path: String,
    /// Query pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// Whether the right admin key and an `anthropic-version` came with it.
    pub authorized: bool,
    /// The status answered.
    pub status: u16,
}

impl AdminRequest {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A running fake Admin API.
pub struct FakeAnthropicAdmin {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

struct Shared {
    config: Mutex<FakeAdminConfig>,
    scripts: Mutex<VecDeque<AdminScript>>,
    recorded: Mutex<Vec<AdminRequest>>,
}

impl FakeAnthropicAdmin {
    /// Serve on `listener` (bound by the caller) in a spawned task.
    pub fn start(listener: TcpListener, config: FakeAdminConfig) -> std::io::Result<FakeAnthropicAdmin> {
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            scripts: Mutex::default(),
            recorded: Mutex::default(),
        });
        let shutdown = CancellationToken::new();
        let router = Router::new()
            .route(USAGE_REPORT_PATH, axum::routing::get(usage_report))
            .fallback(|| async {
                error(StatusCode::NOT_FOUND, "not_found_error", "no such route in the fake")
            })
            .with_state(shared.clone());
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await
        });
        Ok(FakeAnthropicAdmin { address, shared, shutdown, server })
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

/// A bucket of `width` starting at `start`, holding `results` (see [`usage_result`]).
pub fn usage_bucket(start: DateTime<Utc>, width: TimeDelta, results: Vec<Value>) -> Value {
    json!({
        "starting_at": start.to_rfc3339_opts(SecondsFormat::Secs, true),
        "ending_at": (start + width).to_rfc3339_opts(SecondsFormat::Secs, true),
        "results": results,
    })
}

/// Token counts of one result, as the report names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportTokens {
    pub uncached_input: i64,
    pub cache_read: i64,
    pub cache_write_5m: i64,
    pub cache_write_1h: i64,
    pub output: i64,
    pub web_searches: i64,
}

/// One result grouped by every dimension: key, workspace (null: the default workspace) and
/// model given; standard tier, the 0-200k context window and global inference.
pub fn usage_result(
    api_key_id: Option<&str>,
    workspace_id: Option<&str>,
    model: &str,
    tokens: ReportTokens,
) -> Value {
    json!({
        "api_key_id": api_key_id,
        "workspace_id": workspace_id,
        "model": model,
        "service_tier": "standard",
        "context_window": "0-200k",
        "inference_geo": "global",
        "uncached_input_tokens": tokens.uncached_input,
        "cache_read_input_tokens": tokens.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": tokens.cache_write_5m,
            "ephemeral_1h_input_tokens": tokens.cache_write_1h,
        },
        "output_tokens": tokens.output,
        "server_tool_use": {"web_search_requests": tokens.web_searches},
    })
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (status, axum::Json(json!({"type": "error", "error": {"type": error_type, "message": message}})))
        .into_response()
}

fn time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc))
}

async fn usage_report(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let at = Instant::now();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let config = shared.config.lock().unwrap().clone();
    let authorized = headers.get("x-api-key").is_some_and(|k| k.as_bytes() == config.admin_key.as_bytes())
        && headers.contains_key("anthropic-version");
    let response = answer(&shared, &config, authorized, &query);
    shared.recorded.lock().unwrap().push(AdminRequest {
        at,
        path: USAGE_REPORT_PATH.to_string(),
        query,
        authorized,
        status: response.status().as_u16(),
    });
    response
}

fn answer(
    shared: &Shared,
    config: &FakeAdminConfig,
    authorized: bool,
    query: &[(String, String)],
) -> Response {
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key or missing anthropic-version",
        );
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
    let Some(starting_at) = param("starting_at").and_then(time) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "starting_at: an RFC 3339 time is required",
        );
    };
    let ending_at = match param("ending_at") {
        None => None,
        Some(value) => match time(value) {
            Some(t) => Some(t),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "ending_at: not an RFC 3339 time",
                );
            }
        },
    };
    let width = param("bucket_width").unwrap_or("1d");
    if width != config.bucket_width {
        let message = format!("the fake holds {} buckets, not {width}", config.bucket_width);
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
    }
    let (default_limit, max_limit) = match width {
        "1m" => (60, 1440),
        "1h" => (24, 168),
        _ => (7, 31),
    };
    let limit = match param("limit").map(str::parse::<usize>) {
        None => default_limit,
        Some(Ok(n)) if (1..=max_limit).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", "limit: out of range"),
    };
    let offset = match param("page") {
        None => 0,
        Some(token) => match token.strip_prefix("page_").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return error(StatusCode::BAD_REQUEST, "invalid_request_error", "page: unknown token"),
        },
    };
    let bucket_time = |b: &Value, field: &str| b.get(field).and_then(Value::as_str).and_then(time);
    let selected: Vec<&Value> = config
        .buckets
        .iter()
        .filter(|b| bucket_time(b, "starting_at").is_some_and(|s| s >= starting_at))
        .filter(|b| ending_at.is_none_or(|end| bucket_time(b, "ending_at").is_some_and(|e| e <= end)))
        .collect();
    let size = limit.min(config.page_size.max(1));
    let page: Vec<Value> = selected.iter().skip(offset).take(size).map(|b| (*b).clone()).collect();
    let has_more = offset + page.len() < selected.len();
    let mut body = json!({
        "data": page,
        "has_more": has_more,
        "next_page": if has_more { Value::String(format!("page_{}", offset + size)) } else { Value::Null },
    });
    if let Some((pointer, value)) = edit {
        let Some(slot) = body.pointer_mut(&pointer) else {
            let message = format!("the script's edit points at {pointer}, which this page does not have");
            return error(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
        };
        *slot = value;
    }
    axum::Json(body).into_response()
}

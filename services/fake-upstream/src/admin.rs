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
//!
//! The server, the recording, the scripts and the paging are the core every provider's fake
//! shares ([`FakeAdmin`]); what differs (the path, the credentials, the error body, the window
//! parameters and the bucket times) is an [`AdminDialect`], here [`Anthropic`] and
//! [`crate::openai_admin::OpenAi`].

use std::collections::VecDeque;
use std::marker::PhantomData;
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

/// Settings of a fake admin API.
#[derive(Debug, Clone)]
pub struct FakeAdminConfig {
    /// The admin key requests must present (in `x-api-key` for Anthropic, as
    /// `Authorization: Bearer` for OpenAI).
    pub admin_key: String,
    /// `1m`, `1h` or `1d`: the width of the buckets held; other widths are refused.
    pub bucket_width: String,
    /// Buckets per page at most.
    pub page_size: usize,
    /// The buckets, in time order (see [`usage_bucket`], [`crate::openai_admin::completions_bucket`]).
    pub buckets: Vec<Value>,
}

/// A behaviour for the next request, instead of its normal answer.
#[derive(Debug, Clone)]
pub enum AdminScript {
    /// Answer normally (to let a request through before the next script).
    Pass,
    /// Answer with this status, headers and the provider's error body of `error_type`.
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
    /// Whether the right credentials came with it.
    pub authorized: bool,
    /// The status answered.
    pub status: u16,
}

impl AdminRequest {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }
}

/// A window asked of a fake: its start, and its end if any.
pub type Window = (DateTime<Utc>, Option<DateTime<Utc>>);

/// What one provider's admin API does its own way.
pub trait AdminDialect: Send + Sync + 'static {
    /// The report's path.
    const PATH: &'static str;
    /// The `object` of a page, if the provider writes one.
    const PAGE_OBJECT: Option<&'static str>;
    /// The error type and message of a request without the right credentials.
    const UNAUTHORIZED: (&'static str, &'static str);
    /// The error type of an unknown route.
    const NOT_FOUND: &'static str;
    /// The message of an unknown `page`.
    const UNKNOWN_PAGE: &'static str;
    /// Whether `headers` carry the right credentials for `admin_key`.
    fn authorized(headers: &HeaderMap, admin_key: &str) -> bool;
    /// An error answer in the provider's shape.
    fn error(status: StatusCode, error_type: &str, message: &str) -> Response;
    /// The window asked, from the query's parameters, or the message of a 400.
    fn window(query: &[(String, String)]) -> Result<Window, String>;
    /// Further checks of the query, after the width (e.g. `group_by`): the message of a 400.
    fn check(_query: &[(String, String)]) -> Result<(), String> {
        Ok(())
    }
    /// A held bucket's start and end.
    fn span(bucket: &Value) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
}

/// A running fake admin API of dialect `D`.
pub struct FakeAdmin<D> {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    dialect: PhantomData<D>,
}

/// A running fake of Anthropic's Admin API.
pub type FakeAnthropicAdmin = FakeAdmin<Anthropic>;

struct Shared {
    config: Mutex<FakeAdminConfig>,
    scripts: Mutex<VecDeque<AdminScript>>,
    recorded: Mutex<Vec<AdminRequest>>,
}

impl<D: AdminDialect> FakeAdmin<D> {
    /// Serve on `listener` (bound by the caller) in a spawned task.
    pub fn start(listener: TcpListener, config: FakeAdminConfig) -> std::io::Result<FakeAdmin<D>> {
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            scripts: Mutex::default(),
            recorded: Mutex::default(),
        });
        let shutdown = CancellationToken::new();
        let router = Router::new()
            .route(D::PATH, axum::routing::get(report::<D>))
            .fallback(|| async { D::error(StatusCode::NOT_FOUND, D::NOT_FOUND, "no such route in the fake") })
            .with_state(shared.clone());
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await
        });
        Ok(FakeAdmin { address, shared, shutdown, server, dialect: PhantomData })
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

/// Anthropic's Admin API, as the module doc says.
#[derive(Debug)]
pub struct Anthropic;

impl AdminDialect for Anthropic {
    const PATH: &'static str = USAGE_REPORT_PATH;
    const PAGE_OBJECT: Option<&'static str> = None;
    const UNAUTHORIZED: (&'static str, &'static str) =
        ("authentication_error", "invalid x-api-key or missing anthropic-version");
    const NOT_FOUND: &'static str = "not_found_error";
    const UNKNOWN_PAGE: &'static str = "page: unknown token";

    fn authorized(headers: &HeaderMap, admin_key: &str) -> bool {
        headers.get("x-api-key").is_some_and(|k| k.as_bytes() == admin_key.as_bytes())
            && headers.contains_key("anthropic-version")
    }

    fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
        let body = json!({"type": "error", "error": {"type": error_type, "message": message}});
        (status, axum::Json(body)).into_response()
    }

    fn window(query: &[(String, String)]) -> Result<Window, String> {
        let param = |name: &str| param(query, name);
        let Some(starting_at) = param("starting_at").and_then(time) else {
            return Err("starting_at: an RFC 3339 time is required".to_string());
        };
        match param("ending_at") {
            None => Ok((starting_at, None)),
            Some(value) => match time(value) {
                Some(t) => Ok((starting_at, Some(t))),
                None => Err("ending_at: not an RFC 3339 time".to_string()),
            },
        }
    }

    fn span(bucket: &Value) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let at = |field: &str| bucket.get(field).and_then(Value::as_str).and_then(time);
        (at("starting_at"), at("ending_at"))
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

/// The first value of a query parameter.
pub(crate) fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc))
}

async fn report<D: AdminDialect>(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let at = Instant::now();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let config = shared.config.lock().unwrap().clone();
    let authorized = D::authorized(&headers, &config.admin_key);
    let response = answer::<D>(&shared, &config, authorized, &query);
    shared.recorded.lock().unwrap().push(AdminRequest {
        at,
        path: D::PATH.to_string(),
        query,
        authorized,
        status: response.status().as_u16(),
    });
    response
}

fn answer<D: AdminDialect>(
    shared: &Shared,
    config: &FakeAdminConfig,
    authorized: bool,
    query: &[(String, String)],
) -> Response {
    let bad = |message: &str| D::error(StatusCode::BAD_REQUEST, "invalid_request_error", message);
    if !authorized {
        let (error_type, message) = D::UNAUTHORIZED;
        return D::error(StatusCode::UNAUTHORIZED, error_type, message);
    }
    let edit = match shared.scripts.lock().unwrap().pop_front() {
        None | Some(AdminScript::Pass) => None,
        Some(AdminScript::Status { status, error_type, headers }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = D::error(status, &error_type, "scripted by the test");
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    response.headers_mut().insert(name, value);
                }
            }
            return response;
        }
        Some(AdminScript::Edit { pointer, value }) => Some((pointer, value)),
    };
    let param = |name: &str| param(query, name);
    let (start, end) = match D::window(query) {
        Ok(window) => window,
        Err(message) => return bad(&message),
    };
    let width = param("bucket_width").unwrap_or("1d");
    if width != config.bucket_width {
        return bad(&format!("the fake holds {} buckets, not {width}", config.bucket_width));
    }
    if let Err(message) = D::check(query) {
        return bad(&message);
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
            None => return bad(D::UNKNOWN_PAGE),
        },
    };
    let selected: Vec<&Value> = config
        .buckets
        .iter()
        .filter(|b| D::span(b).0.is_some_and(|s| s >= start))
        .filter(|b| end.is_none_or(|end| D::span(b).1.is_some_and(|e| e <= end)))
        .collect();
    let size = limit.min(config.page_size.max(1));
    let page: Vec<Value> = selected.iter().skip(offset).take(size).map(|b| (*b).clone()).collect();
    let has_more = offset + page.len() < selected.len();
    let mut body = serde_json::Map::new();
    if let Some(object) = D::PAGE_OBJECT {
        body.insert("object".into(), object.into());
    }
    body.insert("data".into(), page.into());
    body.insert("has_more".into(), has_more.into());
    let next_page = if has_more { Value::String(format!("page_{}", offset + size)) } else { Value::Null };
    body.insert("next_page".into(), next_page);
    let mut body = Value::Object(body);
    if let Some((pointer, value)) = edit {
        let Some(slot) = body.pointer_mut(&pointer) else {
            return bad(&format!("the script's edit points at {pointer}, which this page does not have"));
        };
        *slot = value;
    }
    axum::Json(body).into_response()
}

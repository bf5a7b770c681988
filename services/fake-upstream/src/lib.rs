//! A fake LLM provider on loopback: Anthropic Messages (`/v1/messages`, `count_tokens`), OpenAI
//! Chat Completions, Responses, embeddings and the model list, in the shapes the official SDKs
//! parse, streaming and not. For the ingress tests, the load benchmark and `faregate up --demo`.
//!
//! Usage is deterministic and set per request by the `x-fake-usage` header (see [`FakeUsage`]);
//! `x-fake-model` changes the served model reported. Every request is recorded in order
//! ([`FakeUpstream::requests`]) and [`Script`]s queued with [`FakeUpstream::push_script`] change
//! the behaviour of the next requests (an error status, a stream cut, a delay, an account out
//! of funds). Request bodies
//! may be gzip or zstd encoded. Responses are built with no work beyond formatting, so the
//! server is cheap enough to benchmark a gateway against.
//!
//! [`admin`] fakes Anthropic's Admin API usage report and [`openai_admin`] OpenAI's organization
//! usage API (completions), for the importers.

pub mod admin;
mod anthropic;
mod content;
mod openai;
pub mod openai_admin;
mod request;
mod responses;
mod sse;
mod usage;

use axum::serve::ListenerExt as _;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use request::RecordedRequest;
pub use usage::{
    DEFAULT_OUTPUT_TOKENS, FakeUsage, MODEL_HEADER, USAGE_HEADER, default_input_tokens, default_output_tokens,
};

use request::Incoming;
use sse::StreamPlan;

/// Settings of a fake upstream.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: String,
    /// Pause between streamed events.
    pub stream_delay: Duration,
    /// Pause before every answer (a model's latency).
    pub latency: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            listen: "127.0.0.1:0".to_string(),
            stream_delay: Duration::ZERO,
            latency: Duration::ZERO,
        }
    }
}

/// A behaviour for the next request instead of the default answer; scripts apply one per
/// request, in the order they were pushed, whatever the route.
#[derive(Debug, Clone)]
pub enum Script {
    /// Answer with this status, body and extra headers. A `Null` body is replaced by an error
    /// in the route's provider shape (Anthropic on `/v1/messages*`, OpenAI elsewhere).
    Status { status: u16, body: Value, headers: Vec<(String, String)> },
    /// Send this many SSE events of the normal answer, then drop the connection. A
    /// non-streaming request gets its connection dropped before any body.
    CutStreamAfter { events: usize },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// The provider account is out of funds, as each provider says it: Anthropic a 400
    /// `invalid_request_error` about a too-low credit balance, OpenAI a 429
    /// `insufficient_quota`.
    OutOfFunds,
}

/// A running fake upstream; dropping it without [`FakeUpstream::shutdown`] leaves the server
/// running until the runtime ends.
pub struct FakeUpstream {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl FakeUpstream {
    /// Bind `config.listen` and serve in a spawned task.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeUpstream> {
        let listener = TcpListener::bind(&config.listen).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&config, true));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, shared.clone(), shutdown.clone()));
        Ok(FakeUpstream { address, shared, shutdown, server })
    }

    /// `http://127.0.0.1:PORT`, with no trailing slash and no `/v1`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// Forget the requests recorded so far.
    pub fn clear_requests(&self) {
        self.shared.recorded.lock().unwrap().clear();
    }

    /// Record requests (the default) or not: a load benchmark turns recording off so memory
    /// stays flat.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// Queue a behaviour for the next request that has none queued before it.
    pub fn push_script(&self, step: Script) {
        self.shared.scripts.lock().unwrap().push_back(step);
    }

    /// Stop accepting, let in-flight requests finish, and wait for the server task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "fake upstream ended with an error"),
            Err(error) => tracing::warn!(%error, "fake upstream task failed"),
        }
    }
}

/// Serve on `config.listen` until `shutdown` is cancelled, without recording requests (for
/// the `faregate fake-upstream` command). Logs the URL once listening.
pub async fn run(config: FakeConfig, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = TcpListener::bind(&config.listen).await?;
    serve_on(listener, config, shutdown).await
}

/// [`run`] on a listener bound by the caller (who can then tell its port before serving);
/// `config.listen` is not used.
pub async fn serve_on(
    listener: TcpListener,
    config: FakeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(url = %format!("http://{}", listener.local_addr()?), "fake upstream listening");
    serve(listener, Arc::new(Shared::new(&config, false)), shutdown).await
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new().fallback(handle).with_state(shared);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// State shared by every request.
struct Shared {
    stream_delay: Duration,
    latency: Duration,
    recording: AtomicBool,
    recorded: Mutex<Vec<RecordedRequest>>,
    scripts: Mutex<VecDeque<Script>>,
    next_id: AtomicU64,
}

impl Shared {
    fn new(config: &FakeConfig, recording: bool) -> Shared {
        Shared {
            stream_delay: config.stream_delay,
            latency: config.latency,
            recording: AtomicBool::new(recording),
            recorded: Mutex::default(),
            scripts: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    fn next_script(&self) -> Option<Script> {
        self.scripts.lock().unwrap().pop_front()
    }
}

/// The API family of a route, which decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    Anthropic,
    OpenAi,
}

/// What a provider module needs to answer one request.
pub(crate) struct Call<'a> {
    pub body: &'a Value,
    pub usage: FakeUsage,
    /// The model the response reports.
    pub model: String,
    /// Unique per server, for `msg_…`, `chatcmpl-…` and request ids.
    pub id: u64,
    pub stream: bool,
    pub plan: StreamPlan,
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let mut incoming = match Incoming::read(request, shared.recording.load(Ordering::Relaxed)).await {
        Ok(incoming) => incoming,
        Err(response) => return response,
    };
    if let Some(record) = incoming.record() {
        shared.recorded.lock().unwrap().push(record);
    }
    let provider = incoming.provider;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut plan = StreamPlan { delay: shared.stream_delay, cut_after: None };
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    match shared.next_script() {
        None => {}
        Some(Script::Status { status, body, headers }) => {
            return request::scripted_status(provider, id, status, body, &headers);
        }
        Some(Script::CutStreamAfter { events }) => plan.cut_after = Some(events),
        Some(Script::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Script::OutOfFunds) => return request::out_of_funds(provider, id),
    }
    let body = match incoming.take_json_body() {
        Ok(body) => body,
        Err(message) => return request::error(provider, id, StatusCode::BAD_REQUEST, &message),
    };
    let usage = match FakeUsage::for_request(&body, incoming.usage_header.as_deref()) {
        Ok(usage) => usage,
        Err(message) => return request::error(provider, id, StatusCode::BAD_REQUEST, &message),
    };
    let model = match incoming.model_header.take() {
        Some(model) => model,
        None => body.get("model").and_then(Value::as_str).unwrap_or("fake-model").to_string(),
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let call = Call { body: &body, usage, model, id, stream, plan };
    let response = match (&incoming.method, incoming.path.as_str()) {
        (&Method::POST, "/v1/messages") => anthropic::messages(&call),
        (&Method::POST, "/v1/messages/count_tokens") => anthropic::count_tokens(&call),
        (&Method::POST, "/v1/chat/completions") => openai::chat_completions(&call),
        (&Method::POST, "/v1/responses") => responses::create(&call),
        (&Method::POST, "/v1/embeddings") => openai::embeddings(&call),
        (&Method::GET, "/v1/models") => openai::models(provider, &call),
        (method, path) => {
            let message = format!("no route for {method} {path}");
            return request::error(provider, id, StatusCode::NOT_FOUND, &message);
        }
    };
    match plan.cut_after {
        Some(_) if !call.stream => request::dropped_connection(),
        _ => response,
    }
}

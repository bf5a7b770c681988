//! The gateway request path: authenticate, read and check the body, attribute, enforce, forward,
//! and meter. Streaming responses pass through chunk by chunk while their usage is read on the
//! way (see [`MeteredStream`]); whole responses are read once, metered and returned unchanged.
//!
//! What is changed on the way up: the client's virtual key is replaced by the upstream's
//! credential (kept in passthrough mode), hop-by-hop headers, `accept-encoding` (usage must be
//! readable) and Faregate's own `x-faregate-*` headers are dropped, a downgrade decision swaps
//! the model, and an OpenAI chat stream is asked for its usage (`stream_options.include_usage`)
//! when the client did not. Everything else (anthropic-beta, anthropic-version, …) passes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use serde::Deserialize;

use faregate_core::event::{
    Attribution, DecisionState, Endpoint, Outcome, SourceKind, TokenCounts, UsageEvent, UsageSource,
};

use crate::attribution;
use crate::config::{AuthMode, Provider};
use crate::errors::ApiError;
use crate::gateway::Gateway;
use crate::keys::hash_secret;
use crate::meter::Meter;
use crate::upstream::{Deadline, ReadError, UpstreamError, read_limited};
use crate::usage::{Api, Observed, StreamUsage};

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus the ones the
/// gateway sets itself.
const DROPPED_UP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
];
const DROPPED_DOWN: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

impl Api {
    pub fn provider(self) -> Provider {
        match self {
            Api::AnthropicMessages | Api::AnthropicCountTokens => Provider::Anthropic,
            _ => Provider::Openai,
        }
    }

    fn endpoint(self) -> Endpoint {
        match self {
            Api::AnthropicMessages => Endpoint::Messages,
            Api::AnthropicCountTokens => Endpoint::CountTokens,
            Api::OpenaiChat => Endpoint::ChatCompletions,
            Api::OpenaiResponses => Endpoint::Responses,
            Api::OpenaiEmbeddings => Endpoint::Embeddings,
            Api::OpenaiModels => Endpoint::Other,
        }
    }
}

/// The few request fields the gateway reads; the rest is skipped unparsed.
#[derive(Debug, Default, Deserialize)]
struct RequestHead {
    model: Option<String>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<serde_json::Value>,
    metadata: Option<Metadata>,
    /// Output limits: Anthropic and OpenAI chat, OpenAI chat's newer name, OpenAI responses
    /// (read leniently: the provider judges their validity, not the gateway).
    max_tokens: Option<serde_json::Value>,
    max_completion_tokens: Option<serde_json::Value>,
    max_output_tokens: Option<serde_json::Value>,
}

impl RequestHead {
    fn output_limit(&self) -> Option<i64> {
        [&self.max_output_tokens, &self.max_completion_tokens, &self.max_tokens]
            .into_iter()
            .find_map(|v| v.as_ref().and_then(serde_json::Value::as_i64))
    }
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    user_id: Option<String>,
}

/// The identity a request runs under.
pub(crate) struct Identity {
    pub(crate) org: String,
    pub(crate) team: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) key_id: Option<String>,
    pub(crate) allowed_models: Vec<String>,
    pub(crate) rpm: Option<i32>,
    pub(crate) tpm: Option<i64>,
}

impl Identity {
    /// The request's attribution under this identity, for decisions and headroom.
    pub(crate) fn attribution<'a>(
        &'a self,
        project: Option<&'a str>,
        model: Option<&'a str>,
        tool: Option<&'a str>,
    ) -> Attribution<'a> {
        Attribution {
            org: &self.org,
            team: self.team.as_deref(),
            user: self.user.as_deref(),
            key_id: self.key_id.as_deref(),
            project,
            model,
            tool,
        }
    }

    /// An identity a trusted gateway vouches for (no key of this gateway's: no model
    /// allowlist, no rate limit).
    pub(crate) fn trusted(
        org: String,
        team: Option<String>,
        user: Option<String>,
        key_id: Option<String>,
    ) -> Identity {
        Identity { org, team, user, key_id, allowed_models: vec![], rpm: None, tpm: None }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The key a client presented, from `x-api-key` or `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> &str {
    header_str(headers, "x-api-key")
        .or_else(|| header_str(headers, "authorization").and_then(|v| v.strip_prefix("Bearer ")))
        .map(str::trim)
        .unwrap_or("")
}

pub(crate) fn identify(gw: &Gateway, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let secret = presented_key(headers);
    match gw.config.auth {
        AuthMode::VirtualKeys => {
            let key = gw.keys.authenticate(secret, Utc::now()).map_err(|refusal| {
                metrics::counter!("faregate_ingress_auth_refused_total").increment(1);
                ApiError::unauthorized(format!("Faregate: {refusal}"))
            })?;
            Ok(Identity {
                org: key.org.clone(),
                team: key.team.clone(),
                user: key.user.clone(),
                key_id: Some(key.key_id.clone()),
                allowed_models: key.allowed_models.clone(),
                rpm: key.rpm_limit,
                tpm: key.tpm_limit,
            })
        }
        AuthMode::Passthrough => {
            if secret.is_empty() {
                return Err(ApiError::unauthorized("Faregate: no API key was presented".into()));
            }
            let hash = hash_secret(secret);
            let capped = |v: &str| v.chars().take(128).collect::<String>();
            Ok(Identity {
                org: gw.config.passthrough_org.clone(),
                team: header_str(headers, "x-faregate-team").map(capped),
                user: header_str(headers, "x-faregate-user").map(capped),
                key_id: Some(format!("pt-{}", &hash[..16])),
                allowed_models: vec![],
                rpm: None,
                tpm: None,
            })
        }
    }
}

/// Read the body, bounded, and undo `content-encoding` gzip or zstd.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<(Bytes, Bytes), ApiError> {
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large(limit))?;
    let encoding = header_str(headers, "content-encoding").unwrap_or("identity").trim().to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "" | "identity" => return Ok((raw.clone(), raw)),
        "gzip" | "x-gzip" => decode_limited(flate2::read::GzDecoder::new(&raw[..]), limit, "gzip")?,
        "zstd" => {
            let decoder = zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| ApiError::bad_request(format!("request body is not valid zstd: {e}")))?;
            decode_limited(decoder, limit, "zstd")?
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "content-encoding {other:?} is not supported (use gzip, zstd or none)"
            )));
        }
    };
    Ok((raw, Bytes::from(decoded)))
}

fn decode_limited(reader: impl std::io::Read, limit: usize, what: &str) -> Result<Vec<u8>, ApiError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid {what}: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(out)
}

/// The route handler of every gateway API.
pub async fn handle(State(gw): State<Arc<Gateway>>, api: Api, request: Request) -> Response {
    let provider = api.provider();
    match forward(&gw, api, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(provider),
    }
}

async fn forward(gw: &Arc<Gateway>, api: Api, request: Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    let occurred_at = Utc::now();
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    // `GET /v1/models` exists on both providers; Anthropic clients say which they speak.
    let provider = if api == Api::OpenaiModels && headers.contains_key("anthropic-version") {
        Provider::Anthropic
    } else {
        api.provider()
    };
    let identity = identify(gw, headers)?;
    let enforcement_stale = gw.check_fresh()?;
    if !gw.sink.accepting() {
        return Err(ApiError::unavailable(
            "Faregate cannot meter new requests right now (its event spool is full); retry shortly".into(),
        ));
    }
    let (raw_body, body) = if parts.method == Method::GET {
        (Bytes::new(), Bytes::new())
    } else {
        read_body(body, headers, gw.config.max_body_bytes).await?
    };
    let head: RequestHead = if body.is_empty() {
        RequestHead::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?
    };
    let requested_model = head.model.clone().unwrap_or_default();
    if api != Api::OpenaiModels && requested_model.is_empty() {
        return Err(ApiError::bad_request("request body has no \"model\"".into()));
    }

    let tool = attribution::tool(headers);
    let project = attribution::project(headers);
    let template = UsageEvent {
        event_id: uuid::Uuid::now_v7(),
        occurred_at,
        received_at: occurred_at,
        source_kind: SourceKind::Ingress,
        source_name: gw.config.source_name.clone(),
        org: identity.org.clone(),
        team: identity.team.clone(),
        user: identity.user.clone(),
        key_id: identity.key_id.clone(),
        provider: provider.name().to_string(),
        requested_model: requested_model.clone(),
        served_model: None,
        endpoint: api.endpoint(),
        tool,
        session_id: attribution::session(headers, head.metadata.as_ref().and_then(|m| m.user_id.as_deref())),
        request_id: format!("fg-{}", uuid::Uuid::now_v7().simple()),
        upstream_request_id: None,
        project: project.clone(),
        tags: attribution::tags(headers),
        tokens: TokenCounts::default(),
        usage_source: UsageSource::None,
        service_tier: None,
        inference_region: None,
        streaming: head.stream,
        outcome: Outcome::Ok,
        http_status: 0,
        latency_us: 0,
        ttfb_us: None,
    };
    let request_id = template.request_id.clone();
    if api == Api::OpenaiModels {
        // Listing models is not usage: forwarded, not metered.
        return pass(gw, provider, &parts, raw_body, &request_id).await;
    }
    let mut meter = Meter::new(template, gw.sink.clone(), Some(gw.limiter.clone()), started, body.len());
    if let Some(reserver) = &gw.reserver {
        meter.teach(reserver.clone());
    }

    // Enforcement: model allowlist, rate limits, then budget decisions.
    if !identity.allowed_models.is_empty() && !identity.allowed_models.iter().any(|m| m == &requested_model) {
        let error = ApiError::forbidden_model(&requested_model, &identity.allowed_models);
        meter.finish(Observed::default(), Outcome::Blocked, error.status_for(provider).as_u16());
        return Err(error);
    }
    if let Some(key) = &identity.key_id
        && let Err(limited) = gw.limiter.admit(key, identity.rpm, identity.tpm, occurred_at.timestamp())
    {
        let error = ApiError::rate_limited(limited.what, limited.limit, limited.retry_after_secs);
        meter.finish(Observed::default(), Outcome::Blocked, error.status_for(provider).as_u16());
        return Err(error);
    }
    let tool_name = faregate_core::clickhouse::ledger::tool_name(tool);
    let who = identity.attribution(project.as_deref(), Some(&requested_model), Some(tool_name));
    let decision = gw.decisions.check(&who);
    let (tightest, covering) = gw.headroom.tightest_and_covering(&who, gw.reserver.is_some());
    let mut rewrite_model = None;
    let mut warning = None;
    if let Some(decision) = &decision {
        match decision.state {
            DecisionState::Block => {
                let mut error = ApiError::blocked(decision);
                error.budget = tightest.map(Box::new);
                metrics::counter!("faregate_ingress_blocked_total").increment(1);
                tracing::info!(subject = %decision.subject, org = %identity.org, user = ?identity.user, "request blocked by budget");
                meter.finish(Observed::default(), Outcome::Blocked, error.status_for(provider).as_u16());
                return Err(error);
            }
            DecisionState::Downgrade => rewrite_model = decision.downgrade_to.clone(),
            DecisionState::Warn => warning = Some(format!("{} ({})", decision.reason, decision.subject)),
            DecisionState::Allow => {}
        }
    }
    let mut reserved = None;
    let mut waited_ms = None;
    if let Some(reserver) = &gw.reserver
        && !covering.is_empty()
        && api != Api::AnthropicCountTokens
    {
        // Priced as the model the upstream will be asked for (a downgrade's).
        let rewritten = rewrite_model.as_ref().and_then(|model| {
            let mut event = meter.event()?.clone();
            event.requested_model = model.clone();
            Some(event)
        });
        let estimate = rewritten
            .as_ref()
            .or(meter.event())
            .and_then(|event| reserver.estimate(event, body.len(), head.output_limit()));
        if let Some(estimate) = estimate {
            let refresh = || gw.headroom.tightest_and_covering(&who, true).1;
            match reserver.admit_within(covering, refresh, &estimate).await {
                Ok((reservation, waited)) => {
                    if let Some(waited) = waited {
                        metrics::counter!("faregate_ingress_reservation_waited_total").increment(1);
                        metrics::histogram!("faregate_ingress_reservation_wait_seconds")
                            .record(waited.as_secs_f64());
                        waited_ms = Some(waited.as_millis());
                    }
                    reserved = Some(reservation.amount());
                    meter.hold(reservation);
                }
                Err(refusal) => {
                    let mut error = ApiError::reservation_refused(&refusal);
                    error.budget = tightest.map(Box::new);
                    metrics::counter!("faregate_ingress_reservation_refused_total").increment(1);
                    tracing::debug!(budget = %refusal.budget, reservation = %refusal.reservation, share = %refusal.share, held = %refusal.held, "request refused: it does not fit the budget's headroom");
                    meter.finish(Observed::default(), Outcome::Blocked, error.status_for(provider).as_u16());
                    return Err(error);
                }
            }
        }
    }
    let add_usage_option = api == Api::OpenaiChat
        && head.stream
        && head.stream_options.as_ref().and_then(|o| o.get("include_usage")).and_then(|v| v.as_bool())
            != Some(true);
    let upstream_body = if rewrite_model.is_some() || add_usage_option {
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
        if let Some(model) = &rewrite_model {
            value["model"] = serde_json::Value::String(model.clone());
        }
        if add_usage_option {
            value["stream_options"]["include_usage"] = serde_json::Value::Bool(true);
        }
        Some(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
    } else {
        None
    };
    let model_for_upstream = rewrite_model.as_deref().unwrap_or(&requested_model);
    let mut response = match upstream_body {
        Some(changed) => {
            let mut parts = parts;
            parts.headers.remove("content-encoding");
            proxy_metered(gw, provider, &parts, changed, model_for_upstream, api, head.stream, meter).await?
        }
        None => {
            proxy_metered(gw, provider, &parts, raw_body, model_for_upstream, api, head.stream, meter).await?
        }
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-faregate-request-id", value);
    }
    if enforcement_stale {
        headers.insert("x-faregate-enforcement", HeaderValue::from_static("stale"));
    }
    if let Some(amount) = reserved
        && let Ok(value) = HeaderValue::from_str(&amount.0.normalize().to_string())
    {
        headers.insert("x-faregate-reserved", value);
    }
    if let Some(waited) = waited_ms {
        headers.insert("x-faregate-reservation-waited-ms", HeaderValue::from(waited as u64));
    }
    if let Some(model) = rewrite_model
        && let Ok(value) = HeaderValue::from_str(&format!("{requested_model} -> {model}"))
    {
        headers.insert("x-faregate-downgraded", value);
    }
    if let Some(warning) = warning
        && let Ok(value) = HeaderValue::from_str(&warning.replace(['\r', '\n'], " "))
    {
        headers.insert("x-faregate-budget-warning", value);
    }
    budget_headers(headers, tightest);
    Ok(response)
}

/// `x-faregate-budget-remaining` (dollars, 2-6 places) and `x-faregate-budget-resets`
/// (RFC 3339) of the tightest covering budget, when one is known.
pub(crate) fn budget_headers(headers: &mut HeaderMap, tightest: Option<crate::headroom::Tightest>) {
    let Some(tightest) = tightest else { return };
    if let Ok(value) = HeaderValue::from_str(&crate::headroom::dollars(tightest.remaining)) {
        headers.insert("x-faregate-budget-remaining", value);
    }
    if let Some(at) = tightest.resets_at
        && let Ok(value) = HeaderValue::from_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    {
        headers.insert("x-faregate-budget-resets", value);
    }
}

/// Build the upstream request from the client's.
fn upstream_request(
    gw: &Gateway,
    provider: Provider,
    parts: &axum::http::request::Parts,
    body: Bytes,
    model: &str,
) -> Result<axum::http::Request<Full<Bytes>>, ApiError> {
    let upstream = gw.config.upstream_for(provider, model).ok_or_else(|| {
        ApiError::bad_gateway(format!("no {} upstream is configured for model {model:?}", provider.name()))
    })?;
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{}", upstream.base_url.trim_end_matches('/'), path_and_query);
    let uri = axum::http::Uri::try_from(url).map_err(|e| {
        ApiError::bad_gateway(format!(
            "the {} upstream's base URL does not make a valid URL: {e}",
            provider.name()
        ))
    })?;
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
    let passthrough = gw.config.auth == AuthMode::Passthrough;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if DROPPED_UP.contains(&n) || n.starts_with("x-faregate-") {
            continue;
        }
        if !passthrough && (n == "authorization" || n == "x-api-key") {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if !passthrough && !upstream.api_key.expose().is_empty() {
        let credential = upstream.api_key.expose();
        let (name, value) = match provider {
            Provider::Anthropic => (HeaderName::from_static("x-api-key"), HeaderValue::from_str(credential)),
            Provider::Openai => (
                HeaderName::from_static("authorization"),
                HeaderValue::from_str(&format!("Bearer {credential}")),
            ),
        };
        let mut value = value
            .map_err(|_| ApiError::bad_gateway("the upstream credential is not a valid header".into()))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let mut request = axum::http::Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Send to the upstream; a failure is a 502 (unreachable) or 504 (timed out).
async fn send(
    gw: &Gateway,
    request: axum::http::Request<Full<Bytes>>,
) -> Result<(axum::http::Response<Incoming>, Deadline), ApiError> {
    gw.client.send(request).await.map_err(|error| match error {
        UpstreamError::TimedOut(after) => {
            ApiError::gateway_timeout(format!("the upstream did not answer within {after:?}"))
        }
        UpstreamError::Failed(message) => ApiError::bad_gateway(format!("upstream unreachable: {message}")),
    })
}

fn response_headers(from: &HeaderMap, keep_length: bool) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        if DROPPED_DOWN.contains(&n) || (!keep_length && n == "content-length") {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

fn upstream_request_id(headers: &HeaderMap) -> Option<String> {
    ["request-id", "x-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(128).collect()))
}

/// Forward without metering (`GET /v1/models`).
async fn pass(
    gw: &Gateway,
    provider: Provider,
    parts: &axum::http::request::Parts,
    body: Bytes,
    request_id: &str,
) -> Result<Response, ApiError> {
    let (response, _) = send(gw, upstream_request(gw, provider, parts, body, "")?).await?;
    let status = response.status();
    let headers = response_headers(response.headers(), false);
    let mut out = Response::new(Body::new(response.into_body()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    if let Ok(value) = HeaderValue::from_str(request_id) {
        out.headers_mut().insert("x-faregate-request-id", value);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn proxy_metered(
    gw: &Gateway,
    provider: Provider,
    parts: &axum::http::request::Parts,
    body: Bytes,
    model: &str,
    api: Api,
    streaming: bool,
    mut meter: Meter,
) -> Result<Response, ApiError> {
    let request = upstream_request(gw, provider, parts, body, model)?;
    meter.forwarding();
    let (response, deadline) = match send(gw, request).await {
        Ok(sent) => sent,
        Err(error) => {
            meter.finish(Observed::default(), Outcome::UpstreamError, error.status.as_u16());
            return Err(error);
        }
    };
    let status = response.status();
    meter.first_byte(upstream_request_id(response.headers()));
    let is_sse = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if streaming && is_sse && status.is_success() {
        let headers = response_headers(response.headers(), false);
        let stream = MeteredStream {
            inner: response.into_body(),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout: gw.client.timeout(),
            usage: StreamUsage::new(api),
            meter: Some(meter),
            status: status.as_u16(),
        };
        let mut out = Response::new(Body::from_stream(stream));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        return Ok(out);
    }
    let mut headers = response_headers(response.headers(), true);
    let limit = gw.config.max_response_bytes;
    let bytes = match read_limited(response.into_body(), limit, deadline, gw.client.timeout()).await {
        Ok(bytes) => bytes,
        Err(failure) => {
            let error = match failure {
                ReadError::TimedOut(_) => ApiError::gateway_timeout(failure.to_string()),
                _ => ApiError::bad_gateway(failure.to_string()),
            };
            meter.finish(Observed::default(), Outcome::UpstreamError, error.status.as_u16());
            return Err(error);
        }
    };
    let observed = if status.is_success() { Observed::from_body(api, &bytes) } else { Observed::default() };
    let outcome = if status.is_success() { Outcome::Ok } else { Outcome::UpstreamError };
    meter.finish(observed, outcome, status.as_u16());
    let upstream = gw.config.upstream_for(provider, model).map(|u| u.name.as_str()).unwrap_or_default();
    let bytes = match crate::funds::rewrite(provider, upstream, status.as_u16(), &bytes) {
        Some(rewritten) => {
            metrics::counter!("faregate_ingress_provider_out_of_funds_total", "provider" => provider.name())
                .increment(1);
            tracing::warn!(provider = provider.name(), upstream, "the provider account is out of funds");
            headers.remove("content-length");
            headers.insert(crate::funds::HEADER, HeaderValue::from_static("true"));
            rewritten
        }
        None => bytes,
    };
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// A streamed response on its way to the client: every chunk is forwarded as is and read for
/// usage. The end of the stream finishes the meter; dropping it early (client gone) lets the
/// meter report what was seen.
struct MeteredStream {
    inner: Incoming,
    /// The request's deadline ([`crate::upstream`]): a stream still running then is cut.
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: std::time::Duration,
    usage: StreamUsage,
    meter: Option<Meter>,
    status: u16,
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry no usage and are not forwarded (the client's body is
                    // a plain stream of data).
                    let Ok(chunk) = frame.into_data() else { continue };
                    self.usage.feed(&chunk);
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(self.fail(crate::upstream::describe(&e)))));
                }
                Poll::Ready(None) => {
                    let observed = self.usage.observed.clone();
                    let (status, completed) = (self.status, self.usage.completed);
                    if let Some(meter) = self.meter.take() {
                        // A stream that ended without its terminal event was cut upstream.
                        // What was reported still counts: the provider bills it.
                        let outcome = if completed { Outcome::Ok } else { Outcome::UpstreamError };
                        meter.finish(observed, outcome, status);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if self.meter.is_some() && self.deadline.as_mut().poll(cx).is_ready() {
                        let message = format!("the upstream stream did not end within {:?}", self.timeout);
                        return Poll::Ready(Some(Err(self.fail(message))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl MeteredStream {
    /// The stream failed: meter what was seen, as an upstream error.
    fn fail(&mut self, message: String) -> std::io::Error {
        let observed = self.usage.observed.clone();
        if let Some(meter) = self.meter.take() {
            meter.finish(observed, Outcome::UpstreamError, self.status);
        }
        std::io::Error::other(message)
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        if let Some(mut meter) = self.meter.take() {
            meter.observed = self.usage.observed.clone();
            drop(meter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn keys_from_either_header() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer fgk_abc".parse().unwrap());
        assert_eq!(presented_key(&headers), "fgk_abc");
        headers.insert("x-api-key", "fgk_xyz".parse().unwrap());
        assert_eq!(presented_key(&headers), "fgk_xyz");
        assert_eq!(presented_key(&HeaderMap::new()), "");
    }

    #[test]
    fn zstd_and_gzip_bodies_decode_and_bombs_are_refused() {
        use std::io::Write as _;
        let body = br#"{"model":"m"}"#;
        let zstd = zstd::encode_all(&body[..], 3).unwrap();
        assert_eq!(
            decode_limited(zstd::stream::read::Decoder::new(&zstd[..]).unwrap(), 100, "zstd").unwrap(),
            body
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b' '; 10_000]).unwrap();
        let gz = gz.finish().unwrap();
        let err = decode_limited(flate2::read::GzDecoder::new(&gz[..]), 1000, "gzip").unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let err = decode_limited(flate2::read::GzDecoder::new(&b"not gzip"[..]), 1000, "gzip").unwrap_err();
        assert!(err.message.contains("not valid gzip"), "{}", err.message);
    }
}

//! For gateways that are not Faregate: `POST /v1/usage` takes a batch of usage records as JSON
//! and emits them as usage events (same spool, same topic, same exactly-once by event id), and
//! the decisions API (`GET /v1/decisions`, `/v1/decisions/{subject}`, `/v1/decisions/stream`)
//! tells them what to enforce (amounts as exact decimal strings: [`DecisionJson`]). Both require `Authorization: Bearer <ingress.collector_token>`
//! (compared in constant time) and are off while no token is configured.
//!
//! A batch is all or nothing: if any record is invalid, none is taken and the answer lists
//! every problem of every record with its JSON path (`records[3].tokens.input`). A `202` means
//! durable: it is sent only after every record of the batch is appended to the spool and the
//! spool is synced to stable storage (batches arriving together share one sync), so a record
//! acknowledged survives the process being killed, and the machine losing power. A batch that
//! could not be made durable gets `503` and should be sent again. Re-sending a batch is safe:
//! the processor counts each `event_id` once. The schema is documented in docs/ingress.md.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use faregate_core::event::{
    DecisionJson, Endpoint, Outcome, SourceKind, TokenCounts, Tool, UsageEvent, UsageSource,
};

use crate::enforcement::EnforcementStatus;
use crate::gateway::Gateway;

mod check;

/// Most records in one batch.
pub const MAX_RECORDS: usize = 10_000;

/// One usage record as other gateways send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    pub event_id: uuid::Uuid,
    pub occurred_at: DateTime<Utc>,
    pub org: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub served_model: Option<String>,
    #[serde(default = "other_endpoint")]
    pub endpoint: Endpoint,
    #[serde(default = "other_tool")]
    pub tool: Tool,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub tokens: RecordTokens,
    #[serde(default)]
    pub estimated: bool,
    #[serde(default)]
    pub service_tier: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub streaming: bool,
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub latency_ms: u64,
}

/// Disjoint token classes, as in the usage event (input excludes cache tokens, output
/// excludes reasoning).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordTokens {
    #[serde(default)]
    pub input: u32,
    #[serde(default)]
    pub output: u32,
    #[serde(default)]
    pub cache_read: u32,
    #[serde(default)]
    pub cache_write_5m: u32,
    #[serde(default)]
    pub cache_write_1h: u32,
    #[serde(default)]
    pub reasoning: u32,
}

fn other_endpoint() -> Endpoint {
    Endpoint::Other
}
fn other_tool() -> Tool {
    Tool::Other
}
fn ok_status() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
struct Batch {
    records: Vec<serde_json::Value>,
}

/// The refusal for a request without the collector token, if any.
fn refusal(gw: &Gateway, headers: &HeaderMap) -> Option<Response> {
    let token = gw.config.collector_token.expose();
    if token.is_empty() {
        return Some(problem(
            StatusCode::NOT_FOUND,
            "the collector and decisions API are off (set ingress.collector_token)",
        ));
    }
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        None
    } else {
        Some(problem(StatusCode::UNAUTHORIZED, "missing or wrong collector token (Authorization: Bearer …)"))
    }
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message}}))).into_response()
}

/// Check one record; every problem comes back with its JSON path under `records[index]`.
pub fn validate(index: usize, value: serde_json::Value) -> Result<UsageRecord, Vec<(String, String)>> {
    let record = match UsageRecord::deserialize(&value) {
        Ok(record) => record,
        Err(e) => {
            let problems = check::problems(index, &value);
            return Err(if problems.is_empty() {
                vec![(format!("records[{index}]"), e.to_string())]
            } else {
                problems
            });
        }
    };
    let problems = check::rules(index, &value);
    if problems.is_empty() { Ok(record) } else { Err(problems) }
}

impl UsageRecord {
    fn into_event(self, source_name: &str) -> UsageEvent {
        let t = &self.tokens;
        let tokens = TokenCounts {
            input: t.input.into(),
            output: t.output.into(),
            cache_read: t.cache_read.into(),
            cache_write_5m: t.cache_write_5m.into(),
            cache_write_1h: t.cache_write_1h.into(),
            reasoning: t.reasoning.into(),
        };
        UsageEvent {
            event_id: self.event_id,
            occurred_at: self.occurred_at,
            received_at: Utc::now(),
            source_kind: SourceKind::Collector,
            source_name: source_name.to_string(),
            org: self.org,
            team: self.team,
            user: self.user,
            key_id: self.key_id,
            provider: self.provider,
            requested_model: self.model,
            served_model: self.served_model,
            endpoint: self.endpoint,
            tool: self.tool,
            session_id: self.session_id,
            request_id: self.request_id.unwrap_or_else(|| self.event_id.to_string()),
            upstream_request_id: None,
            project: self.project,
            tags: self.tags,
            tokens,
            usage_source: if self.estimated { UsageSource::Estimated } else { UsageSource::Reported },
            service_tier: self.service_tier,
            inference_region: self.region,
            streaming: self.streaming,
            outcome: if self.status < 400 { Outcome::Ok } else { Outcome::UpstreamError },
            http_status: i32::from(self.status),
            latency_us: i64::try_from(self.latency_ms.saturating_mul(1000)).unwrap_or(i64::MAX),
            ttfb_us: None,
        }
    }
}

/// `POST /v1/usage`.
pub async fn ingest(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    if let Some(refused) = refusal(&gw, request.headers()) {
        return refused;
    }
    if !gw.sink.accepting() {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "the event spool is full; retry shortly");
    }
    let limit = gw.config.collector_max_bytes;
    let Ok(body) = axum::body::to_bytes(request.into_body(), limit).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("batch exceeds {limit} bytes; send smaller batches"),
        );
    };
    let batch: Batch =
        match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)) {
            Ok(batch) => batch,
            Err(e) => {
                let message =
                    format!("body is not a batch {{\"records\": [...]}}: at {}: {}", e.path(), e.inner());
                return problem(StatusCode::BAD_REQUEST, &message);
            }
        };
    if batch.records.len() > MAX_RECORDS {
        let message = format!("batch has {} records; at most {MAX_RECORDS}", batch.records.len());
        return problem(StatusCode::PAYLOAD_TOO_LARGE, &message);
    }
    let mut records = Vec::with_capacity(batch.records.len());
    let mut problems = Vec::new();
    for (index, value) in batch.records.into_iter().enumerate() {
        match validate(index, value) {
            Ok(record) => records.push(record),
            Err(found) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        metrics::counter!("faregate_collector_rejected_batches_total").increment(1);
        let errors: Vec<_> =
            problems.iter().map(|(path, message)| json!({"path": path, "message": message})).collect();
        let body = json!({"error": {"message": format!("{} invalid record field(s); nothing was taken", errors.len()), "errors": errors}});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let accepted = records.len();
    let events = records.into_iter().map(|record| record.into_event("collector")).collect();
    // 202 means durable: every record is synced to the spool (shared with concurrent batches).
    if let Err(e) = gw.sink.emit_durable(events).wait().await {
        metrics::counter!("faregate_collector_not_durable_batches_total").increment(1);
        tracing::error!(error = %e, records = accepted, "collector batch not acknowledged: not durable");
        return problem(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}; send the batch again"));
    }
    metrics::counter!("faregate_collector_records_total").increment(accepted as u64);
    (StatusCode::ACCEPTED, Json(json!({"accepted": accepted}))).into_response()
}

/// `GET /v1/decisions`: every current decision; `stale` when this gateway cannot vouch for
/// them (the decisions topic cannot be read, or enforcement is stale: see `enforcement`).
pub async fn decisions(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&gw, &headers) {
        return refused;
    }
    let mut all = gw.decisions.all();
    all.sort_by(|a, b| a.subject.cmp(&b.subject));
    let all: Vec<DecisionJson> = all.into_iter().map(DecisionJson::from).collect();
    let decisions_stale = gw.decisions_stale();
    let enforcement = gw.enforcement.status();
    Json(json!({
        "decisions": all,
        "stale": decisions_stale || enforcement.stale,
        "decisions_stale": decisions_stale,
        "enforcement": enforcement,
    }))
    .into_response()
}

/// `GET /v1/decisions/{subject}`: the latest decision for one scope key.
pub async fn decision(
    State(gw): State<Arc<Gateway>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&gw, &headers) {
        return refused;
    }
    match gw.decisions.get(&subject) {
        Some(decision) => Json(DecisionJson::from(decision)).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            &format!("no decision for subject {subject:?} (no budget covers it, or it was never evaluated)"),
        ),
    }
}

/// `GET /v1/decisions/stream`: every current decision (SSE `event: decision`), the enforcement
/// status (`event: enforcement`), then each decision change and each enforcement transition
/// (live to stale and back).
pub async fn decision_stream(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&gw, &headers) {
        return refused;
    }
    let updates = gw.decisions.subscribe();
    let transitions = gw.enforcement.subscribe();
    let current = gw.decisions.all();
    let to_event = |d: &faregate_core::event::Decision| -> Result<Event, Infallible> {
        let json = serde_json::to_string(&DecisionJson::from(d.clone())).unwrap_or_default();
        Ok(Event::default().event("decision").data(json))
    };
    let enforcement_event = |s: &EnforcementStatus| -> Result<Event, Infallible> {
        Ok(Event::default().event("enforcement").data(serde_json::to_string(s).unwrap_or_default()))
    };
    let mut initial: Vec<_> = current.iter().map(to_event).collect();
    initial.push(enforcement_event(&gw.enforcement.status()));
    let initial = futures::stream::iter(initial);
    let live = futures::stream::select(
        changes(updates).map(move |d| to_event(&d)),
        enforcement_changes(transitions).map(move |s| enforcement_event(&s)),
    );
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(initial.chain(live));
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

fn enforcement_changes(
    rx: tokio::sync::broadcast::Receiver<EnforcementStatus>,
) -> impl Stream<Item = EnforcementStatus> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(status) => return Some((status, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn changes(
    rx: tokio::sync::broadcast::Receiver<faregate_core::event::Decision>,
) -> impl Stream<Item = faregate_core::event::Decision> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(decision) => return Some((decision, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "decision stream subscriber fell behind; some changes skipped");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

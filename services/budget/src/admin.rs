//! The admin HTTP API: manage budgets over HTTP. Every request needs
//! `Authorization: Bearer <budget.admin_token>`, compared in constant time (both sides are
//! hashed first, so not even the length leaks). No token configured: the API is not served.
//!
//! Writes go to the compacted config topic, exactly like `faregate budgets set` and a YAML file;
//! the service applies them when it reads them back, so every instance converges.
//!
//! - `GET /v1/budgets`: every budget, as the YAML/JSON spec.
//! - `PUT /v1/budgets/{id}`: create or replace one (JSON spec; the id in the path wins).
//! - `DELETE /v1/budgets/{id}`: remove one.
//! - `POST /v1/budgets/apply`: a YAML file of budgets (`budgets: [...]`), all or none.
//! - `GET /v1/decisions`: the current decision per scope.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use faregate_core::config::Secret;
use faregate_core::event::{Budget, ConfigEntity, ConfigRecord};
use faregate_core::kafka::RecordProducer;

use crate::engine::Engine;
use crate::spec::{BudgetFile, BudgetSpec, SpecError};

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub engine: Arc<Mutex<Engine>>,
    pub config_topic: Arc<RecordProducer<ConfigRecord>>,
    token_hash: [u8; 32],
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether `presented` is the token (constant time).
pub fn token_matches(expected_hash: &[u8; 32], presented: &str) -> bool {
    bool::from(hash(presented.as_bytes()).ct_eq(expected_hash))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

fn refused(e: SpecError) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token_matches(&state.token_hash, presented) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    next.run(request).await
}

fn record(budget: Budget) -> ConfigRecord {
    ConfigRecord {
        updated_at: faregate_core::time::now_micros(),
        updated_by: Some("admin-api".into()),
        entity: ConfigEntity::Budget(budget),
    }
}

async fn write(state: &AdminState, budget: Budget) -> Result<(), Response> {
    let record = record(budget);
    state
        .config_topic
        .send(&record.topic_key(), &record)
        .await
        .map(|_| ())
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("writing the config topic failed: {e}")))
}

async fn list(State(state): State<AdminState>) -> Response {
    let mut specs: Vec<BudgetSpec> =
        state.engine.lock().unwrap().budgets().map(BudgetSpec::from_budget).collect();
    specs.sort_by(|a, b| a.id.cmp(&b.id));
    axum::Json(json!({"budgets": specs})).into_response()
}

async fn put_budget(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let mut spec: BudgetSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("body: {e}")),
    };
    spec.id = id;
    let budget = match spec.to_budget() {
        Ok(b) => b,
        Err(e) => return refused(e),
    };
    match write(&state, budget.clone()).await {
        Ok(()) => axum::Json(BudgetSpec::from_budget(&budget)).into_response(),
        Err(r) => r,
    }
}

async fn delete_budget(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.config_topic.send_tombstone(&format!("budget/{id}")).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("writing the config topic failed: {e}")),
    }
}

async fn apply(State(state): State<AdminState>, body: String) -> Response {
    let budgets = match BudgetFile::parse_yaml(&body) {
        Ok(b) => b,
        Err(e) => return refused(e),
    };
    let ids: Vec<String> = budgets.iter().map(|b| b.id.clone()).collect();
    for budget in budgets {
        if let Err(r) = write(&state, budget).await {
            return r;
        }
    }
    axum::Json(json!({"applied": ids})).into_response()
}

async fn decisions(State(state): State<AdminState>) -> Response {
    let engine = state.engine.lock().unwrap();
    let mut list: Vec<serde_json::Value> = engine
        .decisions()
        .map(|d| {
            json!({
                "subject": d.subject, "state": d.state, "reason": d.reason, "budget_id": d.budget_id,
                "spent_usd": d.spent_usd.0.to_string(), "limit_usd": d.limit_usd.map(|l| l.0.to_string()),
                "resets_at": d.resets_at, "downgrade_to": d.downgrade_to,
            })
        })
        .collect();
    list.sort_by(|a, b| a["subject"].as_str().cmp(&b["subject"].as_str()));
    axum::Json(json!({"decisions": list})).into_response()
}

/// The admin router, or `None` when no token is configured (the API is off).
pub fn router(
    token: &Secret,
    engine: Arc<Mutex<Engine>>,
    config_topic: Arc<RecordProducer<ConfigRecord>>,
) -> Option<Router> {
    if token.is_empty() {
        return None;
    }
    let state = AdminState { engine, config_topic, token_hash: hash(token.expose().as_bytes()) };
    Some(
        Router::new()
            .route("/v1/budgets", get(list))
            .route("/v1/budgets/apply", post(apply))
            .route("/v1/budgets/{id}", put(put_budget).delete(delete_budget))
            .route("/v1/decisions", get(decisions))
            .layer(middleware::from_fn_with_state(state.clone(), authorize))
            .with_state(state),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value() {
        let expected = hash(b"s3cret-token");
        assert!(token_matches(&expected, "s3cret-token"));
        assert!(!token_matches(&expected, "s3cret-tokeN"));
        assert!(!token_matches(&expected, ""));
    }
}

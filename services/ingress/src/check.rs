//! Forward-auth for other gateways: `GET|POST /v1/check` (and `/v1/check/<original path>`, the
//! form Envoy's `ext_authz` HTTP service sends) answers whether a request may go, with the same
//! key table, decision cache, strictest-wins and block responses as the gateway's own routes, so
//! nginx (`auth_request`), Envoy (`ext_authz`), Traefik and Caddy (`forward_auth`) enforce
//! Faregate's budgets by configuration (docs/integrations.md).
//!
//! Contract:
//! - **Which API** the request is for, from its original path: `x-original-uri` (nginx),
//!   `x-forwarded-uri` (Traefik, Caddy), `x-envoy-original-path`, else the path after
//!   `/v1/check`. `/v1/messages…` (or an `anthropic-version` header) answers as Anthropic does,
//!   anything else as OpenAI does.
//! - **Who**: the presented virtual key (`x-api-key`, `Authorization: Bearer`), as on the
//!   gateway's routes; or, for a gateway that authenticates its users itself,
//!   `x-faregate-collector-token: <ingress.collector_token>` with `x-faregate-org` (required),
//!   `-team`, `-user`, `-key` and `-project`.
//! - **Allowed**: `200`, empty, with `x-faregate-decision` (`allow`, `warn`, `downgrade`),
//!   `x-faregate-warning` or `x-faregate-downgrade-to` where they apply (a forward-auth check
//!   cannot rewrite the body: the gateway may), `x-faregate-budget-remaining` and `-resets`, and
//!   the attribution as `x-faregate-org`, `-team`, `-user`, `-key` and `-project`.
//! - **Refused**: the block response the gateway's own routes give (a budget block: 402
//!   `billing_error` on Anthropic paths, 429 `insufficient_quota` on OpenAI paths,
//!   `x-should-retry: false`, the budget's message; 401 for an unknown key; 403 for a model
//!   the key may not use; 429 for its rate limit; 503 when enforcement is stale and the gateway
//!   fails closed). Envoy, Traefik and Caddy return it to the client as it is. nginx's
//!   `auth_request` only tells 2xx from 401 and 403, so with `x-faregate-auth-request: 1` every
//!   refusal but 401 comes as 403 (`x-faregate-status` says the real one): the example config
//!   (`deploy/integrations/nginx/`) then asks again without the header for the response to send.
//! - The model (for the allowlist and model-scoped budgets) from `x-faregate-model`, else a JSON
//!   body's `model` when the gateway sends the body; unknown, neither applies.
//! - Nothing is metered here: usage comes through the collector (`POST /v1/usage`). A check
//!   takes no reservation.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use subtle::ConstantTimeEq;

use faregate_core::event::DecisionState;

use crate::config::Provider;
use crate::errors::ApiError;
use crate::gateway::Gateway;
use crate::proxy::{Identity, identify};

/// The largest body a check reads to find the model.
const MAX_CHECK_BODY: usize = 1 << 20;

/// `GET|POST /v1/check` and `/v1/check/{*path}`.
pub async fn check(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let path = original_path(headers, parts.uri.path());
    let provider = provider_of(&path, headers);
    let for_nginx = header(headers, "x-faregate-auth-request").is_some_and(|v| v == "1");
    let model = match header(headers, "x-faregate-model") {
        Some(model) => Some(model.to_string()),
        None => model_in(body).await,
    };
    match decide(&gw, headers, model.as_deref()) {
        Ok(allowed) => allowed,
        Err(error) => {
            let mut response = error.into_response(provider);
            let status = response.status();
            if for_nginx && status != StatusCode::UNAUTHORIZED {
                if let Ok(value) = HeaderValue::from_str(status.as_str()) {
                    response.headers_mut().insert("x-faregate-status", value);
                }
                *response.status_mut() = StatusCode::FORBIDDEN;
            }
            response
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// The path the client asked the gateway for (see the module docs).
fn original_path(headers: &HeaderMap, own: &str) -> String {
    ["x-original-uri", "x-forwarded-uri", "x-envoy-original-path"]
        .iter()
        .find_map(|name| header(headers, name))
        .map(str::to_string)
        .unwrap_or_else(|| own.strip_prefix("/v1/check").unwrap_or(own).to_string())
}

fn provider_of(path: &str, headers: &HeaderMap) -> Provider {
    let path = path.split('?').next().unwrap_or(path);
    if path.starts_with("/v1/messages") || headers.contains_key("anthropic-version") {
        Provider::Anthropic
    } else {
        Provider::Openai
    }
}

/// A JSON body's `model`, if the gateway sent one.
async fn model_in(body: Body) -> Option<String> {
    let bytes = axum::body::to_bytes(body, MAX_CHECK_BODY).await.ok()?;
    if bytes.is_empty() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Head {
        model: Option<String>,
    }
    serde_json::from_slice::<Head>(&bytes).ok()?.model.filter(|m| !m.is_empty())
}

/// Who the request runs under: a gateway that authenticated it (collector token and
/// attribution headers), else the presented key.
fn who(gw: &Gateway, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let Some(token) = header(headers, "x-faregate-collector-token") else {
        return identify(gw, headers);
    };
    let expected = gw.config.collector_token.expose();
    if expected.is_empty() || !bool::from(token.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(ApiError::unauthorized(
            "Faregate: wrong x-faregate-collector-token (or ingress.collector_token is not set)".into(),
        ));
    }
    let org = header(headers, "x-faregate-org").ok_or_else(|| {
        ApiError::bad_request("x-faregate-org is required with x-faregate-collector-token".into())
    })?;
    let capped = |name: &str| header(headers, name).map(|v| v.chars().take(128).collect::<String>());
    Ok(Identity::trusted(
        org.chars().take(128).collect(),
        capped("x-faregate-team"),
        capped("x-faregate-user"),
        capped("x-faregate-key"),
    ))
}

fn decide(gw: &Gateway, headers: &HeaderMap, model: Option<&str>) -> Result<Response, ApiError> {
    let identity = who(gw, headers)?;
    gw.check_fresh()?;
    if let Some(model) = model
        && !identity.allowed_models.is_empty()
        && !identity.allowed_models.iter().any(|m| m == model)
    {
        return Err(ApiError::forbidden_model(model, &identity.allowed_models));
    }
    if let Some(key) = &identity.key_id
        && let Err(limited) = gw.limiter.admit(key, identity.rpm, identity.tpm, Utc::now().timestamp())
    {
        return Err(ApiError::rate_limited(limited.what, limited.limit, limited.retry_after_secs));
    }
    let project = header(headers, "x-faregate-project")
        .map(str::to_string)
        .or_else(|| crate::attribution::project(headers));
    let tool = faregate_core::clickhouse::ledger::tool_name(crate::attribution::tool(headers));
    let who = identity.attribution(project.as_deref(), model, Some(tool));
    let decision = gw.decisions.check(&who);
    let tightest = gw.headroom.tightest(&who);
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), value);
        }
    };
    let state = match &decision {
        Some(decision) => match decision.state {
            DecisionState::Block => {
                metrics::counter!("faregate_ingress_check_blocked_total").increment(1);
                let mut error = ApiError::blocked(decision);
                error.budget = tightest.map(Box::new);
                return Err(error);
            }
            DecisionState::Downgrade => {
                if let Some(to) = &decision.downgrade_to {
                    set("x-faregate-downgrade-to", to);
                }
                "downgrade"
            }
            DecisionState::Warn => {
                set("x-faregate-warning", &format!("{} ({})", decision.reason, decision.subject));
                "warn"
            }
            DecisionState::Allow => "allow",
        },
        None => "allow",
    };
    set("x-faregate-decision", state);
    set("x-faregate-org", &identity.org);
    for (name, value) in [
        ("x-faregate-team", identity.team.as_deref()),
        ("x-faregate-user", identity.user.as_deref()),
        ("x-faregate-key", identity.key_id.as_deref()),
        ("x-faregate-project", project.as_deref()),
    ] {
        if let Some(value) = value {
            set(name, value);
        }
    }
    crate::proxy::budget_headers(out, tightest);
    metrics::counter!("faregate_ingress_check_allowed_total").increment(1);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_original_path_says_which_api_answers() {
        let nginx = headers(&[("x-original-uri", "/v1/messages?beta=true")]);
        assert_eq!(provider_of(&original_path(&nginx, "/v1/check"), &nginx), Provider::Anthropic);
        let traefik = headers(&[("x-forwarded-uri", "/v1/chat/completions")]);
        assert_eq!(provider_of(&original_path(&traefik, "/v1/check"), &traefik), Provider::Openai);
        let envoy = headers(&[]);
        assert_eq!(original_path(&envoy, "/v1/check/v1/messages"), "/v1/messages");
        assert_eq!(provider_of(&original_path(&envoy, "/v1/check/v1/messages"), &envoy), Provider::Anthropic);
        let versioned = headers(&[("anthropic-version", "2023-06-01")]);
        assert_eq!(provider_of(&original_path(&versioned, "/v1/check"), &versioned), Provider::Anthropic);
        assert_eq!(provider_of("/v1/responses", &headers(&[])), Provider::Openai);
    }
}

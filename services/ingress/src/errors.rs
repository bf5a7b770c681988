//! Refusals in each provider's own error shape, chosen so that real clients react right
//! (shared/clients.md): a budget block makes Claude Code, Codex and the SDKs stop after one
//! attempt and show the message (Anthropic routes: 402 `billing_error`; OpenAI routes: 429
//! `insufficient_quota`; both with `x-should-retry: false`); rate limits are retryable 429s
//! with `retry-after`; everything names what was wrong.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use faregate_core::event::Decision;

use crate::config::Provider;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Anthropic `error.type`.
    pub anthropic_type: &'static str,
    /// OpenAI `error.type` and `error.code`.
    pub openai_type: &'static str,
    pub openai_code: &'static str,
    pub message: String,
    /// Send `x-should-retry: false`.
    pub final_answer: bool,
    pub retry_after_secs: Option<i64>,
    /// Anthropic routes answer with this status instead (402 for a block).
    pub anthropic_status: Option<StatusCode>,
    /// The tightest covering budget, sent as the budget headers (on a block).
    pub budget: Option<Box<crate::headroom::Tightest>>,
    /// A refusal by reservation: sent as `x-faregate-reservation: refused`.
    pub reservation_refused: bool,
}

impl ApiError {
    fn new(
        status: StatusCode,
        anthropic_type: &'static str,
        openai_type: &'static str,
        message: String,
    ) -> Self {
        ApiError {
            status,
            anthropic_type,
            openai_type,
            openai_code: openai_type,
            message,
            final_answer: false,
            retry_after_secs: None,
            anthropic_status: None,
            budget: None,
            reservation_refused: false,
        }
    }

    pub fn unauthorized(message: String) -> Self {
        let mut e =
            Self::new(StatusCode::UNAUTHORIZED, "authentication_error", "invalid_request_error", message);
        e.openai_code = "invalid_api_key";
        e
    }

    pub fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request_error", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "invalid_request_error",
            format!("request body exceeds this gateway's limit of {limit} bytes (after decompression)"),
        )
    }

    pub fn forbidden_model(model: &str, allowed: &[String]) -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "invalid_request_error",
            format!("this key may not use model {model:?}; allowed: {}", allowed.join(", ")),
        );
        e.openai_code = "model_not_allowed";
        e.final_answer = true;
        e
    }

    pub fn rate_limited(what: &str, limit: i64, retry_after_secs: i64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            format!("this key's limit of {limit} {what} is reached; retry in {retry_after_secs} s"),
        );
        e.openai_type = "requests";
        e.retry_after_secs = Some(retry_after_secs);
        e
    }

    /// A budget block: the message says which budget, spent versus limit, and when it resets.
    pub fn blocked(decision: &Decision) -> Self {
        let budget = decision.budget_name.as_deref().or(decision.budget_id.as_deref()).unwrap_or("a budget");
        // Rounded to cents for people; the decision keeps the exact amounts.
        let spent = format!("{:.2}", decision.spent_usd.0);
        let limit = decision.limit_usd.map(|l| format!(" of ${:.2}", l.0)).unwrap_or_default();
        let resets = decision
            .resets_at
            .map(|at| format!("; it resets at {}", at.format("%Y-%m-%d %H:%M UTC")))
            .unwrap_or_default();
        // The budget service's own reason restates this sentence; any other reason (another
        // publisher's) says something more and is kept.
        let restated = decision
            .budget_name
            .as_ref()
            .is_some_and(|name| decision.reason.starts_with(&format!("budget {name:?} is exhausted")));
        let more = match restated || decision.reason.is_empty() {
            true => String::new(),
            false => format!(" {}", decision.reason),
        };
        let message = format!(
            "Faregate: budget \"{budget}\" ({}) is exhausted: ${spent} spent{limit}{resets}.{more}",
            decision.subject
        );
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "billing_error", "insufficient_quota", message);
        e.final_answer = true;
        e.anthropic_status = Some(StatusCode::PAYMENT_REQUIRED);
        e
    }

    /// A request that does not fit a budget's headroom on this replica: refused like a block
    /// (the budget is nearly exhausted for a request this size), and marked as a reservation.
    pub fn reservation_refused(refusal: &crate::reserve::Refusal) -> Self {
        let message = format!(
            "Faregate: budget \"{}\" has too little headroom left for this request: it may cost up to ${} and \
             ${} of this gateway's ${} share is held by requests in flight or not yet counted; \
             a smaller request (lower max_tokens) may fit",
            refusal.budget,
            crate::headroom::dollars(refusal.reservation),
            crate::headroom::dollars(refusal.held),
            crate::headroom::dollars(refusal.share),
        );
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "billing_error", "insufficient_quota", message);
        e.final_answer = true;
        e.anthropic_status = Some(StatusCode::PAYMENT_REQUIRED);
        e.reservation_refused = true;
        e
    }

    pub fn unavailable(message: String) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "server_error", message)
    }

    pub fn bad_gateway(message: String) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "api_error", "server_error", message)
    }

    /// The upstream did not answer (or finish answering) in time.
    pub fn gateway_timeout(message: String) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", "server_error", message)
    }

    pub fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", "invalid_request_error", message)
    }

    /// The status this error answers with on `provider`'s routes.
    pub fn status_for(&self, provider: Provider) -> StatusCode {
        match provider {
            Provider::Anthropic => self.anthropic_status.unwrap_or(self.status),
            Provider::Openai => self.status,
        }
    }

    pub fn into_response(self, provider: Provider) -> Response {
        let status = self.status_for(provider);
        let body = match provider {
            Provider::Anthropic => json!({
                "type": "error",
                "error": {"type": self.anthropic_type, "message": self.message},
            }),
            Provider::Openai => json!({
                "error": {"message": self.message, "type": self.openai_type, "param": null, "code": self.openai_code},
            }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.final_answer {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if self.reservation_refused {
            headers.insert("x-faregate-reservation", HeaderValue::from_static("refused"));
        }
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert("retry-after", value);
        }
        crate::proxy::budget_headers(headers, self.budget.map(|b| *b));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use faregate_core::event::DecisionState;
    use faregate_core::money::Usd;

    #[test]
    fn a_block_names_budget_spend_limit_and_reset_and_is_final() {
        let decision = Decision {
            subject: "org=acme/team=infra".into(),
            state: DecisionState::Block,
            reason: "daily limit reached".into(),
            budget_id: Some("infra-daily".into()),
            budget_name: Some("Infra daily".into()),
            spent_usd: Usd("10.0234".parse().unwrap()),
            limit_usd: Some(Usd("10".parse().unwrap())),
            window_start: None,
            resets_at: Some(Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap()),
            downgrade_to: None,
            decided_at: Utc::now(),
            revision: 1,
        };
        let error = ApiError::blocked(&decision);
        assert!(error.message.contains("\"Infra daily\""), "{}", error.message);
        assert!(error.message.contains("$10.02 spent of $10.00"), "{}", error.message);
        assert!(error.message.contains("resets at 2026-11-24 00:00 UTC"), "{}", error.message);
        assert!(
            error.message.ends_with("UTC. daily limit reached"),
            "another reason is kept: {}",
            error.message
        );
        // The budget service's own reason says the same again: left out.
        let own = Decision {
            reason: "budget \"Infra daily\" is exhausted: $10.02 of $10 spent".into(),
            ..decision.clone()
        };
        assert!(
            ApiError::blocked(&own).message.ends_with("resets at 2026-11-24 00:00 UTC."),
            "{}",
            ApiError::blocked(&own).message
        );
        assert_eq!(error.status_for(Provider::Anthropic), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(error.status_for(Provider::Openai), StatusCode::TOO_MANY_REQUESTS);
        let response = error.into_response(Provider::Openai);
        assert_eq!(response.headers()["x-should-retry"], "false");
    }
}

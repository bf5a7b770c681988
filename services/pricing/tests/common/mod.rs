//! Test helpers: usage events, and the documented conversion of each provider's usage JSON into
//! Faregate's disjoint token classes (the ingress applies the same rules).
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use faregate_core::clickhouse::ledger::{CostBreakdown, Pricing};
use faregate_core::event::{Endpoint, Outcome, SourceKind, TokenCounts, Tool, UsageEvent, UsageSource};
use faregate_pricing::PriceCatalog;
use serde_json::Value;
use uuid::Uuid;

pub fn catalog() -> PriceCatalog {
    PriceCatalog::embedded().expect("the shipped catalog is valid")
}

pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).expect("test timestamp").with_timezone(&Utc)
}

/// A usage event of `org` for `provider`/`model` with `tokens`, on 2026-06-01.
pub fn event(provider: &str, model: &str, tokens: TokenCounts) -> UsageEvent {
    let when = at("2026-06-01T12:00:00Z");
    UsageEvent {
        event_id: Uuid::nil(),
        occurred_at: when,
        received_at: when,
        source_kind: SourceKind::Ingress,
        source_name: "test".into(),
        org: "org-1".into(),
        team: None,
        user: Some("alice".into()),
        key_id: None,
        provider: provider.into(),
        requested_model: model.into(),
        served_model: None,
        endpoint: if provider == "openai" { Endpoint::Responses } else { Endpoint::Messages },
        tool: Tool::Sdk,
        session_id: None,
        request_id: "req-1".into(),
        upstream_request_id: None,
        project: None,
        tags: BTreeMap::new(),
        tokens,
        usage_source: UsageSource::Reported,
        service_tier: None,
        inference_region: None,
        streaming: false,
        outcome: Outcome::Ok,
        http_status: 200,
        latency_us: 1_000,
        ttfb_us: None,
    }
}

fn count(v: &Value, path: &[&str]) -> i64 {
    let mut v = v;
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return 0,
        }
    }
    v.as_i64().unwrap_or(0)
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// Anthropic Messages `usage`: `input_tokens` already excludes cache reads and writes; cache
/// writes are split by `cache_creation` (5m / 1h) when present, else all 5-minute; output
/// includes thinking (Anthropic reports no separate reasoning count).
pub fn anthropic_usage(usage: &Value) -> TokenCounts {
    let mut tokens = TokenCounts::default();
    apply_anthropic(&mut tokens, usage);
    tokens
}

fn apply_anthropic(tokens: &mut TokenCounts, usage: &Value) {
    if has(usage, "input_tokens") {
        tokens.input = count(usage, &["input_tokens"]);
    }
    if has(usage, "output_tokens") {
        tokens.output = count(usage, &["output_tokens"]);
    }
    if has(usage, "cache_read_input_tokens") {
        tokens.cache_read = count(usage, &["cache_read_input_tokens"]);
    }
    if has(usage, "cache_creation") {
        tokens.cache_write_5m = count(usage, &["cache_creation", "ephemeral_5m_input_tokens"]);
        tokens.cache_write_1h = count(usage, &["cache_creation", "ephemeral_1h_input_tokens"]);
    } else if has(usage, "cache_creation_input_tokens") {
        tokens.cache_write_5m = count(usage, &["cache_creation_input_tokens"]);
        tokens.cache_write_1h = 0;
    }
}

/// Anthropic Messages streaming: `message_start` carries the initial usage; every
/// `message_delta` carries CUMULATIVE counts that REPLACE the fields it names (never added).
pub fn anthropic_stream(events: &[Value]) -> TokenCounts {
    let mut tokens = TokenCounts::default();
    for event in events {
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => apply_anthropic(&mut tokens, &event["message"]["usage"]),
            Some("message_delta") => apply_anthropic(&mut tokens, &event["usage"]),
            _ => {}
        }
    }
    tokens
}

/// OpenAI Chat Completions `usage`: `prompt_tokens` INCLUDES `cached_tokens`, and
/// `completion_tokens` INCLUDES `reasoning_tokens`.
pub fn openai_chat_usage(usage: &Value) -> TokenCounts {
    let cached = count(usage, &["prompt_tokens_details", "cached_tokens"]);
    let reasoning = count(usage, &["completion_tokens_details", "reasoning_tokens"]);
    TokenCounts {
        input: count(usage, &["prompt_tokens"]) - cached,
        cache_read: cached,
        output: count(usage, &["completion_tokens"]) - reasoning,
        reasoning,
        ..TokenCounts::default()
    }
}

/// OpenAI Responses `usage`: `input_tokens` INCLUDES `input_tokens_details.cached_tokens`, and
/// `output_tokens` INCLUDES `output_tokens_details.reasoning_tokens`.
pub fn openai_responses_usage(usage: &Value) -> TokenCounts {
    let cached = count(usage, &["input_tokens_details", "cached_tokens"]);
    let reasoning = count(usage, &["output_tokens_details", "reasoning_tokens"]);
    TokenCounts {
        input: count(usage, &["input_tokens"]) - cached,
        cache_read: cached,
        output: count(usage, &["output_tokens"]) - reasoning,
        reasoning,
        ..TokenCounts::default()
    }
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("test JSON")
}

/// The price ref and cost of a priced event; panics with the reason otherwise.
pub fn priced(pricing: &Pricing) -> (String, CostBreakdown) {
    match pricing {
        Pricing::Priced { price_ref, cost } => (price_ref.clone(), *cost),
        Pricing::Unpriced { reason } => panic!("expected a price, got unpriced: {reason}"),
    }
}

/// The unpriced reason; panics if the event was priced.
pub fn unpriced(pricing: &Pricing) -> String {
    match pricing {
        Pricing::Unpriced { reason } => reason.clone(),
        Pricing::Priced { price_ref, cost } => panic!("expected unpriced, got {price_ref}: {cost:?}"),
    }
}

/// The cost of each class, normalized, as strings: input, output, cache_read, cache_write_5m,
/// cache_write_1h, reasoning.
pub fn classes(cost: &CostBreakdown) -> [String; 6] {
    [cost.input, cost.output, cost.cache_read, cost.cache_write_5m, cost.cache_write_1h, cost.reasoning]
        .map(|c| c.0.normalize().to_string())
}

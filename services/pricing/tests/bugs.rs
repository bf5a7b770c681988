//! One test per pricing bug that peers shipped (shared pricing facts), each showing the bug is
//! impossible here, plus the unpriced paths: an event is never priced at $0 for lack of a price.

mod common;

use common::*;
use faregate_core::clickhouse::ledger::Pricing;
use faregate_core::event::{Outcome, TokenCounts, UsageSource};
use faregate_pricing::PriceCatalog;

#[test]
fn cache_tokens_are_not_folded_into_input() {
    let catalog = catalog();
    // Anthropic: input_tokens already excludes cache; 100 input, 100,000 cache reads.
    let tokens =
        anthropic_usage(&json(r#"{"input_tokens":100,"cache_read_input_tokens":100000,"output_tokens":0}"#));
    assert_eq!((tokens.input, tokens.cache_read), (100, 100_000));
    let (_, cost) = priced(&catalog.price(&event("anthropic", "claude-sonnet-4-5", tokens)));
    assert_eq!(classes(&cost)[0], "0.0003");
    assert_eq!(classes(&cost)[2], "0.03");
    // Folded into input at $3/M it would be 0.3003: 10x over.
    assert_eq!(cost.total().to_string(), "$0.0303");

    // OpenAI: prompt_tokens includes cached_tokens, so input = prompt - cached.
    let tokens = openai_chat_usage(&json(
        r#"{"prompt_tokens":100000,"completion_tokens":0,"prompt_tokens_details":{"cached_tokens":90000}}"#,
    ));
    assert_eq!((tokens.input, tokens.cache_read), (10_000, 90_000));
    let (_, cost) = priced(&catalog.price(&event("openai", "gpt-5", tokens)));
    // 10,000 x $1.25/M + 90,000 x $0.125/M, not 100,000 x $1.25/M = 0.125.
    assert_eq!(cost.total().to_string(), "$0.02375");
}

#[test]
fn one_hour_cache_writes_are_not_billed_at_the_five_minute_rate() {
    let tokens = anthropic_usage(&json(
        r#"{"input_tokens":0,"cache_creation_input_tokens":10000,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":10000},"output_tokens":0}"#,
    ));
    assert_eq!((tokens.cache_write_5m, tokens.cache_write_1h), (0, 10_000));
    let (_, cost) = priced(&catalog().price(&event("anthropic", "claude-sonnet-4-5", tokens)));
    assert_eq!(cost.cache_write_1h.to_string(), "$0.06"); // $6/M, not $3.75/M (0.0375)
    assert_eq!(cost.cache_write_5m.to_string(), "$0");

    // A catalog that prices 5m writes but not 1h writes leaves 1h writes unpriced, never at 5m.
    let text = r#"
[models.m]
[[models.m.prices]]
effective_from = 2025-01-01
unit = "per_million"
input = "3"
output = "15"
cache_write_5m = "3.75"
"#;
    let catalog = PriceCatalog::from_sources([("p.toml", text)]).unwrap();
    let reason = unpriced(&catalog.price(&event("p", "m", tokens)));
    assert_eq!(reason, "p/m@2025-01-01 has no cache_write_1h price but the event has cache_write_1h tokens");
}

#[test]
fn streaming_message_delta_usage_replaces_instead_of_adding() {
    let events = [
        json(
            r#"{"type":"message_start","message":{"usage":{"input_tokens":472,"cache_read_input_tokens":0,"output_tokens":2}}}"#,
        ),
        json(r#"{"type":"message_delta","usage":{"output_tokens":120}}"#),
        json(r#"{"type":"message_delta","usage":{"output_tokens":503}}"#),
    ];
    let tokens = anthropic_stream(&events);
    // Adding would give 2 + 120 + 503 = 625 (or 472 input twice with newer cumulative deltas).
    assert_eq!(tokens, TokenCounts { input: 472, output: 503, ..TokenCounts::default() });
    let with_input = [
        events[0].clone(),
        json(
            r#"{"type":"message_delta","usage":{"input_tokens":472,"cache_read_input_tokens":0,"output_tokens":503}}"#,
        ),
    ];
    assert_eq!(anthropic_stream(&with_input), tokens);
    let (_, cost) = priced(&catalog().price(&event("anthropic", "claude-haiku-4-5", tokens)));
    assert_eq!(cost.total().to_string(), "$0.002987"); // 472 x $1/M + 503 x $5/M
}

#[test]
fn per_token_and_per_million_cannot_be_confused() {
    let file = |unit_line: &str, input: &str, output: &str| {
        format!(
            "[models.m]\n[[models.m.prices]]\neffective_from = 2025-01-01\n{unit_line}\ninput = \"{input}\"\noutput = \"{output}\"\n"
        )
    };
    // The unit is required: no default to guess wrong.
    let missing = PriceCatalog::from_sources([("prices/p.toml", file("", "3", "15").as_str())]).unwrap_err();
    assert_eq!(
        missing.issues()[0].to_string(),
        "prices/p.toml: model \"m\": field \"unit\": missing (per_million or per_token)"
    );
    // A per-token price written as per-million (1,000,000x too cheap) is refused ...
    let text = file("unit = \"per_million\"", "0.000003", "0.000015");
    let err = PriceCatalog::from_sources([("p.toml", text.as_str())]).unwrap_err().to_string();
    assert!(err.contains("field \"input\": 0.000003 with unit = \"per_million\" is below $0.001 per million tokens: did you mean unit = \"per_token\"?"), "{err}");
    // ... and so is a per-million price written as per-token (1,000,000x too dear).
    let text = file("unit = \"per_token\"", "3", "15");
    let err = PriceCatalog::from_sources([("p.toml", text.as_str())]).unwrap_err().to_string();
    assert!(err.contains("did you mean unit = \"per_million\"?"), "{err}");
    // Both units, written correctly, give the same exact cost.
    let per_million = file("unit = \"per_million\"", "3", "15");
    let per_token = file("unit = \"per_token\"", "0.000003", "0.000015");
    let tokens = TokenCounts { input: 1_234_567, output: 89, ..TokenCounts::default() };
    let costs: Vec<_> = [per_million, per_token]
        .iter()
        .map(|text| {
            let catalog = PriceCatalog::from_sources([("p.toml", text.as_str())]).unwrap();
            priced(&catalog.price(&event("p", "m", tokens))).1
        })
        .collect();
    assert_eq!(costs[0], costs[1]);
    assert_eq!(costs[0].total().to_string(), "$3.705036");
}

#[test]
fn money_is_exact_decimal_never_float() {
    let tokens = TokenCounts { input: 887, ..TokenCounts::default() };
    let (_, cost) = priced(&catalog().price(&event("anthropic", "claude-haiku-4-5", tokens)));
    assert_eq!(cost.total().0.normalize().to_string(), "0.000887"); // not 0.0008869999999999999
    assert_eq!(cost.total().to_units().unwrap(), 887_000_000_000_000);
    // Sums of small amounts stay exact: 1 input token at $1/M + 2 cache reads at $0.10/M.
    let tokens = TokenCounts { input: 1, cache_read: 2, ..TokenCounts::default() };
    let (_, cost) = priced(&catalog().price(&event("anthropic", "claude-haiku-4-5", tokens)));
    assert_eq!(cost.total().0.normalize().to_string(), "0.0000012");
    // A TOML float price is refused: it is already binary when the parser hands it over.
    let text = "[models.m]\n[[models.m.prices]]\neffective_from = 2025-01-01\nunit = \"per_million\"\ninput = 0.3\noutput = \"1\"\n";
    let err = PriceCatalog::from_sources([("p.toml", text)]).unwrap_err().to_string();
    assert!(err.contains("model \"m\": field \"prices[0].input\""), "{err}");
    assert!(err.contains("write prices as quoted decimal strings"), "{err}");
}

#[test]
fn unknown_model_or_provider_is_unpriced_never_zero() {
    let catalog = catalog();
    let tokens = TokenCounts { input: 10, output: 10, ..TokenCounts::default() };
    let reason = unpriced(&catalog.price(&event("anthropic", "claude-opus-9", tokens)));
    assert_eq!(reason, "unknown model \"claude-opus-9\" for provider \"anthropic\"");
    let reason = unpriced(&catalog.price(&event("mistral", "mistral-large", tokens)));
    assert_eq!(reason, "unknown provider \"mistral\" (the price catalog has: anthropic, openai)");
    // Even with zero tokens: an unknown model is unknown, not free.
    let reason = unpriced(&catalog.price(&event("anthropic", "claude-opus-9", TokenCounts::default())));
    assert!(reason.starts_with("unknown model"), "{reason}");
    // No prefix matching: a new dated snapshot is not silently priced as its base model.
    let reason = unpriced(&catalog.price(&event("anthropic", "claude-sonnet-4-5-20260101", tokens)));
    assert_eq!(
        reason,
        "unknown model \"claude-sonnet-4-5-20260101\" for provider \"anthropic\" (\"claude-sonnet-4-5\" is in \
         the catalog: if this dated id is the same model at the same price, add it to that model's aliases)"
    );
    // claude-opus-4 is not claude-opus-4-1 (nor the reverse).
    assert!(
        unpriced(&catalog.price(&event("anthropic", "claude-opus-4", tokens))).starts_with("unknown model")
    );
}

#[test]
fn served_model_is_billed_over_requested() {
    let mut e =
        event("anthropic", "claude-sonnet-4-5", TokenCounts { input: 1000, ..TokenCounts::default() });
    e.served_model = Some("claude-haiku-4-5-20251001".into());
    let (price_ref, cost) = priced(&catalog().price(&e));
    assert_eq!(price_ref, "anthropic/claude-haiku-4-5@2025-01-01");
    assert_eq!(cost.total().to_string(), "$0.001");
}

#[test]
fn client_disconnect_with_estimated_usage_is_still_priced() {
    let tokens = TokenCounts { input: 2000, output: 150, ..TokenCounts::default() };
    let mut e = event("anthropic", "claude-opus-4-5", tokens);
    e.streaming = true;
    e.outcome = Outcome::ClientAborted;
    e.usage_source = UsageSource::Estimated;
    let (price_ref, cost) = priced(&catalog().price(&e));
    assert_eq!(price_ref, "anthropic/claude-opus-4-5@2025-01-01");
    assert_eq!(cost.total().to_string(), "$0.01375");
}

#[test]
fn blocked_event_prices_to_zero_when_the_model_is_known() {
    let mut e = event("openai", "gpt-5", TokenCounts::default());
    e.outcome = Outcome::Blocked;
    e.usage_source = UsageSource::None;
    e.http_status = 429;
    assert!(matches!(catalog().price(&e), Pricing::Priced { cost, .. } if cost.total().0.is_zero()));
}

#[test]
fn unknown_tier_or_region_is_unpriced_with_what_is_known() {
    let catalog = catalog();
    let tokens = TokenCounts { input: 10, ..TokenCounts::default() };
    let mut e = event("openai", "gpt-5", tokens);
    e.service_tier = Some("priority".into());
    assert_eq!(
        unpriced(&catalog.price(&e)),
        "unknown service tier \"priority\" for openai/gpt-5@2025-01-01 (known: \"batch\", \"default\", \"flex\")"
    );
    let mut e = event("anthropic", "claude-opus-4-6", tokens);
    e.inference_region = Some("eu".into());
    assert_eq!(
        unpriced(&catalog.price(&e)),
        "unknown inference region \"eu\" for anthropic/claude-opus-4-6@2025-01-01 (known: \"global\", \"us\")"
    );
    let mut e = event("openai", "gpt-5", tokens);
    e.inference_region = Some("us".into());
    assert!(unpriced(&catalog.price(&e)).ends_with("(known: none)"));
}

#[test]
fn openai_cache_writes_without_a_price_are_unpriced() {
    let tokens = TokenCounts { input: 10, cache_write_5m: 100, ..TokenCounts::default() };
    assert_eq!(
        unpriced(&catalog().price(&event("openai", "gpt-5", tokens))),
        "openai/gpt-5@2025-01-01 has no cache_write_5m price but the event has cache_write_5m tokens"
    );
}

#[test]
fn negative_and_absurd_token_counts_are_unpriced() {
    let catalog = catalog();
    let tokens = TokenCounts { input: -5, ..TokenCounts::default() };
    assert_eq!(unpriced(&catalog.price(&event("openai", "gpt-5", tokens))), "negative input token count -5");
    let tokens = TokenCounts { output: i64::MAX, ..TokenCounts::default() };
    assert_eq!(
        unpriced(&catalog.price(&event("anthropic", "claude-opus-4-1", tokens))),
        "the cost under anthropic/claude-opus-4-1@2025-01-01 does not fit Decimal(38, 18) exactly"
    );
}

//! Effective dates (a price change at midnight inside one session) and per-org overrides.

mod common;

use common::*;
use faregate_core::event::TokenCounts;
use faregate_pricing::{EMBEDDED_FILES, PriceCatalog};

const CHANGE: &str = r#"
[models.m]
aliases = ["m-20250101"]

[[models.m.prices]]
effective_from = 2025-01-01
effective_to = 2026-03-01
unit = "per_million"
input = "3"
output = "15"

[[models.m.prices]]
effective_from = 2026-03-01
unit = "per_million"
input = "2"
output = "10"
"#;

#[test]
fn a_price_change_at_midnight_splits_one_session() {
    let catalog = PriceCatalog::from_sources([("acme.toml", CHANGE)]).unwrap();
    let tokens = TokenCounts { input: 1000, output: 1000, ..TokenCounts::default() };
    let mut before = event("acme", "m", tokens);
    before.session_id = Some("s-1".into());
    before.occurred_at = at("2026-02-28T23:59:59.999999Z");
    let mut after = before.clone();
    after.occurred_at = at("2026-03-01T00:00:00Z");
    after.requested_model = "m-20250101".into();

    let (old_ref, old_cost) = priced(&catalog.price(&before));
    let (new_ref, new_cost) = priced(&catalog.price(&after));
    assert_eq!((old_ref.as_str(), old_cost.total().to_string()), ("acme/m@2025-01-01", "$0.018".to_owned()));
    assert_eq!((new_ref.as_str(), new_cost.total().to_string()), ("acme/m@2026-03-01", "$0.012".to_owned()));

    let mut too_early = before.clone();
    too_early.occurred_at = at("2024-12-31T23:59:59Z");
    assert_eq!(
        unpriced(&catalog.price(&too_early)),
        "no price for acme/m in force at 2024-12-31T23:59:59Z (entries: [2025-01-01, 2026-03-01), from 2026-03-01)"
    );
}

#[test]
fn a_price_change_can_start_at_a_time_of_day() {
    let text = CHANGE.replace("2026-03-01", "2026-03-01T12:30:00Z");
    let catalog = PriceCatalog::from_sources([("acme.toml", text.as_str())]).unwrap();
    let mut e = event("acme", "m", TokenCounts { input: 1, ..TokenCounts::default() });
    e.occurred_at = at("2026-03-01T12:30:00Z");
    assert_eq!(priced(&catalog.price(&e)).0, "acme/m@2026-03-01T12:30:00Z");
    e.occurred_at = at("2026-03-01T12:29:59.999999Z");
    assert_eq!(priced(&catalog.price(&e)).0, "acme/m@2025-01-01");
}

fn anthropic_with(overrides: &str) -> PriceCatalog {
    let (_, anthropic) = EMBEDDED_FILES.iter().find(|(name, _)| name.ends_with("/anthropic.toml")).unwrap();
    let text = format!("{anthropic}\n{overrides}");
    PriceCatalog::from_sources([("schemas/prices/anthropic.toml", text.as_str())]).unwrap()
}

const ACME: &str = r#"
[[org_overrides]]
org = "acme"
effective_from = 2026-01-01
discount_percent = "20"

[[org_overrides]]
org = "acme"
models = ["claude-opus-4-5-20251101"]
effective_from = 2026-01-01
unit = "per_million"
input = "4"
output = "20"
cache_read = "0.40"
cache_write_5m = "5"
cache_write_1h = "8"
"#;

#[test]
fn org_discount_applies_to_that_org_from_its_date() {
    let catalog = anthropic_with(ACME);
    let tokens = TokenCounts { input: 1000, output: 1000, ..TokenCounts::default() };
    let mut e = event("anthropic", "claude-sonnet-4-5", tokens);
    e.org = "acme".into();
    let (price_ref, cost) = priced(&catalog.price(&e));
    assert_eq!(price_ref, "anthropic/claude-sonnet-4-5@2025-01-01+org:acme@2026-01-01");
    assert_eq!(cost.total().to_string(), "$0.0144"); // (0.003 + 0.015) x 0.8

    e.org = "globex".into();
    assert_eq!(priced(&catalog.price(&e)).1.total().to_string(), "$0.018");

    e.org = "acme".into();
    e.occurred_at = at("2025-12-31T23:59:59.999999Z");
    let (price_ref, cost) = priced(&catalog.price(&e));
    assert_eq!(
        (price_ref.as_str(), cost.total().to_string()),
        ("anthropic/claude-sonnet-4-5@2025-01-01", "$0.018".to_owned())
    );
}

#[test]
fn negotiated_rates_win_over_a_discount_and_keep_tier_multipliers() {
    let catalog = anthropic_with(ACME);
    let tokens = TokenCounts { input: 1000, output: 1000, ..TokenCounts::default() };
    let mut e = event("anthropic", "claude-opus-4-5", tokens);
    e.org = "acme".into();
    let (price_ref, cost) = priced(&catalog.price(&e));
    assert_eq!(price_ref, "anthropic/claude-opus-4-5@2025-01-01+org:acme@2026-01-01");
    assert_eq!(cost.total().to_string(), "$0.024"); // 0.004 + 0.02, not list 0.03 x 0.8
    e.service_tier = Some("batch".into());
    e.inference_region = Some("us".into());
    assert_eq!(priced(&catalog.price(&e)).1.total().to_string(), "$0.0132"); // x 0.5 x 1.1
}

#[test]
fn long_context_and_discount_combine_exactly() {
    let catalog = anthropic_with(ACME);
    let tokens = TokenCounts { input: 200_001, output: 3, ..TokenCounts::default() };
    let mut e = event("anthropic", "claude-sonnet-4-5", tokens);
    e.org = "acme".into();
    // (200,001 x $6/M + 3 x $22.50/M) x 0.8 = (1.200006 + 0.0000675) x 0.8
    assert_eq!(priced(&catalog.price(&e)).1.total().to_string(), "$0.9600588");
}

#[test]
fn quote_gives_prices_before_tokens_are_known() {
    let catalog = catalog();
    let e = event("openai", "gpt-5.4", TokenCounts::default());
    let quote = catalog.quote(&e).unwrap();
    assert_eq!(quote.price_ref(), "openai/gpt-5.4@2025-01-01");
    let estimate =
        quote.cost(&TokenCounts { input: 300_000, output: 4000, ..TokenCounts::default() }).unwrap();
    assert_eq!(estimate.total().to_string(), "$1.59"); // 300,000 x $5/M + 4,000 x $22.50/M
}

#[test]
fn a_service_tier_can_have_explicit_prices() {
    let text = r#"
[service_tiers]
priority = { unit = "per_million", input = "2.50", output = "20" }

[models.m]
[[models.m.prices]]
effective_from = 2025-01-01
unit = "per_million"
input = "1.25"
output = "10"
cache_read = "0.125"
"#;
    let catalog = PriceCatalog::from_sources([("p.toml", text)]).unwrap();
    let mut e = event("p", "m", TokenCounts { input: 1000, output: 1000, ..TokenCounts::default() });
    e.service_tier = Some("priority".into());
    assert_eq!(priced(&catalog.price(&e)).1.total().to_string(), "$0.0225");
    // The explicit tier gives no cache_read price: cached tokens on it are unpriced, not free.
    e.tokens.cache_read = 10;
    assert_eq!(
        unpriced(&catalog.price(&e)),
        "p/m@2025-01-01 has no cache_read price but the event has cache_read tokens"
    );
}

/// An imported bucket sums many requests: its long-context band is the one its tag states for
/// each request, not the one its summed input would fall in. Only an import's tag counts.
#[test]
fn a_summed_event_is_priced_in_the_band_its_requests_were_in() {
    let catalog = catalog();
    let tokens = TokenCounts { input: 1_000_000, output: 1_000, ..TokenCounts::default() };
    let mut e = event("anthropic", "claude-sonnet-4-5", tokens);
    e.source_kind = faregate_core::event::SourceKind::Import;
    // Without the tag, one request of a million input tokens: long-context prices ($6, $22.50).
    assert_eq!(priced(&catalog.price(&e)).1.total().to_string(), "$6.0225");
    // Many requests of at most 200K each: base prices ($3, $15).
    e.tags.insert(faregate_core::event::TAG_REQUEST_INPUT_TOKENS.into(), "1".into());
    assert_eq!(priced(&catalog.price(&e)).1.total().to_string(), "$3.015");
    // The same tag on another gateway's record (its client's tags) chooses nothing.
    let mut collected = e.clone();
    collected.source_kind = faregate_core::event::SourceKind::Collector;
    assert_eq!(priced(&catalog.price(&collected)).1.total().to_string(), "$6.0225");
    // Requests above 200K each: long-context prices again.
    e.tags.insert(faregate_core::event::TAG_REQUEST_INPUT_TOKENS.into(), "200001".into());
    assert_eq!(priced(&catalog.price(&e)).1.total().to_string(), "$6.0225");
}

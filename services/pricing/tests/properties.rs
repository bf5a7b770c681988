//! Properties of pricing over the whole shipped catalog: cost never decreases as any token class
//! grows, per-class costs add up exactly to a total the ledger can store, and N tokens cost
//! exactly N times one token.

mod common;

use common::*;
use faregate_core::clickhouse::ledger::CostBreakdown;
use faregate_core::event::TokenCounts;
use faregate_pricing::PriceCatalog;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::sync::LazyLock;

static CATALOG: LazyLock<PriceCatalog> = LazyLock::new(catalog);

/// (provider, model, service tier, region).
type Target = (String, String, Option<&'static str>, Option<&'static str>);

/// Every combination the shipped catalog prices.
static TARGETS: LazyLock<Vec<Target>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for provider in ["anthropic", "openai"] {
        let (tiers, regions): (&[Option<&str>], &[Option<&str>]) = match provider {
            "anthropic" => (&[None, Some("standard"), Some("batch")], &[None, Some("global"), Some("us")]),
            _ => (&[None, Some("default"), Some("batch"), Some("flex")], &[None]),
        };
        for model in CATALOG.models(provider) {
            for tier in tiers {
                for region in regions {
                    out.push((provider.to_owned(), model.to_owned(), *tier, *region));
                }
            }
        }
    }
    out
});

fn set(tokens: &mut TokenCounts, class: usize, value: i64) {
    match class {
        0 => tokens.input = value,
        1 => tokens.output = value,
        2 => tokens.cache_read = value,
        3 => tokens.cache_write_5m = value,
        4 => tokens.cache_write_1h = value,
        _ => tokens.reasoning = value,
    }
}

fn get(tokens: &TokenCounts, class: usize) -> i64 {
    [
        tokens.input,
        tokens.output,
        tokens.cache_read,
        tokens.cache_write_5m,
        tokens.cache_write_1h,
        tokens.reasoning,
    ][class]
}

fn cost_of(target: usize, tokens: TokenCounts) -> CostBreakdown {
    let (provider, model, tier, region) = &TARGETS[target];
    let mut e = event(provider, model, tokens);
    e.service_tier = tier.map(str::to_owned);
    e.inference_region = region.map(str::to_owned);
    priced(&CATALOG.price(&e)).1
}

/// Token counts every target can price (OpenAI has no cache-write prices).
fn tokens(target: usize) -> impl Strategy<Value = TokenCounts> {
    let writes = TARGETS[target].0 == "anthropic";
    let count = || prop_oneof![Just(0i64), 0i64..5_000, 0i64..600_000];
    (count(), count(), count(), count(), count(), count()).prop_map(move |(i, o, r, w5, w1, reasoning)| {
        TokenCounts {
            input: i,
            output: o,
            cache_read: r,
            cache_write_5m: if writes { w5 } else { 0 },
            cache_write_1h: if writes { w1 } else { 0 },
            reasoning,
        }
    })
}

fn target_and_tokens() -> impl Strategy<Value = (usize, TokenCounts)> {
    (0..TARGETS.len()).prop_flat_map(|target| (Just(target), tokens(target)))
}

fn classes_of(target: usize) -> Vec<usize> {
    if TARGETS[target].0 == "anthropic" { vec![0, 1, 2, 3, 4, 5] } else { vec![0, 1, 2, 5] }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn cost_never_decreases_as_a_class_grows(
        (target, tokens) in target_and_tokens(),
        class_pick in any::<prop::sample::Index>(),
        extra in 1i64..400_000,
    ) {
        let classes = classes_of(target);
        let class = classes[class_pick.index(classes.len())];
        let mut more = tokens;
        set(&mut more, class, get(&tokens, class) + extra);
        let before = cost_of(target, tokens).total();
        let after = cost_of(target, more).total();
        // Crossing a long-context threshold raises the cost of every class; it never lowers it.
        prop_assert!(after >= before, "{:?}: {before} then {after} adding {extra} to class {class}", TARGETS[target]);
    }

    #[test]
    fn classes_add_up_exactly_to_a_storable_total((target, tokens) in target_and_tokens()) {
        let cost = cost_of(target, tokens);
        let parts = [cost.input, cost.output, cost.cache_read, cost.cache_write_5m, cost.cache_write_1h, cost.reasoning];
        let units: i128 = parts.iter().map(|p| p.to_units().unwrap()).sum();
        prop_assert_eq!(cost.total().to_units().unwrap(), units);
        prop_assert_eq!(cost.total().0, parts.iter().map(|p| p.0).sum::<Decimal>());
        for (part, count) in parts.iter().zip([tokens.input, tokens.output, tokens.cache_read, tokens.cache_write_5m, tokens.cache_write_1h, tokens.reasoning]) {
            prop_assert!(part.0 >= Decimal::ZERO);
            prop_assert_eq!(count == 0, part.0.is_zero(), "a class is zero exactly when it has no tokens");
        }
    }

    #[test]
    fn n_tokens_cost_n_times_one_token(
        target in 0..TARGETS.len(),
        class_pick in any::<prop::sample::Index>(),
        n in 0i64..200_000,
    ) {
        let classes = classes_of(target);
        let class = classes[class_pick.index(classes.len())];
        let mut one = TokenCounts::default();
        set(&mut one, class, 1);
        let mut many = TokenCounts::default();
        set(&mut many, class, n);
        // Below every long-context threshold (200K), so both are priced at the base band.
        prop_assert_eq!(cost_of(target, many).total().0, Decimal::from(n) * cost_of(target, one).total().0);
    }
}

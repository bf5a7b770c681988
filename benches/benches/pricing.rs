//! Pricing one usage event (`PriceCatalog::price`) on a realistic mix, against baselines measured
//! in the same run: summing the events' token counts (the floor of touching every event) and the
//! catalog lookup alone (`quote`: provider, model, effective entry, tier, region). `quote_cost`
//! is pricing without building the ledger's `Pricing` (no `price_ref` String), so the gap
//! between it and `price` is the cost of that allocation.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faregate_core::clickhouse::ledger::Pricing;
use faregate_core::event::{TokenCounts, UsageEvent, arbitrary};
use faregate_core::time::from_micros;
use faregate_pricing::PriceCatalog;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

/// (provider, model as the event names it, weight in the mix).
const MODELS: &[(&str, &str, u32)] = &[
    ("anthropic", "claude-sonnet-4-5-20250929", 25),
    ("anthropic", "claude-opus-4-6", 15),
    ("anthropic", "claude-haiku-4-5-20251001", 10),
    ("anthropic", "claude-opus-4-7", 5),
    ("openai", "gpt-5", 15),
    ("openai", "gpt-5-mini", 10),
    ("openai", "gpt-5.4", 10),
    ("openai", "gpt-5.5", 8),
    ("anthropic", "claude-sonnet-9-preview", 2), // unknown: unpriced
];

/// A small deterministic generator (xorshift), so the mix is the same on every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> i64 {
        i64::try_from(self.next() % n).unwrap_or(0)
    }
}

fn events(n: usize) -> Vec<UsageEvent> {
    let mut runner = TestRunner::deterministic();
    let mut mix = Mix(0x9e37_79b9_7f4a_7c15);
    let total_weight: u32 = MODELS.iter().map(|m| m.2).sum();
    (0..n)
        .map(|_| {
            let mut event = arbitrary::usage_event().new_tree(&mut runner).unwrap().current();
            let mut pick = u32::try_from(mix.below(u64::from(total_weight))).unwrap_or(0);
            let &(provider, model, _) = MODELS
                .iter()
                .find(|m| {
                    let hit = pick < m.2;
                    pick = pick.saturating_sub(m.2);
                    hit
                })
                .unwrap_or(&MODELS[0]);
            event.provider = provider.into();
            event.requested_model = model.into();
            event.served_model = None;
            event.org = format!("org-{}", mix.below(20));
            event.occurred_at = from_micros(1_780_000_000_000_000 + mix.below(10_000_000_000_000));
            let anthropic = provider == "anthropic";
            let long = mix.below(100) < 3;
            let cached = mix.below(100) < 60;
            event.tokens = TokenCounts {
                input: if long { 150_000 + mix.below(200_000) } else { mix.below(8_000) },
                output: mix.below(4_000),
                cache_read: if cached { mix.below(60_000) } else { 0 },
                cache_write_5m: if anthropic && mix.below(100) < 30 { mix.below(10_000) } else { 0 },
                cache_write_1h: if anthropic && mix.below(100) < 5 { mix.below(10_000) } else { 0 },
                reasoning: if !anthropic && mix.below(100) < 50 { mix.below(3_000) } else { 0 },
            };
            event.service_tier = match mix.below(100) {
                0..5 => Some("batch".into()),
                5..40 if anthropic => Some("standard".into()),
                5..40 => Some("default".into()),
                _ => None,
            };
            event.inference_region = (anthropic && mix.below(100) < 10).then(|| "us".into());
            event
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let catalog = PriceCatalog::embedded().unwrap();
    let events = events(4_096);
    let priced = events.iter().filter(|e| matches!(catalog.price(e), Pricing::Priced { .. })).count();
    eprintln!("pricing mix: {} events, {priced} priced", events.len());

    let mut group = c.benchmark_group("pricing");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("baseline/sum_tokens", |b| {
        b.iter(|| events.iter().map(|e| black_box(e).tokens.total()).fold(0i64, i64::wrapping_add))
    });
    group.bench_function("baseline/lookup", |b| {
        b.iter(|| {
            events
                .iter()
                .filter_map(|e| catalog.quote(black_box(e)).ok())
                .map(|q| q.price_ref().len())
                .sum::<usize>()
        })
    });
    group.bench_function("quote_cost", |b| {
        b.iter(|| {
            events
                .iter()
                .filter_map(|e| catalog.quote(black_box(e)).ok()?.cost(&e.tokens).ok())
                .map(|cost| cost.input.0.mantissa() & 1)
                .sum::<i128>()
        })
    });
    group.bench_function("price", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| match catalog.price(black_box(e)) {
                    Pricing::Priced { price_ref, .. } => price_ref.len(),
                    Pricing::Unpriced { reason } => reason.len(),
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

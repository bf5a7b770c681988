//! A request's estimated maximum cost, before it is sent.
//!
//! - Input: the request body's size divided by `bytes_per_input_token` (3 by default: text
//!   tokenises at about 4 bytes a token, JSON framing adds bytes, so this over-counts text),
//!   priced as uncached input; but when the key (else the model) has at least
//!   `history_min_samples` billed requests on this replica, that input cost times the largest
//!   of its last [`RING`] **input ratios**: what a request's input side (uncached input, cache
//!   reads and writes) was billed, over what this estimate would have reserved for its body.
//!   A coding agent re-sends its conversation every turn and the provider reads most of it from
//!   the cache at a tenth of the input price, so the ratio is about 0.1-0.2 once its cache is
//!   warm (reserving the body as uncached input refused a small budget long before it was
//!   spent); a request that writes much of its prompt to the cache (priced 1.25-2 x input)
//!   raises it, above 1 when it writes more than the body over-counts.
//! - Output: the request's `max_tokens` / `max_completion_tokens` / `max_output_tokens`, but
//!   when the key (else the model) has produced at least `history_min_samples` outputs on this
//!   replica, at most `history_factor` times the largest of its last [`RING`] outputs (and not
//!   below `history_floor_tokens`): Claude Code asks for 32,000 on every call and produces a few
//!   hundred. Without a limit and without history, `default_output_tokens`.
//! - Prices: the catalog's entry for the provider and model (the downgraded one, if any) in
//!   force now, for the org, at the standard tier.
//! - Also the **likely** cost: the same input, with the median of the recent outputs (when there
//!   is history; otherwise the likely cost is the estimate). Admission may let one request per
//!   budget and replica through on its likely cost when its estimate no longer fits (see
//!   [`super::book`]).
//!
//! What this can get wrong is stated in docs/ARCHITECTURE.md ("Admission by reservation"): an
//! output above the history bound, input that tokenises denser than the assumed bytes per
//! token, cache writes (priced above input) and a non-standard service tier.
//!
//! The history is per replica, in memory: a read lock and a few atomic loads per request; a new
//! key or model takes the write lock once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use faregate_core::event::{TokenCounts, UsageEvent};
use faregate_core::money::Usd;
use faregate_pricing::{PriceCatalog, UnpricedReason};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::config::ReservationConfig;

/// Outputs remembered per key and per model.
pub const RING: usize = 32;

/// Where the output estimate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFrom {
    /// The request's own limit.
    Limit,
    /// The key's recent outputs bound it below the limit.
    KeyHistory,
    /// The model's recent outputs (on this replica) bound it below the limit.
    ModelHistory,
    /// No limit, no history.
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub amount: Usd,
    /// The cost with the median recent output instead of the bound (at most `amount`).
    pub likely: Usd,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub output_from: OutputFrom,
}

/// The last [`RING`] output token counts of one key or model.
#[derive(Debug, Default)]
struct Ring {
    slots: [AtomicU32; RING],
    pushed: AtomicU64,
}

impl Ring {
    fn push(&self, tokens: u32) {
        let n = self.pushed.fetch_add(1, Ordering::Relaxed);
        self.slots[(n % RING as u64) as usize].store(tokens, Ordering::Relaxed);
    }

    /// (samples, the largest of them, their median).
    fn max(&self) -> (u64, u32, u32) {
        let n = self.pushed.load(Ordering::Relaxed).min(RING as u64) as usize;
        let mut seen = [0u32; RING];
        for (slot, value) in self.slots[..n].iter().zip(seen.iter_mut()) {
            *value = slot.load(Ordering::Relaxed);
        }
        let seen = &mut seen[..n];
        seen.sort_unstable();
        (n as u64, seen.last().copied().unwrap_or(0), seen.get(n / 2).copied().unwrap_or(0))
    }
}

/// Recent outputs and input ratios (in thousandths) per key and per model, on this replica.
#[derive(Debug, Default)]
pub struct History {
    keys: RwLock<HashMap<String, Arc<Ring>>>,
    models: RwLock<HashMap<String, Arc<Ring>>>,
    input_keys: RwLock<HashMap<String, Arc<Ring>>>,
    input_models: RwLock<HashMap<String, Arc<Ring>>>,
}

/// Input ratios are kept in thousandths.
const PER_MILLE: i64 = 1000;

/// Maps beyond this many entries are cleared (a bound on memory, not an expected size).
const MAX_ENTRIES: usize = 200_000;

fn ring_of(map: &RwLock<HashMap<String, Arc<Ring>>>, name: &str) -> Arc<Ring> {
    if let Some(ring) = map.read().unwrap_or_else(|e| e.into_inner()).get(name) {
        return ring.clone();
    }
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.entry(name.to_string()).or_default().clone()
}

fn peek(map: &RwLock<HashMap<String, Arc<Ring>>>, name: &str) -> (u64, u32, u32) {
    map.read().unwrap_or_else(|e| e.into_inner()).get(name).map_or((0, 0, 0), |r| r.max())
}

impl History {
    /// Remember that a request of `key` on `model` produced `output` tokens.
    pub fn record(&self, key: Option<&str>, model: &str, output: i64) {
        let tokens = u32::try_from(output.max(0)).unwrap_or(u32::MAX);
        if let Some(key) = key {
            ring_of(&self.keys, key).push(tokens);
        }
        ring_of(&self.models, model).push(tokens);
    }

    /// Remember that a request of `key` on `model` was billed `ratio` thousandths of its
    /// estimated input cost on its input side.
    pub fn record_input(&self, key: Option<&str>, model: &str, ratio: u32) {
        if let Some(key) = key {
            ring_of(&self.input_keys, key).push(ratio);
        }
        ring_of(&self.input_models, model).push(ratio);
    }

    /// The input ratio (thousandths) to reserve with and the likely one: the largest and the
    /// median of the key's (else the model's) last [`RING`], once there are enough; else
    /// none (the body is reserved as uncached input).
    pub fn input_ratio(
        &self,
        config: &ReservationConfig,
        key: Option<&str>,
        model: &str,
    ) -> Option<(u32, u32)> {
        let enough = |(samples, max, median): (u64, u32, u32)| {
            (samples >= u64::from(config.history_min_samples)).then_some((max, median))
        };
        key.and_then(|k| enough(peek(&self.input_keys, k)))
            .or_else(|| enough(peek(&self.input_models, model)))
    }

    /// The output tokens to reserve for a request asking for at most `limit`, where they come
    /// from, and the likely output (the recent median, at most the reserved tokens).
    pub fn output_tokens(
        &self,
        config: &ReservationConfig,
        key: Option<&str>,
        model: &str,
        limit: Option<i64>,
    ) -> (i64, OutputFrom, i64) {
        let bound = |(samples, max, median): (u64, u32, u32)| {
            (samples >= u64::from(config.history_min_samples)).then(|| {
                let bound = (i64::from(max).saturating_mul(i64::from(config.history_factor)))
                    .max(config.history_floor_tokens);
                (bound, i64::from(median))
            })
        };
        let from_history = key
            .and_then(|k| bound(peek(&self.keys, k)).map(|(b, m)| (b, m, OutputFrom::KeyHistory)))
            .or_else(|| bound(peek(&self.models, model)).map(|(b, m)| (b, m, OutputFrom::ModelHistory)));
        let (tokens, from, likely) = match (limit.filter(|l| *l > 0), from_history) {
            (Some(limit), Some((bound, median, from))) if bound < limit => (bound, from, median),
            (Some(limit), Some((_, median, _))) => (limit, OutputFrom::Limit, median),
            (Some(limit), None) => (limit, OutputFrom::Limit, limit),
            (None, Some((bound, median, from))) => (bound, from, median),
            (None, None) => (config.default_output_tokens, OutputFrom::Default, config.default_output_tokens),
        };
        (tokens, from, likely.min(tokens))
    }
}

/// The estimated maximum cost of `event` (its provider, model, org and time; no tokens yet)
/// with a body of `body_bytes` asking for at most `limit` output tokens.
pub fn estimate(
    catalog: &PriceCatalog,
    config: &ReservationConfig,
    history: &History,
    event: &UsageEvent,
    body_bytes: usize,
    limit: Option<i64>,
) -> Result<Estimate, UnpricedReason> {
    let quote = catalog.quote(event)?;
    let input_tokens = body_tokens(config, body_bytes);
    let (output_tokens, output_from, likely_output) =
        history.output_tokens(config, event.key_id.as_deref(), event.billed_model(), limit);
    let tokens = TokenCounts { input: input_tokens, output: output_tokens, ..TokenCounts::default() };
    let ratios = history.input_ratio(config, event.key_id.as_deref(), event.billed_model());
    // The input side at `ratio` thousandths of the body priced as uncached input.
    let priced = |tokens: &TokenCounts, ratio: Option<u32>| -> Result<Usd, UnpricedReason> {
        let cost = quote.cost(tokens)?;
        Ok(match ratio {
            Some(ratio) => {
                Usd(cost.total().0 - cost.input.0 + cost.input.0 * Decimal::new(i64::from(ratio), 3))
            }
            None => cost.total(),
        })
    };
    let amount = priced(&tokens, ratios.map(|(max, _)| max))?;
    let likely = priced(&TokenCounts { output: likely_output, ..tokens }, ratios.map(|(_, median)| median))?;
    Ok(Estimate { amount, likely: likely.min(amount), input_tokens, output_tokens, output_from })
}

/// The input tokens [`estimate`] counts for a body of `body_bytes`: its bytes over
/// `bytes_per_input_token`, rounded up.
fn body_tokens(config: &ReservationConfig, body_bytes: usize) -> i64 {
    let per_token = u64::from(config.bytes_per_input_token.max(1));
    i64::try_from((body_bytes as u64).div_ceil(per_token)).unwrap_or(i64::MAX)
}

/// What `event`'s input side was billed over what [`estimate`] reserves for a body of
/// `body_bytes` as uncached input, in thousandths rounded up (saturating); `None` when either
/// is unknown or the estimate is zero.
pub fn input_ratio(
    catalog: &PriceCatalog,
    config: &ReservationConfig,
    event: &UsageEvent,
    body_bytes: usize,
) -> Option<u32> {
    let quote = catalog.quote(event).ok()?;
    let estimated_tokens = body_tokens(config, body_bytes);
    let estimated =
        quote.cost(&TokenCounts { input: estimated_tokens, ..TokenCounts::default() }).ok()?.input;
    if estimated.0 <= Decimal::ZERO {
        return None;
    }
    let t = &event.tokens;
    let input_side = TokenCounts {
        input: t.input,
        cache_read: t.cache_read,
        cache_write_5m: t.cache_write_5m,
        cache_write_1h: t.cache_write_1h,
        ..TokenCounts::default()
    };
    let billed = quote.cost(&input_side).ok()?.total();
    let ratio = (billed.0 * Decimal::from(PER_MILLE) / estimated.0).ceil();
    Some(ratio.to_u32().unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faregate_core::event::{Outcome, arbitrary};
    use proptest::strategy::{Strategy, ValueTree};

    /// A billed Anthropic request of key `k` on Claude Sonnet 4.5 ($3 in, $15 out, $0.30 cache
    /// read, $3.75 cache write per million, compiled-in catalog) with `tokens`.
    fn event(tokens: TokenCounts) -> UsageEvent {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut event = arbitrary::usage_event().new_tree(&mut runner).unwrap().current();
        event.provider = "anthropic".into();
        event.requested_model = "claude-sonnet-4-5".into();
        event.served_model = None;
        event.service_tier = None;
        event.inference_region = None;
        event.key_id = Some("k".into());
        event.occurred_at = chrono::Utc::now();
        event.outcome = Outcome::Ok;
        event.http_status = 200;
        event.tokens = tokens;
        event
    }

    #[test]
    fn the_input_side_is_reserved_as_the_keys_recent_requests_were_billed() {
        let catalog = PriceCatalog::embedded().unwrap();
        let config = ReservationConfig::default();
        let history = History::default();
        // 300,000 bytes: 100,000 tokens as uncached input, $0.30; no output limit, no history.
        let body = 300_000;
        let cold =
            estimate(&catalog, &config, &history, &event(TokenCounts::default()), body, Some(1)).unwrap();
        assert_eq!(cold.amount, Usd("0.300015".parse().unwrap()), "cold: the body as uncached input");
        // A warm coding agent: 95,000 tokens read from the cache, 3,000 written, 2,000 input:
        // $0.0285 + $0.01125 + $0.006 = $0.04575 billed on the input side, 0.1525 of $0.30.
        let warm =
            TokenCounts { input: 2_000, cache_read: 95_000, cache_write_5m: 3_000, ..TokenCounts::default() };
        assert_eq!(input_ratio(&catalog, &config, &event(warm), body), Some(153), "rounded up");
        for _ in 0..config.history_min_samples {
            let ratio = input_ratio(&catalog, &config, &event(warm), body).unwrap();
            history.record_input(Some("k"), "claude-sonnet-4-5", ratio);
        }
        let e = estimate(&catalog, &config, &history, &event(TokenCounts::default()), body, Some(1)).unwrap();
        assert_eq!(e.amount, Usd("0.045915".parse().unwrap()), "0.153 x $0.30 + one output token");
        // One turn that wrote its whole prompt to the 1 h cache ($6 per million: 2 x input,
        // 1.5 x what the body over-counts at 3 bytes a token) raises the bound for the next 32.
        let rewrite = TokenCounts { cache_write_1h: 75_000, ..TokenCounts::default() };
        history.record_input(
            Some("k"),
            "claude-sonnet-4-5",
            input_ratio(&catalog, &config, &event(rewrite), body).unwrap(),
        );
        let e = estimate(&catalog, &config, &history, &event(TokenCounts::default()), body, Some(1)).unwrap();
        assert_eq!(e.amount, Usd("0.450015".parse().unwrap()), "1.5 x $0.30: above the cold estimate");
        assert_eq!(e.likely, Usd("0.045915".parse().unwrap()), "likely: the median ratio");
        // Another key on the model: the model's history.
        let mut other = event(TokenCounts::default());
        other.key_id = Some("other".into());
        assert_eq!(estimate(&catalog, &config, &history, &other, body, Some(1)).unwrap().amount, e.amount);
    }

    #[test]
    fn history_bounds_a_far_larger_limit_and_never_raises_it() {
        let config = ReservationConfig::default();
        let history = History::default();
        let out = |key, limit| history.output_tokens(&config, key, "m", limit);
        assert_eq!(
            out(Some("k"), Some(32_000)),
            (32_000, OutputFrom::Limit, 32_000),
            "no history: the limit"
        );
        let default = config.default_output_tokens;
        assert_eq!(out(Some("k"), None), (default, OutputFrom::Default, default));
        for i in 0..config.history_min_samples {
            history.record(Some("k"), "m", 300 + i64::from(i));
        }
        let max = 300 + i64::from(config.history_min_samples) - 1;
        let median = 300 + i64::from(config.history_min_samples) / 2;
        let bound = max * i64::from(config.history_factor);
        assert_eq!(out(Some("k"), Some(32_000)), (bound, OutputFrom::KeyHistory, median));
        assert_eq!(out(Some("k"), Some(100)), (100, OutputFrom::Limit, 100), "the limit when it is lower");
        // Another key on the same model: the model's history.
        assert_eq!(out(Some("other"), Some(32_000)), (bound, OutputFrom::ModelHistory, median));
        // The ring forgets: 32 small outputs later the old maximum is gone.
        for _ in 0..RING {
            history.record(Some("k"), "m", 10);
        }
        assert_eq!(out(Some("k"), Some(32_000)), (config.history_floor_tokens, OutputFrom::KeyHistory, 10));
    }
}

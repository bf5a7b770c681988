//! A request's estimated maximum cost, before it is sent.
//!
//! - Input: the request body's size divided by `bytes_per_input_token` (3 by default: text
//!   tokenises at about 4 bytes a token, JSON framing adds bytes, so this over-counts text),
//!   priced as uncached input.
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

/// Recent outputs per key and per model, on this replica.
#[derive(Debug, Default)]
pub struct OutputHistory {
    keys: RwLock<HashMap<String, Arc<Ring>>>,
    models: RwLock<HashMap<String, Arc<Ring>>>,
}

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

impl OutputHistory {
    /// Remember that a request of `key` on `model` produced `output` tokens.
    pub fn record(&self, key: Option<&str>, model: &str, output: i64) {
        let tokens = u32::try_from(output.max(0)).unwrap_or(u32::MAX);
        if let Some(key) = key {
            ring_of(&self.keys, key).push(tokens);
        }
        ring_of(&self.models, model).push(tokens);
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
    history: &OutputHistory,
    event: &UsageEvent,
    body_bytes: usize,
    limit: Option<i64>,
) -> Result<Estimate, UnpricedReason> {
    let quote = catalog.quote(event)?;
    let per_token = u64::from(config.bytes_per_input_token.max(1));
    let input_tokens = i64::try_from((body_bytes as u64).div_ceil(per_token)).unwrap_or(i64::MAX);
    let (output_tokens, output_from, likely_output) =
        history.output_tokens(config, event.key_id.as_deref(), event.billed_model(), limit);
    let tokens = TokenCounts { input: input_tokens, output: output_tokens, ..TokenCounts::default() };
    let amount = quote.cost(&tokens)?.total();
    let likely = if likely_output == output_tokens {
        amount
    } else {
        quote.cost(&TokenCounts { output: likely_output, ..tokens })?.total()
    };
    Ok(Estimate { amount, likely, input_tokens, output_tokens, output_from })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_bounds_a_far_larger_limit_and_never_raises_it() {
        let config = ReservationConfig::default();
        let history = OutputHistory::default();
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

//! Pricing one usage event: [`PriceCatalog::price`] returns the ledger's [`Pricing`].
//!
//! Contract: the model is `event.billed_model()`, matched exactly against the ids and aliases of
//! the provider's file; the entry is the one in force at `event.occurred_at`; the service tier
//! and the inference region, when the event names them, must be listed for that entry. Costs
//! are exact (integer multiplication of token counts by per-token rates with at most 18 decimal
//! places), kept per token class, and never rounded. Anything missing (provider, model, entry,
//! tier, region, the price of a class the event used) makes the event unpriced with a reason
//! that says exactly what: an event is never priced at $0 for lack of a price. Events with zero
//! tokens (blocked requests) price to a cost of zero when the model is known. The long-context
//! band is chosen by the request's input tokens: an event summing many requests (an import)
//! states one request's in the tag [`TAG_REQUEST_INPUT_TOKENS`] (honoured on imported events
//! only).

use chrono::{DateTime, Utc};
use faregate_core::Usd;
use faregate_core::clickhouse::ledger::{CostBreakdown, Pricing};
use faregate_core::event::{SourceKind, TAG_REQUEST_INPUT_TOKENS, TokenCounts, UsageEvent};
use rust_decimal::Decimal;

use crate::catalog::fmt_instant;
use crate::catalog::rates::{Table, TokenClass};
use crate::catalog::{Model, PriceCatalog, Provider};

/// Why an event could not be priced. The `Display` text is the ledger's `unpriced_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnpricedReason {
    #[error("unknown provider \"{provider}\" (the price catalog has: {known})")]
    UnknownProvider { provider: String, known: String },
    #[error("unknown model \"{model}\" for provider \"{provider}\"{hint}")]
    UnknownModel { provider: String, model: String, hint: String },
    #[error("no price for {provider}/{model} in force at {at} (entries: {entries})")]
    NotInForce { provider: String, model: String, at: String, entries: String },
    #[error("unknown service tier \"{tier}\" for {price_ref} (known: {known})")]
    UnknownServiceTier { price_ref: String, tier: String, known: String },
    #[error("unknown inference region \"{region}\" for {price_ref} (known: {known})")]
    UnknownRegion { price_ref: String, region: String, known: String },
    #[error("{price_ref} has no {class} price but the event has {class} tokens")]
    MissingRate { price_ref: String, class: TokenClass, tokens: i64 },
    #[error("negative {class} token count {tokens}")]
    NegativeTokens { class: TokenClass, tokens: i64 },
    #[error("the cost under {price_ref} does not fit Decimal(38, 18) exactly")]
    CostOverflow { price_ref: String },
}

impl UnpricedReason {
    /// A low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UnpricedReason::UnknownProvider { .. } => "unknown_provider",
            UnpricedReason::UnknownModel { .. } => "unknown_model",
            UnpricedReason::NotInForce { .. } => "not_in_force",
            UnpricedReason::UnknownServiceTier { .. } => "unknown_service_tier",
            UnpricedReason::UnknownRegion { .. } => "unknown_region",
            UnpricedReason::MissingRate { .. } => "missing_rate",
            UnpricedReason::NegativeTokens { .. } => "negative_tokens",
            UnpricedReason::CostOverflow { .. } => "cost_overflow",
        }
    }
}

/// The prices that apply to one event, before its token counts are known (or once they are).
#[derive(Debug, Clone, Copy)]
pub struct Quote<'a> {
    table: &'a Table,
    tier: usize,
    region: usize,
}

/// Costs are summed in 10^-18 dollars; a `Decimal` holds a mantissa below 2^96.
const DECIMAL_MANTISSA_LIMIT: i128 = 1 << 96;

impl<'a> Quote<'a> {
    /// The entry (and org override) these prices come from, e.g.
    /// `anthropic/claude-sonnet-4-5@2025-01-01` or `...@2025-01-01+org:acme@2025-06-01`.
    pub fn price_ref(&self) -> &'a str {
        &self.table.price_ref
    }

    /// The exact cost of `tokens`, per class. The long-context band is chosen by all input tokens
    /// (cache included): above a threshold, every class moves to that band's prices.
    pub fn cost(&self, tokens: &TokenCounts) -> Result<CostBreakdown, UnpricedReason> {
        self.cost_in_band_of(tokens, tokens.all_input())
    }

    /// [`cost`](Self::cost) with the long-context band chosen by `request_input` (all input
    /// tokens of one request) instead of `tokens`: for an event that sums many requests.
    pub fn cost_in_band_of(
        &self,
        tokens: &TokenCounts,
        request_input: i64,
    ) -> Result<CostBreakdown, UnpricedReason> {
        let tier = &self.table.tiers[self.tier];
        let all_input = request_input;
        let band = tier.thresholds.iter().take_while(|&&t| all_input > t).count();
        let rates = &tier.rates[self.region * (tier.thresholds.len() + 1) + band];
        let counts = [
            tokens.input,
            tokens.output,
            tokens.cache_read,
            tokens.cache_write_5m,
            tokens.cache_write_1h,
            tokens.reasoning,
        ];
        let mut costs = [Usd::ZERO; 6];
        let mut total_units: i128 = 0;
        for slot in 0..6 {
            let count = counts[slot];
            if count == 0 {
                continue;
            }
            let class = TokenClass::ALL[slot];
            if count < 0 {
                return Err(UnpricedReason::NegativeTokens { class, tokens: count });
            }
            let Some(rate) = rates[slot] else {
                return Err(UnpricedReason::MissingRate {
                    price_ref: self.table.price_ref.clone(),
                    class,
                    tokens: count,
                });
            };
            let overflow = || UnpricedReason::CostOverflow { price_ref: self.table.price_ref.clone() };
            let units = i128::from(count).checked_mul(rate.units).ok_or_else(overflow)?;
            total_units = total_units.checked_add(units).ok_or_else(overflow)?;
            if total_units >= DECIMAL_MANTISSA_LIMIT {
                return Err(overflow());
            }
            // `count * mantissa <= units < 2^96`, so this is exact and cannot fail.
            let cost = Decimal::try_from_i128_with_scale(i128::from(count) * rate.mantissa, rate.scale)
                .map_err(|_| overflow())?;
            costs[slot] = Usd(cost);
        }
        Ok(CostBreakdown {
            input: costs[0],
            output: costs[1],
            cache_read: costs[2],
            cache_write_5m: costs[3],
            cache_write_1h: costs[4],
            reasoning: costs[5],
        })
    }
}

fn names(names: &[Box<str>]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
}

/// `claude-sonnet-4-5-20250929` -> `claude-sonnet-4-5`; `gpt-5-2025-08-07` -> `gpt-5`.
fn undated(model: &str) -> Option<&str> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, tail)) = model.rsplit_once('-')
        && tail.len() == 8
        && digits(tail)
    {
        return Some(head);
    }
    let b = model.as_bytes();
    if b.len() > 11 && b[b.len() - 11] == b'-' && b[b.len() - 6] == b'-' && b[b.len() - 3] == b'-' {
        let tail = &model[model.len() - 10..];
        if tail.split('-').all(digits) {
            return Some(&model[..model.len() - 11]);
        }
    }
    None
}

impl Provider {
    fn unknown_model(&self, model: &str) -> UnpricedReason {
        let hint = match undated(model).filter(|base| self.index.contains_key(*base)) {
            Some(base) => format!(
                " (\"{base}\" is in the catalog: if this dated id is the same model at the same price, \
                 add it to that model's aliases)"
            ),
            None => String::new(),
        };
        UnpricedReason::UnknownModel { provider: self.name.to_string(), model: model.to_owned(), hint }
    }

    fn not_in_force(&self, model: &Model, at: DateTime<Utc>) -> UnpricedReason {
        let entries = model
            .entries
            .iter()
            .map(|e| match e.to {
                Some(to) => format!("[{}, {})", fmt_instant(e.from), fmt_instant(to)),
                None => format!("from {}", fmt_instant(e.from)),
            })
            .collect::<Vec<_>>()
            .join(", ");
        UnpricedReason::NotInForce {
            provider: self.name.to_string(),
            model: model.id.to_string(),
            at: at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            entries,
        }
    }
}

impl PriceCatalog {
    /// Prices `event`: exact cost per token class and the entry it came from, or the reason it
    /// cannot be priced.
    pub fn price(&self, event: &UsageEvent) -> Pricing {
        // Only an importer's events state it: a collector record's tags come from another
        // gateway's client, and must not choose a cheaper band.
        let request_input = Some(event)
            .filter(|e| e.source_kind == SourceKind::Import)
            .and_then(|e| e.tags.get(TAG_REQUEST_INPUT_TOKENS))
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or_else(|| event.tokens.all_input());
        let priced = self
            .quote(event)
            .and_then(|quote| Ok((quote.price_ref(), quote.cost_in_band_of(&event.tokens, request_input)?)));
        match priced {
            Ok((price_ref, cost)) => Pricing::Priced { price_ref: price_ref.to_owned(), cost },
            Err(reason) => Pricing::Unpriced { reason: reason.to_string() },
        }
    }

    /// The prices that apply to `event` (provider, model, time, org, tier, region), without its
    /// token counts: for estimating a request's cost before it is sent.
    pub fn quote(&self, event: &UsageEvent) -> Result<Quote<'_>, UnpricedReason> {
        let Some(provider) = self.providers.iter().find(|p| *p.name == *event.provider) else {
            return Err(UnpricedReason::UnknownProvider {
                provider: event.provider.clone(),
                known: self.providers().collect::<Vec<_>>().join(", "),
            });
        };
        let model_name = event.billed_model();
        let Some(&model_slot) = provider.index.get(model_name) else {
            return Err(provider.unknown_model(model_name));
        };
        let model = &provider.models[model_slot];
        let at = event.occurred_at;
        let Some(entry_slot) =
            model.entries.iter().position(|e| e.from <= at && e.to.is_none_or(|to| at < to))
        else {
            return Err(provider.not_in_force(model, at));
        };
        let mut table = &model.entries[entry_slot].table;
        if !provider.overrides.is_empty()
            && let Some(overrides) = provider.overrides.get(event.org.as_str())
        {
            let applicable = overrides.iter().filter(|o| o.applies(model_slot, at));
            // An override for specific models wins over one for every model.
            let chosen =
                applicable.clone().find(|o| o.models.is_some()).or_else(|| applicable.clone().next());
            if let Some(chosen) = chosen
                && let Some((_, _, overridden)) =
                    chosen.tables.iter().find(|(m, e, _)| *m == model_slot && *e == entry_slot)
            {
                table = overridden;
            }
        }
        let tier = match event.service_tier.as_deref() {
            None => 0,
            Some(name) => match table.tier_names.iter().position(|n| **n == *name) {
                Some(i) => i + 1,
                None => {
                    return Err(UnpricedReason::UnknownServiceTier {
                        price_ref: table.price_ref.clone(),
                        tier: name.to_owned(),
                        known: names(&table.tier_names),
                    });
                }
            },
        };
        let region = match event.inference_region.as_deref() {
            None => 0,
            Some(name) => match table.region_names.iter().position(|n| **n == *name) {
                Some(i) => i + 1,
                None => {
                    return Err(UnpricedReason::UnknownRegion {
                        price_ref: table.price_ref.clone(),
                        region: name.to_owned(),
                        known: names(&table.region_names),
                    });
                }
            },
        };
        Ok(Quote { table, tier, region })
    }
}

#[cfg(test)]
mod tests {
    use super::undated;

    #[test]
    fn strips_only_date_stamps() {
        assert_eq!(undated("claude-sonnet-4-5-20250929"), Some("claude-sonnet-4-5"));
        assert_eq!(undated("gpt-5-2025-08-07"), Some("gpt-5"));
        assert_eq!(undated("claude-opus-4-1"), None);
        assert_eq!(undated("gpt-5.4"), None);
        assert_eq!(undated("2025-08-07"), None);
    }
}

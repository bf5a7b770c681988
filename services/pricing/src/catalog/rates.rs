//! Exact per-token rates and the price tables built from them at load time.
//!
//! Contract: every rate the pricing hot path can use is computed here once, with every
//! multiplier (service tier, region, org discount) already applied, and checked to have at most
//! 18 decimal places per token: token counts are integers, so every cost then has at most 18
//! decimal places and fits the ledger's `Decimal(38, 18)` without rounding. Nothing here rounds;
//! a combination that would need rounding is refused at load time.

use rust_decimal::Decimal;

use crate::catalog::file::{PriceFields, Unit};
use faregate_core::money::WIRE_SCALE;

/// The disjoint token classes of [`faregate_core::event::TokenCounts`], in ledger column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenClass {
    Input,
    Output,
    CacheRead,
    CacheWrite5m,
    CacheWrite1h,
    Reasoning,
}

impl TokenClass {
    pub const ALL: [TokenClass; 6] = [
        TokenClass::Input,
        TokenClass::Output,
        TokenClass::CacheRead,
        TokenClass::CacheWrite5m,
        TokenClass::CacheWrite1h,
        TokenClass::Reasoning,
    ];

    /// The catalog's (and the ledger's) name of the class.
    pub fn name(self) -> &'static str {
        match self {
            TokenClass::Input => "input",
            TokenClass::Output => "output",
            TokenClass::CacheRead => "cache_read",
            TokenClass::CacheWrite5m => "cache_write_5m",
            TokenClass::CacheWrite1h => "cache_write_1h",
            TokenClass::Reasoning => "reasoning",
        }
    }
}

impl std::fmt::Display for TokenClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The cheapest non-zero list price accepted, per token ($0.001 per million): anything lower is
/// almost surely a per-token price written with `unit = "per_million"`.
pub(crate) fn min_list_price_per_token() -> Decimal {
    Decimal::new(1, 9)
}

/// The dearest list price accepted, per token ($1,000 per million): anything higher is almost
/// surely a per-million price written with `unit = "per_token"`.
pub(crate) fn max_list_price_per_token() -> Decimal {
    Decimal::new(1, 3)
}

/// An exact, non-negative price of one token with at most 18 decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Mantissa and scale of the normalized decimal.
    pub mantissa: i128,
    pub scale: u32,
    /// The rate in 10^-18 dollars per token: what costs are summed in.
    pub units: i128,
}

impl Rate {
    /// The rate of `per_token` dollars, or `None` if it has more than 18 decimal places or is
    /// negative.
    pub fn new(per_token: Decimal) -> Option<Rate> {
        let normalized = per_token.normalize();
        if normalized.is_sign_negative() && !normalized.is_zero() || normalized.scale() > WIRE_SCALE {
            return None;
        }
        let mantissa = normalized.mantissa();
        let units = mantissa.checked_mul(10i128.pow(WIRE_SCALE - normalized.scale()))?;
        Some(Rate { mantissa, scale: normalized.scale(), units })
    }
}

/// The rate of each token class (indexed like [`TokenClass::ALL`]); `None` where the catalog
/// gives no price, so that tokens of that class leave the event unpriced instead of free.
pub(crate) type RateSet = [Option<Rate>; 6];

/// Per-token list prices of every class, before any multiplier; `reasoning` already falls back
/// to `output`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Card(pub [Option<Decimal>; 6]);

/// A base card and its long-context cards, each used when all input tokens exceed its threshold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ladder {
    pub base: Card,
    /// (threshold, card), thresholds strictly increasing.
    pub long_context: Vec<(i64, Card)>,
}

/// A service tier, once validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TierDef {
    Multiplier(Decimal),
    Explicit(Ladder),
}

/// The tiers and regions that apply to one price entry, in name order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Modifiers {
    pub tiers: Vec<(String, TierDef)>,
    pub regions: Vec<(String, Decimal)>,
}

/// What an org override does to an entry's prices.
#[derive(Debug, Clone)]
pub(crate) enum Adjustment {
    None,
    /// Multiply every price (explicit tier prices included) by this factor.
    Discount(Decimal),
    /// Replace the entry's base and long-context prices; tier and region multipliers still apply,
    /// explicit tier prices do not change.
    Negotiated(Ladder),
}

/// The rates of one tier: band 0 is the base, band `i` applies when all input tokens exceed
/// `thresholds[i - 1]`; `rates[region_slot * bands + band]`.
#[derive(Debug, Clone)]
pub(crate) struct TierTable {
    pub thresholds: Vec<i64>,
    pub rates: Vec<RateSet>,
}

/// Everything needed to price an event under one entry (and possibly one org override).
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub price_ref: String,
    /// Tier slot `i + 1` is `tier_names[i]`; slot 0 is "no tier given".
    pub tier_names: Vec<Box<str>>,
    /// Region slot `i + 1` is `region_names[i]`; slot 0 is "no region given".
    pub region_names: Vec<Box<str>>,
    pub tiers: Vec<TierTable>,
}

/// A combination whose per-token rate would need more than 18 decimal places.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TooPrecise {
    pub tier: Option<String>,
    pub region: Option<String>,
    pub class: TokenClass,
    pub per_token: Decimal,
}

impl std::fmt::Display for TooPrecise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} price per token comes to {}", self.class, self.per_token.normalize())?;
        if let Some(tier) = &self.tier {
            write!(f, " under service tier \"{tier}\"")?;
        }
        if let Some(region) = &self.region {
            write!(f, " in region \"{region}\"")?;
        }
        write!(
            f,
            ", more than {WIRE_SCALE} decimal places: costs could not be stored exactly; choose a price or \
             multiplier with fewer decimal places"
        )
    }
}

/// Per-token price of `value` given in `unit`, exactly, or `None` if it cannot be represented.
pub(crate) fn per_token(value: Decimal, unit: Unit) -> Option<Decimal> {
    match unit {
        Unit::PerToken => Some(value),
        Unit::PerMillion => Decimal::try_from_i128_with_scale(value.mantissa(), value.scale() + 6).ok(),
    }
}

impl Card {
    /// The card of `fields` in `unit`; classes without a price stay `None`, reasoning falls back
    /// to output. Fields must already have passed validation (representable, non-negative).
    pub fn new(fields: &PriceFields, unit: Unit) -> Card {
        let convert = |v: Option<Decimal>| v.and_then(|v| per_token(v, unit));
        let output = convert(fields.output);
        Card([
            convert(fields.input),
            output,
            convert(fields.cache_read),
            convert(fields.cache_write_5m),
            convert(fields.cache_write_1h),
            convert(fields.reasoning).or(output),
        ])
    }
}

fn scaled_rates(
    card: &Card,
    factors: &[Decimal],
    tier: Option<&str>,
    region: Option<&str>,
) -> Result<RateSet, TooPrecise> {
    let mut out: RateSet = [None; 6];
    for (slot, class) in TokenClass::ALL.iter().enumerate() {
        let Some(price) = card.0[slot] else { continue };
        let too_precise = |per_token| TooPrecise {
            tier: tier.map(str::to_owned),
            region: region.map(str::to_owned),
            class: *class,
            per_token,
        };
        let mut product = price;
        for factor in factors {
            product = exact_mul(product, *factor)
                .ok_or_else(|| too_precise(product.checked_mul(*factor).unwrap_or(product)))?;
        }
        out[slot] = Some(Rate::new(product).ok_or_else(|| too_precise(product))?);
    }
    Ok(out)
}

fn ladder_cards(ladder: &Ladder) -> (Vec<i64>, Vec<&Card>) {
    let thresholds = ladder.long_context.iter().map(|(t, _)| *t).collect();
    let cards = std::iter::once(&ladder.base).chain(ladder.long_context.iter().map(|(_, c)| c)).collect();
    (thresholds, cards)
}

/// Builds the table of one entry: every (tier, region, band) combination, with `adjustment`.
pub(crate) fn build_table(
    price_ref: String,
    list: &Ladder,
    modifiers: &Modifiers,
    adjustment: &Adjustment,
) -> Result<Table, TooPrecise> {
    let base = match adjustment {
        Adjustment::Negotiated(ladder) => ladder,
        _ => list,
    };
    let discount = match adjustment {
        Adjustment::Discount(factor) => *factor,
        _ => Decimal::ONE,
    };
    let mut regions: Vec<(Option<&str>, Decimal)> = vec![(None, Decimal::ONE)];
    regions.extend(modifiers.regions.iter().map(|(name, m)| (Some(name.as_str()), *m)));

    let mut tier_ladders: Vec<(Option<&str>, &Ladder, Decimal)> = vec![(None, base, Decimal::ONE)];
    for (name, def) in &modifiers.tiers {
        match def {
            TierDef::Multiplier(m) => tier_ladders.push((Some(name), base, *m)),
            TierDef::Explicit(ladder) => tier_ladders.push((Some(name), ladder, Decimal::ONE)),
        }
    }

    let mut tiers = Vec::with_capacity(tier_ladders.len());
    for (tier_name, ladder, tier_factor) in tier_ladders {
        let (thresholds, cards) = ladder_cards(ladder);
        let mut rates = Vec::with_capacity(regions.len() * cards.len());
        for (region_name, region_factor) in &regions {
            let factors = [tier_factor, *region_factor, discount];
            for card in &cards {
                rates.push(scaled_rates(card, &factors, tier_name, *region_name)?);
            }
        }
        tiers.push(TierTable { thresholds, rates });
    }
    Ok(Table {
        price_ref,
        tier_names: modifiers.tiers.iter().map(|(n, _)| n.as_str().into()).collect(),
        region_names: modifiers.regions.iter().map(|(n, _)| n.as_str().into()).collect(),
        tiers,
    })
}

/// `a * b` exactly (normalized), or `None` if the exact product does not fit a `Decimal`.
/// (`Decimal::checked_mul` rounds instead of failing when the product needs more digits.)
pub(crate) fn exact_mul(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (a, b) = (a.normalize(), b.normalize());
    let mut mantissa = a.mantissa().checked_mul(b.mantissa())?;
    let mut scale = a.scale() + b.scale();
    while scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    Decimal::try_from_i128_with_scale(mantissa, scale).ok()
}

//! The catalog file format: serde structs that mirror `schemas/prices/<provider>.toml` one to one.
//!
//! Contract: these structs only parse. Unknown keys are refused (`deny_unknown_fields`), prices are
//! read exactly (quoted decimal strings or integers; a TOML float is refused, since it is binary
//! and cannot hold every decimal price), and every field whose absence needs a good error message
//! is an `Option` so that `validate` can name the file, the entry and the field. Meaning (units,
//! tiers, overlaps, precision) is checked in `validate`.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use toml::value::Datetime;

/// How a price in the catalog is expressed. Required on every entry that carries prices: there
/// is no default, so a per-token price can never be read as a per-million one or the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// USD per one million tokens (how providers publish prices).
    PerMillion,
    /// USD per token (how LiteLLM's catalog stores them).
    PerToken,
}

impl Unit {
    /// The catalog's name of the unit.
    pub fn name(self) -> &'static str {
        match self {
            Unit::PerMillion => "per_million",
            Unit::PerToken => "per_token",
        }
    }
}

/// One provider's file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderFile {
    /// Service tiers of every model of the provider (an entry may add or redefine some).
    #[serde(default)]
    pub service_tiers: BTreeMap<String, TierSpec>,
    /// Inference regions of every model of the provider (an entry may add or redefine some).
    #[serde(default)]
    pub regions: BTreeMap<String, RegionSpec>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
    #[serde(default)]
    pub org_overrides: Vec<OverrideSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelSpec {
    /// Other ids the provider uses for this model (dated snapshots); matched exactly.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Price entries over time; their effective ranges may not overlap.
    #[serde(default)]
    pub prices: Vec<PriceSpec>,
}

/// One price entry of a model, in force over `[effective_from, effective_to)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceSpec {
    pub effective_from: Option<Datetime>,
    pub effective_to: Option<Datetime>,
    pub unit: Option<Unit>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub input: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub output: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_read: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_write_5m: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_write_1h: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub reasoning: Option<Decimal>,
    #[serde(default)]
    pub long_context: Vec<LongContextSpec>,
    #[serde(default)]
    pub service_tiers: BTreeMap<String, TierSpec>,
    #[serde(default)]
    pub regions: BTreeMap<String, RegionSpec>,
}

/// Prices for requests whose input (cache included) exceeds `above_input_tokens`; in the unit of
/// the entry that holds it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LongContextSpec {
    pub above_input_tokens: Option<i64>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub input: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub output: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_read: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_write_5m: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_write_1h: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub reasoning: Option<Decimal>,
}

/// A service tier: either a multiplier of the entry's prices, or explicit prices of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TierSpec {
    #[serde(default, deserialize_with = "exact_decimal")]
    pub multiplier: Option<Decimal>,
    pub unit: Option<Unit>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub input: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub output: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_read: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_write_5m: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_write_1h: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub reasoning: Option<Decimal>,
}

/// An inference region: a multiplier of every price.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegionSpec {
    #[serde(default, deserialize_with = "exact_decimal")]
    pub multiplier: Option<Decimal>,
}

/// A per-org override: a discount on list prices, or negotiated prices.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverrideSpec {
    pub org: Option<String>,
    /// Model ids or aliases; absent means every model in the file.
    pub models: Option<Vec<String>>,
    pub effective_from: Option<Datetime>,
    pub effective_to: Option<Datetime>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub discount_percent: Option<Decimal>,
    pub unit: Option<Unit>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub input: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub output: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_read: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_write_5m: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub cache_write_1h: Option<Decimal>,
    #[serde(default, deserialize_with = "exact_decimal")]
    pub reasoning: Option<Decimal>,
    #[serde(default)]
    pub long_context: Vec<LongContextSpec>,
}

/// The six price fields of a spec, in one shape for validation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PriceFields {
    pub input: Option<Decimal>,
    pub output: Option<Decimal>,
    pub cache_read: Option<Decimal>,
    pub cache_write_5m: Option<Decimal>,
    pub cache_write_1h: Option<Decimal>,
    pub reasoning: Option<Decimal>,
}

macro_rules! price_fields {
    ($($spec:ty),*) => {$(
        impl $spec {
            pub(crate) fn price_fields(&self) -> PriceFields {
                PriceFields {
                    input: self.input,
                    output: self.output,
                    cache_read: self.cache_read,
                    cache_write_5m: self.cache_write_5m,
                    cache_write_1h: self.cache_write_1h,
                    reasoning: self.reasoning,
                }
            }
        }
    )*};
}
price_fields!(PriceSpec, LongContextSpec, TierSpec, OverrideSpec);

impl TierSpec {
    pub(crate) fn has_prices(&self) -> bool {
        let p = self.price_fields();
        self.unit.is_some()
            || [p.input, p.output, p.cache_read, p.cache_write_5m, p.cache_write_1h, p.reasoning]
                .iter()
                .any(Option::is_some)
    }
}

impl OverrideSpec {
    pub(crate) fn has_prices(&self) -> bool {
        let p = self.price_fields();
        self.unit.is_some()
            || !self.long_context.is_empty()
            || [p.input, p.output, p.cache_read, p.cache_write_5m, p.cache_write_1h, p.reasoning]
                .iter()
                .any(Option::is_some)
    }
}

/// Reads a decimal exactly: from a string (`"0.30"`) or a TOML integer (`3`). A TOML float is
/// refused because it has already been rounded to binary by the TOML parser.
fn exact_decimal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Decimal>, D::Error> {
    struct ExactDecimal;
    impl Visitor<'_> for ExactDecimal {
        type Value = Option<Decimal>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a decimal as a quoted string, e.g. \"0.30\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Decimal::from_str_exact(v.trim())
                .map(Some)
                .map_err(|e| E::custom(format!("{v:?} is not an exact decimal: {e}")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Decimal::from(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Decimal::from(v)))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(
                "write prices as quoted decimal strings (e.g. \"0.30\"): a TOML float is binary and \
                 cannot hold every decimal price exactly",
            ))
        }
    }
    deserializer.deserialize_any(ExactDecimal)
}

//! Import of LiteLLM's `model_prices_and_context_window.json`, the community price catalog, into
//! catalog files (`<provider>.toml` text, `unit = "per_token"` as LiteLLM stores prices).
//!
//! Contract: numbers are read from their JSON text (`3e-06` is exactly 0.000003), never through
//! a float. Only chat, completion and responses models are imported; every other entry is
//! skipped with a reason, and so is any entry the catalog could not hold exactly or safely (a
//! price with more than 18 decimal places per token, an implausible price, a long-context tier
//! that lacks a price the base has). The output loads with [`crate::PriceCatalog::from_sources`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use crate::catalog::rates::{Rate, TokenClass, max_list_price_per_token, min_list_price_per_token};

/// Why LiteLLM's JSON could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not LiteLLM's catalog (a JSON object of models): {0}")]
    Json(#[from] serde_json::Error),
}

/// One LiteLLM entry left out of the import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry's key in LiteLLM's JSON.
    pub key: String,
    /// A short, countable kind, e.g. `not_chat`.
    pub kind: &'static str,
    pub detail: String,
}

/// The result of an import.
#[derive(Debug, Clone, Default)]
pub struct LitellmImport {
    /// Catalog file text by provider (the file is `<provider>.toml`).
    pub files: BTreeMap<String, String>,
    /// Models imported.
    pub imported: usize,
    pub skipped: Vec<Skipped>,
    /// LiteLLM cost fields the catalog has no place for (audio, images, search...), with how many
    /// imported entries had them: those charges are not in the imported catalog.
    pub ignored_fields: BTreeMap<String, usize>,
}

impl LitellmImport {
    /// How many entries were skipped, by kind.
    pub fn skipped_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for s in &self.skipped {
            *counts.entry(s.kind).or_insert(0) += 1;
        }
        counts
    }

    /// `(file name, contents)` pairs for [`crate::PriceCatalog::from_sources`].
    pub fn sources(&self) -> Vec<(String, &str)> {
        self.files.iter().map(|(provider, text)| (format!("{provider}.toml"), text.as_str())).collect()
    }
}

/// LiteLLM's per-token price fields, by token class.
const CLASS_FIELDS: [(TokenClass, &str); 6] = [
    (TokenClass::Input, "input_cost_per_token"),
    (TokenClass::Output, "output_cost_per_token"),
    (TokenClass::CacheRead, "cache_read_input_token_cost"),
    (TokenClass::CacheWrite5m, "cache_creation_input_token_cost"),
    (TokenClass::CacheWrite1h, "cache_creation_input_token_cost_above_1hr"),
    (TokenClass::Reasoning, "output_cost_per_reasoning_token"),
];

/// LiteLLM's service-tier suffixes and the tier names providers report.
const TIER_SUFFIXES: [(&str, &str); 3] =
    [("_batches", "batch"), ("_flex", "flex"), ("_priority", "priority")];

const IMPORTED_MODES: [&str; 3] = ["chat", "completion", "responses"];

type Prices = [Option<Decimal>; 6];

/// One model, ready to render.
#[derive(Debug, PartialEq)]
struct Imported {
    base: Prices,
    long_context: BTreeMap<i64, Prices>,
    tiers: BTreeMap<&'static str, Prices>,
}

/// A JSON number (or numeric string) read exactly from its text.
fn exact_decimal(raw: &str) -> Option<Decimal> {
    let text = raw.trim();
    let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner,
        None => text,
    };
    let (base, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let base = Decimal::from_str_exact(base).ok()?;
    let scale = i64::from(base.scale()) - i64::from(exponent);
    if scale >= 0 {
        Decimal::try_from_i128_with_scale(base.mantissa(), u32::try_from(scale).ok()?).ok()
    } else {
        let factor = 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
        Decimal::try_from_i128_with_scale(base.mantissa().checked_mul(factor)?, 0).ok()
    }
}

fn string_field(fields: &BTreeMap<String, &RawValue>, name: &str) -> Option<String> {
    fields.get(name).and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
}

/// `..._above_200k_tokens` -> (the field before it, 200000).
fn long_context_field(name: &str) -> Option<(&str, i64)> {
    let head = name.strip_suffix("k_tokens")?;
    let (field, thousands) = head.rsplit_once("_above_")?;
    let thousands: i64 = thousands.parse().ok()?;
    Some((field, thousands.checked_mul(1000)?))
}

struct Reject(&'static str, String);

fn price(fields: &BTreeMap<String, &RawValue>, name: &str) -> Result<Option<Decimal>, Reject> {
    let Some(raw) = fields.get(name) else { return Ok(None) };
    if raw.get() == "null" {
        return Ok(None);
    }
    let value = exact_decimal(raw.get())
        .ok_or_else(|| Reject("not_a_decimal", format!("{name} = {} is not a decimal number", raw.get())))?;
    let normalized = value.normalize();
    if normalized.is_sign_negative() && !normalized.is_zero() {
        return Err(Reject("negative_price", format!("{name} = {normalized} is negative")));
    }
    if Rate::new(normalized).is_none() {
        let detail = format!("{name} = {} has more than 18 decimal places per token", raw.get());
        return Err(Reject("too_precise", detail));
    }
    if !normalized.is_zero()
        && (normalized < min_list_price_per_token() || normalized > max_list_price_per_token())
    {
        let detail = format!("{name} = {normalized} per token is outside $0.001..$1000 per million");
        return Err(Reject("implausible_price", detail));
    }
    Ok(Some(normalized))
}

fn classes(fields: &BTreeMap<String, &RawValue>, suffix: &str) -> Result<Prices, Reject> {
    let mut out: Prices = [None; 6];
    for (slot, (_, field)) in CLASS_FIELDS.iter().enumerate() {
        out[slot] = price(fields, &format!("{field}{suffix}"))?;
    }
    Ok(out)
}

fn read_entry(fields: &BTreeMap<String, &RawValue>, ignored: &mut Vec<String>) -> Result<Imported, Reject> {
    let base = classes(fields, "")?;
    for (slot, field) in [(0, "input_cost_per_token"), (1, "output_cost_per_token")] {
        if base[slot].is_none() {
            return Err(Reject("no_price", format!("no {field}")));
        }
    }
    let mut long_context: BTreeMap<i64, Prices> = BTreeMap::new();
    let mut tiers = BTreeMap::new();
    for name in fields.keys() {
        if let Some((field, threshold)) = long_context_field(name)
            && let Some(slot) = CLASS_FIELDS.iter().position(|(_, f)| *f == field)
        {
            long_context.entry(threshold).or_insert([None; 6])[slot] = price(fields, name)?;
            continue;
        }
        let known_base = CLASS_FIELDS.iter().any(|(_, f)| f == name);
        let known_tier =
            TIER_SUFFIXES.iter().any(|(s, _)| CLASS_FIELDS.iter().any(|(_, f)| format!("{f}{s}") == *name));
        if !known_base && !known_tier && name.contains("cost") {
            ignored.push(name.clone());
        }
    }
    for (threshold, tier) in &long_context {
        for (slot, (class, _)) in CLASS_FIELDS.iter().enumerate() {
            if base[slot].is_some() && tier[slot].is_none() {
                let detail =
                    format!("the tier above {threshold} input tokens has no {class} price; the base has one");
                return Err(Reject("incomplete_long_context", detail));
            }
            if base[slot].is_none() && tier[slot].is_some() {
                let detail =
                    format!("the tier above {threshold} input tokens prices {class}; the base does not");
                return Err(Reject("incomplete_long_context", detail));
            }
        }
    }
    for (suffix, tier) in TIER_SUFFIXES {
        let prices = classes(fields, suffix)?;
        if prices[0].is_some() && prices[1].is_some() {
            tiers.insert(tier, prices);
        }
    }
    Ok(Imported { base, long_context, tiers })
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render_prices(out: &mut String, prices: &Prices) {
    for (slot, (class, _)) in CLASS_FIELDS.iter().enumerate() {
        if let Some(p) = prices[slot] {
            let _ = writeln!(out, "{} = \"{}\"", class.name(), p.normalize());
        }
    }
}

fn render_model(out: &mut String, id: &str, model: &Imported, from: NaiveDate) {
    let key = quote(id);
    let _ = writeln!(out, "\n[models.{key}]\n\n[[models.{key}.prices]]");
    let _ = writeln!(out, "effective_from = {}\nunit = \"per_token\"", from.format("%Y-%m-%d"));
    render_prices(out, &model.base);
    for (threshold, prices) in &model.long_context {
        let _ = writeln!(out, "\n[[models.{key}.prices.long_context]]\nabove_input_tokens = {threshold}");
        render_prices(out, prices);
    }
    for (tier, prices) in &model.tiers {
        let _ = writeln!(out, "\n[models.{key}.prices.service_tiers.{tier}]\nunit = \"per_token\"");
        render_prices(out, prices);
    }
}

fn valid_provider(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Imports LiteLLM's catalog JSON as catalog files whose entries take effect at `effective_from`.
pub fn import_litellm(json: &str, effective_from: NaiveDate) -> Result<LitellmImport, ImportError> {
    let entries: BTreeMap<String, &RawValue> = serde_json::from_str(json)?;
    let mut result = LitellmImport::default();
    let mut by_provider: BTreeMap<String, BTreeMap<String, (String, Imported)>> = BTreeMap::new();
    for (key, raw) in entries {
        let mut skip = |kind: &'static str, detail: String| {
            result.skipped.push(Skipped { key: key.clone(), kind, detail });
        };
        if key == "sample_spec" {
            skip("sample_spec", "LiteLLM's documentation entry".to_owned());
            continue;
        }
        let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get()) else {
            skip("not_an_object", "the entry is not a JSON object".to_owned());
            continue;
        };
        match string_field(&fields, "mode") {
            Some(mode) if IMPORTED_MODES.contains(&mode.as_str()) => {}
            Some(mode) => {
                skip("not_chat", format!("mode \"{mode}\" is not chat, completion or responses"));
                continue;
            }
            None => {
                skip("not_chat", "no mode".to_owned());
                continue;
            }
        }
        let Some(provider) = string_field(&fields, "litellm_provider") else {
            skip("no_provider", "no litellm_provider".to_owned());
            continue;
        };
        if !valid_provider(&provider) {
            skip("bad_provider", format!("provider \"{provider}\" cannot name a catalog file"));
            continue;
        }
        let id = key.strip_prefix(&format!("{provider}/")).unwrap_or(&key).to_owned();
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            skip("bad_model_id", format!("model id {id:?} is not usable"));
            continue;
        }
        let mut ignored = Vec::new();
        let imported = match read_entry(&fields, &mut ignored) {
            Ok(imported) => imported,
            Err(Reject(kind, detail)) => {
                skip(kind, detail);
                continue;
            }
        };
        let models = by_provider.entry(provider.clone()).or_default();
        if let Some((first_key, existing)) = models.get(&id) {
            if *existing == imported {
                skip("duplicate", format!("same model and prices as \"{first_key}\""));
            } else {
                skip("conflict", format!("\"{first_key}\" gives {provider}/{id} other prices"));
            }
            continue;
        }
        for field in ignored {
            *result.ignored_fields.entry(field).or_insert(0) += 1;
        }
        models.insert(id, (key.clone(), imported));
        result.imported += 1;
    }
    for (provider, models) in by_provider {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# {provider}: imported from LiteLLM's model_prices_and_context_window.json.\n\
             # Prices are per token, as LiteLLM stores them. Verify them before relying on them."
        );
        for (id, (_, model)) in &models {
            render_model(&mut out, id, model, effective_from);
        }
        result.files.insert(provider, out);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_from_their_text() {
        let d = |s| exact_decimal(s).map(|d| d.normalize().to_string());
        assert_eq!(d("3e-06").as_deref(), Some("0.000003"));
        assert_eq!(d("1.5E-05").as_deref(), Some("0.000015"));
        assert_eq!(d("8.87e-7").as_deref(), Some("0.000000887"));
        assert_eq!(d("0.0000003").as_deref(), Some("0.0000003"));
        assert_eq!(d("\"0.25\"").as_deref(), Some("0.25"));
        assert_eq!(d("2e3").as_deref(), Some("2000"));
        assert_eq!(d("3.0000000000000004e-07").as_deref(), Some("0.00000030000000000000004"));
        assert_eq!(d("abc"), None);
    }

    #[test]
    fn long_context_fields() {
        assert_eq!(
            long_context_field("input_cost_per_token_above_200k_tokens"),
            Some(("input_cost_per_token", 200_000))
        );
        assert_eq!(
            long_context_field("cache_creation_input_token_cost_above_1hr_above_272k_tokens"),
            Some(("cache_creation_input_token_cost_above_1hr", 272_000))
        );
        assert_eq!(long_context_field("cache_creation_input_token_cost_above_1hr"), None);
    }
}

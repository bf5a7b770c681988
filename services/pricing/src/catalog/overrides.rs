//! Per-org overrides: a discount on list prices, or negotiated prices, for one org, over an
//! effective range, on some or all models of a provider.
//!
//! Contract: an override names models by id or alias (resolved here); for every price entry of a
//! covered model whose effective range meets the override's, a complete table is precomputed,
//! so pricing an overridden event costs the same as any other. An override for specific models
//! wins over one for every model; two overrides of one org with the same reach may not overlap
//! in time.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::catalog::file::OverrideSpec;
use crate::catalog::rates::{Adjustment, build_table};
use crate::catalog::specs::{self, Ctx, fmt_instant, ranges_overlap};
use crate::catalog::{Model, Override};

/// `(100 - percent) / 100`, exactly.
fn discount_factor(percent: Decimal) -> Option<Decimal> {
    let kept = Decimal::ONE_HUNDRED.checked_sub(percent)?;
    Decimal::try_from_i128_with_scale(kept.mantissa(), kept.scale() + 2).ok().map(|d| d.normalize())
}

fn adjustment(ctx: &mut Ctx, entry: &str, spec: &OverrideSpec) -> Option<Adjustment> {
    match (spec.discount_percent, spec.has_prices()) {
        (Some(_), true) => {
            ctx.issue(
                entry,
                Some("discount_percent"),
                "give either discount_percent or negotiated prices, not both",
            );
            None
        }
        (None, false) => {
            ctx.issue(
                entry,
                Some("discount_percent"),
                "missing: give discount_percent or negotiated prices (unit, input, ...)",
            );
            None
        }
        (Some(percent), false) => {
            if percent < Decimal::ZERO || percent > Decimal::ONE_HUNDRED {
                ctx.issue(entry, Some("discount_percent"), format!("{percent} is not between 0 and 100"));
                return None;
            }
            let factor = discount_factor(percent);
            if factor.is_none() {
                ctx.issue(entry, Some("discount_percent"), format!("{percent} has too many decimal places"));
            }
            factor.map(Adjustment::Discount)
        }
        (None, true) => {
            if spec.models.is_none() {
                ctx.issue(
                    entry,
                    Some("models"),
                    "missing: negotiated prices apply to the models listed here",
                );
                return None;
            }
            specs::ladder(ctx, entry, spec.unit, &spec.price_fields(), &spec.long_context)
                .map(Adjustment::Negotiated)
        }
    }
}

/// Validates and precomputes the overrides of one provider, grouped by org.
pub(crate) fn compile_overrides(
    ctx: &mut Ctx,
    provider: &str,
    specs: &[OverrideSpec],
    index: &HashMap<Box<str>, usize>,
    models: &[Model],
) -> Option<HashMap<Box<str>, Vec<Override>>> {
    let mut ok = true;
    let mut by_org: HashMap<Box<str>, Vec<Override>> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let org = spec.org.as_deref().unwrap_or_default();
        let entry = format!("org_overrides[{i}] (org \"{org}\")");
        if org.is_empty() {
            ctx.issue(&entry, Some("org"), "missing");
            ok = false;
        }
        let range =
            specs::effective_range(ctx, &entry, spec.effective_from.as_ref(), spec.effective_to.as_ref());
        let covered: Option<Vec<usize>> = match &spec.models {
            None => None,
            Some(names) if names.is_empty() => {
                ctx.issue(&entry, Some("models"), "empty: leave it out to cover every model");
                ok = false;
                continue;
            }
            Some(names) => {
                let mut slots = Vec::with_capacity(names.len());
                for name in names {
                    match index.get(name.as_str()) {
                        Some(&slot) if !slots.contains(&slot) => slots.push(slot),
                        Some(_) => {}
                        None => {
                            ctx.issue(
                                &entry,
                                Some("models"),
                                format!("unknown model \"{name}\" in this file"),
                            );
                            ok = false;
                        }
                    }
                }
                Some(slots)
            }
        };
        let adjustment = adjustment(ctx, &entry, spec);
        let (Some((from, to)), Some(adjustment)) = (range, adjustment) else {
            ok = false;
            continue;
        };
        let suffix = format!("+org:{org}@{}", fmt_instant(from));
        let mut tables = Vec::new();
        let model_slots: Vec<usize> = covered.clone().unwrap_or_else(|| (0..models.len()).collect());
        for slot in model_slots {
            for (entry_slot, price) in models[slot].entries.iter().enumerate() {
                if !ranges_overlap((from, to), (price.from, price.to)) {
                    continue;
                }
                let price_ref = format!("{}{suffix}", price.table.price_ref);
                match build_table(price_ref, &price.ladder, &price.modifiers, &adjustment) {
                    Ok(table) => tables.push((slot, entry_slot, table)),
                    Err(too_precise) => {
                        let field = match adjustment {
                            Adjustment::Discount(_) => "discount_percent",
                            _ => too_precise.class.name(),
                        };
                        let problem = format!("for {provider}/{}: {too_precise}", models[slot].id);
                        ctx.issue(&entry, Some(field), problem);
                        ok = false;
                    }
                }
            }
        }
        let candidate = Override { models: covered, from, to, tables };
        let earlier = by_org.entry(org.into()).or_default();
        for other in earlier.iter() {
            let same_reach = match (&other.models, &candidate.models) {
                (None, None) => true,
                (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
                _ => false,
            };
            if same_reach && ranges_overlap((other.from, other.to), (candidate.from, candidate.to)) {
                let problem = format!(
                    "overlaps another override of org \"{org}\" for the same models from {}",
                    fmt_instant(other.from)
                );
                ctx.issue(&entry, Some("effective_from"), problem);
                ok = false;
            }
        }
        earlier.push(candidate);
    }
    ok.then_some(by_org)
}

impl Override {
    /// Whether this override covers `model` at `at`.
    pub(crate) fn applies(&self, model: usize, at: DateTime<Utc>) -> bool {
        self.from <= at
            && self.to.is_none_or(|to| at < to)
            && self.models.as_ref().is_none_or(|models| models.contains(&model))
    }
}

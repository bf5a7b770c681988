//! Validation of the pieces of a catalog file that carry prices (entries, long-context tiers,
//! service tiers, regions, effective dates), turning them into exact per-token cards.
//!
//! Contract: every problem becomes an [`Issue`] naming the file, the entry and the field; a piece
//! with any problem yields `None` and is left out of the catalog (which is then refused whole).

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use rust_decimal::Decimal;
use toml::value::Datetime;

use crate::catalog::file::{LongContextSpec, PriceFields, RegionSpec, TierSpec, Unit};
use crate::catalog::rates::{
    Card, Ladder, TierDef, TokenClass, max_list_price_per_token, min_list_price_per_token, per_token,
};
use crate::error::Issue;

/// Collects issues of one file.
pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub issues: &'a mut Vec<Issue>,
}

impl Ctx<'_> {
    pub fn issue(&mut self, entry: &str, field: Option<&str>, problem: impl Into<String>) {
        self.issues.push(Issue {
            file: self.file.to_owned(),
            entry: (!entry.is_empty()).then(|| entry.to_owned()),
            field: field.map(str::to_owned),
            problem: problem.into(),
        });
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() { field.to_owned() } else { format!("{prefix}.{field}") }
}

fn values(fields: &PriceFields) -> [Option<Decimal>; 6] {
    [
        fields.input,
        fields.output,
        fields.cache_read,
        fields.cache_write_5m,
        fields.cache_write_1h,
        fields.reasoning,
    ]
}

/// Checks every price present in `fields` (sign, representability, plausibility for `unit`).
fn check_prices(ctx: &mut Ctx, entry: &str, prefix: &str, fields: &PriceFields, unit: Unit) -> bool {
    let mut ok = true;
    for (class, value) in TokenClass::ALL.iter().zip(values(fields)) {
        let Some(value) = value else { continue };
        let field = join(prefix, class.name());
        if value.is_sign_negative() && !value.is_zero() {
            ctx.issue(entry, Some(&field), format!("negative price {value}"));
            ok = false;
            continue;
        }
        let Some(per_token) = per_token(value, unit) else {
            ctx.issue(entry, Some(&field), format!("price {value} has too many decimal places"));
            ok = false;
            continue;
        };
        if per_token.is_zero() {
            continue;
        }
        let hint = match unit {
            Unit::PerMillion => "did you mean unit = \"per_token\"?",
            Unit::PerToken => "did you mean unit = \"per_million\"?",
        };
        if per_token < min_list_price_per_token() {
            ctx.issue(
                entry,
                Some(&field),
                format!("{value} with unit = \"{}\" is below $0.001 per million tokens: {hint}", unit.name()),
            );
            ok = false;
        } else if per_token > max_list_price_per_token() {
            ctx.issue(
                entry,
                Some(&field),
                format!("{value} with unit = \"{}\" is above $1000 per million tokens: {hint}", unit.name()),
            );
            ok = false;
        }
    }
    ok
}

/// The unit, or an issue if it is missing.
pub(crate) fn require_unit(ctx: &mut Ctx, entry: &str, prefix: &str, unit: Option<Unit>) -> Option<Unit> {
    if unit.is_none() {
        ctx.issue(entry, Some(&join(prefix, "unit")), "missing (per_million or per_token)");
    }
    unit
}

/// A base card and its long-context tiers, validated.
pub(crate) fn ladder(
    ctx: &mut Ctx,
    entry: &str,
    unit: Option<Unit>,
    fields: &PriceFields,
    long_context: &[LongContextSpec],
) -> Option<Ladder> {
    let unit = require_unit(ctx, entry, "", unit)?;
    let mut ok = check_prices(ctx, entry, "", fields, unit);
    for (field, value) in [("input", fields.input), ("output", fields.output)] {
        if value.is_none() {
            ctx.issue(entry, Some(field), "missing: every price entry gives input and output prices");
            ok = false;
        }
    }
    let base_classes = values(fields).map(|v| v.is_some());
    let mut tiers = Vec::with_capacity(long_context.len());
    let mut previous: Option<i64> = None;
    for (i, tier) in long_context.iter().enumerate() {
        let prefix = format!("long_context[{i}]");
        let tier_fields = tier.price_fields();
        ok &= check_prices(ctx, entry, &prefix, &tier_fields, unit);
        for (class, (in_base, in_tier)) in
            TokenClass::ALL.iter().zip(base_classes.iter().zip(values(&tier_fields).map(|v| v.is_some())))
        {
            if *in_base && !in_tier {
                let problem = format!(
                    "missing: the base prices {class} and the whole request moves to this tier's prices"
                );
                ctx.issue(entry, Some(&join(&prefix, class.name())), problem);
                ok = false;
            } else if in_tier && !*in_base {
                let problem =
                    format!("priced here but not in the base entry; price {class} in both or neither");
                ctx.issue(entry, Some(&join(&prefix, class.name())), problem);
                ok = false;
            }
        }
        let threshold_field = join(&prefix, "above_input_tokens");
        match tier.above_input_tokens {
            None => {
                ctx.issue(entry, Some(&threshold_field), "missing (all input tokens, cache included)");
                ok = false;
            }
            Some(t) if t <= 0 => {
                ctx.issue(entry, Some(&threshold_field), format!("{t} is not a positive token count"));
                ok = false;
            }
            Some(t) if previous.is_some_and(|p| t <= p) => {
                let p = previous.unwrap_or_default();
                let problem = format!("thresholds must increase: {t} is not above the previous {p}");
                ctx.issue(entry, Some(&threshold_field), problem);
                ok = false;
            }
            Some(t) => {
                previous = Some(t);
                tiers.push((t, Card::new(&tier_fields, unit)));
            }
        }
    }
    ok.then(|| Ladder { base: Card::new(fields, unit), long_context: tiers })
}

fn positive_multiplier(ctx: &mut Ctx, entry: &str, multiplier: Option<Decimal>) -> Option<Decimal> {
    match multiplier {
        None => {
            ctx.issue(entry, Some("multiplier"), "missing");
            None
        }
        Some(m) if m <= Decimal::ZERO => {
            ctx.issue(entry, Some("multiplier"), format!("{m} is not positive"));
            None
        }
        Some(m) => Some(m.normalize()),
    }
}

/// A service tier: a multiplier or explicit (flat) prices, not both.
pub(crate) fn tier(ctx: &mut Ctx, entry: &str, spec: &TierSpec) -> Option<TierDef> {
    match (spec.multiplier.is_some(), spec.has_prices()) {
        (true, true) => {
            ctx.issue(
                entry,
                Some("multiplier"),
                "give either a multiplier or prices (unit, input, ...), not both",
            );
            None
        }
        (false, false) => {
            ctx.issue(entry, Some("multiplier"), "missing: give a multiplier or prices (unit, input, ...)");
            None
        }
        (true, false) => positive_multiplier(ctx, entry, spec.multiplier).map(TierDef::Multiplier),
        (false, true) => ladder(ctx, entry, spec.unit, &spec.price_fields(), &[]).map(TierDef::Explicit),
    }
}

/// A region's multiplier.
pub(crate) fn region(ctx: &mut Ctx, entry: &str, spec: &RegionSpec) -> Option<Decimal> {
    positive_multiplier(ctx, entry, spec.multiplier)
}

/// A TOML date (midnight UTC) or offset date-time, as UTC.
pub(crate) fn instant(value: &Datetime) -> Result<DateTime<Utc>, String> {
    let Some(date) = value.date else {
        return Err(format!("{value} has no date"));
    };
    let day = NaiveDate::from_ymd_opt(i32::from(date.year), u32::from(date.month), u32::from(date.day))
        .ok_or_else(|| format!("{value} is not a valid date"))?;
    let Some(time) = value.time else {
        return Ok(Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN)));
    };
    let Some(offset) = value.offset else {
        return Err(format!("{value} has a time but no offset: write it in UTC with a trailing Z"));
    };
    let time = NaiveTime::from_hms_nano_opt(
        u32::from(time.hour),
        u32::from(time.minute),
        u32::from(time.second),
        time.nanosecond,
    )
    .ok_or_else(|| format!("{value} is not a valid time"))?;
    let minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    Ok(Utc.from_utc_datetime(&day.and_time(time)) - chrono::Duration::minutes(minutes))
}

/// `[effective_from, effective_to)`, validated.
pub(crate) fn effective_range(
    ctx: &mut Ctx,
    entry: &str,
    from: Option<&Datetime>,
    to: Option<&Datetime>,
) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    let Some(from) = from else {
        ctx.issue(entry, Some("effective_from"), "missing (a UTC date such as 2025-01-01)");
        return None;
    };
    let from = instant(from).map_err(|e| ctx.issue(entry, Some("effective_from"), e)).ok()?;
    let to = match to {
        None => None,
        Some(to) => Some(instant(to).map_err(|e| ctx.issue(entry, Some("effective_to"), e)).ok()?),
    };
    if let Some(to) = to
        && to <= from
    {
        ctx.issue(
            entry,
            Some("effective_to"),
            format!("{} is not after effective_from {}", fmt_instant(to), fmt_instant(from)),
        );
        return None;
    }
    Some((from, to))
}

/// `2025-01-01` for midnight, RFC 3339 in UTC otherwise.
pub(crate) fn fmt_instant(at: DateTime<Utc>) -> String {
    if at.time() == NaiveTime::MIN {
        at.format("%Y-%m-%d").to_string()
    } else {
        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }
}

/// Whether `[a_from, a_to)` and `[b_from, b_to)` share an instant (`None` = open-ended).
pub(crate) fn ranges_overlap(
    a: (DateTime<Utc>, Option<DateTime<Utc>>),
    b: (DateTime<Utc>, Option<DateTime<Utc>>),
) -> bool {
    a.1.is_none_or(|a_to| b.0 < a_to) && b.1.is_none_or(|b_to| a.0 < b_to)
}

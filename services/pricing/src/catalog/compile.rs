//! Compiles one provider file into the lookup structures of [`crate::PriceCatalog`]: the model
//! index (ids and aliases), each model's entries sorted by time with their precomputed tables,
//! and the org overrides.
//!
//! Contract: a file compiles whole or yields `None` with every problem pushed as an issue.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_path_to_error::Segment;

use crate::catalog::file::{ProviderFile, RegionSpec, TierSpec};
use crate::catalog::overrides::compile_overrides;
use crate::catalog::rates::{Adjustment, Modifiers, TierDef, build_table};
use crate::catalog::specs::{self, Ctx, fmt_instant};
use crate::catalog::{Entry, Model, Provider};
use crate::error::Issue;

/// The provider a file describes: its file name without `.toml`.
pub(crate) fn provider_name(file: &str) -> Option<&str> {
    let stem = Path::new(file).file_stem()?.to_str()?;
    let valid = !stem.is_empty()
        && stem.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    valid.then_some(stem)
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Turns a serde path (`models.gpt-5.prices[0].foo`) into an entry and a field.
fn locate(path: &serde_path_to_error::Path) -> (String, Option<String>) {
    let segments: Vec<String> = path
        .iter()
        .map(|s| match s {
            Segment::Seq { index } => format!("[{index}]"),
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => "?".to_owned(),
        })
        .collect();
    let rest = |from: usize| {
        let mut field = String::new();
        for s in segments.iter().skip(from) {
            if !field.is_empty() && !s.starts_with('[') {
                field.push('.');
            }
            field.push_str(s);
        }
        (!field.is_empty()).then_some(field)
    };
    match segments.first().map(String::as_str) {
        Some("models") if segments.len() > 1 => (format!("model \"{}\"", segments[1]), rest(2)),
        Some("service_tiers") if segments.len() > 1 => (format!("service_tier \"{}\"", segments[1]), rest(2)),
        Some("regions") if segments.len() > 1 => (format!("region \"{}\"", segments[1]), rest(2)),
        Some("org_overrides") if segments.len() > 1 => (format!("org_overrides{}", segments[1]), rest(2)),
        _ => (String::new(), rest(0)),
    }
}

fn parse(file: &str, text: &str, issues: &mut Vec<Issue>) -> Option<ProviderFile> {
    let deserializer = match toml::Deserializer::parse(text) {
        Ok(d) => d,
        Err(e) => {
            issues.push(Issue { file: file.to_owned(), entry: None, field: None, problem: e.to_string() });
            return None;
        }
    };
    match serde_path_to_error::deserialize::<_, ProviderFile>(deserializer) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let (entry, field) = locate(e.path());
            let problem = e.into_inner().to_string().trim_end().to_owned();
            issues.push(Issue {
                file: file.to_owned(),
                entry: (!entry.is_empty()).then_some(entry),
                field,
                problem,
            });
            None
        }
    }
}

/// Validated service tiers, by name; `prefix` names the entry that holds them, if any.
fn tiers(
    ctx: &mut Ctx,
    prefix: &str,
    specs: &BTreeMap<String, TierSpec>,
) -> Option<BTreeMap<String, TierDef>> {
    let mut ok = true;
    let mut out = BTreeMap::new();
    for (name, spec) in specs {
        let entry = format!("{prefix}service_tier \"{name}\"");
        if !is_valid_name(name) {
            ctx.issue(&entry, None, "not a valid tier name");
            ok = false;
        }
        match specs::tier(ctx, &entry, spec) {
            Some(def) => {
                out.insert(name.clone(), def);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn regions(
    ctx: &mut Ctx,
    prefix: &str,
    specs: &BTreeMap<String, RegionSpec>,
) -> Option<BTreeMap<String, rust_decimal::Decimal>> {
    let mut ok = true;
    let mut out = BTreeMap::new();
    for (name, spec) in specs {
        let entry = format!("{prefix}region \"{name}\"");
        if !is_valid_name(name) {
            ctx.issue(&entry, None, "not a valid region name");
            ok = false;
        }
        match specs::region(ctx, &entry, spec) {
            Some(m) => {
                out.insert(name.clone(), m);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Compiles the file `file` (its provider is its file name) with contents `text`.
pub(crate) fn compile_file(file: &str, text: &str, issues: &mut Vec<Issue>) -> Option<Provider> {
    let Some(provider) = provider_name(file) else {
        issues.push(Issue {
            file: file.to_owned(),
            entry: None,
            field: None,
            problem: "the file name must be <provider>.toml with a provider of [a-z0-9_-]".to_owned(),
        });
        return None;
    };
    let parsed = parse(file, text, issues)?;
    let mut ctx = Ctx { file, issues };
    let provider_tiers = tiers(&mut ctx, "", &parsed.service_tiers);
    let provider_regions = regions(&mut ctx, "", &parsed.regions);
    let mut ok = provider_tiers.is_some() && provider_regions.is_some();
    let (provider_tiers, provider_regions) =
        (provider_tiers.unwrap_or_default(), provider_regions.unwrap_or_default());

    let mut models = Vec::with_capacity(parsed.models.len());
    let mut index: HashMap<Box<str>, usize> = HashMap::new();
    let mut alias_owner: BTreeMap<&str, &str> =
        parsed.models.keys().map(|id| (id.as_str(), id.as_str())).collect();
    for (id, spec) in &parsed.models {
        let entry_name = format!("model \"{id}\"");
        if !is_valid_name(id) {
            ctx.issue(&entry_name, None, "not a valid model id");
            ok = false;
        }
        for alias in &spec.aliases {
            match alias_owner.insert(alias.as_str(), id.as_str()) {
                Some(other) if other == id && alias == id => {
                    ctx.issue(&entry_name, Some("aliases"), format!("\"{alias}\" is the model's own id"));
                    ok = false;
                }
                Some(other) if other == alias => {
                    let problem = format!("\"{alias}\" is already the id of model \"{other}\"");
                    ctx.issue(&entry_name, Some("aliases"), problem);
                    ok = false;
                }
                Some(other) => {
                    let problem = format!("\"{alias}\" is already an alias of model \"{other}\"");
                    ctx.issue(&entry_name, Some("aliases"), problem);
                    ok = false;
                }
                None if !is_valid_name(alias) => {
                    ctx.issue(&entry_name, Some("aliases"), format!("{alias:?} is not a valid model id"));
                    ok = false;
                }
                None => {}
            }
        }
        if spec.prices.is_empty() {
            ctx.issue(&entry_name, Some("prices"), "missing: a model needs at least one price entry");
            ok = false;
            continue;
        }
        let mut entries = Vec::with_capacity(spec.prices.len());
        for (i, price) in spec.prices.iter().enumerate() {
            let entry =
                if spec.prices.len() == 1 { entry_name.clone() } else { format!("{entry_name} prices[{i}]") };
            let range = specs::effective_range(
                &mut ctx,
                &entry,
                price.effective_from.as_ref(),
                price.effective_to.as_ref(),
            );
            let ladder =
                specs::ladder(&mut ctx, &entry, price.unit, &price.price_fields(), &price.long_context);
            let entry_tiers = tiers(&mut ctx, &format!("{entry}: "), &price.service_tiers);
            let entry_regions = regions(&mut ctx, &format!("{entry}: "), &price.regions);
            let (Some((from, to)), Some(ladder), Some(entry_tiers), Some(entry_regions)) =
                (range, ladder, entry_tiers, entry_regions)
            else {
                ok = false;
                continue;
            };
            let mut merged_tiers = provider_tiers.clone();
            merged_tiers.extend(entry_tiers);
            let mut merged_regions = provider_regions.clone();
            merged_regions.extend(entry_regions);
            let modifiers = Modifiers {
                tiers: merged_tiers.into_iter().collect(),
                regions: merged_regions.into_iter().collect(),
            };
            let price_ref = format!("{provider}/{id}@{}", fmt_instant(from));
            match build_table(price_ref, &ladder, &modifiers, &Adjustment::None) {
                Ok(table) => entries.push(Entry { from, to, ladder, modifiers, table }),
                Err(too_precise) => {
                    ctx.issue(&entry, Some(too_precise.class.name()), too_precise.to_string());
                    ok = false;
                }
            }
        }
        entries.sort_by_key(|e| e.from);
        for pair in entries.windows(2) {
            let (earlier, later) = (&pair[0], &pair[1]);
            let overlap = match earlier.to {
                None => Some(format!(
                    "entry from {} has no effective_to, so it overlaps the entry from {}: set effective_to = {} on the earlier entry",
                    fmt_instant(earlier.from),
                    fmt_instant(later.from),
                    fmt_instant(later.from)
                )),
                Some(to) if to > later.from => Some(format!(
                    "entry [{}, {}) overlaps the entry from {}",
                    fmt_instant(earlier.from),
                    fmt_instant(to),
                    fmt_instant(later.from)
                )),
                Some(_) => None,
            };
            if let Some(problem) = overlap {
                ctx.issue(&entry_name, Some("effective_to"), problem);
                ok = false;
            }
        }
        let slot = models.len();
        index.insert(id.as_str().into(), slot);
        for alias in &spec.aliases {
            index.insert(alias.as_str().into(), slot);
        }
        models.push(Model { id: id.as_str().into(), entries });
    }

    let overrides = compile_overrides(&mut ctx, provider, &parsed.org_overrides, &index, &models);
    ok &= overrides.is_some();
    ok.then(|| Provider { name: provider.into(), index, models, overrides: overrides.unwrap_or_default() })
}

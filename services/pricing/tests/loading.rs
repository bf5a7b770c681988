//! Loading and validation: the shipped catalog loads (compiled in and from the directory), and
//! every invalid catalog is refused with problems naming the file, the entry and the field.

mod common;

use std::path::Path;

use faregate_pricing::{EMBEDDED_FILES, PriceCatalog};

fn issues(files: &[(&str, &str)]) -> Vec<String> {
    let err = PriceCatalog::from_sources(files.iter().copied()).expect_err("the catalog should be refused");
    err.issues().iter().map(ToString::to_string).collect()
}

fn one(text: &str) -> Vec<String> {
    issues(&[("schemas/prices/anthropic.toml", text)])
}

const SONNET: &str = r#"
[models.claude-sonnet-4-5]
aliases = ["claude-sonnet-4-5-20250929"]

[[models.claude-sonnet-4-5.prices]]
effective_from = 2025-01-01
unit = "per_million"
input = "3"
output = "15"
"#;

#[test]
fn the_shipped_catalog_loads_compiled_in_and_from_its_directory() {
    let embedded = PriceCatalog::embedded().unwrap();
    assert_eq!(embedded.providers().collect::<Vec<_>>(), ["anthropic", "openai"]);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/prices");
    let on_disk = PriceCatalog::load_dir(&dir).unwrap();
    assert_eq!(on_disk.providers().collect::<Vec<_>>(), ["anthropic", "openai"]);
    for provider in ["anthropic", "openai"] {
        let mut a: Vec<_> = embedded.models(provider).collect();
        let mut b: Vec<_> = on_disk.models(provider).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }
    assert_eq!(EMBEDDED_FILES.len(), 2);
    let mut anthropic: Vec<_> = embedded.models("anthropic").collect();
    anthropic.sort_unstable();
    assert_eq!(
        anthropic,
        [
            "claude-haiku-4-5",
            "claude-opus-4-1",
            "claude-opus-4-5",
            "claude-opus-4-6",
            "claude-opus-4-7",
            "claude-sonnet-4",
            "claude-sonnet-4-5",
            "claude-sonnet-4-6"
        ]
    );
}

#[test]
fn missing_unit_names_file_model_and_field() {
    let text = SONNET.replace("unit = \"per_million\"\n", "");
    assert_eq!(
        one(&text),
        [
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"unit\": missing (per_million or per_token)"
        ]
    );
}

#[test]
fn negative_price_is_refused() {
    let text = SONNET.replace("output = \"15\"", "output = \"-15\"");
    assert_eq!(
        one(&text),
        ["schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"output\": negative price -15"]
    );
}

#[test]
fn unknown_keys_are_refused() {
    let text = SONNET.replace("input = \"3\"", "input = \"3\"\ncached_input = \"0.3\"");
    let found = one(&text);
    assert_eq!(found.len(), 1);
    let message = &found[0];
    assert!(
        message.starts_with(
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"prices[0].cached_input\": "
        ),
        "{message}"
    );
    assert!(message.contains("unknown field `cached_input`"), "{message}");
    let top = one(&format!("currency = \"EUR\"\n{SONNET}"));
    assert!(top[0].starts_with("schemas/prices/anthropic.toml: field \"currency\": "), "{}", top[0]);
}

#[test]
fn overlapping_effective_ranges_are_refused() {
    let second = "\n[[models.claude-sonnet-4-5.prices]]\neffective_from = 2026-01-01\nunit = \"per_million\"\ninput = \"2\"\noutput = \"10\"\n";
    assert_eq!(
        one(&format!("{SONNET}{second}")),
        [
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"effective_to\": entry from 2025-01-01 \
          has no effective_to, so it overlaps the entry from 2026-01-01: set effective_to = 2026-01-01 on the earlier entry"
        ]
    );
    let ends_late = SONNET
        .replace("effective_from = 2025-01-01", "effective_from = 2025-01-01\neffective_to = 2026-02-01");
    assert_eq!(
        one(&format!("{ends_late}{second}")),
        ["schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"effective_to\": entry \
          [2025-01-01, 2026-02-01) overlaps the entry from 2026-01-01"]
    );
    let adjacent = SONNET
        .replace("effective_from = 2025-01-01", "effective_from = 2025-01-01\neffective_to = 2026-01-01");
    assert!(PriceCatalog::from_sources([("anthropic.toml", format!("{adjacent}{second}").as_str())]).is_ok());
    let backwards = SONNET
        .replace("effective_from = 2025-01-01", "effective_from = 2025-01-01\neffective_to = 2024-01-01");
    assert_eq!(
        one(&backwards),
        [
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"effective_to\": 2024-01-01 is not after effective_from 2025-01-01"
        ]
    );
}

#[test]
fn duplicate_aliases_across_models_are_refused() {
    let other = "\n[models.claude-sonnet-4-6]\naliases = [\"claude-sonnet-4-5-20250929\"]\n[[models.claude-sonnet-4-6.prices]]\neffective_from = 2025-01-01\nunit = \"per_million\"\ninput = \"3\"\noutput = \"15\"\n";
    assert_eq!(
        one(&format!("{SONNET}{other}")),
        [
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-6\": field \"aliases\": \"claude-sonnet-4-5-20250929\" \
          is already an alias of model \"claude-sonnet-4-5\""
        ]
    );
    let alias_is_id =
        SONNET.replace("aliases = [\"claude-sonnet-4-5-20250929\"]", "aliases = [\"claude-sonnet-4-6\"]");
    let sonnet_46 = other.replace("aliases = [\"claude-sonnet-4-5-20250929\"]", "");
    assert_eq!(
        one(&format!("{alias_is_id}{sonnet_46}")),
        [
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"aliases\": \"claude-sonnet-4-6\" is already \
          the id of model \"claude-sonnet-4-6\""
        ]
    );
}

#[test]
fn long_context_thresholds_must_increase_and_price_every_class() {
    let tiers = r#"
[[models.claude-sonnet-4-5.prices.long_context]]
above_input_tokens = 200_000
input = "6"
output = "22.50"

[[models.claude-sonnet-4-5.prices.long_context]]
above_input_tokens = 100_000
input = "7"
"#;
    assert_eq!(
        one(&format!("{SONNET}{tiers}")),
        [
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"long_context[1].output\": missing: the \
             base prices output and the whole request moves to this tier's prices",
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"long_context[1].above_input_tokens\": \
             thresholds must increase: 100000 is not above the previous 200000",
        ]
    );
}

#[test]
fn costs_needing_more_than_18_decimal_places_are_refused() {
    // $0.123456789013 per million is 0.00000.123456789013 per token (18 places): fine alone,
    // but the batch tier's 0.5 makes it 19 places.
    let text = SONNET.replace("input = \"3\"", "input = \"0.123456789013\"");
    assert!(PriceCatalog::from_sources([("anthropic.toml", text.as_str())]).is_ok());
    let with_batch = format!("[service_tiers]\nbatch = {{ multiplier = \"0.5\" }}\n{text}");
    assert_eq!(
        one(&with_batch),
        [
            "schemas/prices/anthropic.toml: model \"claude-sonnet-4-5\": field \"input\": the input price per token comes to \
          0.0000000617283945065 under service tier \"batch\", more than 18 decimal places: costs could not be stored \
          exactly; choose a price or multiplier with fewer decimal places"
        ]
    );
}

#[test]
fn service_tiers_regions_and_overrides_are_validated() {
    let text = format!(
        "[service_tiers]\nbatch = {{ multiplier = \"0.5\", unit = \"per_million\", input = \"1\" }}\nflex = {{}}\n\
         [regions]\nus = {{ multiplier = \"-1.1\" }}\n{SONNET}\n\
         [[org_overrides]]\norg = \"acme\"\nmodels = [\"claude-nope\"]\neffective_from = 2026-01-01\ndiscount_percent = \"120\"\n\
         [[org_overrides]]\nmodels = [\"claude-sonnet-4-5\"]\neffective_from = 2026-01-01\ndiscount_percent = \"10\"\nunit = \"per_million\"\ninput = \"1\"\noutput = \"2\"\n"
    );
    let file = "schemas/prices/anthropic.toml";
    assert_eq!(
        one(&text),
        [
            format!(
                "{file}: service_tier \"batch\": field \"multiplier\": give either a multiplier or prices (unit, input, ...), not both"
            ),
            format!(
                "{file}: service_tier \"flex\": field \"multiplier\": missing: give a multiplier or prices (unit, input, ...)"
            ),
            format!("{file}: region \"us\": field \"multiplier\": -1.1 is not positive"),
            format!(
                "{file}: org_overrides[0] (org \"acme\"): field \"models\": unknown model \"claude-nope\" in this file"
            ),
            format!(
                "{file}: org_overrides[0] (org \"acme\"): field \"discount_percent\": 120 is not between 0 and 100"
            ),
            format!("{file}: org_overrides[1] (org \"\"): field \"org\": missing"),
            format!(
                "{file}: org_overrides[1] (org \"\"): field \"discount_percent\": give either discount_percent or negotiated prices, not both"
            ),
        ]
    );
}

#[test]
fn overlapping_overrides_of_one_org_are_refused() {
    let overrides = "\n[[org_overrides]]\norg = \"acme\"\neffective_from = 2026-01-01\ndiscount_percent = \"10\"\n\
                     [[org_overrides]]\norg = \"acme\"\neffective_from = 2026-06-01\ndiscount_percent = \"15\"\n";
    assert_eq!(
        one(&format!("{SONNET}{overrides}")),
        [
            "schemas/prices/anthropic.toml: org_overrides[1] (org \"acme\"): field \"effective_from\": overlaps another \
          override of org \"acme\" for the same models from 2026-01-01"
        ]
    );
}

#[test]
fn every_problem_of_every_file_is_reported_at_once() {
    let broken = SONNET.replace("unit = \"per_million\"\n", "").replace("output = \"15\"", "output = \"-1\"");
    let found = issues(&[
        ("schemas/prices/anthropic.toml", broken.as_str()),
        ("schemas/prices/openai.toml", "[models.gpt-5]\n"),
        ("schemas/prices/Bad Name.toml", SONNET),
        ("schemas/prices/other.toml", "[models.x\n"),
    ]);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].contains("field \"unit\": missing"));
    assert_eq!(
        found[1],
        "schemas/prices/openai.toml: model \"gpt-5\": field \"prices\": missing: a model needs at least one price entry"
    );
    assert!(found[2].starts_with("schemas/prices/Bad Name.toml: the file name must be <provider>.toml"));
    assert!(found[3].starts_with("schemas/prices/other.toml: TOML parse error at line 1"), "{}", found[3]);
    let err = PriceCatalog::from_sources([("a.toml", "[models.x\n")]).unwrap_err();
    assert!(err.to_string().starts_with("invalid price catalog (1 problem(s)):\na.toml: "), "{err}");
}

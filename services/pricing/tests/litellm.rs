//! Import of LiteLLM's catalog format, on a small sample written for these tests.

mod common;

use chrono::NaiveDate;
use common::*;
use faregate_core::event::TokenCounts;
use faregate_pricing::{PriceCatalog, import_litellm};

const SAMPLE: &str = r#"{
  "sample_spec": {
    "max_tokens": "LEGACY parameter. set to max_output_tokens if provider specifies it.",
    "input_cost_per_token": 0.0000,
    "output_cost_per_token": 0.000,
    "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
    "mode": "one of: chat, embedding, completion, image_generation, audio_transcription, audio_speech"
  },
  "claude-sonnet-4-5": {
    "litellm_provider": "anthropic",
    "mode": "chat",
    "max_input_tokens": 200000,
    "input_cost_per_token": 3e-06,
    "output_cost_per_token": 1.5e-05,
    "cache_read_input_token_cost": 3e-07,
    "cache_creation_input_token_cost": 3.75e-06,
    "cache_creation_input_token_cost_above_1hr": 6e-06,
    "input_cost_per_token_above_200k_tokens": 6e-06,
    "output_cost_per_token_above_200k_tokens": 2.25e-05,
    "cache_read_input_token_cost_above_200k_tokens": 6e-07,
    "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
    "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
    "search_context_cost_per_query": {"search_context_size_low": 0.01},
    "supports_prompt_caching": true
  },
  "claude-haiku-4-5": {
    "litellm_provider": "anthropic",
    "mode": "chat",
    "input_cost_per_token": 1e-06,
    "output_cost_per_token": 5e-06,
    "input_cost_per_token_batches": 5e-07,
    "output_cost_per_token_batches": 2.5e-06
  },
  "gpt-5": {
    "litellm_provider": "openai",
    "mode": "chat",
    "input_cost_per_token": 1.25e-06,
    "output_cost_per_token": 1e-05,
    "cache_read_input_token_cost": 1.25e-07,
    "input_cost_per_token_flex": 6.25e-07,
    "output_cost_per_token_flex": 5e-06,
    "cache_read_input_token_cost_flex": 6.25e-08,
    "input_cost_per_token_priority": 2.5e-06,
    "output_cost_per_token_priority": 2e-05,
    "input_cost_per_audio_token": 4e-05
  },
  "openai/gpt-5": {
    "litellm_provider": "openai",
    "mode": "chat",
    "input_cost_per_token": 1.25e-06,
    "output_cost_per_token": 1e-05,
    "cache_read_input_token_cost": 1.25e-07,
    "input_cost_per_token_flex": 6.25e-07,
    "output_cost_per_token_flex": 5e-06,
    "cache_read_input_token_cost_flex": 6.25e-08,
    "input_cost_per_token_priority": 2.5e-06,
    "output_cost_per_token_priority": 2e-05,
    "input_cost_per_audio_token": 4e-05
  },
  "azure/gpt-5-mini": {
    "litellm_provider": "azure",
    "mode": "responses",
    "input_cost_per_token": 2.5e-07,
    "output_cost_per_token": 2e-06,
    "cache_read_input_token_cost": 2.5e-08
  },
  "text-embedding-3-small": {
    "litellm_provider": "openai",
    "mode": "embedding",
    "input_cost_per_token": 2e-08,
    "output_cost_per_token": 0.0
  },
  "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04},
  "float-artifact": {
    "litellm_provider": "openai",
    "mode": "chat",
    "input_cost_per_token": 3.0000000000000004e-07,
    "output_cost_per_token": 1e-06
  },
  "no-output-price": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06},
  "gemini-like": {
    "litellm_provider": "vertex_ai-language-models",
    "mode": "chat",
    "input_cost_per_token": 1.25e-06,
    "output_cost_per_token": 1e-05,
    "cache_read_input_token_cost": 3.1e-07,
    "input_cost_per_token_above_200k_tokens": 2.5e-06,
    "output_cost_per_token_above_200k_tokens": 1.5e-05
  },
  "conflicting": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 5e-06},
  "anthropic/conflicting": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 2e-06, "output_cost_per_token": 5e-06}
}"#;

fn from() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
}

#[test]
fn imports_chat_models_and_counts_what_it_skips() {
    let imported = import_litellm(SAMPLE, from()).unwrap();
    assert_eq!(imported.imported, 5, "{:#?}", imported.skipped);
    assert_eq!(imported.files.keys().collect::<Vec<_>>(), ["anthropic", "azure", "openai"]);
    let counts: Vec<_> = imported.skipped_by_kind().into_iter().collect();
    assert_eq!(
        counts,
        [
            ("conflict", 1),
            ("duplicate", 1),
            ("incomplete_long_context", 1),
            ("no_price", 1),
            ("not_chat", 2),
            ("sample_spec", 1),
            ("too_precise", 1),
        ]
    );
    let reasons: Vec<_> = imported.skipped.iter().map(|s| format!("{}: {}", s.key, s.detail)).collect();
    assert!(reasons.contains(&"float-artifact: input_cost_per_token = 3.0000000000000004e-07 has more than 18 decimal places per token".to_owned()), "{reasons:#?}");
    assert!(
        reasons.contains(
            &"gemini-like: the tier above 200000 input tokens has no cache_read price; the base has one"
                .to_owned()
        ),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .contains(&"dall-e-3: mode \"image_generation\" is not chat, completion or responses".to_owned())
    );
    assert_eq!(
        imported.ignored_fields.keys().collect::<Vec<_>>(),
        ["input_cost_per_audio_token", "search_context_cost_per_query"]
    );
}

#[test]
fn imported_prices_are_the_exact_json_text_per_token() {
    let imported = import_litellm(SAMPLE, from()).unwrap();
    let anthropic = &imported.files["anthropic"];
    let expected = r#"
[models."claude-sonnet-4-5"]

[[models."claude-sonnet-4-5".prices]]
effective_from = 2025-01-01
unit = "per_token"
input = "0.000003"
output = "0.000015"
cache_read = "0.0000003"
cache_write_5m = "0.00000375"
cache_write_1h = "0.000006"

[[models."claude-sonnet-4-5".prices.long_context]]
above_input_tokens = 200000
input = "0.000006"
output = "0.0000225"
cache_read = "0.0000006"
cache_write_5m = "0.0000075"
cache_write_1h = "0.000012"
"#;
    assert!(anthropic.contains(expected), "{anthropic}");
    assert!(imported.files["openai"].contains("[models.\"gpt-5\".prices.service_tiers.flex]\nunit = \"per_token\"\ninput = \"0.000000625\"\noutput = \"0.000005\"\ncache_read = \"0.0000000625\"\n"));
}

#[test]
fn the_import_loads_and_prices_like_the_hand_written_catalog() {
    let imported = import_litellm(SAMPLE, from()).unwrap();
    let sources = imported.sources();
    let catalog =
        PriceCatalog::from_sources(sources.iter().map(|(name, text)| (name.as_str(), *text))).unwrap();
    let shipped = common::catalog();
    let cases = [
        (
            "anthropic",
            "claude-sonnet-4-5",
            None,
            TokenCounts {
                input: 1000,
                output: 500,
                cache_read: 20_000,
                cache_write_5m: 300,
                cache_write_1h: 700,
                reasoning: 0,
            },
        ),
        (
            "anthropic",
            "claude-sonnet-4-5",
            None,
            TokenCounts {
                input: 150_001,
                output: 1000,
                cache_read: 50_000,
                cache_write_5m: 1,
                cache_write_1h: 2,
                reasoning: 0,
            },
        ),
        (
            "anthropic",
            "claude-haiku-4-5",
            Some("batch"),
            TokenCounts { input: 10_000, output: 2000, ..TokenCounts::default() },
        ),
        (
            "openai",
            "gpt-5",
            Some("flex"),
            TokenCounts {
                input: 904,
                output: 300,
                cache_read: 4096,
                reasoning: 1200,
                ..TokenCounts::default()
            },
        ),
    ];
    for (provider, model, tier, tokens) in cases {
        let mut e = event(provider, model, tokens);
        e.service_tier = tier.map(str::to_owned);
        let (imported_ref, imported_cost) = priced(&catalog.price(&e));
        let (_, shipped_cost) = priced(&shipped.price(&e));
        assert_eq!(imported_ref, format!("{provider}/{model}@2025-01-01"));
        assert_eq!(imported_cost.total(), shipped_cost.total(), "{provider}/{model} {tier:?}");
        assert_eq!(classes(&imported_cost), classes(&shipped_cost));
    }
    let e = event("azure", "gpt-5-mini", TokenCounts { input: 1_000_000, ..TokenCounts::default() });
    assert_eq!(priced(&catalog.price(&e)).1.total().to_string(), "$0.25");
}

#[test]
fn not_a_catalog_is_an_error() {
    assert!(import_litellm("[1, 2]", from()).is_err());
    assert!(import_litellm("{", from()).unwrap_err().to_string().starts_with("not LiteLLM's catalog"));
}

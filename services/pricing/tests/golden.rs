//! Golden cases: realistic provider usage payloads, converted to token classes by the documented
//! rules (tests/common), priced with the shipped catalog, against costs computed by hand and
//! written as exact decimal strings (per class: input, output, cache_read, cache_write_5m,
//! cache_write_1h, reasoning; then the total).

mod common;

use common::*;
use faregate_core::event::TokenCounts;

enum Usage {
    /// Anthropic Messages, non-streaming `usage`.
    Anthropic(&'static str),
    /// Anthropic Messages streaming events that carry usage, in order.
    AnthropicStream(&'static [&'static str]),
    /// OpenAI Chat Completions `usage`.
    Chat(&'static str),
    /// OpenAI Responses `usage`.
    Responses(&'static str),
    Tokens(TokenCounts),
}

struct Case {
    name: &'static str,
    provider: &'static str,
    model: &'static str,
    usage: Usage,
    tier: Option<&'static str>,
    region: Option<&'static str>,
    price_ref: &'static str,
    classes: [&'static str; 6],
    total: &'static str,
}

const SONNET_45: &str = "anthropic/claude-sonnet-4-5@2025-01-01";

const fn tokens(
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write_5m: i64,
    cache_write_1h: i64,
) -> TokenCounts {
    TokenCounts { input, output, cache_read, cache_write_5m, cache_write_1h, reasoning: 0 }
}

fn cases() -> Vec<Case> {
    let case = |name, provider, model, usage, price_ref, classes, total| Case {
        name,
        provider,
        model,
        usage,
        tier: None,
        region: None,
        price_ref,
        classes,
        total,
    };
    vec![
        case(
            "anthropic plain",
            "anthropic",
            "claude-sonnet-4-5",
            Usage::Anthropic(
                r#"{"input_tokens":1000,"output_tokens":500,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}"#,
            ),
            SONNET_45,
            ["0.003", "0.0075", "0", "0", "0", "0"],
            "0.0105",
        ),
        case(
            "anthropic dated alias, cache read at the cache-read rate",
            "anthropic",
            "claude-sonnet-4-5-20250929",
            Usage::Anthropic(
                r#"{"input_tokens":12,"cache_read_input_tokens":20000,"cache_creation_input_tokens":0,"output_tokens":350}"#,
            ),
            SONNET_45,
            ["0.000036", "0.00525", "0.006", "0", "0", "0"],
            "0.011286",
        ),
        case(
            "anthropic 5m cache write",
            "anthropic",
            "claude-opus-4-5-20251101",
            Usage::Anthropic(
                r#"{"input_tokens":50,"cache_creation_input_tokens":4000,"cache_creation":{"ephemeral_5m_input_tokens":4000,"ephemeral_1h_input_tokens":0},"cache_read_input_tokens":0,"output_tokens":800}"#,
            ),
            "anthropic/claude-opus-4-5@2025-01-01",
            ["0.00025", "0.02", "0", "0.025", "0", "0"],
            "0.04525",
        ),
        case(
            "anthropic 1h cache write at the 1h rate",
            "anthropic",
            "claude-opus-4-6",
            Usage::Anthropic(
                r#"{"input_tokens":10,"cache_creation_input_tokens":3000,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":3000},"output_tokens":100}"#,
            ),
            "anthropic/claude-opus-4-6@2025-01-01",
            ["0.00005", "0.0025", "0", "0", "0.03", "0"],
            "0.03255",
        ),
        case(
            "anthropic every cache class",
            "anthropic",
            "claude-haiku-4-5",
            Usage::Anthropic(
                r#"{"input_tokens":2000,"cache_read_input_tokens":10000,"cache_creation_input_tokens":1500,"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":500},"output_tokens":300}"#,
            ),
            "anthropic/claude-haiku-4-5@2025-01-01",
            ["0.002", "0.0015", "0.001", "0.00125", "0.001", "0"],
            "0.00675",
        ),
        case(
            "anthropic opus 4.1",
            "anthropic",
            "claude-opus-4-1-20250805",
            Usage::Anthropic(r#"{"input_tokens":1000,"output_tokens":1000}"#),
            "anthropic/claude-opus-4-1@2025-01-01",
            ["0.015", "0.075", "0", "0", "0", "0"],
            "0.09",
        ),
        case(
            "anthropic 887 input tokens at $1/M is exactly 0.000887",
            "anthropic",
            "claude-haiku-4-5-20251001",
            Usage::Anthropic(r#"{"input_tokens":887,"output_tokens":0}"#),
            "anthropic/claude-haiku-4-5@2025-01-01",
            ["0.000887", "0", "0", "0", "0", "0"],
            "0.000887",
        ),
        case(
            "anthropic thinking is inside output_tokens",
            "anthropic",
            "claude-opus-4-7",
            Usage::Anthropic(r#"{"input_tokens":100,"output_tokens":5000}"#),
            "anthropic/claude-opus-4-7@2025-01-01",
            ["0.0005", "0.125", "0", "0", "0", "0"],
            "0.1255",
        ),
        case(
            "anthropic cache_creation_input_tokens without breakdown is 5m",
            "anthropic",
            "claude-sonnet-4-20250514",
            Usage::Anthropic(r#"{"input_tokens":5,"cache_creation_input_tokens":2000,"output_tokens":10}"#),
            "anthropic/claude-sonnet-4@2025-01-01",
            ["0.000015", "0.00015", "0", "0.0075", "0", "0"],
            "0.007665",
        ),
        case(
            "anthropic stream: message_delta replaces output",
            "anthropic",
            "claude-sonnet-4-5",
            Usage::AnthropicStream(&[
                r#"{"type":"message_start","message":{"usage":{"input_tokens":25,"cache_read_input_tokens":1000,"cache_creation_input_tokens":0,"output_tokens":1}}}"#,
                r#"{"type":"message_delta","usage":{"output_tokens":420}}"#,
            ]),
            SONNET_45,
            ["0.000075", "0.0063", "0.0003", "0", "0", "0"],
            "0.006675",
        ),
        case(
            "anthropic stream: several cumulative deltas",
            "anthropic",
            "claude-opus-4-5",
            Usage::AnthropicStream(&[
                r#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#,
                r#"{"type":"message_delta","usage":{"output_tokens":100}}"#,
                r#"{"type":"message_delta","usage":{"input_tokens":25,"cache_read_input_tokens":0,"output_tokens":420}}"#,
            ]),
            "anthropic/claude-opus-4-5@2025-01-01",
            ["0.000125", "0.0105", "0", "0", "0", "0"],
            "0.010625",
        ),
        case(
            "anthropic stream with a 1h cache write",
            "anthropic",
            "claude-haiku-4-5",
            Usage::AnthropicStream(&[
                r#"{"type":"message_start","message":{"usage":{"input_tokens":3,"cache_creation_input_tokens":8000,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":8000},"cache_read_input_tokens":0,"output_tokens":1}}}"#,
                r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}"#,
                r#"{"type":"message_delta","usage":{"output_tokens":64}}"#,
            ]),
            "anthropic/claude-haiku-4-5@2025-01-01",
            ["0.000003", "0.00032", "0", "0", "0.016", "0"],
            "0.016323",
        ),
        case(
            "openai chat mini",
            "openai",
            "gpt-5-mini",
            Usage::Chat(
                r#"{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}"#,
            ),
            "openai/gpt-5-mini@2025-01-01",
            ["0.0003", "0.0006", "0", "0", "0", "0"],
            "0.0009",
        ),
        case(
            "openai chat: cached tokens out of prompt, reasoning out of completion",
            "openai",
            "gpt-5",
            Usage::Chat(
                r#"{"prompt_tokens":10000,"completion_tokens":500,"total_tokens":10500,"prompt_tokens_details":{"cached_tokens":8000},"completion_tokens_details":{"reasoning_tokens":256}}"#,
            ),
            "openai/gpt-5@2025-01-01",
            ["0.0025", "0.00244", "0.001", "0", "0", "0.00256"],
            "0.0085",
        ),
        case(
            "openai chat dated alias without details",
            "openai",
            "gpt-5-2025-08-07",
            Usage::Chat(r#"{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150}"#),
            "openai/gpt-5@2025-01-01",
            ["0.000125", "0.0005", "0", "0", "0", "0"],
            "0.000625",
        ),
        case(
            "openai chat gpt-5.4 below the long-context threshold",
            "openai",
            "gpt-5.4",
            Usage::Chat(
                r#"{"prompt_tokens":100000,"completion_tokens":2000,"prompt_tokens_details":{"cached_tokens":50000},"completion_tokens_details":{"reasoning_tokens":1000}}"#,
            ),
            "openai/gpt-5.4@2025-01-01",
            ["0.125", "0.015", "0.0125", "0", "0", "0.015"],
            "0.1675",
        ),
        case(
            "openai chat gpt-5.5",
            "openai",
            "gpt-5.5",
            Usage::Chat(
                r#"{"prompt_tokens":3000,"completion_tokens":800,"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":600}}"#,
            ),
            "openai/gpt-5.5@2025-01-01",
            ["0.00988", "0.006", "0.000512", "0", "0", "0.018"],
            "0.034392",
        ),
        case(
            "openai responses gpt-5",
            "openai",
            "gpt-5",
            Usage::Responses(
                r#"{"input_tokens":5000,"input_tokens_details":{"cached_tokens":4096},"output_tokens":1500,"output_tokens_details":{"reasoning_tokens":1200},"total_tokens":6500}"#,
            ),
            "openai/gpt-5@2025-01-01",
            ["0.00113", "0.003", "0.000512", "0", "0", "0.012"],
            "0.016642",
        ),
        Case {
            tier: Some("flex"),
            ..case(
                "openai responses flex tier",
                "openai",
                "gpt-5-mini",
                Usage::Responses(
                    r#"{"input_tokens":20000,"input_tokens_details":{"cached_tokens":0},"output_tokens":4000,"output_tokens_details":{"reasoning_tokens":3000}}"#,
                ),
                "openai/gpt-5-mini@2025-01-01",
                ["0.0025", "0.001", "0", "0", "0", "0.003"],
                "0.0065",
            )
        },
        case(
            "openai responses gpt-5.5 above 272K: whole request at long-context prices",
            "openai",
            "gpt-5.5",
            Usage::Responses(
                r#"{"input_tokens":300000,"input_tokens_details":{"cached_tokens":200000},"output_tokens":10000,"output_tokens_details":{"reasoning_tokens":8000}}"#,
            ),
            "openai/gpt-5.5@2025-01-01",
            ["1", "0.09", "0.2", "0", "0", "0.36"],
            "1.65",
        ),
        Case {
            tier: Some("batch"),
            ..case(
                "openai responses batch tier",
                "openai",
                "gpt-5.4",
                Usage::Responses(r#"{"input_tokens":10000,"output_tokens":1000}"#),
                "openai/gpt-5.4@2025-01-01",
                ["0.0125", "0.0075", "0", "0", "0", "0"],
                "0.02",
            )
        },
        case(
            "exactly at the 200K threshold (cache included): base prices",
            "anthropic",
            "claude-sonnet-4-5",
            Usage::Tokens(tokens(150_000, 1000, 50_000, 0, 0)),
            SONNET_45,
            ["0.45", "0.015", "0.015", "0", "0", "0"],
            "0.48",
        ),
        case(
            "one token over the 200K threshold: every class at long-context prices",
            "anthropic",
            "claude-sonnet-4-5",
            Usage::Tokens(tokens(150_001, 1000, 50_000, 0, 0)),
            SONNET_45,
            ["0.900006", "0.0225", "0.03", "0", "0", "0"],
            "0.952506",
        ),
        case(
            "cache writes count toward the threshold",
            "anthropic",
            "claude-sonnet-4",
            Usage::Tokens(tokens(1000, 100, 0, 150_000, 49_001)),
            "anthropic/claude-sonnet-4@2025-01-01",
            ["0.006", "0.00225", "0", "1.125", "0.588012", "0"],
            "1.721262",
        ),
        case(
            "exactly at the 272K threshold: base prices",
            "openai",
            "gpt-5.4",
            Usage::Tokens(tokens(272_000, 0, 0, 0, 0)),
            "openai/gpt-5.4@2025-01-01",
            ["0.68", "0", "0", "0", "0", "0"],
            "0.68",
        ),
        case(
            "one token over 272K",
            "openai",
            "gpt-5.4",
            Usage::Tokens(tokens(272_001, 0, 0, 0, 0)),
            "openai/gpt-5.4@2025-01-01",
            ["1.360005", "0", "0", "0", "0", "0"],
            "1.360005",
        ),
        case(
            "zero tokens (blocked) is priced at zero",
            "anthropic",
            "claude-sonnet-4-5",
            Usage::Tokens(TokenCounts::default()),
            SONNET_45,
            ["0", "0", "0", "0", "0", "0"],
            "0",
        ),
        Case {
            tier: Some("batch"),
            ..case(
                "anthropic batch is half price",
                "anthropic",
                "claude-haiku-4-5",
                Usage::Tokens(tokens(10_000, 2000, 0, 0, 0)),
                "anthropic/claude-haiku-4-5@2025-01-01",
                ["0.005", "0.005", "0", "0", "0", "0"],
                "0.01",
            )
        },
        Case {
            region: Some("us"),
            ..case(
                "anthropic US-only inference is 1.1x",
                "anthropic",
                "claude-opus-4-6",
                Usage::Tokens(tokens(1000, 1000, 0, 0, 0)),
                "anthropic/claude-opus-4-6@2025-01-01",
                ["0.0055", "0.0275", "0", "0", "0", "0"],
                "0.033",
            )
        },
        Case {
            tier: Some("batch"),
            region: Some("us"),
            ..case(
                "batch, US and long context together",
                "anthropic",
                "claude-sonnet-4-5",
                Usage::Tokens(tokens(250_000, 1000, 0, 0, 0)),
                SONNET_45,
                ["0.825", "0.012375", "0", "0", "0", "0"],
                "0.837375",
            )
        },
        Case {
            tier: Some("standard"),
            ..case(
                "anthropic standard tier named explicitly",
                "anthropic",
                "claude-sonnet-4-6",
                Usage::Tokens(tokens(1, 1, 0, 0, 0)),
                "anthropic/claude-sonnet-4-6@2025-01-01",
                ["0.000003", "0.000015", "0", "0", "0", "0"],
                "0.000018",
            )
        },
        Case {
            region: Some("global"),
            ..case(
                "anthropic global region is list price",
                "anthropic",
                "claude-opus-4-7",
                Usage::Tokens(tokens(1000, 0, 0, 0, 0)),
                "anthropic/claude-opus-4-7@2025-01-01",
                ["0.005", "0", "0", "0", "0", "0"],
                "0.005",
            )
        },
    ]
}

fn token_counts(usage: &Usage) -> TokenCounts {
    match usage {
        Usage::Anthropic(text) => anthropic_usage(&json(text)),
        Usage::AnthropicStream(events) => {
            anthropic_stream(&events.iter().map(|e| json(e)).collect::<Vec<_>>())
        }
        Usage::Chat(text) => openai_chat_usage(&json(text)),
        Usage::Responses(text) => openai_responses_usage(&json(text)),
        Usage::Tokens(tokens) => *tokens,
    }
}

#[test]
fn golden_cases() {
    let catalog = catalog();
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut event = event(case.provider, case.model, token_counts(&case.usage));
        event.service_tier = case.tier.map(str::to_owned);
        event.inference_region = case.region.map(str::to_owned);
        let pricing = catalog.price(&event);
        let (price_ref, cost) = priced(&pricing);
        let expected_classes = case.classes.map(str::to_owned);
        let actual = (price_ref, classes(&cost), cost.total().0.normalize().to_string());
        let expected = (case.price_ref.to_owned(), expected_classes, case.total.to_owned());
        if actual != expected {
            failures.push(format!("{}:\n  expected {expected:?}\n  got      {actual:?}", case.name));
        }
        // Every cost is storable on the wire without rounding.
        assert!(cost.total().to_units().is_ok(), "{}", case.name);
    }
    assert!(failures.is_empty(), "{} golden case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

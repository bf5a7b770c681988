//! Usage extraction against payloads shaped like the providers' (see shared/clients.md).

use super::*;

fn tokens(input: i64, output: i64, cache_read: i64, w5: i64, w1h: i64, reasoning: i64) -> TokenCounts {
    TokenCounts { input, output, cache_read, cache_write_5m: w5, cache_write_1h: w1h, reasoning }
}

fn stream(api: Api, body: &str) -> StreamUsage {
    let mut usage = StreamUsage::new(api);
    // Feed in awkward pieces, as a network would.
    for piece in body.as_bytes().chunks(7) {
        usage.feed(piece);
    }
    usage
}

#[test]
fn anthropic_message_with_cache_split() {
    let body = r#"{"id":"msg_1","type":"message","model":"claude-sonnet-4-5-20250929","content":[],
        "usage":{"input_tokens":12,"cache_creation_input_tokens":300,"cache_read_input_tokens":4000,
        "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},
        "output_tokens":55,"service_tier":"standard","inference_geo":"us"}}"#;
    let mut observed = Observed::from_body(Api::AnthropicMessages, body.as_bytes());
    assert_eq!(observed.tokens, tokens(12, 55, 4000, 100, 200, 0));
    assert_eq!(observed.served_model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    assert_eq!(observed.service_tier.as_deref(), Some("standard"));
    assert_eq!(observed.inference_region.as_deref(), Some("us"));
    assert_eq!(observed.finish(1000), UsageSource::Reported);
}

#[test]
fn a_later_total_without_the_split_keeps_the_split() {
    let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1,\"cache_creation_input_tokens\":120,\"cache_creation\":{\"ephemeral_5m_input_tokens\":50,\"ephemeral_1h_input_tokens\":70},\"output_tokens\":1}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":1,\"cache_creation_input_tokens\":120,\"output_tokens\":9}}\n\n";
    assert_eq!(stream(Api::AnthropicMessages, body).observed.tokens, tokens(1, 9, 0, 50, 70, 0));
    let grown = body.replace(
        "\"cache_creation_input_tokens\":120,\"output_tokens\":9",
        "\"cache_creation_input_tokens\":150,\"output_tokens\":9",
    );
    assert_eq!(stream(Api::AnthropicMessages, &grown).observed.tokens, tokens(1, 9, 0, 80, 70, 0));
}

#[test]
fn anthropic_cache_writes_without_split_are_five_minute() {
    let body = r#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":300,"output_tokens":2}}"#;
    assert_eq!(
        Observed::from_body(Api::AnthropicMessages, body.as_bytes()).tokens,
        tokens(1, 2, 0, 300, 0, 0)
    );
}

const ANTHROPIC_STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-opus-4-1\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":2000,\"cache_creation_input_tokens\":0,\"output_tokens\":1}}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":7}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":42}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[test]
fn anthropic_stream_deltas_replace_never_add() {
    let mut usage = stream(Api::AnthropicMessages, ANTHROPIC_STREAM);
    assert!(usage.completed);
    assert_eq!(usage.observed.tokens, tokens(10, 42, 2000, 0, 0, 0));
    assert_eq!(usage.observed.served_model.as_deref(), Some("claude-opus-4-1"));
    assert_eq!(usage.observed.finish(100), UsageSource::Reported);
}

#[test]
fn anthropic_stream_cut_after_start_estimates_only_the_output() {
    let cut = ANTHROPIC_STREAM.split("event: message_delta").next().unwrap();
    let mut usage = stream(Api::AnthropicMessages, cut);
    assert!(!usage.completed);
    // message_start reported output_tokens 1, so the output side counts as reported too: the
    // provider's own figure at the time of the cut.
    assert_eq!(usage.observed.finish(100), UsageSource::Reported);
    assert_eq!(usage.observed.tokens.input, 10);
    assert_eq!(usage.observed.tokens.cache_read, 2000);
}

#[test]
fn nothing_reported_is_estimated() {
    let mut usage = stream(
        Api::AnthropicMessages,
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"abcdefghi\"}}\n\n",
    );
    assert_eq!(usage.observed.finish(400), UsageSource::Estimated);
    assert_eq!(usage.observed.tokens, tokens(100, 3, 0, 0, 0, 0));
}

#[test]
fn openai_chat_subtracts_cached_and_reasoning() {
    let body = r#"{"id":"chatcmpl-1","model":"gpt-5-2025-08-07","service_tier":"default","choices":[],
        "usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,
        "prompt_tokens_details":{"cached_tokens":1000},"completion_tokens_details":{"reasoning_tokens":250}}}"#;
    let mut observed = Observed::from_body(Api::OpenaiChat, body.as_bytes());
    assert_eq!(observed.tokens, tokens(200, 50, 1000, 0, 0, 250));
    assert_eq!(observed.tokens.total(), 1500);
    assert_eq!(observed.service_tier.as_deref(), Some("default"));
    assert_eq!(observed.finish(0), UsageSource::Reported);
}

#[test]
fn openai_chat_stream_usage_is_in_the_final_chunk() {
    let body = "data: {\"id\":\"c\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":5,\"total_tokens\":35,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n\
data: [DONE]\n\n";
    let mut usage = stream(Api::OpenaiChat, body);
    assert!(usage.completed);
    assert_eq!(usage.observed.finish(0), UsageSource::Reported);
    assert_eq!(usage.observed.tokens, tokens(30, 5, 0, 0, 0, 0));
}

#[test]
fn openai_chat_stream_without_usage_is_estimated() {
    let body = "data: {\"id\":\"c\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"12345678\"}}]}\n\n";
    let mut usage = stream(Api::OpenaiChat, body);
    assert_eq!(usage.observed.finish(40), UsageSource::Estimated);
    assert_eq!(usage.observed.tokens, tokens(10, 2, 0, 0, 0, 0));
}

#[test]
fn openai_responses_stream_completed() {
    let body = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"model\":\"gpt-5-codex\",\"usage\":null}}\n\n\
event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hey\"}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"model\":\"gpt-5-codex\",\"usage\":{\"input_tokens\":5000,\"input_tokens_details\":{\"cached_tokens\":4096},\"output_tokens\":800,\"output_tokens_details\":{\"reasoning_tokens\":600},\"total_tokens\":5800}}}\n\n";
    let mut usage = stream(Api::OpenaiResponses, body);
    assert!(usage.completed);
    assert_eq!(usage.observed.finish(0), UsageSource::Reported);
    assert_eq!(usage.observed.tokens, tokens(904, 200, 4096, 0, 0, 600));
    assert_eq!(usage.observed.served_model.as_deref(), Some("gpt-5-codex"));
}

#[test]
fn embeddings_have_input_only() {
    let body = r#"{"object":"list","model":"text-embedding-3-small","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
    let mut observed = Observed::from_body(Api::OpenaiEmbeddings, body.as_bytes());
    assert_eq!(observed.finish(0), UsageSource::Reported);
    assert_eq!(observed.tokens, tokens(8, 0, 0, 0, 0, 0));
}

#[test]
fn a_body_that_is_not_json_reports_nothing() {
    let mut observed = Observed::from_body(Api::AnthropicMessages, b"<html>bad gateway</html>");
    assert_eq!(observed.finish(8), UsageSource::Estimated);
    assert_eq!(observed.tokens.input, 2);
}

#[test]
fn a_whole_body_is_read_for_usage_only_and_odd_fields_do_not_hide_it() {
    // Content of any shape is skipped; a model of the wrong type is ignored on its own.
    let body = r#"{"model":42,"content":[{"type":"text","text":"a \"quoted\" long answer"},{"nested":{"deep":[1,2,{"x":null}]}}],
        "usage":{"input_tokens":7,"output_tokens":3},"stop_reason":"end_turn"}"#;
    let mut observed = Observed::from_body(Api::AnthropicMessages, body.as_bytes());
    assert_eq!(observed.tokens, tokens(7, 3, 0, 0, 0, 0));
    assert_eq!(observed.served_model, None);
    assert_eq!(observed.finish(100), UsageSource::Reported);
    let openai =
        r#"{"model":"gpt-5","service_tier":null,"usage":{"prompt_tokens":10,"completion_tokens":4}}"#;
    let observed = Observed::from_body(Api::OpenaiChat, openai.as_bytes());
    assert_eq!(observed.tokens, tokens(10, 4, 0, 0, 0, 0));
    assert_eq!(observed.service_tier, None);
}

#[test]
fn deltas_are_counted_without_parsing_and_events_of_no_use_are_skipped() {
    // Anthropic: text, tool-input and thinking deltas count (escapes decoded: 2 + 7 + 3 chars),
    // pings and block starts/stops are skipped, a delta of an odd shape is read in full
    // (and still counts nothing wrong), and message_stop completes.
    let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
        event: ping\ndata: {\"type\":\"ping\"}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"h\\u00e9\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"abc\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":\"not an object\"}\n\n\
        event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
    let usage = stream(Api::AnthropicMessages, body);
    assert_eq!(usage.observed.output_chars, 2 + 7 + 3);
    assert_eq!(usage.observed.served_model.as_deref(), Some("m"));
    assert!(!usage.completed);
    let usage = stream(
        Api::AnthropicMessages,
        &format!("{body}event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"),
    );
    assert!(usage.completed);

    // Responses: deltas count; `*.done` events repeat the whole text and are not counted again.
    let body = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-5\"}}\n\n\
        event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hello\"}\n\n\
        event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"hello\"}\n\n\
        event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{}\"}\n\n";
    let usage = stream(Api::OpenaiResponses, body);
    assert_eq!(usage.observed.output_chars, 5 + 2);
    assert_eq!(usage.observed.served_model.as_deref(), Some("gpt-5"));
    assert!(!usage.completed);
}

#[test]
fn message_start_and_delta_read_typed_give_what_the_full_read_gives() {
    // Each event through the typed reader and through the full read, one after the other on
    // the same state: where the typed reader takes the event, the result must be the same.
    let events = [
        (
            "message_start",
            r#"{"type":"message_start","message":{"id":"m","model":"claude-x","content":[{"type":"text","text":"a\"b\\c"}],"usage":{"input_tokens":3,"cache_read_input_tokens":4,"cache_creation":{"ephemeral_5m_input_tokens":5,"ephemeral_1h_input_tokens":6},"output_tokens":1,"service_tier":"priority","inference_geo":"eu"}}}"#,
        ),
        ("message_start", r#"{"type":"message_start","message":{"model":7,"usage":{"input_tokens":3}}}"#),
        ("message_start", r#"{"type":"message_start","message":{"usage":"not an object"}}"#),
        ("message_start", r#"{"type":"message_start","message":null}"#),
        ("message_start", r#"{"type":"message_start","message":[1,2]}"#),
        ("message_start", r#"{"type":"message_start"}"#),
        ("message_start", r#"{"message":{"model":"no-type","usage":{"input_tokens":9}}}"#),
        (
            "message_start",
            r#"{"type":"message_delta","message":{"model":"mismatch"},"usage":{"output_tokens":8}}"#,
        ),
        ("message_start", r#"[]"#),
        ("message_start", r#"not json"#),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42,"cache_creation_input_tokens":20}}"#,
        ),
        ("message_delta", r#"{"type":"message_delta","usage":null}"#),
        ("message_delta", r#"{"type":"message_delta","usage":{"output_tokens":"many"}}"#),
        (
            "message_delta",
            r#"{"type":"message_start","message":{"model":"mismatch"},"usage":{"output_tokens":5}}"#,
        ),
        ("message_delta", r#"{"usage":{"output_tokens":6}}"#),
        ("content_block_delta", r#"{"type":"content_block_delta","delta":{"text":"abc"}}"#),
    ];
    let mut taken = 0;
    for (before, _) in [(None, ""), (Some(events[0]), "")] {
        for (name, data) in events {
            let event = SseEvent { event: Some(name.into()), data: data.into() };
            let mut typed = Observed::default();
            let mut full = Observed::default();
            if let Some((first_name, first_data)) = before {
                // On top of an earlier start, as in a real stream.
                let first = SseEvent { event: Some(first_name.into()), data: first_data.into() };
                read_in_full(Api::AnthropicMessages, &mut typed, &mut false, &first);
                read_in_full(Api::AnthropicMessages, &mut full, &mut false, &first);
            }
            if anthropic_message_event(&mut typed, &event) {
                taken += 1;
                read_in_full(Api::AnthropicMessages, &mut full, &mut false, &event);
                assert_eq!(typed, full, "{name}: {data}");
            }
        }
    }
    // Declined: not JSON, not an object, a `message` that is not an object, `type` not the
    // event's name, another event; the other 9 are taken, in both passes.
    assert_eq!(taken, 2 * 9);
}

mod typed_usage {
    //! The typed reading of an Anthropic message and its `usage` against the reading of the same
    //! text as a `serde_json::Value`, on arbitrary shapes: repeated keys, values of every JSON
    //! type (integers past i64, floats, nested objects), objects that are not objects.
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
        "ephemeral_5m_input_tokens",
        "ephemeral_1h_input_tokens",
        "service_tier",
        "inference_geo",
        "model",
        "usage",
        "other",
    ];

    /// A JSON text, written by hand so keys can repeat.
    fn json(depth: u32) -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..20).prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("18446744073709551616".to_string()),
            Just("1.5".to_string()),
            Just("2e3".to_string()),
            Just("-0".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            "[a-z\\\\\"]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        if depth == 0 {
            return leaf.boxed();
        }
        prop_oneof![
            3 => leaf,
            1 => prop::collection::vec(json(depth - 1), 0..3).prop_map(|items| format!("[{}]", items.join(","))),
            3 => object(depth - 1),
        ]
        .boxed()
    }

    fn object(depth: u32) -> BoxedStrategy<String> {
        prop::collection::vec((prop::sample::select(KEYS), json(depth)), 0..8)
            .prop_map(|entries| {
                let fields: Vec<String> = entries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            })
            .boxed()
    }

    /// A message: arbitrary fields, then (most often) a `usage` object last.
    fn message() -> impl Strategy<Value = String> {
        (object(3), prop::option::weighted(0.8, object(2))).prop_map(|(fields, usage)| match usage {
            Some(usage) if fields == "{}" => format!("{{\"usage\":{usage}}}"),
            Some(usage) => format!("{},\"usage\":{usage}}}", &fields[..fields.len() - 1]),
            None => fields,
        })
    }

    proptest! {
        #[test]
        fn a_whole_message_reads_typed_as_it_reads_through_a_value(body in message()) {
            let value: Value = serde_json::from_str(&body).unwrap();
            let message = typed::whole_message(body.as_bytes()).expect("an object is a message");
            prop_assert_eq!(message.model, text(&value, "model"));
            prop_assert_eq!(message.usage, value.get("usage").map(typed::Usage::from_value), "{}", body);
        }

        #[test]
        fn a_body_that_is_not_an_object_is_no_message(body in json(2)) {
            let value: Value = serde_json::from_str(&body).unwrap();
            prop_assume!(!value.is_object());
            prop_assert!(typed::whole_message(body.as_bytes()).is_none());
        }
    }
}

//! OpenAI Chat Completions (`POST /v1/chat/completions`, JSON or `data:` chunks ending in
//! `[DONE]`), embeddings and the model list.
//!
//! `prompt_tokens` includes `cached_tokens`; `completion_tokens` includes `reasoning_tokens`.
//! A stream carries usage only when the request asks with `stream_options.include_usage`, in
//! a last chunk with empty `choices`, as the real API does.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::content;
use crate::request::{add_request_id, json_response};
use crate::sse::{self, data_event, done_event};
use crate::{Call, Provider};

/// Models listed by `GET /v1/models`.
const MODELS: [&str; 5] =
    ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5", "gpt-5-mini", "text-embedding-3-small"];

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

pub(crate) fn chat_completions(call: &Call<'_>) -> Response {
    let tool = content::tool_call(call.body, "parameters", ends_with_tool_message(call.body));
    let id = format!("chatcmpl-fake{:020}", call.id);
    let created = unix_now();
    if !call.stream {
        let (message, finish_reason) = match &tool {
            Some(tool) => (
                json!({
                    "role": "assistant",
                    "content": null,
                    "refusal": null,
                    "annotations": [],
                    "tool_calls": [{
                        "id": format!("call_fake{:020}", call.id),
                        "type": "function",
                        "function": {"name": tool.name, "arguments": tool.arguments.to_string()},
                    }],
                }),
                "tool_calls",
            ),
            None => (
                json!({
                    "role": "assistant",
                    "content": content::text(call.usage.output),
                    "refusal": null,
                    "annotations": [],
                }),
                "stop",
            ),
        };
        let completion = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": call.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
            "usage": usage(call),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        });
        return json_response(Provider::OpenAi, call.id, StatusCode::OK, &completion);
    }
    let include_usage =
        call.body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": call.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        data_event(&chunk)
    };
    let choice = |delta: Value, finish_reason: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);
    let mut events: Vec<Bytes> = Vec::with_capacity(16);
    let finish_reason = match &tool {
        Some(tool) => {
            let first = json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": 0,
                    "id": format!("call_fake{:020}", call.id),
                    "type": "function",
                    "function": {"name": tool.name, "arguments": ""},
                }],
            });
            events.push(chunk(choice(first, Value::Null), None));
            for piece in tool.argument_pieces() {
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                events.push(chunk(choice(delta, Value::Null), None));
            }
            "tool_calls"
        }
        None => {
            let first = json!({"role": "assistant", "content": "", "refusal": null});
            events.push(chunk(choice(first, Value::Null), None));
            for text in content::text_deltas(call.usage.output) {
                events.push(chunk(choice(json!({"content": text}), Value::Null), None));
            }
            "stop"
        }
    };
    events.push(chunk(choice(json!({}), json!(finish_reason)), None));
    if include_usage {
        events.push(chunk(json!([]), Some(usage(call))));
    }
    events.push(done_event());
    let mut response = sse::response(events, call.plan);
    add_request_id(response.headers_mut(), Provider::OpenAi, call.id);
    response
}

fn usage(call: &Call<'_>) -> Value {
    let usage = &call.usage;
    let prompt_tokens = usage.openai_input();
    let completion_tokens = usage.output_with_reasoning();
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

/// Whether the last message is a tool's result.
fn ends_with_tool_message(body: &Value) -> bool {
    let last = body.get("messages").and_then(Value::as_array).and_then(|messages| messages.last());
    last.and_then(|message| message.get("role")).and_then(Value::as_str) == Some("tool")
}

/// `POST /v1/embeddings`: one 8-dimension vector per input; usage `prompt_tokens` is the
/// input class of the usage.
pub(crate) fn embeddings(call: &Call<'_>) -> Response {
    let inputs = match call.body.get("input") {
        Some(Value::Array(items)) if !items.is_empty() && !items[0].is_number() => items.len(),
        _ => 1,
    };
    let vector = json!([0.125, -0.25, 0.5, 0.0, 1.0, -1.0, 0.375, 0.0625]);
    let data: Vec<Value> = (0..inputs)
        .map(|index| json!({"object": "embedding", "index": index, "embedding": vector}))
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": call.usage.input, "total_tokens": call.usage.input},
    });
    json_response(Provider::OpenAi, call.id, StatusCode::OK, &body)
}

/// `GET /v1/models`: OpenAI's list, or Anthropic's when the request has `anthropic-version`.
pub(crate) fn models(provider: Provider, call: &Call<'_>) -> Response {
    let body = match provider {
        Provider::OpenAi => json!({
            "object": "list",
            "data": MODELS.iter().map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "faregate-fake"})).collect::<Vec<_>>(),
        }),
        Provider::Anthropic => json!({
            "data": MODELS.iter().map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"})).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": MODELS[0],
            "last_id": MODELS[MODELS.len() - 1],
        }),
    };
    json_response(provider, call.id, StatusCode::OK, &body)
}

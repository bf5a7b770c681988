//! Anthropic Messages: `POST /v1/messages` (JSON or SSE) and `POST /v1/messages/count_tokens`.
//!
//! `usage.input_tokens` excludes cache tokens; `output_tokens` includes reasoning (the API has
//! no separate reasoning count). Streaming: `message_start` carries the input and cache usage
//! with `output_tokens: 1`, the final `message_delta` the cumulative usage.

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::content::{self, ToolCall};
use crate::request::{add_request_id, json_response};
use crate::sse::{self, named_event};
use crate::{Call, Provider};

pub(crate) fn messages(call: &Call<'_>) -> Response {
    let tool = content::tool_call(call.body, "input_schema", ends_with_tool_result(call.body));
    if !call.stream {
        let (block, stop_reason) = match &tool {
            Some(tool) => (tool_use_block(call.id, tool, tool.arguments.clone()), "tool_use"),
            None => (json!({"type": "text", "text": content::text(call.usage.output)}), "end_turn"),
        };
        let mut message = message(call, &usage(call, call.usage.output_with_reasoning()), stop_reason);
        message["content"] = json!([block]);
        return json_response(Provider::Anthropic, call.id, StatusCode::OK, &message);
    }
    let mut events: Vec<Bytes> = Vec::with_capacity(16);
    let start = message(call, &usage(call, 1), Value::Null);
    events.push(named_event("message_start", &json!({"type": "message_start", "message": start})));
    let (block, deltas, stop_reason) = match &tool {
        Some(tool) => {
            let deltas = tool
                .argument_pieces()
                .into_iter()
                .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                .collect::<Vec<_>>();
            (tool_use_block(call.id, tool, json!({})), deltas, "tool_use")
        }
        None => {
            let deltas = content::text_deltas(call.usage.output)
                .into_iter()
                .map(|text| json!({"type": "text_delta", "text": text}))
                .collect();
            (json!({"type": "text", "text": ""}), deltas, "end_turn")
        }
    };
    events.push(named_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    ));
    events.push(named_event("ping", &json!({"type": "ping"})));
    for delta in deltas {
        events.push(named_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    events.push(named_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    let mut final_usage = usage(call, call.usage.output_with_reasoning());
    if let Some(fields) = final_usage.as_object_mut() {
        fields.remove("cache_creation");
        fields.remove("service_tier");
    }
    events.push(named_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": final_usage,
        }),
    ));
    events.push(named_event("message_stop", &json!({"type": "message_stop"})));
    let mut response = sse::response(events, call.plan);
    add_request_id(response.headers_mut(), Provider::Anthropic, call.id);
    response
}

pub(crate) fn count_tokens(call: &Call<'_>) -> Response {
    let input_tokens = call.usage.input + call.usage.cache_read + call.usage.cache_write();
    json_response(Provider::Anthropic, call.id, StatusCode::OK, &json!({"input_tokens": input_tokens}))
}

/// A message object without content.
fn message(call: &Call<'_>, usage: &Value, stop_reason: impl Into<Value>) -> Value {
    json!({
        "id": format!("msg_fake{:020}", call.id),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": stop_reason.into(),
        "stop_sequence": null,
        "usage": usage,
    })
}

fn usage(call: &Call<'_>, output_tokens: u64) -> Value {
    let usage = &call.usage;
    json!({
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write(),
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

fn tool_use_block(id: u64, tool: &ToolCall, input: Value) -> Value {
    json!({"type": "tool_use", "id": format!("toolu_fake{id:020}"), "name": tool.name, "input": input})
}

/// Whether the last message carries a `tool_result` block.
fn ends_with_tool_result(body: &Value) -> bool {
    let last = body.get("messages").and_then(Value::as_array).and_then(|messages| messages.last());
    let blocks = last.and_then(|message| message.get("content")).and_then(Value::as_array);
    blocks.is_some_and(|blocks| {
        blocks.iter().any(|block| block.get("type").and_then(Value::as_str) == Some("tool_result"))
    })
}

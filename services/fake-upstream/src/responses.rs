//! OpenAI Responses: `POST /v1/responses`, JSON or SSE (`event:` + `data:` with `type` and
//! `sequence_number`), the usage in the response object and in `response.completed`.
//!
//! `input_tokens` includes `cached_tokens`; `output_tokens` includes `reasoning_tokens`.

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::content::{self, ToolCall};
use crate::openai::unix_now;
use crate::request::{add_request_id, json_response};
use crate::sse::{self, named_event};
use crate::{Call, Provider};

pub(crate) fn create(call: &Call<'_>) -> Response {
    let tool = content::tool_call(call.body, "parameters", ends_with_tool_output(call.body));
    let created_at = unix_now();
    let item_id = match &tool {
        Some(_) => format!("fc_fake{:020}", call.id),
        None => format!("msg_fake{:020}", call.id),
    };
    let text = content::text(call.usage.output);
    let done_item = match &tool {
        Some(tool) => function_call_item(call.id, &item_id, tool, &tool.arguments.to_string(), "completed"),
        None => message_item(&item_id, json!([output_text(&text)]), "completed"),
    };
    let completed = response_object(call, created_at, "completed", json!([done_item]), usage(call));
    if !call.stream {
        return json_response(Provider::OpenAi, call.id, StatusCode::OK, &completed);
    }

    let mut events = Events::default();
    let in_progress = response_object(call, created_at, "in_progress", json!([]), Value::Null);
    events.push("response.created", json!({"response": in_progress}));
    events.push("response.in_progress", json!({"response": in_progress}));
    match &tool {
        Some(tool) => {
            let added = function_call_item(call.id, &item_id, tool, "", "in_progress");
            events.push("response.output_item.added", json!({"output_index": 0, "item": added}));
            for piece in tool.argument_pieces() {
                events.push(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": 0, "delta": piece}),
                );
            }
            events.push(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "name": tool.name, "arguments": tool.arguments.to_string()}),
            );
        }
        None => {
            let added = message_item(&item_id, json!([]), "in_progress");
            events.push("response.output_item.added", json!({"output_index": 0, "item": added}));
            let part = |text: &str| json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": output_text(text)});
            events.push("response.content_part.added", part(""));
            for delta in content::text_deltas(call.usage.output) {
                events.push(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []}),
                );
            }
            events.push(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            );
            events.push("response.content_part.done", part(&text));
        }
    }
    events.push("response.output_item.done", json!({"output_index": 0, "item": done_item}));
    events.push("response.completed", json!({"response": completed}));
    let mut response = sse::response(events.frames, call.plan);
    add_request_id(response.headers_mut(), Provider::OpenAi, call.id);
    response
}

/// SSE frames numbered in order.
#[derive(Default)]
struct Events {
    frames: Vec<Bytes>,
}

impl Events {
    fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.frames.len());
        self.frames.push(named_event(kind, &data));
    }
}

fn response_object(call: &Call<'_>, created_at: u64, status: &str, output: Value, usage: Value) -> Value {
    json!({
        "id": format!("resp_fake{:020}", call.id),
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": call.body.get("instructions").cloned().unwrap_or(Value::Null),
        "max_output_tokens": call.body.get("max_output_tokens").cloned().unwrap_or(Value::Null),
        "model": call.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "service_tier": "default",
        "store": false,
        "temperature": 1,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {},
    })
}

fn usage(call: &Call<'_>) -> Value {
    let usage = &call.usage;
    let input_tokens = usage.openai_input();
    let output_tokens = usage.output_with_reasoning();
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": input_tokens + output_tokens,
    })
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(item_id: &str, content: Value, status: &str) -> Value {
    json!({"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content})
}

fn function_call_item(id: u64, item_id: &str, tool: &ToolCall, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": item_id,
        "call_id": format!("call_fake{id:020}"),
        "name": tool.name,
        "arguments": arguments,
        "status": status,
    })
}

/// Whether the input ends with a tool's output.
fn ends_with_tool_output(body: &Value) -> bool {
    let last = body.get("input").and_then(Value::as_array).and_then(|items| items.last());
    last.and_then(|item| item.get("type")).and_then(Value::as_str) == Some("function_call_output")
}

//! Reading token usage out of provider responses, whole or streamed, into Faregate's disjoint
//! token classes.
//!
//! - Anthropic Messages: `usage.input_tokens` already excludes cache tokens; cache writes split
//!   into 5-minute and 1-hour by `usage.cache_creation` (all 5-minute when the split is absent).
//!   Streaming: `message_start` carries the input side, `message_delta.usage` is cumulative, so
//!   every field it carries replaces the one seen before (never added).
//! - OpenAI Chat Completions and Responses: prompt/input tokens include cached tokens and
//!   completion/output tokens include reasoning tokens, so both are subtracted to keep classes
//!   disjoint. Streaming usage arrives in the final chunk (Chat, when `include_usage` was asked)
//!   or in `response.completed` (Responses; also `response.incomplete` / `response.failed`).
//! - When a stream ends before usage arrived (client gone, upstream cut), [`Observed::finish`]
//!   fills the missing side with an estimate (4 characters a token) and marks it estimated.

use serde_json::Value;

use faregate_core::event::{TokenCounts, UsageSource};

use crate::sse::{SseEvent, SseReader};

/// The API of a gateway route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    AnthropicMessages,
    AnthropicCountTokens,
    OpenaiChat,
    OpenaiResponses,
    OpenaiEmbeddings,
    OpenaiModels,
}

/// What was learnt about a request's usage from its response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub tokens: TokenCounts,
    /// The provider reported the input side (input and cache tokens).
    pub input_reported: bool,
    /// The provider reported the output side.
    pub output_reported: bool,
    pub served_model: Option<String>,
    pub service_tier: Option<String>,
    pub inference_region: Option<String>,
    /// Characters of generated content seen in a stream, for estimates.
    pub output_chars: u64,
}

fn int(value: &Value, key: &str) -> Option<i64> {
    value.get(key).and_then(Value::as_i64)
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

impl Observed {
    /// Apply an Anthropic `usage` object; fields present replace earlier values.
    fn anthropic_usage(&mut self, usage: &typed::Usage) {
        let t = &mut self.tokens;
        if let Some(n) = usage.input_tokens {
            t.input = n;
            self.input_reported = true;
        }
        if let Some(n) = usage.cache_read_input_tokens {
            t.cache_read = n;
        }
        match &usage.cache_creation {
            Some(split) => {
                t.cache_write_5m = split.ephemeral_5m_input_tokens.unwrap_or(0);
                t.cache_write_1h = split.ephemeral_1h_input_tokens.unwrap_or(0);
            }
            None => {
                // A total without the split (a later `message_delta`, or an API without 1-hour
                // caching): keep the split already known when it adds up, else the unknown
                // rest is 5-minute writes.
                if let Some(n) = usage.cache_creation_input_tokens
                    && n != t.cache_write_5m + t.cache_write_1h
                {
                    if n >= t.cache_write_1h {
                        t.cache_write_5m = n - t.cache_write_1h;
                    } else {
                        t.cache_write_5m = n;
                        t.cache_write_1h = 0;
                    }
                }
            }
        }
        if let Some(n) = usage.output_tokens {
            t.output = n;
            self.output_reported = true;
        }
        if let Some(tier) = &usage.service_tier {
            self.service_tier = Some(tier.clone());
        }
        if let Some(geo) = &usage.inference_geo {
            self.inference_region = Some(geo.clone());
        }
    }

    /// Apply an OpenAI `usage` object (Chat's prompt/completion or Responses' input/output).
    fn openai_usage(&mut self, usage: &Value) {
        let t = &mut self.tokens;
        let input = int(usage, "prompt_tokens").or_else(|| int(usage, "input_tokens"));
        let cached = ["prompt_tokens_details", "input_tokens_details"]
            .iter()
            .find_map(|k| usage.get(*k).and_then(|d| int(d, "cached_tokens")))
            .unwrap_or(0);
        if let Some(input) = input {
            t.input = input.saturating_sub(cached).max(0);
            t.cache_read = cached;
            self.input_reported = true;
        }
        let output = int(usage, "completion_tokens").or_else(|| int(usage, "output_tokens"));
        let reasoning = ["completion_tokens_details", "output_tokens_details"]
            .iter()
            .find_map(|k| usage.get(*k).and_then(|d| int(d, "reasoning_tokens")))
            .unwrap_or(0);
        if let Some(output) = output {
            t.output = output.saturating_sub(reasoning).max(0);
            t.reasoning = reasoning;
            self.output_reported = true;
        } else if input.is_some() {
            // Embeddings report only prompt tokens: nothing is generated.
            t.output = 0;
            self.output_reported = true;
        }
    }

    /// Read a whole (non-streaming) JSON response body. Only the fields usage needs are
    /// built; the rest (the generated content) is skipped without being copied. An Anthropic
    /// message is read typed (an object, the last of repeated keys winning, see [`typed`]).
    pub fn from_body(api: Api, body: &[u8]) -> Observed {
        let mut observed = Observed::default();
        if api == Api::AnthropicMessages {
            if let Some(message) = typed::whole_message(body) {
                observed.served_model = message.model;
                if let Some(usage) = &message.usage {
                    observed.anthropic_usage(usage);
                }
            }
            return observed;
        }
        /// The top-level fields read; each kept as a `Value` so a field of an unexpected type
        /// is ignored on its own instead of failing the whole body.
        #[derive(serde::Deserialize)]
        struct Whole {
            model: Option<Value>,
            usage: Option<Value>,
            service_tier: Option<Value>,
        }
        let Ok(whole) = serde_json::from_slice::<Whole>(body) else {
            return observed;
        };
        let as_text = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        observed.served_model = as_text(whole.model);
        let usage = whole.usage.filter(Value::is_object);
        match api {
            Api::OpenaiChat | Api::OpenaiResponses | Api::OpenaiEmbeddings => {
                if let Some(usage) = &usage {
                    observed.openai_usage(usage);
                }
                if let Some(tier) = as_text(whole.service_tier) {
                    observed.service_tier = Some(tier);
                }
            }
            Api::AnthropicMessages | Api::AnthropicCountTokens | Api::OpenaiModels => {}
        }
        observed
    }

    /// Complete the counts for an event: what was reported stays, a missing side is estimated
    /// from `request_bytes` (input) and the characters streamed (output).
    pub fn finish(&mut self, request_bytes: usize) -> UsageSource {
        match (self.input_reported, self.output_reported) {
            (true, true) => UsageSource::Reported,
            (input, output) => {
                if !input {
                    self.tokens.input = (request_bytes as i64 + 3) / 4;
                }
                if !output {
                    self.tokens.output = (self.output_chars as i64 + 3) / 4;
                }
                UsageSource::Estimated
            }
        }
    }
}

/// Watches a streamed response go by and keeps its usage.
#[derive(Debug)]
pub struct StreamUsage {
    api: Api,
    reader: SseReader,
    pub observed: Observed,
    /// The stream reached its terminal event (`message_stop`, `[DONE]`, `response.completed`).
    pub completed: bool,
}

impl StreamUsage {
    pub fn new(api: Api) -> StreamUsage {
        StreamUsage { api, reader: SseReader::default(), observed: Observed::default(), completed: false }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let (api, observed, completed) = (self.api, &mut self.observed, &mut self.completed);
        self.reader.feed(chunk, |event| on_event(api, observed, completed, event));
    }
}

/// What a named event is to usage, decided from its name alone (the providers name every
/// Anthropic and Responses event, and the name always equals the data's `type`).
enum ByName {
    /// Carries nothing usage needs (pings, block starts and stops, `*.done` repeats of the
    /// whole text): not parsed at all.
    Skip,
    /// The terminal event.
    Stop,
    /// A text delta, whose `delta` strings are only counted (for estimates).
    Delta,
    /// Read in full.
    Parse,
}

fn by_name(api: Api, name: Option<&str>) -> ByName {
    match (api, name) {
        (Api::AnthropicMessages, Some("ping" | "content_block_start" | "content_block_stop")) => ByName::Skip,
        (Api::AnthropicMessages, Some("message_stop")) => ByName::Stop,
        (Api::AnthropicMessages, Some("content_block_delta")) => ByName::Delta,
        (
            Api::OpenaiResponses,
            Some("response.output_text.delta" | "response.function_call_arguments.delta"),
        ) => ByName::Delta,
        (
            Api::OpenaiResponses,
            Some("response.created" | "response.completed" | "response.incomplete" | "response.failed"),
        ) => ByName::Parse,
        (Api::OpenaiResponses, Some(_)) => ByName::Skip,
        _ => ByName::Parse,
    }
}

/// The characters of a delta event's text (Anthropic `delta.text` / `partial_json` /
/// `thinking`, Responses `delta`), read without building the event; `None` when the event is
/// not shaped as expected (then it is read in full).
fn delta_chars(api: Api, data: &str) -> Option<u64> {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Block<'a> {
        #[serde(borrow)]
        text: Option<Cow<'a, str>>,
        #[serde(borrow)]
        partial_json: Option<Cow<'a, str>>,
        #[serde(borrow)]
        thinking: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Event<D> {
        delta: D,
    }
    let chars = |s: Option<Cow<'_, str>>| s.as_deref().map_or(0, |s| s.chars().count() as u64);
    match api {
        Api::AnthropicMessages => {
            let block = serde_json::from_str::<Event<Block<'_>>>(data).ok()?.delta;
            Some(chars(block.text) + chars(block.partial_json) + chars(block.thinking))
        }
        _ => Some(chars(Some(serde_json::from_str::<Event<Cow<'_, str>>>(data).ok()?.delta))),
    }
}

/// Anthropic's `message_start` and `message_delta`, read without building the message: only
/// `type`, the message's `model` and the `usage` objects are built. Returns false when the
/// event is not one of those two, or not shaped as expected (then it is read in full, with the
/// same effect).
fn anthropic_message_event(observed: &mut Observed, event: &SseEvent) -> bool {
    let name = event.event.as_deref();
    if !matches!(name, Some("message_start" | "message_delta")) {
        return false;
    }
    let Ok(data) = serde_json::from_str::<typed::Event<'_>>(&event.data) else {
        return false;
    };
    if data.kind.as_deref().is_some_and(|kind| Some(kind) != name) {
        return false;
    }
    if name == Some("message_start") {
        match data.message {
            Some(Some(message)) => {
                observed.served_model = message.model;
                if let Some(usage) = &message.usage {
                    observed.anthropic_usage(usage);
                }
            }
            // A `message` that is not an object: the full read decides.
            Some(None) => return false,
            None => {}
        }
    } else if let Some(usage) = &data.usage {
        observed.anthropic_usage(usage);
    }
    true
}

fn on_event(api: Api, observed: &mut Observed, completed: &mut bool, event: &SseEvent) {
    if event.data == "[DONE]" {
        *completed = true;
        return;
    }
    match by_name(api, event.event.as_deref()) {
        ByName::Skip => return,
        ByName::Stop => {
            *completed = true;
            return;
        }
        ByName::Delta => {
            if let Some(chars) = delta_chars(api, &event.data) {
                observed.output_chars += chars;
                return;
            }
        }
        ByName::Parse => {
            if api == Api::AnthropicMessages && anthropic_message_event(observed, event) {
                return;
            }
        }
    }
    read_in_full(api, observed, completed, event);
}

/// Any event of interest, read into a `Value`.
fn read_in_full(api: Api, observed: &mut Observed, completed: &mut bool, event: &SseEvent) {
    let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
        return;
    };
    let kind = data.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or("");
    match api {
        Api::AnthropicMessages => match kind {
            "message_start" => {
                if let Some(message) = data.get("message") {
                    observed.served_model = text(message, "model");
                    if let Some(usage) = message.get("usage") {
                        observed.anthropic_usage(&typed::Usage::from_value(usage));
                    }
                }
            }
            "content_block_delta" => {
                if let Some(delta) = data.get("delta") {
                    for key in ["text", "partial_json", "thinking"] {
                        if let Some(s) = delta.get(key).and_then(Value::as_str) {
                            observed.output_chars += s.chars().count() as u64;
                        }
                    }
                }
            }
            "message_delta" => {
                if let Some(usage) = data.get("usage") {
                    observed.anthropic_usage(&typed::Usage::from_value(usage));
                }
            }
            "message_stop" => *completed = true,
            _ => {}
        },
        Api::OpenaiChat => {
            if observed.served_model.is_none() {
                observed.served_model = text(&data, "model");
            }
            if let Some(choices) = data.get("choices").and_then(Value::as_array) {
                for choice in choices {
                    if let Some(delta) = choice.get("delta") {
                        if let Some(s) = delta.get("content").and_then(Value::as_str) {
                            observed.output_chars += s.chars().count() as u64;
                        }
                        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                            for call in calls {
                                let args = call.pointer("/function/arguments").and_then(Value::as_str);
                                observed.output_chars += args.map_or(0, |a| a.chars().count() as u64);
                            }
                        }
                    }
                }
            }
            if let Some(usage) = data.get("usage").filter(|u| u.is_object()) {
                observed.openai_usage(usage);
            }
            if let Some(tier) = text(&data, "service_tier") {
                observed.service_tier = Some(tier);
            }
        }
        Api::OpenaiResponses => match kind {
            "response.output_text.delta" | "response.function_call_arguments.delta" => {
                if let Some(s) = data.get("delta").and_then(Value::as_str) {
                    observed.output_chars += s.chars().count() as u64;
                }
            }
            "response.created" | "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(response) = data.get("response") {
                    if let Some(model) = text(response, "model") {
                        observed.served_model = Some(model);
                    }
                    if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
                        observed.openai_usage(usage);
                    }
                    if let Some(tier) = text(response, "service_tier") {
                        observed.service_tier = Some(tier);
                    }
                }
                if kind != "response.created" {
                    *completed = true;
                }
            }
            _ => {}
        },
        Api::AnthropicCountTokens | Api::OpenaiEmbeddings | Api::OpenaiModels => {}
    }
}

mod typed;

#[cfg(test)]
mod tests;

//! What a fake answer says: a fixed text whose length follows the output tokens, or a call of
//! the first tool the request offers, with arguments made from the tool's JSON schema.

use serde_json::{Map, Value, json};

const WORDS: [&str; 8] = ["This ", "is ", "a ", "fake ", "answer ", "from ", "Faregate. ", "Hello "];
/// At most this many words are written, whatever the output tokens.
const MAX_WORDS: u64 = 64;
/// Words per streamed delta.
const WORDS_PER_DELTA: usize = 4;

/// The answer text as streamed deltas: one word per output token (at most 64), four a delta;
/// at least one delta.
pub(crate) fn text_deltas(output_tokens: u64) -> Vec<String> {
    let words = output_tokens.clamp(1, MAX_WORDS) as usize;
    let all: Vec<&str> = (0..words).map(|index| WORDS[index % WORDS.len()]).collect();
    all.chunks(WORDS_PER_DELTA).map(|chunk| chunk.concat()).collect()
}

/// A tool the fake answer calls.
#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    pub name: String,
    /// The arguments as a JSON object.
    pub arguments: Value,
}

impl ToolCall {
    /// The arguments as JSON text, in pieces that concatenate to it (for streamed deltas).
    pub fn argument_pieces(&self) -> Vec<String> {
        let text = self.arguments.to_string();
        let middle = text.char_indices().map(|(index, _)| index).find(|index| *index >= text.len() / 2);
        match middle {
            Some(middle) if middle > 0 => vec![text[..middle].to_string(), text[middle..].to_string()],
            _ => vec![text],
        }
    }
}

/// The tool to call, if the request offers tools and the conversation does not already end
/// with a tool's result (so a client that runs tools does not loop forever).
///
/// `schema_field` is where a tool keeps its JSON schema (`input_schema` for Anthropic,
/// `parameters` for OpenAI); Chat Completions tools nest it under `function`.
pub(crate) fn tool_call(body: &Value, schema_field: &str, answered_tool: bool) -> Option<ToolCall> {
    if answered_tool || body.get("tool_choice").and_then(Value::as_str) == Some("none") {
        return None;
    }
    body.get("tools")?.as_array()?.iter().find_map(|tool| {
        let tool = tool.get("function").unwrap_or(tool);
        let name = tool.get("name")?.as_str()?;
        let schema = tool.get(schema_field);
        if schema.is_none() && tool.get("type").and_then(Value::as_str).is_some_and(|kind| kind != "function")
        {
            // A provider's own tool (web search, shell, ...): not a function to call.
            return None;
        }
        Some(ToolCall { name: name.to_string(), arguments: arguments_for(schema) })
    })
}

/// An object with a plausible value for every property of a JSON schema.
fn arguments_for(schema: Option<&Value>) -> Value {
    let mut arguments = Map::new();
    if let Some(properties) = schema.and_then(|schema| schema.get("properties")).and_then(Value::as_object) {
        for (name, property) in properties {
            let value = match property.get("type").and_then(Value::as_str) {
                Some("integer" | "number") => json!(1),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!("fake"),
            };
            arguments.insert(name.clone(), value);
        }
    }
    Value::Object(arguments)
}

/// The whole answer text.
pub(crate) fn text(output_tokens: u64) -> String {
    text_deltas(output_tokens).concat()
}

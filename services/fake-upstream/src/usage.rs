//! The usage a fake response reports, in disjoint token classes (the same classes as
//! `faregate_core::event::TokenCounts`): `input` excludes cache reads and writes, `output`
//! excludes `reasoning`. Each provider's shape is derived from these classes in its module.
//!
//! Default: `input` = the characters of the request's prompt text / 4 (at least 1), `output` =
//! `min(max tokens asked for, 20)`, every other class 0. The request header
//! `x-fake-usage: input=120,output=30,cache_read=1000,cache_write_5m=50,cache_write_1h=0,reasoning=7`
//! sets classes exactly; a class it does not name keeps its default.

use serde_json::Value;

/// The header that sets the usage of a response.
pub const USAGE_HEADER: &str = "x-fake-usage";
/// The header that makes a response report another served model than the one requested.
pub const MODEL_HEADER: &str = "x-fake-model";
/// Output tokens of a response when the request does not ask for fewer.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 20;

/// Disjoint token classes of one fake response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeUsage {
    /// Input tokens not read from or written to the prompt cache.
    pub input: u64,
    /// Output tokens other than reasoning.
    pub output: u64,
    pub cache_read: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub reasoning: u64,
}

impl FakeUsage {
    /// The usage of a request with this JSON body and `x-fake-usage` header value.
    pub fn for_request(body: &Value, header: Option<&str>) -> Result<FakeUsage, String> {
        let mut usage = FakeUsage {
            input: default_input_tokens(body),
            output: default_output_tokens(body),
            ..FakeUsage::default()
        };
        if let Some(header) = header {
            usage.apply_header(header)?;
        }
        Ok(usage)
    }

    /// Override the classes named in an `x-fake-usage` value (`name=count`, comma separated).
    pub fn apply_header(&mut self, header: &str) -> Result<(), String> {
        for pair in header.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let (name, count) =
                pair.split_once('=').ok_or_else(|| format!("{USAGE_HEADER}: `{pair}` is not name=count"))?;
            let count: u64 = count
                .trim()
                .parse()
                .map_err(|_| format!("{USAGE_HEADER}: `{count}` is not a token count"))?;
            let class = match name.trim() {
                "input" => &mut self.input,
                "output" => &mut self.output,
                "cache_read" => &mut self.cache_read,
                "cache_write_5m" => &mut self.cache_write_5m,
                "cache_write_1h" => &mut self.cache_write_1h,
                "reasoning" => &mut self.reasoning,
                other => return Err(format!("{USAGE_HEADER}: unknown token class `{other}`")),
            };
            *class = count;
        }
        Ok(())
    }

    /// Anthropic's `cache_creation_input_tokens`: writes of both lifetimes.
    pub fn cache_write(&self) -> u64 {
        self.cache_write_5m + self.cache_write_1h
    }

    /// OpenAI's `prompt_tokens` / Responses' `input_tokens`: cached tokens included. OpenAI has
    /// no cache-write class, so cache writes are not reported on OpenAI routes.
    pub fn openai_input(&self) -> u64 {
        self.input + self.cache_read
    }

    /// OpenAI's `completion_tokens` / Responses' `output_tokens` and Anthropic's
    /// `output_tokens`: reasoning included.
    pub fn output_with_reasoning(&self) -> u64 {
        self.output + self.reasoning
    }
}

/// The default input tokens of a request: the characters of every string under `system`,
/// `messages`, `input`, `instructions` and `prompt`, divided by 4, at least 1.
pub fn default_input_tokens(body: &Value) -> u64 {
    let characters: usize = ["system", "messages", "input", "instructions", "prompt"]
        .iter()
        .filter_map(|field| body.get(field))
        .map(string_characters)
        .sum();
    (characters as u64 / 4).max(1)
}

/// The default output tokens: `min(max_tokens | max_completion_tokens | max_output_tokens, 20)`.
pub fn default_output_tokens(body: &Value) -> u64 {
    ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|field| body.get(field).and_then(Value::as_u64))
        .map_or(DEFAULT_OUTPUT_TOKENS, |max| max.min(DEFAULT_OUTPUT_TOKENS))
}

fn string_characters(value: &Value) -> usize {
    match value {
        Value::String(text) => text.chars().count(),
        Value::Array(items) => items.iter().map(string_characters).sum(),
        Value::Object(fields) => fields.values().map(string_characters).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_counts_prompt_characters() {
        let body =
            json!({"system": "abcd", "messages": [{"role": "user", "content": "efghijkl"}], "max_tokens": 5});
        // "abcd" + "user" + "efghijkl" = 16 characters.
        assert_eq!(
            FakeUsage::for_request(&body, None).unwrap(),
            FakeUsage { input: 4, output: 5, ..Default::default() }
        );
        assert_eq!(default_input_tokens(&json!({})), 1);
        assert_eq!(default_output_tokens(&json!({"max_output_tokens": 64000})), 20);
    }

    #[test]
    fn header_sets_named_classes_only() {
        let body = json!({"messages": [{"role": "user", "content": "x".repeat(400)}]});
        let usage = FakeUsage::for_request(&body, Some("output=30, cache_read=1000,reasoning=7")).unwrap();
        assert_eq!(
            usage,
            FakeUsage { input: 101, output: 30, cache_read: 1000, reasoning: 7, ..Default::default() }
        );
        assert!(FakeUsage::for_request(&body, Some("input=x")).is_err());
        assert!(FakeUsage::for_request(&body, Some("tokens=3")).is_err());
        assert!(FakeUsage::for_request(&body, Some("input")).is_err());
    }
}

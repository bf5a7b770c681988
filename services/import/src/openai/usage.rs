//! One page of OpenAI's completions usage (`GET /v1/organization/usage/completions`), read from
//! JSON and checked field by field.
//!
//! Shapes as documented by OpenAI: the API reference "Usage > Completions"
//! (<https://developers.openai.com/api/reference/resources/organization/subresources/audit_logs/subresources/usage/methods/get_completions>)
//! and the `UsageCompletionsResult` schema of OpenAI's OpenAPI document (2.3.0). A page is
//! `{"object": "page", "data": [bucket...], "has_more": bool, "next_page": string|null}`; a
//! bucket is `{"object": "bucket", "start_time": unix s, "end_time": unix s, "results":
//! [result...]}`; a result (`"object": "organization.usage.completions.result"`) holds
//! `input_tokens` (required; cached tokens included), `input_cached_tokens` (the cached part),
//! `output_tokens` (required), `input_audio_tokens`, `output_audio_tokens`,
//! `num_model_requests` (required), and one field per `group_by` dimension (`project_id`,
//! `user_id`, `api_key_id`, `model`, `batch` (a boolean), `service_tier`), `null` where the
//! dimension does not apply.
//!
//! Contract: [`parse_page`] returns the whole page or every problem of it with its JSON path,
//! never a part of a page. Fields the documentation does not name are ignored (the API may add
//! some); a documented field with the wrong type or `object`, a negative count, more cached
//! input than input, or a bucket that ends before it starts is a problem.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Problem;

/// The dimensions the importer groups by (all that the reference lists), in the order they
/// enter event ids. Changing this list changes how usage is split into results, and so every
/// id: never change it, add a new importer version instead.
pub const GROUP_BY: [&str; 6] = ["project_id", "user_id", "api_key_id", "model", "batch", "service_tier"];

/// One page of the usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub buckets: Vec<Bucket>,
    pub has_more: bool,
    pub next_page: Option<String>,
}

/// One time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub results: Vec<UsageResult>,
}

/// One result of a bucket: the usage of one combination of the grouped dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageResult {
    /// The value of each of [`GROUP_BY`], in its order (`None`: null or absent; `batch` as
    /// `true` or `false`).
    pub dimensions: [Option<String>; 6],
    /// Input tokens, cached ones included.
    pub input_tokens: i64,
    /// The part of `input_tokens` read from the prompt cache.
    pub input_cached_tokens: i64,
    pub output_tokens: i64,
    pub input_audio_tokens: i64,
    pub output_audio_tokens: i64,
    pub num_model_requests: i64,
}

impl UsageResult {
    pub fn dimension(&self, name: &str) -> Option<&str> {
        let index = GROUP_BY.iter().position(|d| *d == name)?;
        self.dimensions[index].as_deref()
    }

    /// Whether the result carries no usage at all.
    pub fn is_empty(&self) -> bool {
        self.input_tokens == 0
            && self.input_cached_tokens == 0
            && self.output_tokens == 0
            && self.input_audio_tokens == 0
            && self.output_audio_tokens == 0
            && self.num_model_requests == 0
    }

    /// Whether audio was counted (see `openai::events` for how such a result is priced).
    pub fn has_audio(&self) -> bool {
        self.input_audio_tokens > 0 || self.output_audio_tokens > 0
    }
}

/// Read and check one page; every problem of the page, or the page.
pub fn parse_page(body: &Value) -> Result<Page, Vec<Problem>> {
    let mut check = Check::default();
    let Some(page) = body.as_object() else {
        check.problem("(body)", "expected an object with data, has_more and next_page");
        return Err(check.problems);
    };
    check.object_kind("object", page.get("object"), "page");
    let has_more = match page.get("has_more") {
        Some(Value::Bool(b)) => *b,
        other => {
            check.problem("has_more", format!("expected true or false, got {}", shown(other)));
            false
        }
    };
    let next_page = match page.get("next_page") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            check.problem("next_page", format!("expected a string or null, got {}", shown(Some(other))));
            None
        }
    };
    if has_more && matches!(page.get("next_page"), None | Some(Value::Null)) {
        check.problem("next_page", "has_more is true but next_page is missing");
    }
    let mut buckets = Vec::new();
    match page.get("data") {
        Some(Value::Array(data)) => {
            for (i, bucket) in data.iter().enumerate() {
                if let Some(bucket) = check.bucket(&format!("data[{i}]"), bucket) {
                    buckets.push(bucket);
                }
            }
        }
        other => check.problem("data", format!("expected an array of buckets, got {}", shown(other))),
    }
    if check.problems.is_empty() { Ok(Page { buckets, has_more, next_page }) } else { Err(check.problems) }
}

#[derive(Default)]
struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem { path: path.to_string(), message: message.into() });
    }

    /// The documented `object` of a page, bucket or result; absent is tolerated.
    fn object_kind(&mut self, path: &str, value: Option<&Value>, expected: &str) {
        match value {
            None => {}
            Some(Value::String(s)) if s == expected => {}
            other => self.problem(path, format!("expected \"{expected}\", got {}", shown(other))),
        }
    }

    fn bucket(&mut self, path: &str, value: &Value) -> Option<Bucket> {
        let Some(bucket) = value.as_object() else {
            self.problem(path, format!("expected a bucket object, got {}", shown(Some(value))));
            return None;
        };
        let before = self.problems.len();
        self.object_kind(&format!("{path}.object"), bucket.get("object"), "bucket");
        let start_time = self.time(&format!("{path}.start_time"), bucket.get("start_time"));
        let end_time = self.time(&format!("{path}.end_time"), bucket.get("end_time"));
        if let (Some(start), Some(end)) = (start_time, end_time)
            && end <= start
        {
            self.problem(&format!("{path}.end_time"), format!("{end} is not after start_time {start}"));
        }
        let mut results = Vec::new();
        match bucket.get("results") {
            Some(Value::Array(items)) => {
                for (j, item) in items.iter().enumerate() {
                    if let Some(result) = self.result(&format!("{path}.results[{j}]"), item) {
                        results.push(result);
                    }
                }
            }
            other => {
                self.problem(&format!("{path}.results"), format!("expected an array, got {}", shown(other)))
            }
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Bucket { start_time: start_time?, end_time: end_time?, results })
    }

    fn result(&mut self, path: &str, value: &Value) -> Option<UsageResult> {
        let Some(result) = value.as_object() else {
            self.problem(path, format!("expected a result object, got {}", shown(Some(value))));
            return None;
        };
        self.object_kind(
            &format!("{path}.object"),
            result.get("object"),
            "organization.usage.completions.result",
        );
        let mut out = UsageResult::default();
        for (slot, name) in GROUP_BY.iter().enumerate() {
            out.dimensions[slot] = match (result.get(*name), *name) {
                (None | Some(Value::Null), _) => None,
                (Some(Value::Bool(b)), "batch") => Some(b.to_string()),
                (Some(Value::String(s)), name) if name != "batch" => Some(s.clone()),
                (Some(other), name) => {
                    let expected = if name == "batch" { "true, false or null" } else { "a string or null" };
                    self.problem(
                        &format!("{path}.{name}"),
                        format!("expected {expected}, got {}", shown(Some(other))),
                    );
                    None
                }
            };
        }
        if matches!(result.get("model"), None | Some(Value::Null)) {
            self.problem(&format!("{path}.model"), "missing although the usage is grouped by model");
        }
        out.input_tokens = self.count(path, "input_tokens", result.get("input_tokens"));
        out.input_cached_tokens =
            self.optional_count(path, "input_cached_tokens", result.get("input_cached_tokens"));
        out.output_tokens = self.count(path, "output_tokens", result.get("output_tokens"));
        out.input_audio_tokens =
            self.optional_count(path, "input_audio_tokens", result.get("input_audio_tokens"));
        out.output_audio_tokens =
            self.optional_count(path, "output_audio_tokens", result.get("output_audio_tokens"));
        out.num_model_requests = self.count(path, "num_model_requests", result.get("num_model_requests"));
        // Compared only when input_tokens was read: a bad one is named already.
        let input_read = result.get("input_tokens").and_then(Value::as_i64).is_some_and(|n| n >= 0);
        if input_read && out.input_cached_tokens > out.input_tokens {
            self.problem(
                &format!("{path}.input_cached_tokens"),
                format!(
                    "{} is more than input_tokens {}, which include the cached ones",
                    out.input_cached_tokens, out.input_tokens
                ),
            );
        }
        Some(out)
    }

    fn count(&mut self, path: &str, field: &str, value: Option<&Value>) -> i64 {
        match value.and_then(Value::as_i64) {
            Some(n) if n >= 0 => n,
            _ => {
                self.problem(
                    &format!("{path}.{field}"),
                    format!("expected a non-negative integer, got {}", shown(value)),
                );
                0
            }
        }
    }

    /// A count the reference marks optional: absent or null is zero.
    fn optional_count(&mut self, path: &str, field: &str, value: Option<&Value>) -> i64 {
        match value {
            None | Some(Value::Null) => 0,
            some => self.count(path, field, some),
        }
    }

    fn time(&mut self, path: &str, value: Option<&Value>) -> Option<DateTime<Utc>> {
        let parsed = value.and_then(Value::as_i64).and_then(|s| DateTime::from_timestamp(s, 0));
        if parsed.is_none() {
            self.problem(path, format!("expected a Unix time in seconds, got {}", shown(value)));
        }
        parsed
    }
}

/// A value as shown in a problem: short, and `nothing` when absent.
fn shown(value: Option<&Value>) -> String {
    match value {
        None => "nothing".to_string(),
        Some(v) => {
            let text = v.to_string();
            if text.chars().count() > 40 {
                format!("{}...", text.chars().take(40).collect::<String>())
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result() -> Value {
        json!({
            "object": "organization.usage.completions.result",
            "input_tokens": 5000, "input_cached_tokens": 4000, "output_tokens": 1000,
            "input_audio_tokens": 0, "output_audio_tokens": 0, "num_model_requests": 5,
            "project_id": "proj_abc", "user_id": null, "api_key_id": "key_abc",
            "model": "gpt-5-mini-2025-08-07", "batch": false, "service_tier": "default"
        })
    }

    fn page(results: Vec<Value>) -> Value {
        json!({
            "object": "page",
            "data": [{"object": "bucket", "start_time": 1_796_032_800, "end_time": 1_796_036_400, "results": results}],
            "has_more": true, "next_page": "page_2"
        })
    }

    #[test]
    fn a_documented_page_is_read_whole() {
        let read = parse_page(&page(vec![result()])).unwrap();
        assert!(read.has_more);
        assert_eq!(read.next_page.as_deref(), Some("page_2"));
        let bucket = &read.buckets[0];
        assert_eq!(bucket.end_time - bucket.start_time, chrono::TimeDelta::hours(1));
        let r = &bucket.results[0];
        assert_eq!(r.dimension("api_key_id"), Some("key_abc"));
        assert_eq!(r.dimension("user_id"), None);
        assert_eq!(r.dimension("batch"), Some("false"));
        assert_eq!(
            (r.input_tokens, r.input_cached_tokens, r.output_tokens, r.num_model_requests),
            (5000, 4000, 1000, 5)
        );
        // The optional counts may be absent.
        let mut sparse = result();
        for field in ["input_cached_tokens", "input_audio_tokens", "output_audio_tokens", "service_tier"] {
            sparse.as_object_mut().unwrap().remove(field);
        }
        let r = &parse_page(&page(vec![sparse])).unwrap().buckets[0].results[0];
        assert_eq!((r.input_cached_tokens, r.dimension("service_tier")), (0, None));
    }

    #[test]
    fn every_bad_field_is_named_with_its_path() {
        let mut bad = result();
        bad["output_tokens"] = json!("1000");
        bad["batch"] = json!("no");
        bad["input_cached_tokens"] = json!(6000);
        bad["model"] = Value::Null;
        let mut body = page(vec![result(), bad]);
        body["data"][0]["end_time"] = json!("yesterday");
        body["object"] = json!("list");
        body["has_more"] = json!("yes");
        let problems = parse_page(&body).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "object",
                "has_more",
                "data[0].end_time",
                "data[0].results[1].batch",
                "data[0].results[1].model",
                "data[0].results[1].output_tokens",
                "data[0].results[1].input_cached_tokens",
            ],
            "{problems:?}"
        );
        assert!(problems[5].message.contains("\"1000\""), "{}", problems[5]);
        assert!(problems[6].message.contains("more than input_tokens 5000"), "{}", problems[6]);
    }

    #[test]
    fn has_more_without_a_next_page_is_a_problem() {
        let mut body = page(vec![result()]);
        body["next_page"] = Value::Null;
        let problems = parse_page(&body).unwrap_err();
        assert_eq!(problems[0].path, "next_page");
    }
}

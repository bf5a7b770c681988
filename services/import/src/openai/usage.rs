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
//! input than input, or a bucket that ends before it starts is a problem. The page's and
//! buckets' frame is read by the shared [`crate::check`].

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::check::{BucketShape, Check, shown};
use crate::error::Problem;
use crate::run::{UsageBucket, UsageRow};

/// The dimensions the importer groups by (all that the reference lists), in the order they
/// enter event ids. Changing this list changes how usage is split into results, and so every
/// id: never change it, add a new importer version instead.
pub const GROUP_BY: [&str; 6] = ["project_id", "user_id", "api_key_id", "model", "batch", "service_tier"];

/// One page of the usage.
pub type Page = crate::run::Page<Bucket>;

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
    /// Whether audio was counted (see `openai::events` for how such a result is priced).
    pub fn has_audio(&self) -> bool {
        self.input_audio_tokens > 0 || self.output_audio_tokens > 0
    }
}

impl UsageBucket for Bucket {
    type Result = UsageResult;

    fn span(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.start_time, self.end_time)
    }

    fn results(&self) -> &[UsageResult] {
        &self.results
    }
}

impl UsageRow for UsageResult {
    const GROUP_BY: &'static [&'static str] = &GROUP_BY;

    fn dimensions(&self) -> &[Option<String>] {
        &self.dimensions
    }

    fn is_empty(&self) -> bool {
        self.input_tokens == 0
            && self.input_cached_tokens == 0
            && self.output_tokens == 0
            && self.input_audio_tokens == 0
            && self.output_audio_tokens == 0
            && self.num_model_requests == 0
    }
}

/// Read and check one page; every problem of the page, or the page.
pub fn parse_page(body: &Value) -> Result<Page, Vec<Problem>> {
    let shape =
        BucketShape { kind: Some("bucket"), start: "start_time", end: "end_time", time: Check::unix_time };
    Check::default().page(body, Some("page"), |check, path, value| {
        let (start_time, end_time, results) = check.bucket(path, value, shape, result)?;
        Some(Bucket { start_time, end_time, results })
    })
}

fn result(check: &mut Check, path: &str, value: &Value) -> Option<UsageResult> {
    let Some(result) = value.as_object() else {
        check.problem(path, format!("expected a result object, got {}", shown(Some(value))));
        return None;
    };
    check.object_kind(
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
                check.problem(
                    &format!("{path}.{name}"),
                    format!("expected {expected}, got {}", shown(Some(other))),
                );
                None
            }
        };
    }
    if matches!(result.get("model"), None | Some(Value::Null)) {
        check.problem(&format!("{path}.model"), "missing although the usage is grouped by model");
    }
    out.input_tokens = check.count(path, "input_tokens", result.get("input_tokens"));
    out.input_cached_tokens =
        check.optional_count(path, "input_cached_tokens", result.get("input_cached_tokens"));
    out.output_tokens = check.count(path, "output_tokens", result.get("output_tokens"));
    out.input_audio_tokens =
        check.optional_count(path, "input_audio_tokens", result.get("input_audio_tokens"));
    out.output_audio_tokens =
        check.optional_count(path, "output_audio_tokens", result.get("output_audio_tokens"));
    out.num_model_requests = check.count(path, "num_model_requests", result.get("num_model_requests"));
    // Compared only when input_tokens was read: a bad one is named already.
    let input_read = result.get("input_tokens").and_then(Value::as_i64).is_some_and(|n| n >= 0);
    if input_read && out.input_cached_tokens > out.input_tokens {
        check.problem(
            &format!("{path}.input_cached_tokens"),
            format!(
                "{} is more than input_tokens {}, which include the cached ones",
                out.input_cached_tokens, out.input_tokens
            ),
        );
    }
    Some(out)
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

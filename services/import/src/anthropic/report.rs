//! One page of Anthropic's messages usage report, read from JSON and checked field by field.
//!
//! Shapes as documented by Anthropic: "Get Messages Usage Report",
//! <https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages>, and the
//! "Usage and Cost API" guide (<https://docs.anthropic.com/en/api/usage-cost-api>). A page is
//! `{"data": [bucket...], "has_more": bool, "next_page": string|null}`; a bucket is
//! `{"starting_at": RFC 3339, "ending_at": RFC 3339, "results": [result...]}`; a result holds
//! the token counts `uncached_input_tokens`, `cache_read_input_tokens`,
//! `cache_creation.ephemeral_5m_input_tokens`, `cache_creation.ephemeral_1h_input_tokens`,
//! `output_tokens`, `server_tool_use.web_search_requests`, and one field per `group_by`
//! dimension (`api_key_id`, `workspace_id`, `model`, `service_tier`, `context_window`,
//! `inference_geo`), `null` where the dimension does not apply (`api_key_id` for Workbench
//! usage, `workspace_id` for the default workspace).
//!
//! Contract: [`parse_page`] returns the whole page or every problem of it with its JSON path,
//! never a part of a page. Fields the documentation does not name are ignored (the API may add
//! some); a documented field with the wrong type, a negative count, an unreadable time or a
//! bucket that ends before it starts is a problem.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Problem;

/// The dimensions the importer groups by, in the order they enter event ids. Changing this list
/// changes how usage is split into results, and so every id: never change it, add a new
/// importer version instead.
pub const GROUP_BY: [&str; 6] =
    ["api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo"];

/// One page of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub buckets: Vec<Bucket>,
    pub has_more: bool,
    pub next_page: Option<String>,
}

/// One time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub starting_at: DateTime<Utc>,
    pub ending_at: DateTime<Utc>,
    pub results: Vec<UsageResult>,
}

/// One result of a bucket: the usage of one combination of the grouped dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageResult {
    /// The value of each of [`GROUP_BY`], in its order (`None`: null or absent).
    pub dimensions: [Option<String>; 6],
    pub uncached_input_tokens: i64,
    pub cache_read_input_tokens: i64,
    pub cache_creation_5m_input_tokens: i64,
    pub cache_creation_1h_input_tokens: i64,
    pub output_tokens: i64,
    pub web_search_requests: i64,
}

impl UsageResult {
    pub fn dimension(&self, name: &str) -> Option<&str> {
        let index = GROUP_BY.iter().position(|d| *d == name)?;
        self.dimensions[index].as_deref()
    }

    /// Whether the result carries no usage at all.
    pub fn is_empty(&self) -> bool {
        self.uncached_input_tokens == 0
            && self.cache_read_input_tokens == 0
            && self.cache_creation_5m_input_tokens == 0
            && self.cache_creation_1h_input_tokens == 0
            && self.output_tokens == 0
            && self.web_search_requests == 0
    }
}

/// Read and check one page; every problem of the page, or the page.
pub fn parse_page(body: &Value) -> Result<Page, Vec<Problem>> {
    let mut check = Check::default();
    let Some(page) = body.as_object() else {
        check.problem("(body)", "expected an object with data, has_more and next_page");
        return Err(check.problems);
    };
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

    fn bucket(&mut self, path: &str, value: &Value) -> Option<Bucket> {
        let Some(bucket) = value.as_object() else {
            self.problem(path, format!("expected a bucket object, got {}", shown(Some(value))));
            return None;
        };
        let before = self.problems.len();
        let starting_at = self.time(&format!("{path}.starting_at"), bucket.get("starting_at"));
        let ending_at = self.time(&format!("{path}.ending_at"), bucket.get("ending_at"));
        if let (Some(start), Some(end)) = (starting_at, ending_at)
            && end <= start
        {
            self.problem(&format!("{path}.ending_at"), format!("{end} is not after starting_at {start}"));
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
        Some(Bucket { starting_at: starting_at?, ending_at: ending_at?, results })
    }

    fn result(&mut self, path: &str, value: &Value) -> Option<UsageResult> {
        let Some(result) = value.as_object() else {
            self.problem(path, format!("expected a result object, got {}", shown(Some(value))));
            return None;
        };
        let mut out = UsageResult::default();
        for (slot, name) in GROUP_BY.iter().enumerate() {
            out.dimensions[slot] = match result.get(*name) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    self.problem(
                        &format!("{path}.{name}"),
                        format!("expected a string or null, got {}", shown(Some(other))),
                    );
                    None
                }
            };
        }
        if matches!(result.get("model"), None | Some(Value::Null)) {
            self.problem(&format!("{path}.model"), "missing although the report is grouped by model");
        }
        out.uncached_input_tokens =
            self.count(path, "uncached_input_tokens", result.get("uncached_input_tokens"));
        out.cache_read_input_tokens =
            self.count(path, "cache_read_input_tokens", result.get("cache_read_input_tokens"));
        out.output_tokens = self.count(path, "output_tokens", result.get("output_tokens"));
        match result.get("cache_creation") {
            Some(Value::Object(cache)) => {
                let at = format!("{path}.cache_creation");
                out.cache_creation_5m_input_tokens =
                    self.count(&at, "ephemeral_5m_input_tokens", cache.get("ephemeral_5m_input_tokens"));
                out.cache_creation_1h_input_tokens =
                    self.count(&at, "ephemeral_1h_input_tokens", cache.get("ephemeral_1h_input_tokens"));
            }
            other => self.problem(
                &format!("{path}.cache_creation"),
                format!("expected an object with the cache write counts, got {}", shown(other)),
            ),
        }
        // Server tools are optional in the documented result; absent means none used.
        match result.get("server_tool_use") {
            None | Some(Value::Null) => {}
            Some(Value::Object(tools)) => {
                let at = format!("{path}.server_tool_use");
                out.web_search_requests = match tools.get("web_search_requests") {
                    None | Some(Value::Null) => 0,
                    some => self.count(&at, "web_search_requests", some),
                };
            }
            Some(other) => self.problem(
                &format!("{path}.server_tool_use"),
                format!("expected an object, got {}", shown(Some(other))),
            ),
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

    fn time(&mut self, path: &str, value: Option<&Value>) -> Option<DateTime<Utc>> {
        let parsed = value.and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok());
        if parsed.is_none() {
            self.problem(path, format!("expected an RFC 3339 time, got {}", shown(value)));
        }
        parsed.map(|t| t.with_timezone(&Utc))
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
            "api_key_id": "apikey_01", "workspace_id": null, "model": "claude-sonnet-4-5",
            "service_tier": "standard", "context_window": "0-200k", "inference_geo": "global",
            "uncached_input_tokens": 1200, "cache_read_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 7},
            "output_tokens": 500, "server_tool_use": {"web_search_requests": 2}
        })
    }

    fn page(results: Vec<Value>) -> Value {
        json!({
            "data": [{"starting_at": "2026-11-30T10:00:00Z", "ending_at": "2026-11-30T11:00:00Z", "results": results}],
            "has_more": true, "next_page": "page_2"
        })
    }

    #[test]
    fn a_documented_page_is_read_whole() {
        let page = parse_page(&page(vec![result()])).unwrap();
        assert!(page.has_more);
        assert_eq!(page.next_page.as_deref(), Some("page_2"));
        let r = &page.buckets[0].results[0];
        assert_eq!(r.dimension("api_key_id"), Some("apikey_01"));
        assert_eq!(r.dimension("workspace_id"), None);
        assert_eq!(
            (r.uncached_input_tokens, r.cache_read_input_tokens, r.cache_creation_5m_input_tokens),
            (1200, 300, 40)
        );
        assert_eq!((r.cache_creation_1h_input_tokens, r.output_tokens, r.web_search_requests), (7, 500, 2));
    }

    #[test]
    fn every_bad_field_is_named_with_its_path() {
        let mut bad = result();
        bad["output_tokens"] = json!("500");
        bad["cache_creation"]["ephemeral_1h_input_tokens"] = json!(-1);
        bad["model"] = Value::Null;
        let mut body = page(vec![result(), bad]);
        body["data"][0]["ending_at"] = json!("yesterday");
        body["has_more"] = json!("yes");
        let problems = parse_page(&body).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "has_more",
                "data[0].ending_at",
                "data[0].results[1].model",
                "data[0].results[1].output_tokens",
                "data[0].results[1].cache_creation.ephemeral_1h_input_tokens",
            ],
            "{problems:?}"
        );
        assert!(problems[3].message.contains("\"500\""), "{}", problems[3]);
    }

    #[test]
    fn has_more_without_a_next_page_is_a_problem() {
        let mut body = page(vec![result()]);
        body["next_page"] = Value::Null;
        let problems = parse_page(&body).unwrap_err();
        assert_eq!(problems[0].path, "next_page");
    }
}

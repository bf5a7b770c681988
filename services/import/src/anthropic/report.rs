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
//! bucket that ends before it starts is a problem. The page's and buckets' frame is read by the
//! shared [`crate::check`].

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::check::{BucketShape, Check, shown};
use crate::error::Problem;
use crate::run::{UsageBucket, UsageRow};

/// The dimensions the importer groups by, in the order they enter event ids. Changing this list
/// changes how usage is split into results, and so every id: never change it, add a new
/// importer version instead.
pub const GROUP_BY: [&str; 6] =
    ["api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo"];

/// One page of the report.
pub type Page = crate::run::Page<Bucket>;

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

impl UsageBucket for Bucket {
    type Result = UsageResult;

    fn span(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.starting_at, self.ending_at)
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
    let shape = BucketShape { kind: None, start: "starting_at", end: "ending_at", time: Check::rfc3339_time };
    Check::default().page(body, None, |check, path, value| {
        let (starting_at, ending_at, results) = check.bucket(path, value, shape, result)?;
        Some(Bucket { starting_at, ending_at, results })
    })
}

fn result(check: &mut Check, path: &str, value: &Value) -> Option<UsageResult> {
    let Some(result) = value.as_object() else {
        check.problem(path, format!("expected a result object, got {}", shown(Some(value))));
        return None;
    };
    let mut out = UsageResult::default();
    for (slot, name) in GROUP_BY.iter().enumerate() {
        out.dimensions[slot] = match result.get(*name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                check.problem(
                    &format!("{path}.{name}"),
                    format!("expected a string or null, got {}", shown(Some(other))),
                );
                None
            }
        };
    }
    if matches!(result.get("model"), None | Some(Value::Null)) {
        check.problem(&format!("{path}.model"), "missing although the report is grouped by model");
    }
    out.uncached_input_tokens =
        check.count(path, "uncached_input_tokens", result.get("uncached_input_tokens"));
    out.cache_read_input_tokens =
        check.count(path, "cache_read_input_tokens", result.get("cache_read_input_tokens"));
    out.output_tokens = check.count(path, "output_tokens", result.get("output_tokens"));
    match result.get("cache_creation") {
        Some(Value::Object(cache)) => {
            let at = format!("{path}.cache_creation");
            out.cache_creation_5m_input_tokens =
                check.count(&at, "ephemeral_5m_input_tokens", cache.get("ephemeral_5m_input_tokens"));
            out.cache_creation_1h_input_tokens =
                check.count(&at, "ephemeral_1h_input_tokens", cache.get("ephemeral_1h_input_tokens"));
        }
        other => check.problem(
            &format!("{path}.cache_creation"),
            format!("expected an object with the cache write counts, got {}", shown(other)),
        ),
    }
    // Server tools are optional in the documented result; absent means none used.
    match result.get("server_tool_use") {
        None | Some(Value::Null) => {}
        Some(Value::Object(tools)) => {
            let at = format!("{path}.server_tool_use");
            out.web_search_requests =
                check.optional_count(&at, "web_search_requests", tools.get("web_search_requests"));
        }
        Some(other) => check.problem(
            &format!("{path}.server_tool_use"),
            format!("expected an object, got {}", shown(Some(other))),
        ),
    }
    Some(out)
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

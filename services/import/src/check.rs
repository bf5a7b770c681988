//! The checks every report parser shares: a page's frame (`has_more`, `next_page`, `data`), a
//! bucket's frame (its start and end, its results), counts, times, and values shown short.
//!
//! Contract: a [`Check`] collects every problem of a page with its JSON path, in the order of
//! the page, and never stops at the first; [`Check::page`] returns the whole page or every
//! problem of it, never a part of a page. What a result holds is the provider parser's.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Problem;
use crate::run::Page;

/// The problems of one page, so far.
#[derive(Debug, Default)]
pub struct Check {
    pub problems: Vec<Problem>,
}

/// How a bucket reads: the documented `object` (if any), the names of its start and end, and
/// how its times are written.
#[derive(Debug, Clone, Copy)]
pub struct BucketShape {
    pub kind: Option<&'static str>,
    pub start: &'static str,
    pub end: &'static str,
    pub time: fn(&mut Check, &str, Option<&Value>) -> Option<DateTime<Utc>>,
}

impl Check {
    pub fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem { path: path.to_string(), message: message.into() });
    }

    /// Read a page `{"data": [bucket...], "has_more": bool, "next_page": string|null}` (and its
    /// documented `object`, `kind`, if any), each bucket with `bucket`.
    pub fn page<B>(
        mut self,
        body: &Value,
        kind: Option<&str>,
        mut bucket: impl FnMut(&mut Check, &str, &Value) -> Option<B>,
    ) -> Result<Page<B>, Vec<Problem>> {
        let Some(page) = body.as_object() else {
            self.problem("(body)", "expected an object with data, has_more and next_page");
            return Err(self.problems);
        };
        if let Some(kind) = kind {
            self.object_kind("object", page.get("object"), kind);
        }
        let has_more = match page.get("has_more") {
            Some(Value::Bool(b)) => *b,
            other => {
                self.problem("has_more", format!("expected true or false, got {}", shown(other)));
                false
            }
        };
        let next_page = match page.get("next_page") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem("next_page", format!("expected a string or null, got {}", shown(Some(other))));
                None
            }
        };
        if has_more && matches!(page.get("next_page"), None | Some(Value::Null)) {
            self.problem("next_page", "has_more is true but next_page is missing");
        }
        let mut buckets = Vec::new();
        match page.get("data") {
            Some(Value::Array(data)) => {
                for (i, value) in data.iter().enumerate() {
                    if let Some(read) = bucket(&mut self, &format!("data[{i}]"), value) {
                        buckets.push(read);
                    }
                }
            }
            other => self.problem("data", format!("expected an array of buckets, got {}", shown(other))),
        }
        if self.problems.is_empty() { Ok(Page { buckets, has_more, next_page }) } else { Err(self.problems) }
    }

    /// Read a bucket of `shape`, each result with `result`: its start, end and results, or
    /// `None` when any of it is a problem.
    pub fn bucket<R>(
        &mut self,
        path: &str,
        value: &Value,
        shape: BucketShape,
        mut result: impl FnMut(&mut Check, &str, &Value) -> Option<R>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>, Vec<R>)> {
        let Some(bucket) = value.as_object() else {
            self.problem(path, format!("expected a bucket object, got {}", shown(Some(value))));
            return None;
        };
        let before = self.problems.len();
        if let Some(kind) = shape.kind {
            self.object_kind(&format!("{path}.object"), bucket.get("object"), kind);
        }
        let start = (shape.time)(self, &format!("{path}.{}", shape.start), bucket.get(shape.start));
        let end = (shape.time)(self, &format!("{path}.{}", shape.end), bucket.get(shape.end));
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            self.problem(
                &format!("{path}.{}", shape.end),
                format!("{end} is not after {} {start}", shape.start),
            );
        }
        let mut results = Vec::new();
        match bucket.get("results") {
            Some(Value::Array(items)) => {
                for (j, item) in items.iter().enumerate() {
                    if let Some(read) = result(self, &format!("{path}.results[{j}]"), item) {
                        results.push(read);
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
        Some((start?, end?, results))
    }

    /// The documented `object` of a page, bucket or result; absent is tolerated.
    pub fn object_kind(&mut self, path: &str, value: Option<&Value>, expected: &str) {
        match value {
            None => {}
            Some(Value::String(s)) if s == expected => {}
            other => self.problem(path, format!("expected \"{expected}\", got {}", shown(other))),
        }
    }

    /// A required count at `path.field`: a non-negative integer, else a problem and 0.
    pub fn count(&mut self, path: &str, field: &str, value: Option<&Value>) -> i64 {
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

    /// An optional count: absent or null is zero.
    pub fn optional_count(&mut self, path: &str, field: &str, value: Option<&Value>) -> i64 {
        match value {
            None | Some(Value::Null) => 0,
            some => self.count(path, field, some),
        }
    }

    /// A time written as RFC 3339.
    pub fn rfc3339_time(&mut self, path: &str, value: Option<&Value>) -> Option<DateTime<Utc>> {
        let parsed = value.and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok());
        if parsed.is_none() {
            self.problem(path, format!("expected an RFC 3339 time, got {}", shown(value)));
        }
        parsed.map(|t| t.with_timezone(&Utc))
    }

    /// A time written as Unix seconds.
    pub fn unix_time(&mut self, path: &str, value: Option<&Value>) -> Option<DateTime<Utc>> {
        let parsed = value.and_then(Value::as_i64).and_then(|s| DateTime::from_timestamp(s, 0));
        if parsed.is_none() {
            self.problem(path, format!("expected a Unix time in seconds, got {}", shown(value)));
        }
        parsed
    }
}

/// A value as shown in a problem: short, and `nothing` when absent.
pub fn shown(value: Option<&Value>) -> String {
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

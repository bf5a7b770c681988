//! Every problem of a collector record, not only the first.
//!
//! serde stops at the first field it cannot read, so a record that does not deserialize is
//! checked again here field by field: each known field's value against its type, each unknown
//! field, each missing required field, and the same for `tokens`; the rules serde cannot say
//! (names that must not be empty, a time not in the future) apply to every record. The answer
//! lists every problem with its JSON path (`records[3].tokens.input`), sorted by path. Only a
//! record that fails to deserialize pays for the field-by-field pass.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use faregate_core::event::{Endpoint, Tool};

/// Whether a value reads as `T`; the reason when it does not.
type Check = fn(&Value) -> Option<String>;

fn check<T: DeserializeOwned>(value: &Value) -> Option<String> {
    T::deserialize(value).err().map(|e| e.to_string())
}

fn check_tokens(value: &Value) -> Option<String> {
    // Checked field by field by `problems`; only its shape here.
    (!value.is_object()).then(|| "must be an object of token counts".to_string())
}

/// The record's fields: name, required, and the check of its value.
const FIELDS: &[(&str, bool, Check)] = &[
    ("event_id", true, check::<uuid::Uuid>),
    ("occurred_at", true, check::<chrono::DateTime<chrono::Utc>>),
    ("org", true, check::<String>),
    ("team", false, check::<Option<String>>),
    ("user", false, check::<Option<String>>),
    ("key_id", false, check::<Option<String>>),
    ("provider", true, check::<String>),
    ("model", true, check::<String>),
    ("served_model", false, check::<Option<String>>),
    ("endpoint", false, check::<Endpoint>),
    ("tool", false, check::<Tool>),
    ("session_id", false, check::<Option<String>>),
    ("request_id", false, check::<Option<String>>),
    ("project", false, check::<Option<String>>),
    ("tags", false, check::<std::collections::BTreeMap<String, String>>),
    ("tokens", true, check_tokens),
    ("estimated", false, check::<bool>),
    ("service_tier", false, check::<Option<String>>),
    ("region", false, check::<Option<String>>),
    ("streaming", false, check::<bool>),
    ("status", false, check::<u16>),
    ("latency_ms", false, check::<u64>),
];

const TOKEN_FIELDS: &[&str] =
    &["input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning"];

/// The rules beyond types, for whichever of their fields are present and well typed.
pub(super) fn rules(index: usize, record: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for field in ["org", "provider", "model"] {
        if record.get(field).and_then(Value::as_str).is_some_and(|v| v.trim().is_empty()) {
            found.push((format!("records[{index}].{field}"), "must not be empty".to_string()));
        }
    }
    let occurred_at =
        record.get("occurred_at").and_then(|v| chrono::DateTime::<chrono::Utc>::deserialize(v).ok());
    if occurred_at.is_some_and(|at| at > chrono::Utc::now() + chrono::TimeDelta::hours(1)) {
        found.push((
            format!("records[{index}].occurred_at"),
            "is more than an hour in the future".to_string(),
        ));
    }
    found
}

/// Every problem of the record at `records[index]`, as (path, message), sorted by path.
pub(super) fn problems(index: usize, record: &Value) -> Vec<(String, String)> {
    let at = |field: &str| format!("records[{index}].{field}");
    let Some(object) = record.as_object() else {
        return vec![(format!("records[{index}]"), "must be a JSON object (a usage record)".to_string())];
    };
    let mut found = Vec::new();
    for (name, value) in object {
        match FIELDS.iter().find(|(field, _, _)| field == name) {
            Some((_, _, check)) => found.extend(check(value).map(|message| (at(name), message))),
            None => found.push((at(name), unknown(name, FIELDS.iter().map(|(field, _, _)| *field)))),
        }
    }
    if let Some(tokens) = object.get("tokens").and_then(Value::as_object) {
        for (name, value) in tokens {
            let path = at(&format!("tokens.{name}"));
            if TOKEN_FIELDS.contains(&name.as_str()) {
                found.extend(check::<u32>(value).map(|message| (path, message)));
            } else {
                found.push((path, unknown(name, TOKEN_FIELDS.iter().copied())));
            }
        }
    }
    for (name, required, _) in FIELDS {
        if *required && !object.contains_key(*name) {
            found.push((at(name), "is required".to_string()));
        }
    }
    found.extend(rules(index, record));
    found.sort();
    found
}

fn unknown<'a>(name: &str, expected: impl Iterator<Item = &'a str>) -> String {
    let expected: Vec<&str> = expected.collect();
    format!("unknown field `{name}`, expected one of {}", expected.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(record: Value) -> Vec<String> {
        problems(4, &record).into_iter().map(|(path, _)| path).collect()
    }

    #[test]
    fn every_bad_field_is_listed_with_its_path() {
        let record = json!({
            "event_id": "not-a-uuid", "occurred_at": "yesterday", "org": " ", "provider": 7,
            "tokens": {"input": -3, "output": 5, "cache_read": "many", "colour": 1},
            "tool": "HAMMER", "status": 70000, "size": 3
        });
        assert_eq!(
            paths(record),
            vec![
                "records[4].event_id",
                "records[4].model",
                "records[4].occurred_at",
                "records[4].org",
                "records[4].provider",
                "records[4].size",
                "records[4].status",
                "records[4].tokens.cache_read",
                "records[4].tokens.colour",
                "records[4].tokens.input",
                "records[4].tool",
            ]
        );
    }

    #[test]
    fn a_good_record_has_no_problem_and_a_non_object_one() {
        let good = json!({"event_id": uuid::Uuid::now_v7(), "occurred_at": "2026-12-01T00:00:00Z", "org": "acme",
                          "provider": "anthropic", "model": "m", "tokens": {"input": 1}, "tags": {"a": "b"}});
        assert!(problems(0, &good).is_empty());
        assert_eq!(
            problems(2, &json!([1])),
            vec![("records[2]".to_string(), "must be a JSON object (a usage record)".to_string())]
        );
        let tokens = json!({"event_id": uuid::Uuid::now_v7(), "occurred_at": "2026-12-01T00:00:00Z", "org": "acme",
                            "provider": "anthropic", "model": "m", "tokens": 12});
        assert_eq!(paths(tokens), vec!["records[4].tokens"]);
    }
}

//! Validation of usage events before they are priced. An invalid event is not dropped: the
//! pipeline sends it to the dead-letter topic with the error, which names the field.

use chrono::Duration;

use faregate_core::event::UsageEvent;

/// Longest string accepted in any attribution field.
pub const MAX_TEXT: usize = 1024;
/// How far in the future `occurred_at` may be relative to `received_at` (clock skew).
pub const MAX_SKEW: Duration = Duration::minutes(10);

/// The earliest `occurred_at` accepted.
fn earliest() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(946_684_800, 0).unwrap_or_default()
}

/// Why an event is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError { field, message: message.into() }
}

/// Check an event; the first problem found is returned.
pub fn validate(event: &UsageEvent) -> Result<(), ValidationError> {
    if event.event_id.is_nil() {
        return Err(invalid("event_id", "must not be the nil UUID"));
    }
    for (field, value) in [
        ("org", Some(&event.org)),
        ("provider", Some(&event.provider)),
        ("requested_model", Some(&event.requested_model)),
    ] {
        if value.is_none_or(|v| v.trim().is_empty()) {
            return Err(invalid(field, "must not be empty"));
        }
    }
    let texts = [
        ("source_name", Some(&event.source_name)),
        ("org", Some(&event.org)),
        ("team", event.team.as_ref()),
        ("user", event.user.as_ref()),
        ("key_id", event.key_id.as_ref()),
        ("provider", Some(&event.provider)),
        ("requested_model", Some(&event.requested_model)),
        ("served_model", event.served_model.as_ref()),
        ("session_id", event.session_id.as_ref()),
        ("request_id", Some(&event.request_id)),
        ("upstream_request_id", event.upstream_request_id.as_ref()),
        ("project", event.project.as_ref()),
        ("service_tier", event.service_tier.as_ref()),
        ("inference_region", event.inference_region.as_ref()),
    ];
    for (field, value) in texts {
        if let Some(value) = value
            && value.len() > MAX_TEXT
        {
            return Err(invalid(field, format!("is {} bytes; at most {MAX_TEXT}", value.len())));
        }
    }
    if event.tags.len() > 64 {
        return Err(invalid("tags", format!("has {} entries; at most 64", event.tags.len())));
    }
    if let Some((key, _)) = event.tags.iter().find(|(k, v)| k.len() > MAX_TEXT || v.len() > MAX_TEXT) {
        return Err(invalid("tags", format!("entry {key:.40?} is longer than {MAX_TEXT} bytes")));
    }
    let t = &event.tokens;
    for (field, count) in [
        ("tokens.input", t.input),
        ("tokens.output", t.output),
        ("tokens.cache_read", t.cache_read),
        ("tokens.cache_write_5m", t.cache_write_5m),
        ("tokens.cache_write_1h", t.cache_write_1h),
        ("tokens.reasoning", t.reasoning),
    ] {
        if count < 0 {
            return Err(invalid(field, format!("must not be negative (got {count})")));
        }
    }
    if !(0..=999).contains(&event.http_status) {
        return Err(invalid("http_status", format!("{} is not an HTTP status", event.http_status)));
    }
    if event.latency_us < 0 {
        return Err(invalid("latency_us", format!("must not be negative (got {})", event.latency_us)));
    }
    if let Some(ttfb) = event.ttfb_us
        && ttfb < 0
    {
        return Err(invalid("ttfb_us", format!("must not be negative (got {ttfb})")));
    }
    if event.occurred_at < earliest() {
        return Err(invalid("occurred_at", format!("{} is before 2000-01-01", event.occurred_at)));
    }
    if event.occurred_at > event.received_at + MAX_SKEW {
        return Err(invalid(
            "occurred_at",
            format!("{} is more than 10 minutes after received_at {}", event.occurred_at, event.received_at),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use faregate_core::event::arbitrary;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    fn valid() -> UsageEvent {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut event = arbitrary::usage_event().new_tree(&mut runner).unwrap().current();
        event.org = "acme".into();
        event.provider = "anthropic".into();
        event.requested_model = "claude-sonnet-4-5".into();
        event.tokens = Default::default();
        event.http_status = 200;
        event.latency_us = 10;
        event.ttfb_us = None;
        event.received_at = chrono::Utc::now();
        event.occurred_at = event.received_at;
        event
    }

    #[test]
    fn a_valid_event_passes() {
        assert_eq!(validate(&valid()), Ok(()));
    }

    #[test]
    fn each_problem_names_its_field() {
        type Case = (fn(&mut UsageEvent), &'static str);
        let cases: Vec<Case> = vec![
            (|e| e.org = " ".into(), "field `org`: must not be empty"),
            (|e| e.tokens.cache_read = -1, "field `tokens.cache_read`: must not be negative (got -1)"),
            (|e| e.http_status = 1000, "field `http_status`: 1000 is not an HTTP status"),
            (|e| e.event_id = uuid::Uuid::nil(), "field `event_id`: must not be the nil UUID"),
            (
                |e| e.occurred_at = chrono::DateTime::from_timestamp(0, 0).unwrap(),
                "field `occurred_at`: 1970-01-01 00:00:00 UTC is before 2000-01-01",
            ),
            (|e| e.user = Some("x".repeat(2000)), "field `user`: is 2000 bytes; at most 1024"),
        ];
        for (mutate, expected) in cases {
            let mut event = valid();
            mutate(&mut event);
            assert_eq!(validate(&event).unwrap_err().to_string(), expected);
        }
    }

    proptest! {
        #[test]
        fn validation_never_panics(event in arbitrary::usage_event()) {
            let _ = validate(&event);
        }
    }
}

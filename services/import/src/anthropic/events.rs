//! From a result of the usage report to a usage event, and its id.
//!
//! Contract: one result (one bucket, one combination of [`GROUP_BY`] values) is one usage event
//! with `source_kind` `IMPORT`, occurring at the bucket's start, its token classes disjoint as
//! the ledger wants them (Anthropic's `uncached_input_tokens` is already input without cache).
//! The event id is a UUID v5 of the report's own identifiers: the importer and report, the
//! Faregate org the usage is attributed to, the bucket's start and width, and the value of
//! every grouped dimension (null kept apart from empty). So importing the same bucket again
//! gives the same ids and the processor counts it once; a bucket is only imported once it has
//! settled (see the module `anthropic`), since a grown bucket would carry the same id.
//!
//! Attribution: `key_id` is Anthropic's `api_key_id`; team and user stay unknown until the
//! people directory maps the provider's ids, which the event keeps in its tags
//! (`anthropic.api_key_id`, `anthropic.workspace_id`, `anthropic.context_window`, ...). Usage
//! without a key (Workbench) or in the default workspace is kept, never dropped. The id and the
//! fields every imported event shares are [`crate::event`]'s.
//!
//! [`GROUP_BY`]: super::report::GROUP_BY

use chrono::{DateTime, Utc};
use faregate_core::event::{Endpoint, TAG_REQUEST_INPUT_TOKENS, TokenCounts, UsageEvent};
use serde_json::Value;
use uuid::Uuid;

use super::report::{Bucket, UsageResult};
use crate::event;
use crate::run::UsageRow;
use crate::window::rfc3339;

/// What enters the ids of this report's events first: change it only with a new importer.
pub const REPORT: &str = "anthropic.usage_report.messages";

/// The tag prefix of the provider's own identifiers.
pub const TAG_PREFIX: &str = "anthropic.";

pub use crate::run::Attribution;

/// The id of one result's event (see the module doc).
pub fn event_id(attribution: &Attribution, bucket: &Bucket, result: &UsageResult) -> Uuid {
    let start = Value::from(rfc3339(bucket.starting_at));
    event::event_id(REPORT, attribution, start, result)
}

/// The input tokens of one request in a context window band such as `0-200k` or `200k-1M`:
/// one more than the band's lower bound, which is in the band whatever its upper bound. So the
/// summed bucket is priced in the long-context band its requests were in (the catalog's
/// thresholds are the bands' bounds). `None` for a value of another form.
pub fn request_input_tokens(context_window: &str) -> Option<i64> {
    let (low, _high) = context_window.split_once('-')?;
    let (digits, scale) = match low.as_bytes().last()? {
        b'k' | b'K' => (&low[..low.len() - 1], 1_000),
        b'M' | b'm' => (&low[..low.len() - 1], 1_000_000),
        _ => (low, 1),
    };
    digits.parse::<i64>().ok()?.checked_mul(scale)?.checked_add(1)
}

/// The usage event of one result.
pub fn usage_event(
    attribution: &Attribution,
    bucket: &Bucket,
    result: &UsageResult,
    received_at: DateTime<Utc>,
) -> UsageEvent {
    let event_id = event_id(attribution, bucket, result);
    let mut tags = event::result_tags(TAG_PREFIX, result, bucket.ending_at, attribution);
    if let Some(input) = result.dimension("context_window").and_then(request_input_tokens) {
        tags.insert(TAG_REQUEST_INPUT_TOKENS.to_string(), input.to_string());
    }
    if result.web_search_requests > 0 {
        tags.insert(format!("{TAG_PREFIX}web_search_requests"), result.web_search_requests.to_string());
    }
    // `not_available`: the model does not let the caller choose; priced as no region.
    let region = result.dimension("inference_geo").filter(|g| *g != "not_available").map(String::from);
    UsageEvent {
        tags,
        tokens: TokenCounts {
            input: result.uncached_input_tokens,
            output: result.output_tokens,
            cache_read: result.cache_read_input_tokens,
            cache_write_5m: result.cache_creation_5m_input_tokens,
            cache_write_1h: result.cache_creation_1h_input_tokens,
            reasoning: 0,
        },
        service_tier: result.dimension("service_tier").map(String::from),
        inference_region: region,
        ..event::imported_event(
            attribution,
            event_id,
            bucket.starting_at,
            received_at,
            ("anthropic", Endpoint::Messages),
            result,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use faregate_core::event::SourceKind;

    fn attribution() -> Attribution {
        Attribution { org: "acme".into(), source_name: "anthropic-admin".into(), bucket_width: "1h" }
    }

    fn bucket() -> Bucket {
        let start = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
        Bucket { starting_at: start, ending_at: start + chrono::TimeDelta::hours(1), results: vec![] }
    }

    fn result(key: Option<&str>) -> UsageResult {
        UsageResult {
            dimensions: [
                key.map(String::from),
                None,
                Some("claude-sonnet-4-5".into()),
                Some("standard".into()),
                Some("0-200k".into()),
                Some("not_available".into()),
            ],
            uncached_input_tokens: 10,
            cache_read_input_tokens: 20,
            cache_creation_5m_input_tokens: 30,
            cache_creation_1h_input_tokens: 40,
            output_tokens: 50,
            web_search_requests: 0,
        }
    }

    #[test]
    fn ids_are_stable_and_change_with_every_identifier() {
        let (a, b, r) = (attribution(), bucket(), result(Some("apikey_1")));
        let id = event_id(&a, &b, &r);
        assert_eq!(id, event_id(&a, &b, &r.clone()));
        assert_eq!(id.get_version_num(), 5);
        // The counts are not identifiers: a grown bucket keeps its id (hence the settle lag).
        let grown = UsageResult { output_tokens: 99, ..r.clone() };
        assert_eq!(event_id(&a, &b, &grown), id);
        let mut others = vec![
            event_id(&Attribution { org: "other".into(), ..a.clone() }, &b, &r),
            event_id(&Attribution { bucket_width: "1d", ..a.clone() }, &b, &r),
            event_id(&a, &Bucket { starting_at: b.ending_at, ..b.clone() }, &r),
            event_id(&a, &b, &result(None)),
            event_id(&a, &b, &result(Some(""))),
        ];
        for slot in 1..6 {
            let mut changed = r.clone();
            changed.dimensions[slot] = Some(format!("{:?}-changed", r.dimensions[slot]));
            others.push(event_id(&a, &b, &changed));
        }
        let distinct: std::collections::HashSet<Uuid> = others.iter().copied().chain([id]).collect();
        assert_eq!(distinct.len(), others.len() + 1, "every identifier changes the id");
    }

    #[test]
    fn a_result_becomes_an_imported_event_with_its_provider_ids() {
        let event = usage_event(&attribution(), &bucket(), &result(Some("apikey_1")), Utc::now());
        assert_eq!(event.source_kind, SourceKind::Import);
        assert_eq!(event.occurred_at, bucket().starting_at);
        assert_eq!(event.key_id.as_deref(), Some("apikey_1"));
        assert_eq!((event.team.as_deref(), event.user.as_deref()), (None, None));
        assert_eq!(
            event.tokens,
            TokenCounts {
                input: 10,
                output: 50,
                cache_read: 20,
                cache_write_5m: 30,
                cache_write_1h: 40,
                reasoning: 0
            }
        );
        assert_eq!(event.tags.get("anthropic.api_key_id").map(String::as_str), Some("apikey_1"));
        assert_eq!(event.tags.get("anthropic.context_window").map(String::as_str), Some("0-200k"));
        assert!(!event.tags.contains_key("anthropic.workspace_id"), "null stays absent");
        assert_eq!(event.inference_region, None, "not_available is no region");
        assert_eq!(event.tags.get(TAG_REQUEST_INPUT_TOKENS).map(String::as_str), Some("1"));
        assert_eq!(event.partition_key(), "acme/key:apikey_1");
        // Workbench usage (no key) is kept, under the org.
        let keyless = usage_event(&attribution(), &bucket(), &result(None), Utc::now());
        assert_eq!(keyless.partition_key(), "acme");
    }

    #[test]
    fn context_windows_give_a_request_size_inside_their_band() {
        assert_eq!(request_input_tokens("0-200k"), Some(1));
        assert_eq!(request_input_tokens("200k-1M"), Some(200_001));
        assert_eq!(request_input_tokens("1M-2M"), Some(1_000_001));
        assert_eq!(request_input_tokens("large"), None);
        assert_eq!(request_input_tokens("k-1M"), None);
    }
}

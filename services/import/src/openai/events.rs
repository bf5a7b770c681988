//! From a result of OpenAI's completions usage to a usage event, and its id.
//!
//! Contract: one result (one bucket, one combination of [`GROUP_BY`] values) is one usage event
//! with `source_kind` `IMPORT`, occurring at the bucket's start. Token classes are made disjoint
//! as the ledger wants them, the way the ingress reads an OpenAI response's
//! `prompt_tokens_details.cached_tokens`: OpenAI's `input_tokens` include the cached ones
//! (`input_cached_tokens` is their cached part, per the reference, see `usage`), so `input` is
//! `input_tokens - input_cached_tokens` and `cache_read` is `input_cached_tokens`; `output` is
//! `output_tokens` (reasoning included: the usage API does not split it, and the catalog bills
//! reasoning at the output price). OpenAI reports no cache writes.
//!
//! Pricing that follows from the result, never a wrong price in silence:
//! - `batch: true` is priced in the catalog's `batch` service tier (`service_tier` `batch`);
//!   otherwise the result's own `service_tier` (a tier the catalog does not list leaves the
//!   event unpriced with that reason);
//! - a result with audio tokens gets the service tier `audio`, which the catalog does not price,
//!   so the event stays unpriced ("unknown service tier") rather than audio be priced as text;
//!   the counts are kept in the tags;
//! - a bucket sums many requests: its long-context band is chosen by the average request's input
//!   ([`TAG_REQUEST_INPUT_TOKENS`] = input tokens / `num_model_requests`, rounded up).
//!
//! The event id is a UUID v5 of the usage's own identifiers: [`REPORT`] (not Anthropic's), the
//! Faregate org, the bucket's start and width, and the value of every grouped dimension (null
//! kept apart from empty). Attribution: `key_id` is OpenAI's `api_key_id`; the project and user
//! stay in the tags (`openai.project_id`, `openai.user_id`) until the people directory maps them.
//! The id and the fields every imported event shares are [`crate::event`]'s.
//!
//! [`GROUP_BY`]: super::usage::GROUP_BY

use chrono::{DateTime, Utc};
use faregate_core::event::{Endpoint, TAG_REQUEST_INPUT_TOKENS, TokenCounts, UsageEvent};
use serde_json::Value;
use uuid::Uuid;

use super::usage::{Bucket, UsageResult};
use crate::event;
use crate::run::UsageRow;

/// What enters the ids of this report's events first: change it only with a new importer.
pub const REPORT: &str = "openai.organization.usage.completions";

/// The tag prefix of the provider's own identifiers.
pub const TAG_PREFIX: &str = "openai.";

/// The service tier of a result with audio tokens: not in the catalog, so left unpriced.
pub const AUDIO_TIER: &str = "audio";

pub use crate::run::Attribution;

/// The id of one result's event (see the module doc).
pub fn event_id(attribution: &Attribution, bucket: &Bucket, result: &UsageResult) -> Uuid {
    let start = Value::from(bucket.start_time.timestamp());
    event::event_id(REPORT, attribution, start, result)
}

/// The usage event of one result.
pub fn usage_event(
    attribution: &Attribution,
    bucket: &Bucket,
    result: &UsageResult,
    received_at: DateTime<Utc>,
) -> UsageEvent {
    let event_id = event_id(attribution, bucket, result);
    let mut tags = event::result_tags(TAG_PREFIX, result, bucket.end_time, attribution);
    tags.insert(format!("{TAG_PREFIX}num_model_requests"), result.num_model_requests.to_string());
    if result.has_audio() {
        tags.insert(format!("{TAG_PREFIX}input_audio_tokens"), result.input_audio_tokens.to_string());
        tags.insert(format!("{TAG_PREFIX}output_audio_tokens"), result.output_audio_tokens.to_string());
    }
    if result.num_model_requests > 0 {
        let average = (result.input_tokens + result.num_model_requests - 1) / result.num_model_requests;
        tags.insert(TAG_REQUEST_INPUT_TOKENS.to_string(), average.to_string());
    }
    let service_tier = if result.has_audio() {
        Some(AUDIO_TIER.to_string())
    } else if result.dimension("batch") == Some("true") {
        Some("batch".to_string())
    } else {
        result.dimension("service_tier").map(String::from)
    };
    UsageEvent {
        tags,
        tokens: TokenCounts {
            input: result.input_tokens - result.input_cached_tokens,
            output: result.output_tokens,
            cache_read: result.input_cached_tokens,
            cache_write_5m: 0,
            cache_write_1h: 0,
            reasoning: 0,
        },
        service_tier,
        ..event::imported_event(
            attribution,
            event_id,
            bucket.start_time,
            received_at,
            ("openai", Endpoint::Other),
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
        Attribution { org: "acme".into(), source_name: "openai-usage-api".into(), bucket_width: "1h" }
    }

    fn bucket() -> Bucket {
        let start = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
        Bucket { start_time: start, end_time: start + chrono::TimeDelta::hours(1), results: vec![] }
    }

    fn result(key: Option<&str>) -> UsageResult {
        UsageResult {
            dimensions: [
                Some("proj_1".into()),
                Some("user-1".into()),
                key.map(String::from),
                Some("gpt-5-mini".into()),
                Some("false".into()),
                Some("default".into()),
            ],
            input_tokens: 5000,
            input_cached_tokens: 4000,
            output_tokens: 1000,
            input_audio_tokens: 0,
            output_audio_tokens: 0,
            num_model_requests: 3,
        }
    }

    #[test]
    fn ids_are_stable_and_change_with_every_identifier() {
        let (a, b, r) = (attribution(), bucket(), result(Some("key_1")));
        let id = event_id(&a, &b, &r);
        assert_eq!(id, event_id(&a, &b, &r.clone()));
        assert_eq!(id.get_version_num(), 5);
        let grown = UsageResult { output_tokens: 99, ..r.clone() };
        assert_eq!(event_id(&a, &b, &grown), id, "counts are not identifiers (hence the settle lag)");
        let mut others = vec![
            event_id(&Attribution { org: "other".into(), ..a.clone() }, &b, &r),
            event_id(&Attribution { bucket_width: "1d", ..a.clone() }, &b, &r),
            event_id(&a, &Bucket { start_time: b.end_time, ..b.clone() }, &r),
            event_id(&a, &b, &result(None)),
            event_id(&a, &b, &result(Some(""))),
        ];
        for slot in [0, 1, 3, 4, 5] {
            let mut changed = r.clone();
            changed.dimensions[slot] = Some(format!("{:?}-changed", r.dimensions[slot]));
            others.push(event_id(&a, &b, &changed));
        }
        let distinct: std::collections::HashSet<Uuid> = others.iter().copied().chain([id]).collect();
        assert_eq!(distinct.len(), others.len() + 1, "every identifier changes the id");
    }

    #[test]
    fn cached_input_is_taken_out_of_input_and_the_ids_are_kept_as_tags() {
        let event = usage_event(&attribution(), &bucket(), &result(Some("key_1")), Utc::now());
        assert_eq!((event.source_kind, event.provider.as_str()), (SourceKind::Import, "openai"));
        assert_eq!(event.occurred_at, bucket().start_time);
        assert_eq!(event.key_id.as_deref(), Some("key_1"));
        assert_eq!((event.team.as_deref(), event.user.as_deref()), (None, None));
        assert_eq!(
            event.tokens,
            TokenCounts { input: 1000, output: 1000, cache_read: 4000, ..TokenCounts::default() }
        );
        assert_eq!(event.tags.get("openai.project_id").map(String::as_str), Some("proj_1"));
        assert_eq!(event.tags.get("openai.user_id").map(String::as_str), Some("user-1"));
        assert_eq!(event.tags.get("import.bucket_end").map(String::as_str), Some("2026-11-30T11:00:00Z"));
        assert_eq!(event.tags.get(TAG_REQUEST_INPUT_TOKENS).map(String::as_str), Some("1667"), "5000 / 3 up");
        assert_eq!(event.service_tier.as_deref(), Some("default"));
        assert_eq!(event.partition_key(), "acme/key:key_1");
    }

    #[test]
    fn batch_is_the_batch_tier_and_audio_is_left_unpriced() {
        let mut batch = result(Some("key_1"));
        batch.dimensions[4] = Some("true".into());
        let event = usage_event(&attribution(), &bucket(), &batch, Utc::now());
        assert_eq!(event.service_tier.as_deref(), Some("batch"));
        assert_eq!(event.tags.get("openai.service_tier").map(String::as_str), Some("default"));
        let audio = UsageResult { input_audio_tokens: 7, ..result(None) };
        let event = usage_event(&attribution(), &bucket(), &audio, Utc::now());
        assert_eq!(event.service_tier.as_deref(), Some(AUDIO_TIER));
        assert_eq!(event.tags.get("openai.input_audio_tokens").map(String::as_str), Some("7"));
    }
}

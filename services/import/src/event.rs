//! What every importer's usage events share: the id, the tags of the grouped dimensions and the
//! bucket, and the fields of an imported event.
//!
//! Contract: an event id is the UUID v5, in [`IMPORT_NAMESPACE`], of the JSON array `[report,
//! org, bucket start, bucket width, [[dimension, value or null]...]]`, the bucket start written
//! as each importer always wrote it. Never change how an id is derived: a re-import under new
//! ids would count twice. An imported event has `source_kind` `IMPORT`, occurs at its bucket's
//! start, is reported usage of a successful request, and takes its key id and model from the
//! result's `api_key_id` and `model`; team and user stay unknown until the people directory
//! maps the provider's ids, which the tags keep (`<provider>.<dimension>`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use faregate_core::event::{Endpoint, Outcome, SourceKind, TokenCounts, Tool, UsageEvent, UsageSource};
use serde_json::Value;
use uuid::Uuid;

use crate::run::{Attribution, UsageRow};
use crate::window::{IMPORT_NAMESPACE, rfc3339, uuid_v5};

/// The id of `report`'s event of `result`, in the bucket starting at `bucket_start` (see the
/// module doc).
pub fn event_id<R: UsageRow>(
    report: &str,
    attribution: &Attribution,
    bucket_start: Value,
    result: &R,
) -> Uuid {
    let dimensions: Vec<(&str, Option<&str>)> =
        R::GROUP_BY.iter().zip(result.dimensions()).map(|(name, value)| (*name, value.as_deref())).collect();
    let name =
        serde_json::json!([report, attribution.org, bucket_start, attribution.bucket_width, dimensions]);
    uuid_v5(IMPORT_NAMESPACE, name.to_string().as_bytes())
}

/// The tags every imported event has: each grouped dimension with a value as
/// `<tag_prefix><dimension>`, the bucket's end and its width.
pub fn result_tags<R: UsageRow>(
    tag_prefix: &str,
    result: &R,
    bucket_end: DateTime<Utc>,
    attribution: &Attribution,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    for (name, value) in R::GROUP_BY.iter().zip(result.dimensions()) {
        if let Some(value) = value {
            tags.insert(format!("{tag_prefix}{name}"), value.clone());
        }
    }
    tags.insert("import.bucket_end".to_string(), rfc3339(bucket_end));
    tags.insert("import.bucket_width".to_string(), attribution.bucket_width.to_string());
    tags
}

/// The fields every imported event shares (see the module doc); the importer sets its tags,
/// tokens, service tier and region.
pub fn imported_event(
    attribution: &Attribution,
    event_id: Uuid,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    (provider, endpoint): (&str, Endpoint),
    result: &impl UsageRow,
) -> UsageEvent {
    UsageEvent {
        event_id,
        occurred_at,
        received_at,
        source_kind: SourceKind::Import,
        source_name: attribution.source_name.clone(),
        org: attribution.org.clone(),
        team: None,
        user: None,
        key_id: result.dimension("api_key_id").map(String::from),
        provider: provider.to_string(),
        requested_model: result.dimension("model").unwrap_or_default().to_string(),
        served_model: None,
        endpoint,
        tool: Tool::Other,
        session_id: None,
        request_id: event_id.to_string(),
        upstream_request_id: None,
        project: None,
        tags: BTreeMap::new(),
        tokens: TokenCounts::default(),
        usage_source: UsageSource::Reported,
        service_tier: None,
        inference_region: None,
        streaming: false,
        outcome: Outcome::Ok,
        http_status: 200,
        latency_us: 0,
        ttfb_us: None,
    }
}

//! The usage event: one per request that reached (or was refused on the way to) a provider.
//!
//! Token classes are disjoint so that they add up to the request's total and each can be priced
//! at its own rate: `input` excludes cache reads and writes (OpenAI's `prompt_tokens` must have
//! `cached_tokens` subtracted), `output` excludes `reasoning`. No prompt, completion or secret is
//! ever part of an event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceKind {
    /// A request through a Faregate ingress.
    Ingress,
    /// A record another gateway sent to the collector.
    Collector,
    /// One aggregate of a provider's admin report (a time bucket per key, workspace, model...),
    /// brought in by an importer (`usage_event.v2`; a v1 reader sees `Collector`).
    Import,
}

/// Tag of an event that sums many requests (an import's bucket): the input tokens, cache
/// included, of any one of those requests as far as the source tells (its long-context band,
/// e.g. `1` for Anthropic's `0-200k`, `200001` for `200k-1M`). Pricing picks the long-context
/// band by it instead of by the event's summed input.
pub const TAG_REQUEST_INPUT_TOKENS: &str = "faregate.request_input_tokens";

/// The API the request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Endpoint {
    Messages,
    CountTokens,
    ChatCompletions,
    Responses,
    Embeddings,
    Other,
}

/// The client tool that sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Tool {
    ClaudeCode,
    Codex,
    Cursor,
    Sdk,
    Other,
}

/// Where the token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UsageSource {
    /// Reported by the provider.
    Reported,
    /// Estimated by Faregate (e.g. the client disconnected before usage arrived).
    Estimated,
    /// No tokens were used (e.g. the request was blocked).
    None,
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Ok,
    UpstreamError,
    ClientAborted,
    Blocked,
}

/// Disjoint token classes of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenCounts {
    /// Input tokens not read from or written to the prompt cache.
    pub input: i64,
    /// Output tokens other than reasoning.
    pub output: i64,
    pub cache_read: i64,
    /// Cache writes with the 5-minute lifetime.
    pub cache_write_5m: i64,
    /// Cache writes with the 1-hour lifetime.
    pub cache_write_1h: i64,
    /// Reasoning (thinking) tokens; billed as output unless priced separately.
    pub reasoning: i64,
}

impl TokenCounts {
    /// All tokens of the request.
    pub fn total(&self) -> i64 {
        self.input
            .saturating_add(self.output)
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write_5m)
            .saturating_add(self.cache_write_1h)
            .saturating_add(self.reasoning)
    }

    /// All input-side tokens, cache included: what long-context tier thresholds count.
    pub fn all_input(&self) -> i64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write_5m)
            .saturating_add(self.cache_write_1h)
    }
}

/// One request, as metered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    #[serde(with = "crate::time::uuid_string")]
    pub event_id: Uuid,
    #[serde(with = "crate::time::micros")]
    pub occurred_at: DateTime<Utc>,
    #[serde(with = "crate::time::micros")]
    pub received_at: DateTime<Utc>,
    pub source_kind: SourceKind,
    pub source_name: String,
    pub org: String,
    pub team: Option<String>,
    pub user: Option<String>,
    pub key_id: Option<String>,
    pub provider: String,
    pub requested_model: String,
    pub served_model: Option<String>,
    pub endpoint: Endpoint,
    pub tool: Tool,
    pub session_id: Option<String>,
    pub request_id: String,
    pub upstream_request_id: Option<String>,
    pub project: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub tokens: TokenCounts,
    pub usage_source: UsageSource,
    pub service_tier: Option<String>,
    pub inference_region: Option<String>,
    pub streaming: bool,
    pub outcome: Outcome,
    pub http_status: i32,
    pub latency_us: i64,
    pub ttfb_us: Option<i64>,
}

impl UsageEvent {
    /// The Kafka key: the subject that owns the spend, so one subject's events stay in order on
    /// one partition. An empty user or key counts as none (the ledger stores none as empty), so
    /// every ledger row of one (org, user, key_id) comes from one partition: the processor's
    /// rollup repair relies on it.
    pub fn partition_key(&self) -> String {
        fn present(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|v| !v.is_empty())
        }
        match (present(&self.user), present(&self.key_id)) {
            (Some(user), _) => format!("{}/{}", self.org, user),
            (None, Some(key)) => format!("{}/key:{}", self.org, key),
            (None, None) => self.org.clone(),
        }
    }

    /// The model to price: the served model when the provider named one, else the requested one.
    pub fn billed_model(&self) -> &str {
        self.served_model.as_deref().unwrap_or(&self.requested_model)
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    #[test]
    fn partition_keys_treat_an_empty_user_or_key_as_none() {
        let mut event = crate::event::arbitrary::usage_event()
            .new_tree(&mut TestRunner::deterministic())
            .unwrap()
            .current();
        event.org = "acme".into();
        let key = |user: Option<&str>, key: Option<&str>| {
            let mut e = event.clone();
            e.user = user.map(String::from);
            e.key_id = key.map(String::from);
            e.partition_key()
        };
        assert_eq!(key(Some("ann"), Some("k1")), "acme/ann");
        assert_eq!(key(Some(""), Some("k1")), key(None, Some("k1")));
        assert_eq!(key(None, Some("k1")), "acme/key:k1");
        assert_eq!(key(Some(""), Some("")), "acme");
        assert_eq!(key(None, None), "acme");
    }
}

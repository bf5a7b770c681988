//! The ledger row: one priced usage event as stored in `usage_ledger`. Field order and types
//! match `schemas/clickhouse/0001_usage_ledger.sql`; the `clickhouse` crate validates them
//! against the table at insert time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};
use uuid::Uuid;

use crate::event::{Endpoint, Outcome, SourceKind, Tool, UsageEvent, UsageSource};
use crate::money::Usd;

/// `Enum8('ingress' = 1, 'collector' = 2, 'import' = 3)` (`import` since migration 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum ChSourceKind {
    Ingress = 1,
    Collector = 2,
    Import = 3,
}

/// `Enum8('reported' = 1, 'estimated' = 2, 'none' = 3)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum ChUsageSource {
    Reported = 1,
    Estimated = 2,
    None = 3,
}

/// `Enum8('ok' = 1, 'upstream_error' = 2, 'client_aborted' = 3, 'blocked' = 4)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum ChOutcome {
    Ok = 1,
    UpstreamError = 2,
    ClientAborted = 3,
    Blocked = 4,
}

/// `Enum8('priced' = 1, 'unpriced' = 2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum PricingStatus {
    Priced = 1,
    Unpriced = 2,
}

/// Cost per token class; `None` everywhere when the event is unpriced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostBreakdown {
    pub input: Usd,
    pub output: Usd,
    pub cache_read: Usd,
    pub cache_write_5m: Usd,
    pub cache_write_1h: Usd,
    pub reasoning: Usd,
}

impl CostBreakdown {
    pub fn total(&self) -> Usd {
        Usd(self.input.0
            + self.output.0
            + self.cache_read.0
            + self.cache_write_5m.0
            + self.cache_write_1h.0
            + self.reasoning.0)
    }
}

/// One row of `usage_ledger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct LedgerRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub occurred_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub received_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub processed_at: DateTime<Utc>,
    pub source_kind: ChSourceKind,
    pub source_name: String,
    pub org: String,
    pub team: String,
    pub user: String,
    pub key_id: String,
    pub provider: String,
    pub requested_model: String,
    pub served_model: String,
    pub model: String,
    pub endpoint: String,
    pub tool: String,
    pub session_id: Option<String>,
    pub request_id: String,
    pub upstream_request_id: Option<String>,
    pub project: String,
    pub tags: BTreeMap<String, String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_source: ChUsageSource,
    pub service_tier: String,
    pub inference_region: String,
    pub streaming: bool,
    pub outcome: ChOutcome,
    pub http_status: u16,
    pub latency_us: u64,
    pub ttfb_us: Option<u64>,
    pub pricing_status: PricingStatus,
    pub unpriced_reason: String,
    pub price_ref: String,
    #[serde(with = "crate::money::ch_decimal::option")]
    pub cost_input: Option<Usd>,
    #[serde(with = "crate::money::ch_decimal::option")]
    pub cost_output: Option<Usd>,
    #[serde(with = "crate::money::ch_decimal::option")]
    pub cost_cache_read: Option<Usd>,
    #[serde(with = "crate::money::ch_decimal::option")]
    pub cost_cache_write_5m: Option<Usd>,
    #[serde(with = "crate::money::ch_decimal::option")]
    pub cost_cache_write_1h: Option<Usd>,
    #[serde(with = "crate::money::ch_decimal::option")]
    pub cost_reasoning: Option<Usd>,
    #[serde(with = "crate::money::ch_decimal::option")]
    pub cost_total: Option<Usd>,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// Where a ledger row came from on Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// How an event was priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    Priced { price_ref: String, cost: CostBreakdown },
    Unpriced { reason: String },
}

fn clamp_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl LedgerRow {
    /// The ledger row of `event` priced as `pricing`, read at `position`.
    pub fn new(
        event: &UsageEvent,
        pricing: &Pricing,
        position: &KafkaPosition,
        processed_at: DateTime<Utc>,
    ) -> Self {
        Self::from_event(event.clone(), pricing.clone(), position.clone(), processed_at)
    }

    /// [`new`](Self::new), moving the event's strings into the row instead of copying them.
    pub fn from_event(
        event: UsageEvent,
        pricing: Pricing,
        position: KafkaPosition,
        processed_at: DateTime<Utc>,
    ) -> Self {
        let (status, reason, price_ref, cost) = match pricing {
            Pricing::Priced { price_ref, cost } => {
                (PricingStatus::Priced, String::new(), price_ref, Some(cost))
            }
            Pricing::Unpriced { reason } => (PricingStatus::Unpriced, reason, String::new(), None),
        };
        let model = event.billed_model().to_string();
        let t = event.tokens;
        LedgerRow {
            event_id: event.event_id,
            occurred_at: event.occurred_at,
            received_at: event.received_at,
            processed_at,
            source_kind: match event.source_kind {
                SourceKind::Ingress => ChSourceKind::Ingress,
                SourceKind::Collector => ChSourceKind::Collector,
                SourceKind::Import => ChSourceKind::Import,
            },
            source_name: event.source_name,
            org: event.org,
            team: event.team.unwrap_or_default(),
            user: event.user.unwrap_or_default(),
            key_id: event.key_id.unwrap_or_default(),
            provider: event.provider,
            requested_model: event.requested_model,
            served_model: event.served_model.unwrap_or_default(),
            model,
            endpoint: endpoint_name(event.endpoint).to_string(),
            tool: tool_name(event.tool).to_string(),
            session_id: event.session_id,
            request_id: event.request_id,
            upstream_request_id: event.upstream_request_id,
            project: event.project.unwrap_or_default(),
            tags: event.tags,
            input_tokens: clamp_u64(t.input),
            output_tokens: clamp_u64(t.output),
            cache_read_tokens: clamp_u64(t.cache_read),
            cache_write_5m_tokens: clamp_u64(t.cache_write_5m),
            cache_write_1h_tokens: clamp_u64(t.cache_write_1h),
            reasoning_tokens: clamp_u64(t.reasoning),
            usage_source: match event.usage_source {
                UsageSource::Reported => ChUsageSource::Reported,
                UsageSource::Estimated => ChUsageSource::Estimated,
                UsageSource::None => ChUsageSource::None,
            },
            service_tier: event.service_tier.unwrap_or_default(),
            inference_region: event.inference_region.unwrap_or_default(),
            streaming: event.streaming,
            outcome: match event.outcome {
                Outcome::Ok => ChOutcome::Ok,
                Outcome::UpstreamError => ChOutcome::UpstreamError,
                Outcome::ClientAborted => ChOutcome::ClientAborted,
                Outcome::Blocked => ChOutcome::Blocked,
            },
            http_status: u16::try_from(event.http_status).unwrap_or(0),
            latency_us: clamp_u64(event.latency_us),
            ttfb_us: event.ttfb_us.map(clamp_u64),
            pricing_status: status,
            unpriced_reason: reason,
            price_ref,
            cost_input: cost.map(|c| c.input),
            cost_output: cost.map(|c| c.output),
            cost_cache_read: cost.map(|c| c.cache_read),
            cost_cache_write_5m: cost.map(|c| c.cache_write_5m),
            cost_cache_write_1h: cost.map(|c| c.cache_write_1h),
            cost_reasoning: cost.map(|c| c.reasoning),
            cost_total: cost.map(|c| c.total()),
            kafka_topic: position.topic,
            kafka_partition: position.partition,
            kafka_offset: position.offset,
        }
    }
}

impl LedgerRow {
    /// Every token of the row, all classes together (what spend totals count as tokens).
    pub fn tokens_total(&self) -> u64 {
        self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.reasoning_tokens
    }

    /// The usage event this row records (for re-pricing). Unset optional attributions come back
    /// as `None`; everything that pricing reads is preserved exactly.
    pub fn to_event(&self) -> UsageEvent {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        UsageEvent {
            event_id: self.event_id,
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            source_kind: match self.source_kind {
                ChSourceKind::Ingress => SourceKind::Ingress,
                ChSourceKind::Collector => SourceKind::Collector,
                ChSourceKind::Import => SourceKind::Import,
            },
            source_name: self.source_name.clone(),
            org: self.org.clone(),
            team: opt(&self.team),
            user: opt(&self.user),
            key_id: opt(&self.key_id),
            provider: self.provider.clone(),
            requested_model: self.requested_model.clone(),
            served_model: opt(&self.served_model),
            endpoint: endpoint_from_name(&self.endpoint),
            tool: tool_from_name(&self.tool),
            session_id: self.session_id.clone(),
            request_id: self.request_id.clone(),
            upstream_request_id: self.upstream_request_id.clone(),
            project: opt(&self.project),
            tags: self.tags.clone(),
            tokens: crate::event::TokenCounts {
                input: i64::try_from(self.input_tokens).unwrap_or(i64::MAX),
                output: i64::try_from(self.output_tokens).unwrap_or(i64::MAX),
                cache_read: i64::try_from(self.cache_read_tokens).unwrap_or(i64::MAX),
                cache_write_5m: i64::try_from(self.cache_write_5m_tokens).unwrap_or(i64::MAX),
                cache_write_1h: i64::try_from(self.cache_write_1h_tokens).unwrap_or(i64::MAX),
                reasoning: i64::try_from(self.reasoning_tokens).unwrap_or(i64::MAX),
            },
            usage_source: match self.usage_source {
                ChUsageSource::Reported => UsageSource::Reported,
                ChUsageSource::Estimated => UsageSource::Estimated,
                ChUsageSource::None => UsageSource::None,
            },
            service_tier: opt(&self.service_tier),
            inference_region: opt(&self.inference_region),
            streaming: self.streaming,
            outcome: match self.outcome {
                ChOutcome::Ok => Outcome::Ok,
                ChOutcome::UpstreamError => Outcome::UpstreamError,
                ChOutcome::ClientAborted => Outcome::ClientAborted,
                ChOutcome::Blocked => Outcome::Blocked,
            },
            http_status: i32::from(self.http_status),
            latency_us: i64::try_from(self.latency_us).unwrap_or(i64::MAX),
            ttfb_us: self.ttfb_us.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        }
    }

    /// Where this row was read from on Kafka.
    pub fn position(&self) -> KafkaPosition {
        KafkaPosition {
            topic: self.kafka_topic.clone(),
            partition: self.kafka_partition,
            offset: self.kafka_offset,
        }
    }
}

fn endpoint_from_name(name: &str) -> Endpoint {
    [
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::ChatCompletions,
        Endpoint::Responses,
        Endpoint::Embeddings,
    ]
    .into_iter()
    .find(|e| endpoint_name(*e) == name)
    .unwrap_or(Endpoint::Other)
}

fn tool_from_name(name: &str) -> Tool {
    [Tool::ClaudeCode, Tool::Codex, Tool::Cursor, Tool::Sdk]
        .into_iter()
        .find(|t| tool_name(*t) == name)
        .unwrap_or(Tool::Other)
}

/// The ledger's name of an endpoint.
pub fn endpoint_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Messages => "messages",
        Endpoint::CountTokens => "count_tokens",
        Endpoint::ChatCompletions => "chat_completions",
        Endpoint::Responses => "responses",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Other => "other",
    }
}

/// The ledger's name of a tool.
pub fn tool_name(tool: Tool) -> &'static str {
    match tool {
        Tool::ClaudeCode => "claude-code",
        Tool::Codex => "codex",
        Tool::Cursor => "cursor",
        Tool::Sdk => "sdk",
        Tool::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::arbitrary;
    use proptest::prelude::*;

    proptest! {
        /// A row turned back into its event gives the same row: re-pricing sees what pricing saw.
        #[test]
        fn rows_and_events_convert_both_ways(mut event in arbitrary::usage_event()) {
            let fix = |v: &mut Option<String>| if v.as_deref() == Some("") { *v = None };
            for v in [&mut event.team, &mut event.user, &mut event.key_id, &mut event.served_model,
                      &mut event.project, &mut event.service_tier, &mut event.inference_region] {
                fix(v);
            }
            let t = &mut event.tokens;
            for count in [&mut t.input, &mut t.output, &mut t.cache_read, &mut t.cache_write_5m, &mut t.cache_write_1h, &mut t.reasoning] {
                *count = count.rem_euclid(i64::MAX);
            }
            event.http_status = event.http_status.rem_euclid(1000);
            event.latency_us = event.latency_us.rem_euclid(i64::MAX);
            event.ttfb_us = event.ttfb_us.map(|t| t.rem_euclid(i64::MAX));
            let position = KafkaPosition { topic: "t".into(), partition: 1, offset: 2 };
            let row = LedgerRow::new(&event, &Pricing::Unpriced { reason: "r".into() }, &position, event.received_at);
            prop_assert_eq!(row.to_event(), event);
            prop_assert_eq!(row.position(), position);
        }
    }
}

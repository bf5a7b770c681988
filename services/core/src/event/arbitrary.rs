//! Proptest strategies for every record type (feature `testing`), covering the edges: empty and
//! non-ASCII strings, missing optionals, extreme token counts and money at the wire scale.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::money::Usd;
use crate::time::from_micros;

/// Any timestamp from 1970 to 2200 at microsecond precision.
pub fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..7_258_118_400_000_000).prop_map(from_micros)
}

/// Any amount of money with up to 18 decimal places, within ±10^10 dollars.
pub fn usd() -> impl Strategy<Value = Usd> {
    (-(10i128.pow(28))..10i128.pow(28)).prop_map(|units| Usd::from_units(units).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9._-]{1,12}", "\\PC{0,16}"]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

pub fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

pub fn tokens() -> impl Strategy<Value = TokenCounts> {
    let count = prop_oneof![Just(0i64), 0i64..2_000_000, Just(i64::MAX)];
    (count.clone(), count.clone(), count.clone(), count.clone(), count.clone(), count).prop_map(
        |(input, output, cache_read, cache_write_5m, cache_write_1h, reasoning)| TokenCounts {
            input,
            output,
            cache_read,
            cache_write_5m,
            cache_write_1h,
            reasoning,
        },
    )
}

fn tags() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[a-z]{1,8}", text(), 0..4)
}

pub fn usage_event() -> impl Strategy<Value = UsageEvent> {
    let ids = (
        uuid(),
        timestamp(),
        timestamp(),
        prop_oneof![Just(SourceKind::Ingress), Just(SourceKind::Collector), Just(SourceKind::Import)],
        text(),
    );
    let who = (text(), opt_text(), opt_text(), opt_text(), text(), text(), opt_text());
    let what = (
        prop_oneof![
            Just(Endpoint::Messages),
            Just(Endpoint::CountTokens),
            Just(Endpoint::ChatCompletions),
            Just(Endpoint::Responses),
            Just(Endpoint::Embeddings),
            Just(Endpoint::Other)
        ],
        prop_oneof![
            Just(Tool::ClaudeCode),
            Just(Tool::Codex),
            Just(Tool::Cursor),
            Just(Tool::Sdk),
            Just(Tool::Other)
        ],
        opt_text(),
        text(),
        opt_text(),
        opt_text(),
        tags(),
    );
    let how = (
        tokens(),
        prop_oneof![Just(UsageSource::Reported), Just(UsageSource::Estimated), Just(UsageSource::None)],
        opt_text(),
        opt_text(),
        any::<bool>(),
        prop_oneof![
            Just(Outcome::Ok),
            Just(Outcome::UpstreamError),
            Just(Outcome::ClientAborted),
            Just(Outcome::Blocked)
        ],
        any::<i32>(),
        any::<i64>(),
        option::of(any::<i64>()),
    );
    (ids, who, what, how).prop_map(
        |(
            (event_id, occurred_at, received_at, source_kind, source_name),
            (org, team, user, key_id, provider, requested_model, served_model),
            (endpoint, tool, session_id, request_id, upstream_request_id, project, tags),
            (
                tokens,
                usage_source,
                service_tier,
                inference_region,
                streaming,
                outcome,
                http_status,
                latency_us,
                ttfb_us,
            ),
        )| UsageEvent {
            event_id,
            occurred_at,
            received_at,
            source_kind,
            source_name,
            org,
            team,
            user,
            key_id,
            provider,
            requested_model,
            served_model,
            endpoint,
            tool,
            session_id,
            request_id,
            upstream_request_id,
            project,
            tags,
            tokens,
            usage_source,
            service_tier,
            inference_region,
            streaming,
            outcome,
            http_status,
            latency_us,
            ttfb_us,
        },
    )
}

pub fn spend_aggregate() -> impl Strategy<Value = SpendAggregate> {
    let dims =
        (text(), text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text());
    let totals = (
        timestamp(),
        prop_oneof![Just(BucketWidth::Minute), Just(BucketWidth::Hour), Just(BucketWidth::Day)],
        usd(),
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        timestamp(),
    );
    let groups = vec(
        (any::<i32>(), any::<i64>(), any::<i32>()).prop_map(|(partition, next_offset, group_size)| {
            UsageGroup { partition, next_offset, group_size }
        }),
        0..3,
    );
    (dims, totals, groups).prop_map(
        |(
            (subject, org, team, user, key_id, project, model, tool, session_id),
            (
                bucket_start,
                bucket_width,
                cost_usd,
                requests,
                unpriced_requests,
                tokens_total,
                revision,
                computed_at,
            ),
            usage_positions,
        )| SpendAggregate {
            subject,
            org,
            team,
            user,
            key_id,
            project,
            model,
            tool,
            session_id,
            bucket_start,
            bucket_width,
            cost_usd,
            requests,
            unpriced_requests,
            tokens_total,
            revision,
            computed_at,
            usage_positions,
        },
    )
}

pub fn decision() -> impl Strategy<Value = Decision> {
    (
        (
            text(),
            prop_oneof![
                Just(DecisionState::Allow),
                Just(DecisionState::Warn),
                Just(DecisionState::Block),
                Just(DecisionState::Downgrade)
            ],
            text(),
            opt_text(),
            opt_text(),
            usd(),
        ),
        (
            option::of(usd()),
            option::of(timestamp()),
            option::of(timestamp()),
            opt_text(),
            timestamp(),
            any::<i64>(),
        ),
    )
        .prop_map(
            |(
                (subject, state, reason, budget_id, budget_name, spent_usd),
                (limit_usd, window_start, resets_at, downgrade_to, decided_at, revision),
            )| Decision {
                subject,
                state,
                reason,
                budget_id,
                budget_name,
                spent_usd,
                limit_usd,
                window_start,
                resets_at,
                downgrade_to,
                decided_at,
                revision,
            },
        )
}

fn budget() -> impl Strategy<Value = Budget> {
    let scope = (text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text()).prop_map(
        |(org, team, user, key_id, project, model, tool)| BudgetScope {
            org,
            team,
            user,
            key_id,
            project,
            model,
            tool,
        },
    );
    let window = (
        prop_oneof![
            Just(WindowPeriod::Hour),
            Just(WindowPeriod::Day),
            Just(WindowPeriod::Week),
            Just(WindowPeriod::Month),
            Just(WindowPeriod::Quarter),
            Just(WindowPeriod::Days)
        ],
        option::of(1i32..400),
        any::<bool>(),
        prop_oneof![Just("UTC".to_string()), Just("Europe/Berlin".to_string())],
    )
        .prop_map(|(period, days, rolling, time_zone)| BudgetWindow { period, days, rolling, time_zone });
    (
        (text(), text(), scope, window, usd()),
        (
            prop_oneof![
                Just(BudgetAction::Block),
                Just(BudgetAction::Downgrade),
                Just(BudgetAction::AlertOnly)
            ],
            opt_text(),
            vec(0i32..=200, 0..4),
            opt_text(),
            vec(text(), 0..3),
        ),
    )
        .prop_map(
            |(
                (id, name, scope, window, limit_usd),
                (action, downgrade_to, thresholds_pct, owner, notify),
            )| Budget {
                id,
                name,
                scope,
                window,
                limit_usd,
                action,
                downgrade_to,
                thresholds_pct,
                owner,
                notify,
            },
        )
}

fn virtual_key() -> impl Strategy<Value = VirtualKey> {
    (
        (text(), "[0-9a-f]{64}", "[a-z0-9-]{0,8}", text(), opt_text(), opt_text()),
        (
            vec(text(), 0..3),
            option::of(any::<i32>()),
            option::of(any::<i64>()),
            prop_oneof![Just(KeyStatus::Active), Just(KeyStatus::Revoked)],
            timestamp(),
            option::of(timestamp()),
        ),
    )
        .prop_map(
            |(
                (key_id, secret_hash, secret_prefix, org, team, user),
                (allowed_models, rpm_limit, tpm_limit, status, created_at, expires_at),
            )| VirtualKey {
                key_id,
                secret_hash,
                secret_prefix,
                org,
                team,
                user,
                allowed_models,
                rpm_limit,
                tpm_limit,
                status,
                created_at,
                expires_at,
            },
        )
}

fn directory_entry() -> impl Strategy<Value = DirectoryEntry> {
    (
        prop_oneof![Just(DirectoryKind::Org), Just(DirectoryKind::Team), Just(DirectoryKind::User)],
        text(),
        text(),
        text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(|(kind, id, display_name, org, team, email)| DirectoryEntry {
            kind,
            id,
            display_name,
            org,
            team,
            email,
        })
}

pub fn config_record() -> impl Strategy<Value = ConfigRecord> {
    let entity = prop_oneof![
        budget().prop_map(ConfigEntity::Budget),
        virtual_key().prop_map(ConfigEntity::VirtualKey),
        directory_entry().prop_map(ConfigEntity::DirectoryEntry),
    ];
    (timestamp(), opt_text(), entity).prop_map(|(updated_at, updated_by, entity)| ConfigRecord {
        updated_at,
        updated_by,
        entity,
    })
}

pub fn alert() -> impl Strategy<Value = Alert> {
    let kind = prop_oneof![
        Just(AlertKind::Threshold),
        Just(AlertKind::Forecast),
        Just(AlertKind::SpendSpike),
        Just(AlertKind::BurnRate),
        Just(AlertKind::RunawaySession),
        Just(AlertKind::ModelMixDrift),
        Just(AlertKind::Other),
    ];
    let severity =
        prop_oneof![Just(AlertSeverity::Info), Just(AlertSeverity::Warning), Just(AlertSeverity::Critical)];
    (
        (text(), kind, severity, text(), opt_text(), opt_text(), option::of(any::<i32>()), usd()),
        (
            option::of(usd()),
            timestamp(),
            option::of(timestamp()),
            opt_text(),
            vec(text(), 0..3),
            (text(), text()),
            timestamp(),
            any::<i64>(),
        ),
    )
        .prop_map(
            |(
                (alert_key, kind, severity, subject, budget_id, budget_name, threshold_pct, spent_usd),
                (limit_usd, period_start, resets_at, owner, notify, (title, message), raised_at, revision),
            )| Alert {
                alert_key,
                kind,
                severity,
                subject,
                budget_id,
                budget_name,
                threshold_pct,
                spent_usd,
                limit_usd,
                period_start,
                resets_at,
                owner,
                notify,
                title,
                message,
                raised_at,
                revision,
            },
        )
}

pub fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    let position = (any::<i32>(), any::<i64>())
        .prop_map(|(partition, next_offset)| PartitionPosition { partition, next_offset });
    (
        text(),
        text(),
        text(),
        any::<i32>(),
        vec(position, 0..4),
        any::<i64>(),
        any::<i64>(),
        timestamp(),
        any::<i64>(),
    )
        .prop_map(
            |(
                instance_id,
                group_id,
                spend_topic,
                partition_count,
                partitions,
                spend_revision,
                interval_ms,
                published_at,
                sequence,
            )| {
                Heartbeat {
                    instance_id,
                    group_id,
                    spend_topic,
                    partition_count,
                    partitions,
                    spend_revision,
                    interval_ms,
                    published_at,
                    sequence,
                }
            },
        )
}

pub fn headroom() -> impl Strategy<Value = Headroom> {
    (
        (text(), text(), text(), text(), option::of(any::<i32>()), any::<bool>(), text()),
        (usd(), usd(), usd(), timestamp(), timestamp(), option::of(timestamp())),
        (any::<i64>(), timestamp(), any::<i64>()),
        option::of(vec(
            (any::<i32>(), any::<i64>())
                .prop_map(|(partition, next_offset)| UsageWatermark { partition, next_offset }),
            0..3,
        )),
        option::of(vec(
            (text(), usd(), timestamp()).prop_map(|(replica, share_usd, report_at)| ReplicaShare {
                replica,
                share_usd,
                report_at,
            }),
            0..3,
        )),
    )
        .prop_map(
            |(
                (scope_key, budget_id, budget_name, period, days, rolling, time_zone),
                (limit_usd, spent_usd, remaining_usd, window_start, window_end, resets_at),
                (spend_revision, published_at, revision),
                usage_watermarks,
                shares,
            )| Headroom {
                scope_key,
                budget_id,
                budget_name,
                period,
                days,
                rolling,
                time_zone,
                limit_usd,
                spent_usd,
                remaining_usd,
                window_start,
                window_end,
                resets_at,
                spend_revision,
                usage_watermarks,
                shares,
                published_at,
                revision,
            },
        )
}

pub fn demand() -> impl Strategy<Value = Demand> {
    (
        (text(), text(), text(), usd(), usd(), usd(), usd(), any::<i64>(), timestamp()),
        (proptest::option::of(any::<i64>()), proptest::option::of(usd())),
    )
        .prop_map(
            |(
                (
                    replica,
                    scope_key,
                    budget_id,
                    open_usd,
                    settled_usd,
                    demand_usd,
                    unit_usd,
                    interval_ms,
                    published_at,
                ),
                (record_revision, used_usd),
            )| Demand {
                replica,
                scope_key,
                budget_id,
                open_usd,
                settled_usd,
                demand_usd,
                unit_usd,
                interval_ms,
                published_at,
                record_revision,
                used_usd,
            },
        )
}

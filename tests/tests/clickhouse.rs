//! ClickHouse through the project's HTTP front over chDB, with the `clickhouse` crate at its
//! defaults (LZ4, row validation): migrations apply once and are recorded, and ledger rows with
//! every column type round-trip exactly, money included.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use faregate_core::clickhouse::ledger::{CostBreakdown, KafkaPosition, Pricing};
use faregate_core::clickhouse::migrations::{self, MigrationError};
use faregate_core::clickhouse::{LedgerRow, Migration};
use faregate_core::event::{Outcome, UsageSource, arbitrary};
use faregate_core::money::Usd;
use faregate_tests::{clickhouse_config, hand_priced, samples, test_catalog};

#[tokio::test]
async fn migrations_apply_once_and_are_recorded() {
    let config = clickhouse_config();
    let all: Vec<u32> = migrations::all().unwrap().iter().map(|m| m.version).collect();

    let first = migrations::apply(&config).await.unwrap();
    assert_eq!(first.applied, all);
    assert!(first.already_applied.is_empty());
    let second = migrations::apply(&config).await.unwrap();
    assert!(second.applied.is_empty(), "second run applies nothing: {second:?}");
    assert_eq!(second.already_applied, all);

    let client = config.client();
    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
        .fetch_all()
        .await
        .unwrap();
    for table in ["decision_log", "faregate_schema_migrations", "usage_ledger"] {
        assert!(tables.iter().any(|t| t == table), "{table} missing from {tables:?}");
    }
    let recorded: u64 =
        client.query("SELECT count() FROM faregate_schema_migrations").fetch_one().await.unwrap();
    assert_eq!(recorded, all.len() as u64);
}

#[tokio::test]
async fn an_applied_migration_that_was_edited_is_refused() {
    let config = clickhouse_config();
    migrations::apply(&config).await.unwrap();
    let mut edited: Vec<Migration> = migrations::all().unwrap();
    edited[0].source.push_str("\n-- a harmless-looking edit\n");
    edited[0].checksum = "0".repeat(64);
    let error = migrations::apply_migrations(&config, &edited).await.unwrap_err();
    assert!(matches!(error, MigrationError::Edited { version: 1, .. }), "{error}");
}

fn priced(cents: i64) -> Pricing {
    let unit = Usd("0.000000000000000001".parse().unwrap());
    let cost = CostBreakdown {
        input: Usd(rust_decimal::Decimal::new(cents, 2)),
        output: Usd("0.000015".parse().unwrap()),
        cache_read: Usd("0.0000003".parse().unwrap()),
        cache_write_5m: Usd("0.00000375".parse().unwrap()),
        cache_write_1h: Usd("0.000006".parse().unwrap()),
        reasoning: unit,
    };
    Pricing::Priced { price_ref: "anthropic/claude-sonnet-4-5@2026-01-01".into(), cost }
}

#[tokio::test]
async fn ledger_rows_with_every_column_type_round_trip_exactly() {
    let config = clickhouse_config();
    migrations::apply(&config).await.unwrap();
    let client = config.client();
    let processed_at = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut rows: Vec<LedgerRow> = samples(arbitrary::usage_event(), 40)
        .into_iter()
        .enumerate()
        .map(|(i, mut event)| {
            // Token counts fit UInt64 and statuses fit UInt16 in the ledger.
            event.tokens.input = event.tokens.input.abs() % 1_000_000_000;
            event.http_status = 200 + (i as i32 % 300);
            event.latency_us = event.latency_us.abs();
            event.ttfb_us = event.ttfb_us.map(i64::abs);
            if i == 0 {
                event.tags =
                    BTreeMap::from([("team".into(), "Zürich ☕".into()), ("env".into(), String::new())]);
                event.usage_source = UsageSource::Estimated;
                event.outcome = Outcome::ClientAborted;
            }
            let pricing = if i % 3 == 0 {
                Pricing::Unpriced { reason: format!("no price for model {}", event.requested_model) }
            } else {
                priced(i as i64 * 7)
            };
            let position = KafkaPosition {
                topic: "faregate.usage.v1".into(),
                partition: (i % 3) as i32,
                offset: i as i64,
            };
            LedgerRow::new(&event, &pricing, &position, processed_at)
        })
        .collect();

    let mut insert = client.insert::<LedgerRow>("usage_ledger").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let mut back: Vec<LedgerRow> =
        client.query("SELECT ?fields FROM usage_ledger").fetch_all().await.unwrap();
    // ClickHouse orders UUIDs by their two 64-bit halves, not bytewise: sort both sides here.
    back.sort_by_key(|r| r.event_id);
    rows.sort_by_key(|r| r.event_id);
    assert_eq!(back.len(), rows.len());
    for (read, written) in back.iter_mut().zip(&rows) {
        assert_eq!(read, written);
    }

    // ClickHouse's own decimal sum equals the exact Rust sum; unpriced rows count as unknown, not $0.
    let expected: rust_decimal::Decimal = rows.iter().filter_map(|r| r.cost_total).map(|c| c.0).sum();
    let (sum, unpriced): (String, u64) = client
        .query(
            "SELECT ifNull(toString(sum(cost_total)), 'none'), countIf(cost_total IS NULL) FROM usage_ledger",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(sum.parse::<rust_decimal::Decimal>().unwrap(), expected);
    assert_eq!(unpriced, rows.iter().filter(|r| r.cost_total.is_none()).count() as u64);
}

#[tokio::test]
async fn errors_from_the_engine_reach_the_client_with_their_code() {
    let config = clickhouse_config();
    let error =
        config.server_client().query("SELECT * FROM no_such_db.no_such_table").execute().await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("UNKNOWN_DATABASE") || text.contains("Code: 81"), "{text}");
}

#[tokio::test]
async fn rollups_and_analyst_views_agree_with_the_ledger() {
    let config = clickhouse_config();
    migrations::apply(&config).await.unwrap();
    let client = config.client();
    // Two days ago at 22:30, so the rows span midnight and stay within the minute rollups' TTL.
    let first_day = (Utc::now() - chrono::TimeDelta::days(2)).date_naive();
    let start = first_day.and_hms_opt(22, 30, 0).unwrap().and_utc();
    let teams = ["infra", "web", "data"];
    let rows: Vec<LedgerRow> = samples(arbitrary::usage_event(), 90)
        .into_iter()
        .enumerate()
        .map(|(i, mut event)| {
            event.org = "acme".into();
            event.team = Some(teams[i % 3].into());
            event.occurred_at = start + chrono::TimeDelta::minutes(i as i64 * 3);
            event.tokens.input = event.tokens.input.rem_euclid(1_000_000);
            event.tokens.output = event.tokens.output.rem_euclid(100_000);
            event.tokens.cache_read = event.tokens.cache_read.rem_euclid(100_000);
            event.tokens.cache_write_5m = 0;
            event.tokens.cache_write_1h = 0;
            event.tokens.reasoning = 0;
            event.http_status = 200;
            event.latency_us = 1;
            event.ttfb_us = None;
            let pricing = if i % 10 == 0 {
                Pricing::Unpriced { reason: "no price for model x".into() }
            } else {
                priced(i as i64)
            };
            let position = KafkaPosition { topic: "usage".into(), partition: 0, offset: i as i64 };
            LedgerRow::new(&event, &pricing, &position, Utc::now())
        })
        .collect();
    let mut insert = client.insert::<LedgerRow>("usage_ledger").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let exact = |team: &str| -> rust_decimal::Decimal {
        rows.iter().filter(|r| r.team == team).filter_map(|r| r.cost_total).map(|c| c.0).sum()
    };
    #[derive(Debug, serde::Deserialize, clickhouse::Row)]
    struct ByTeam {
        value: String,
        requests: u64,
        cost: String,
    }
    let window_end = first_day + chrono::TimeDelta::days(2);
    let by_team: Vec<ByTeam> = client
        .query(&format!(
            "SELECT value, requests, toString(cost_usd) AS cost \
             FROM spend_by(dimension = 'team', from = '{first_day}', to = '{window_end}') ORDER BY value"
        ))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(by_team.len(), 3);
    for row in &by_team {
        assert_eq!(row.requests, 30);
        assert_eq!(row.cost.parse::<rust_decimal::Decimal>().unwrap(), exact(&row.value), "{row:?}");
    }

    let total: rust_decimal::Decimal = rows.iter().filter_map(|r| r.cost_total).map(|c| c.0).sum();
    for table in ["usage_rollup_minute", "usage_rollup_hour", "usage_rollup_day", "spend_daily"] {
        let column = if table == "spend_daily" { "cost_usd" } else { "cost_total" };
        let (sum, requests): (String, u64) = client
            .query(&format!("SELECT toString(sum({column})), sum(requests) FROM {table}"))
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(sum.parse::<rust_decimal::Decimal>().unwrap(), total, "{table}");
        assert_eq!(requests, 90, "{table}");
    }
    let days: u64 = client.query("SELECT uniqExact(day) FROM spend_daily").fetch_one().await.unwrap();
    assert_eq!(days, 2, "the rows span midnight");

    let unpriced: u64 = client.query("SELECT sum(events) FROM unpriced_events").fetch_one().await.unwrap();
    assert_eq!(unpriced, 9);
}

#[tokio::test]
async fn reprice_corrects_the_ledger_and_every_rollup_and_is_idempotent() {
    let config = clickhouse_config();
    migrations::apply(&config).await.unwrap();
    let client = config.client();
    // Within the minute rollups' 35-day TTL, which would otherwise drop the rows at once.
    let day = (Utc::now() - chrono::TimeDelta::days(3)).date_naive();
    let start = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let events: Vec<faregate_core::event::UsageEvent> = samples(arbitrary::usage_event(), 30)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.org = "acme".into();
            e.provider = "anthropic".into();
            e.requested_model = "repriced-model".into();
            e.served_model = None;
            e.service_tier = None;
            e.inference_region = None;
            e.occurred_at = start + chrono::TimeDelta::minutes(i as i64 * 47);
            let t = &mut e.tokens;
            t.input = t.input.rem_euclid(100_000);
            t.output = t.output.rem_euclid(10_000);
            t.cache_read = t.cache_read.rem_euclid(10_000);
            t.cache_write_5m = t.cache_write_5m.rem_euclid(1_000);
            t.cache_write_1h = t.cache_write_1h.rem_euclid(1_000);
            t.reasoning = t.reasoning.rem_euclid(1_000);
            e.http_status = 200;
            e.latency_us = 1;
            e.ttfb_us = None;
            e
        })
        .collect();
    // Ingested while the catalog did not know the model.
    let mut insert = client.insert::<LedgerRow>("usage_ledger").await.unwrap();
    for (i, event) in events.iter().enumerate() {
        let position = KafkaPosition { topic: "usage".into(), partition: 0, offset: i as i64 };
        let unpriced = Pricing::Unpriced { reason: "unknown model repriced-model".into() };
        insert.write(&LedgerRow::new(event, &unpriced, &position, start)).await.unwrap();
    }
    insert.end().await.unwrap();

    let catalog = faregate_pricing::PriceCatalog::from_sources([(
        "anthropic.toml",
        test_catalog("repriced-model").as_str(),
    )])
    .unwrap();
    let oracle: rust_decimal::Decimal = events.iter().map(|e| hand_priced(&e.tokens)).sum();

    let dry = faregate_processor::reprice::reprice(&client, &catalog, day, day.succ_opt().unwrap(), true)
        .await
        .unwrap();
    assert_eq!((dry.rows, dry.newly_priced, dry.unpriced), (30, 30, 0));
    let unchanged: u64 = client
        .query("SELECT count() FROM usage_ledger FINAL WHERE pricing_status = 'unpriced'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(unchanged, 30, "a dry run changes nothing");

    for run in 0..2 {
        let report =
            faregate_processor::reprice::reprice(&client, &catalog, day, day.succ_opt().unwrap(), false)
                .await
                .unwrap();
        assert_eq!(report.rows, 30);
        assert_eq!(report.cost_after.0, oracle);
        assert_eq!(report.changed, if run == 0 { 30 } else { 0 }, "run {run}");
        let (rows, ledger_sum): (u64, String) = client
            .query("SELECT count(), toString(sum(assumeNotNull(cost_total))) FROM usage_ledger FINAL")
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(rows, 30);
        assert_eq!(ledger_sum.parse::<rust_decimal::Decimal>().unwrap(), oracle);
        for table in faregate_processor::reprice::ROLLUPS.map(|r| r.table) {
            let (sum, requests, unpriced): (String, u64, u64) = client
                .query(&format!(
                    "SELECT toString(sum(cost_total)), sum(requests), sum(unpriced_requests) FROM {table}"
                ))
                .fetch_one()
                .await
                .unwrap();
            assert_eq!(sum.parse::<rust_decimal::Decimal>().unwrap(), oracle, "{table} after run {run}");
            assert_eq!((requests, unpriced), (30, 0), "{table} after run {run}");
        }
        let unpriced_view: u64 =
            client.query("SELECT count() FROM unpriced_events").fetch_one().await.unwrap();
        assert_eq!(unpriced_view, 0);
    }
}

//! The ClickHouse ledger's spend totals (one `GROUPING SETS` read of hourly and session totals)
//! against the in-memory ledger's, computed independently row by row, on the same rows: several
//! orgs, subjects, hours and sessions (also none and empty), priced and unpriced rows, and rows
//! written twice (as a replay would) that `FINAL` must count once. Needs the local stack's
//! ClickHouse (`FAREGATE_TEST_CLICKHOUSE_URL`).

use std::collections::BTreeSet;

use chrono::{TimeDelta, Utc};
use faregate_core::clickhouse::ledger::{CostBreakdown, KafkaPosition, Pricing};
use faregate_core::clickhouse::{ClickHouseConfig, LedgerRow, migrations};
use faregate_core::event::arbitrary;
use faregate_core::money::Usd;
use faregate_processor::aggregate::BucketKey;
use faregate_processor::session::SessionKey;
use faregate_processor::{ClickHouseLedger, Ledger, MemoryLedger, SpendTotals};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rust_decimal::Decimal;

fn rows(n: usize) -> Vec<LedgerRow> {
    let mut runner = TestRunner::deterministic();
    let strategy = arbitrary::usage_event();
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let mut e = strategy.new_tree(&mut runner).unwrap().current();
            e.event_id = uuid::Uuid::now_v7();
            e.org = format!("org-{}", i % 3);
            e.team = Some(format!("team-{}", i % 2));
            e.user = Some(format!("user-{}", i % 4));
            e.project = None;
            e.session_id = [None, Some(String::new()), Some(format!("s-{}", i % 5))][i % 3].clone();
            // Over three hours, a few rows per minute.
            e.occurred_at = now - TimeDelta::seconds(37 * i as i64);
            e.received_at = e.occurred_at;
            e.tokens.input = e.tokens.input.rem_euclid(100_000);
            e.tokens.output = e.tokens.output.rem_euclid(10_000);
            e.tokens.cache_read = e.tokens.cache_read.rem_euclid(1_000);
            e.tokens.cache_write_5m = 0;
            e.tokens.cache_write_1h = 0;
            e.tokens.reasoning = e.tokens.reasoning.rem_euclid(1_000);
            let pricing = match i % 4 {
                3 => Pricing::Unpriced { reason: "unknown model".into() },
                _ => Pricing::Priced {
                    price_ref: "test@1".into(),
                    cost: CostBreakdown {
                        input: Usd(Decimal::new(e.tokens.input, 0) * Decimal::new(3, 6)),
                        output: Usd(Decimal::new(e.tokens.output, 0) * Decimal::new(15, 6)),
                        cache_read: Usd(Decimal::new(e.tokens.cache_read, 0) * Decimal::new(3, 7)),
                        reasoning: Usd(Decimal::new(1, 18)),
                        ..CostBreakdown::default()
                    },
                },
            };
            let position = KafkaPosition { topic: "usage".into(), partition: 0, offset: i as i64 };
            LedgerRow::new(&e, &pricing, &position, e.received_at)
        })
        .collect()
}

fn sorted(mut totals: SpendTotals) -> SpendTotals {
    totals.hourly.sort_by(|a, b| a.key.cmp(&b.key));
    totals.sessions.sort_by(|a, b| a.key.cmp(&b.key));
    totals
}

/// A fresh database on the local stack's ClickHouse, its schema applied.
async fn database(prefix: &str) -> ClickHouseConfig {
    let url = std::env::var("FAREGATE_TEST_CLICKHOUSE_URL")
        .expect("FAREGATE_TEST_CLICKHOUSE_URL is not set: run the tests with deploy/local/test");
    let config = ClickHouseConfig {
        url,
        database: format!("{prefix}{}", uuid::Uuid::now_v7().simple()),
        ..ClickHouseConfig::default()
    };
    migrations::apply(&config).await.unwrap();
    config
}

#[tokio::test]
async fn clickhouse_totals_equal_the_in_memory_ledgers() {
    let config = database("test_ledger_").await;
    let clickhouse = ClickHouseLedger::new(config.client());
    let memory = MemoryLedger::default();

    let rows = rows(300);
    for ledger in [&clickhouse as &dyn Ledger, &memory] {
        ledger.insert(&rows[..200]).await.unwrap();
        // A replay writes some rows again: counted once.
        ledger.insert(&rows[150..]).await.unwrap();
    }

    // The keys of one batch: a few rows from each org, hour and session.
    let batch: Vec<&LedgerRow> = rows.iter().step_by(7).collect();
    let keys: Vec<BucketKey> =
        batch.iter().map(|r| BucketKey::of(r)).collect::<BTreeSet<_>>().into_iter().collect();
    let sessions: Vec<SessionKey> =
        batch.iter().filter_map(|r| SessionKey::of(r)).collect::<BTreeSet<_>>().into_iter().collect();
    assert!(keys.len() > 3 && sessions.len() > 3, "the sample spans subjects and sessions");

    let expected = sorted(memory.spend_totals(&keys, &sessions).await.unwrap());
    let actual = sorted(clickhouse.spend_totals(&keys, &sessions).await.unwrap());
    assert_eq!(actual.hourly.len(), keys.len());
    assert_eq!(actual.sessions.len(), sessions.len());
    assert_eq!(actual, expected);
    let requests: i64 = actual.hourly.iter().map(|t| t.requests).sum();
    assert!(requests > keys.len() as i64, "the totals count more than the batch's own rows");

    // Hourly only, sessions only, nothing.
    let hourly = sorted(clickhouse.spend_totals(&keys, &[]).await.unwrap());
    assert_eq!(hourly.hourly, expected.hourly);
    assert!(hourly.sessions.is_empty());
    assert_eq!(sorted(clickhouse.spend_totals(&[], &sessions).await.unwrap()).sessions, expected.sessions);
    assert_eq!(clickhouse.spend_totals(&[], &[]).await.unwrap(), SpendTotals::default());
    let mut hourly_only = clickhouse.totals(&keys).await.unwrap();
    hourly_only.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(hourly_only, expected.hourly);

    // Everything since a time, hours and session minutes from different starts.
    let now = Utc::now();
    let (hours_since, sessions_since) = (now - TimeDelta::minutes(100), now - TimeDelta::minutes(40));
    let expected = sorted(memory.spend_totals_since(hours_since, sessions_since).await.unwrap());
    let actual = sorted(clickhouse.spend_totals_since(hours_since, sessions_since).await.unwrap());
    assert!(!actual.hourly.is_empty() && !actual.sessions.is_empty());
    assert_eq!(actual, expected);
    let cost: Decimal = actual.hourly.iter().map(|t| t.cost.0).sum();
    assert!(cost > Decimal::ZERO);
}

/// Every rollup table as sorted lines of (bucket, dimensions, sums).
async fn rollups(client: &clickhouse::Client) -> Vec<Vec<String>> {
    let mut tables = Vec::new();
    for rollup in faregate_processor::reprice::ROLLUPS {
        let sql = format!(
            "SELECT toString(tuple(bucket, org, team, user, key_id, project, model, tool, provider, \
             sum(requests), sum(unpriced_requests), sum(input_tokens), sum(output_tokens), \
             sum(cache_read_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), \
             sum(reasoning_tokens), sum(cost_input), sum(cost_output), sum(cost_cache_read), \
             sum(cost_cache_write_5m), sum(cost_cache_write_1h), sum(cost_reasoning), sum(cost_total))) AS line \
             FROM {} GROUP BY bucket, org, team, user, key_id, project, model, tool, provider ORDER BY line",
            rollup.table
        );
        tables.push(client.query(&sql).fetch_all::<String>().await.unwrap());
    }
    tables
}

/// A write that reached the ledger and not every view (and one that reached the views twice)
/// leaves rollups unequal to the ledger; `repair_rollups` over the affected rows restores every
/// bucket of every table to what the views made of a clean write, touching no other subject.
#[tokio::test]
async fn repairing_the_rollups_restores_what_the_views_made() {
    let config = database("test_repair_").await;
    let client = config.client();
    let ledger = ClickHouseLedger::new(client.clone());
    let rows = rows(240);
    ledger.insert(&rows).await.unwrap();
    let clean = rollups(&client).await;
    assert!(clean.iter().all(|lines| !lines.is_empty()));

    // user-0's rows reached the views twice (the ledger keeps one version); user-1's minute
    // buckets were never written.
    let doubled: Vec<LedgerRow> = rows.iter().filter(|r| r.user == "user-0").cloned().collect();
    ledger.insert(&doubled).await.unwrap();
    client.query("DELETE FROM usage_rollup_minute WHERE user = 'user-1'").execute().await.unwrap();
    let broken = rollups(&client).await;
    assert_ne!(broken[0], clean[0]);
    assert_ne!(broken[2], clean[2]);

    let affected: Vec<LedgerRow> =
        rows.iter().filter(|r| r.user == "user-0" || r.user == "user-1").cloned().collect();
    ledger.repair_rollups(&affected).await.unwrap();
    assert_eq!(rollups(&client).await, clean);
    // Idempotent.
    ledger.repair_rollups(&affected[..affected.len() / 2]).await.unwrap();
    assert_eq!(rollups(&client).await, clean);
}

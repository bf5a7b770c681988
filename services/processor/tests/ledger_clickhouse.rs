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

#[tokio::test]
async fn clickhouse_totals_equal_the_in_memory_ledgers() {
    let url = std::env::var("FAREGATE_TEST_CLICKHOUSE_URL")
        .expect("FAREGATE_TEST_CLICKHOUSE_URL is not set: run the tests with deploy/local/test");
    let config = ClickHouseConfig {
        url,
        database: format!("test_ledger_{}", uuid::Uuid::now_v7().simple()),
        ..ClickHouseConfig::default()
    };
    migrations::apply(&config).await.unwrap();
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

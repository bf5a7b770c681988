//! The fault test under load: the processor runs as its own process (`faregate processor`)
//! while events stream in, and it is killed with SIGKILL twice, the broker is killed and
//! restarted, and the ClickHouse front is stopped for a while. Afterwards the ledger holds each
//! event exactly once and its exact cost sum equals an oracle computed from the produced events
//! with the catalog's prices written out by hand.
//!
//! Faults are triggered by progress (rows in the ledger, events produced), not by timers.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use faregate_core::avro::SchemaFamily;
use faregate_core::clickhouse::{ClickHouseConfig, migrations};
use faregate_core::event::{UsageEvent, arbitrary};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};
use faregate_tests::{
    PrivateBroker, PrivateClickHouse, hand_priced, kafka_config_for, samples, test_catalog, unique,
};
use rust_decimal::Decimal;

const EVENTS: usize = 2_000;

fn events() -> Vec<UsageEvent> {
    let users = ["ana", "bo", "chen", "dee"];
    samples(arbitrary::usage_event(), EVENTS)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.event_id = uuid::Uuid::now_v7();
            e.org = "acme".into();
            e.user = Some(users[i % users.len()].into());
            e.provider = "anthropic".into();
            e.requested_model = "fault-model".into();
            e.served_model = None;
            e.service_tier = None;
            e.inference_region = None;
            e.http_status = 200;
            e.latency_us = 1_000;
            e.ttfb_us = None;
            e.received_at = chrono::Utc::now();
            e.occurred_at = e.received_at - chrono::TimeDelta::seconds(i as i64);
            let t = &mut e.tokens;
            t.input = t.input.rem_euclid(300_000);
            t.output = t.output.rem_euclid(30_000);
            t.cache_read = t.cache_read.rem_euclid(100_000);
            t.cache_write_5m = t.cache_write_5m.rem_euclid(10_000);
            t.cache_write_1h = t.cache_write_1h.rem_euclid(10_000);
            t.reasoning = t.reasoning.rem_euclid(5_000);
            e
        })
        .collect()
}

/// A temporary directory that is kept (and named on stderr) when the test fails.
struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("present until drop").path()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("processor log kept in {}", dir.keep().display());
        }
    }
}

struct Processor {
    child: Child,
}

impl Processor {
    fn start(
        kafka: &KafkaConfig,
        clickhouse: &ClickHouseConfig,
        prices: &std::path::Path,
        group: &str,
        log: &std::path::Path,
    ) -> Processor {
        let t = &kafka.topics;
        let child = Command::new(env!("CARGO_BIN_EXE_faregate"))
            .arg("processor")
            .env("FAREGATE__KAFKA__BROKERS", &kafka.brokers)
            .env("FAREGATE__KAFKA__TOPICS__USAGE", &t.usage)
            .env("FAREGATE__KAFKA__TOPICS__SPEND", &t.spend)
            .env("FAREGATE__KAFKA__TOPICS__DECISIONS", &t.decisions)
            .env("FAREGATE__KAFKA__TOPICS__CONFIG", &t.config)
            .env("FAREGATE__KAFKA__TOPICS__DLQ", &t.dlq)
            .env("FAREGATE__CLICKHOUSE__URL", &clickhouse.url)
            .env("FAREGATE__CLICKHOUSE__DATABASE", &clickhouse.database)
            .env("FAREGATE__PROCESSOR__GROUP_ID", group)
            .env("FAREGATE__PROCESSOR__INSTANCE_ID", "processor-0")
            .env("FAREGATE__PROCESSOR__PRICES_DIR", prices)
            .env("FAREGATE__PROCESSOR__BATCH_MAX_ROWS", "100")
            .env("FAREGATE__PROCESSOR__BATCH_MAX_WAIT_MS", "50")
            .env("FAREGATE__PROCESSOR__RETRY_MAX_MS", "500")
            .env("FAREGATE__TELEMETRY__METRICS_LISTEN", "127.0.0.1:0")
            .env("FAREGATE__TELEMETRY__LOG_FILTER", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
            .spawn()
            .expect("faregate processor starts");
        Processor { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn count(client: &clickhouse::Client) -> Option<u64> {
    client.query("SELECT count() FROM usage_ledger").fetch_one().await.ok()
}

async fn until_rows(client: &clickhouse::Client, at_least: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let now = count(client).await.unwrap_or(0);
        if now >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ledger stalled at {now} rows (waiting for {at_least})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_or_doubled_across_kills_and_outages() {
    let mut broker = PrivateBroker::start();
    let mut front = PrivateClickHouse::start();
    let kafka = kafka_config_for(&broker.brokers());
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let clickhouse =
        ClickHouseConfig { url: front.url(), database: unique("faults"), ..ClickHouseConfig::default() };
    migrations::apply(&clickhouse).await.unwrap();
    let client = clickhouse.client();
    let prices = tempfile::tempdir().unwrap();
    std::fs::write(prices.path().join("anthropic.toml"), test_catalog("fault-model")).unwrap();
    let group = unique("processor");
    let logs = KeptOnFailure(Some(tempfile::tempdir().unwrap()));
    let log = logs.path().join("processor.log");

    let events = Arc::new(events());
    let produced = Arc::new(AtomicUsize::new(0));
    let producer_task = {
        let (kafka, events, produced) = (kafka.clone(), events.clone(), produced.clone());
        tokio::spawn(async move {
            let producer: RecordProducer<UsageEvent> =
                RecordProducer::new(&kafka, "test", SchemaFamily::UsageEvent, &kafka.topics.usage)
                    .await
                    .unwrap();
            for event in events.iter() {
                // A send that fails (the broker is down) is sent again: the same event id at
                // another offset, which the processor must count once.
                while producer.send(&event.partition_key(), event).await.is_err() {}
                produced.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let mut processor = Processor::start(&kafka, &clickhouse, prices.path(), &group, &log);
    until_rows(&client, 300).await;
    processor.kill();
    processor = Processor::start(&kafka, &clickhouse, prices.path(), &group, &log);

    until_rows(&client, 700).await;
    broker.restart();

    until_rows(&client, 1_100).await;
    let before = produced.load(Ordering::SeqCst);
    front.stop();
    let target = (before + 200).min(EVENTS);
    while produced.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    front.resume();

    until_rows(&client, 1_500).await;
    processor.kill();
    processor = Processor::start(&kafka, &clickhouse, prices.path(), &group, &log);

    producer_task.await.unwrap();
    until_rows(&client, EVENTS as u64).await;
    processor.kill();

    let (rows, distinct, sum): (u64, u64, String) = client
        .query(
            "SELECT count(), uniqExact(event_id), toString(sum(assumeNotNull(cost_total))) FROM usage_ledger",
        )
        .fetch_one()
        .await
        .unwrap();
    let oracle: Decimal = events.iter().map(|e| hand_priced(&e.tokens)).sum();
    assert_eq!(distinct, EVENTS as u64, "every event is in the ledger");
    assert_eq!(rows, EVENTS as u64, "no event was written twice");
    assert_eq!(sum.parse::<Decimal>().unwrap(), oracle, "the exact cost sum equals the oracle");
    let unpriced: u64 = client
        .query("SELECT count() FROM usage_ledger WHERE pricing_status = 'unpriced'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(unpriced, 0);
}

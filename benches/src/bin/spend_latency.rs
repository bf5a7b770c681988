//! Event to spend aggregate: how soon after a usage event reaches the usage topic the processor
//! has written it to the ledger and published the absolute total it changed on the spend topic,
//! under light steady load (one event in flight), for several `processor.batch_max_wait_ms`
//! values. The baseline, interleaved sample by sample in the same run, is a plain produce ->
//! consume hop of a message of the same size on the same broker: the floor of any one Kafka hop.
//!
//! Every event has a user of its own, so the aggregate that carries it is recognisable. Runs
//! against the broker and ClickHouse in `FAREGATE_TEST_KAFKA_BROKERS` / `FAREGATE_TEST_CLICKHOUSE_URL`
//! (the local stack), with fresh topics and a database per series.
//!
//! ```sh
//! cargo build --release -p faregate-benches --bin spend-latency
//! FAREGATE_TEST_KAFKA_BROKERS=127.0.0.1:P FAREGATE_TEST_CLICKHOUSE_URL=http://127.0.0.1:Q \
//!   target/release/spend-latency [SAMPLES]
//! # FAREGATE_SPEND_WAITS (batch waits in ms, default "200,50,20"), FAREGATE_BENCH_FETCH_WAIT_MS (10)
//! ```

// Latencies and ratios are measurements printed for people; no money is computed here.
#![allow(clippy::float_arithmetic)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::clickhouse::{ClickHouseConfig, migrations};
use faregate_core::event::{BucketWidth, SpendAggregate, UsageEvent};
use faregate_processor::{ClickHouseLedger, Pipeline, ProcessorConfig};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const WARMUP: usize = 10;
/// Longest wait for one sample (the first includes the processor joining its group).
const SAMPLE_DEADLINE: Duration = Duration::from_secs(60);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set: run against the local stack (deploy/local/up) and export it");
        std::process::exit(2)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Series {
    wait_ms: u64,
    event: Vec<Duration>,
    hop: Vec<Duration>,
}

async fn series(
    brokers: &str,
    clickhouse_url: &str,
    fetch_wait_ms: u32,
    wait_ms: u64,
    samples: usize,
) -> Series {
    let (kafka, echo) = faregate_benches::fresh_topics(brokers, "lat", fetch_wait_ms).await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let clickhouse = ClickHouseConfig {
        url: clickhouse_url.into(),
        database: format!("lat_{suffix}"),
        ..ClickHouseConfig::default()
    };
    migrations::apply(&clickhouse).await.expect("migrations");

    let config = ProcessorConfig {
        group_id: format!("lat-{suffix}"),
        batch_max_wait_ms: wait_ms,
        ..ProcessorConfig::default()
    };
    let ledger = Arc::new(ClickHouseLedger::new(clickhouse.client()));
    let pricer = Arc::new(faregate_pricing::PriceCatalog::embedded().expect("the embedded catalog"));
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::new(config, kafka.clone(), ledger, pricer, Arc::new(AtomicBool::new(false)));
    let processor = tokio::spawn(pipeline.run(shutdown.clone()));

    let usage_codec: AvroCodec<UsageEvent> =
        AvroCodec::new(SchemaFamily::UsageEvent, &kafka.topics.usage, kafka.schema_registry.registry())
            .await
            .expect("usage codec");
    let spend_codec: AvroCodec<SpendAggregate> =
        AvroCodec::new(SchemaFamily::SpendAggregate, &kafka.topics.spend, kafka.schema_registry.registry())
            .await
            .expect("spend codec");
    let producer: FutureProducer = kafka.producer_config("bench").create().expect("a producer");
    let spend = faregate_benches::consumer_at_start(&kafka, &kafka.topics.spend);
    let echoes = faregate_benches::consumer_at_start(&kafka, &echo);
    let template = faregate_benches::usage_events(1).remove(0);

    let mut result = Series { wait_ms, event: Vec::new(), hop: Vec::new() };
    for i in 0..WARMUP + samples {
        let mut event = template.clone();
        event.event_id = uuid::Uuid::now_v7();
        event.user = Some(format!("lat-{i}"));
        event.occurred_at = chrono::Utc::now();
        event.received_at = event.occurred_at;
        let payload = usage_codec.encode(&event).expect("encode");

        // Baseline: the same bytes through one Kafka hop.
        let key = format!("echo-{i}");
        let started = Instant::now();
        producer
            .send(FutureRecord::to(&echo).key(&key).payload(&payload), Duration::from_secs(10))
            .await
            .expect("echo produced");
        tokio::time::timeout(SAMPLE_DEADLINE, async {
            loop {
                let message = echoes.recv().await.expect("echo consumed");
                if message.key() == Some(key.as_bytes()) {
                    return;
                }
            }
        })
        .await
        .expect("the echo came back");
        let hop = started.elapsed();

        // The event, until the hourly total that carries it is on the spend topic.
        let started = Instant::now();
        producer
            .send(
                FutureRecord::to(&kafka.topics.usage).key(&event.partition_key()).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("event produced");
        let user = event.user.clone();
        tokio::time::timeout(SAMPLE_DEADLINE, async {
            loop {
                let message = spend.recv().await.expect("spend consumed");
                let Some(bytes) = message.payload() else { continue };
                let aggregate = spend_codec.decode(bytes).await.expect("a spend aggregate");
                if aggregate.bucket_width == BucketWidth::Hour && aggregate.user == user {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no spend aggregate for sample {i} within {SAMPLE_DEADLINE:?}"));
        let event_time = started.elapsed();
        if i >= WARMUP {
            result.hop.push(hop);
            result.event.push(event_time);
        }
    }
    shutdown.cancel();
    let _ = processor.await;
    result.hop.sort();
    result.event.sort();
    result
}

#[tokio::main]
async fn main() {
    // RUST_LOG=faregate_processor=debug shows each flush's stages (duplicate check, insert, totals).
    let _logs = std::env::var_os("RUST_LOG").map(|_| {
        faregate_core::telemetry::init(&Default::default(), "spend-latency").expect("logging starts")
    });
    let brokers = env("FAREGATE_TEST_KAFKA_BROKERS");
    let clickhouse_url = env("FAREGATE_TEST_CLICKHOUSE_URL");
    let samples: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100).max(1);
    let fetch_wait: u32 =
        std::env::var("FAREGATE_BENCH_FETCH_WAIT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let waits: Vec<u64> = std::env::var("FAREGATE_SPEND_WAITS")
        .unwrap_or_else(|_| "200,50,20".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    println!(
        "event -> spend aggregate: {samples} samples per series after {WARMUP} of warm-up, one in flight, \
         fetch wait {fetch_wait} ms, broker {brokers}"
    );
    println!("machine: 2 cores shared with the broker, the ClickHouse front and anything else running");
    println!(
        "\n{:<22} {:>12} {:>12} {:>10} {:>14} {:>14} {:>12}",
        "batch_max_wait_ms",
        "event p50",
        "event p99",
        "event max",
        "Kafka hop p50",
        "Kafka hop p99",
        "ratio p99"
    );
    for wait in waits {
        let s = series(&brokers, &clickhouse_url, fetch_wait, wait, samples).await;
        let (e50, e99, emax) =
            (percentile(&s.event, 0.5), percentile(&s.event, 0.99), percentile(&s.event, 1.0));
        let (h50, h99) = (percentile(&s.hop, 0.5), percentile(&s.hop, 0.99));
        println!(
            "{:<22} {:>9.1} ms {:>9.1} ms {:>7.1} ms {:>11.1} ms {:>11.1} ms {:>11.1}x",
            s.wait_ms,
            ms(e50),
            ms(e99),
            ms(emax),
            ms(h50),
            ms(h99),
            ms(e99) / ms(h99)
        );
        println!(
            "{:<22} target p99 <= 100 ms: {}",
            "",
            if e99 <= Duration::from_millis(100) { "met" } else { "NOT met" }
        );
    }
}

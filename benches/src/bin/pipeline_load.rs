//! Load harness: Kafka to priced ledger rows, end to end, against a running local stack.
//!
//! Produces N usage events, then measures in the same run:
//! - the baseline: a plain consumer reading the same N messages (the broker's own ceiling here);
//! - the processor: the real pipeline (decode, validate, price with the compiled-in catalog,
//!   dedup check, ledger insert, spend totals, commit) until the ledger holds N rows.
//!
//! It prints events/s for both, their ratio, and the processor's events per CPU-second of this
//! process (the ClickHouse front and the broker run in their own processes and are not counted).
//!
//!   FAREGATE_TEST_KAFKA_BROKERS=... FAREGATE_TEST_CLICKHOUSE_URL=... \
//!     cargo run --release -p faregate-benches --bin pipeline-load -- [events]

// Rates and ratios are measurements printed for people; no money is computed here.
#![allow(clippy::float_arithmetic)]

use faregate_benches::cpu_seconds;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::clickhouse::{ClickHouseConfig, migrations};
use faregate_core::event::UsageEvent;
use faregate_core::kafka::{KafkaConfig, ensure_topics};
use faregate_processor::{ClickHouseLedger, Pipeline, ProcessorConfig};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

/// The allocator of the `faregate` binary the processor runs in (services/faregate/src/main.rs),
/// so the processor's CPU here is what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (see the header of this file)"))
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let _telemetry = faregate_core::telemetry::init(
        // FAREGATE_LOAD_LOG=warn,faregate_processor=debug prints each batch's stage timings.
        &faregate_core::telemetry::TelemetryConfig {
            log_filter: std::env::var("FAREGATE_LOAD_LOG").unwrap_or_else(|_| "warn".into()),
            ..Default::default()
        },
        "pipeline-load",
    )
    .unwrap();
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let mut kafka = KafkaConfig { brokers: env("FAREGATE_TEST_KAFKA_BROKERS"), ..KafkaConfig::default() };
    kafka.topics.usage = format!("load-usage-{suffix}");
    kafka.topics.spend = format!("load-spend-{suffix}");
    kafka.topics.decisions = format!("load-decisions-{suffix}");
    kafka.topics.config = format!("load-config-{suffix}");
    kafka.topics.dlq = format!("load-dlq-{suffix}");
    kafka.topics.partitions = 1;
    // Extra librdkafka properties for every client, e.g. "fetch.max.bytes=1048576,linger.ms=20".
    for pair in std::env::var("FAREGATE_LOAD_PROPS").unwrap_or_default().split(',').filter(|p| !p.is_empty())
    {
        if let Some((key, value)) = pair.split_once('=') {
            kafka.properties.insert(key.to_string(), value.to_string());
        }
    }
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let clickhouse = ClickHouseConfig {
        url: env("FAREGATE_TEST_CLICKHOUSE_URL"),
        database: format!("load_{suffix}"),
        ..ClickHouseConfig::default()
    };
    migrations::apply(&clickhouse).await.unwrap();

    println!("preparing {n} events");
    let events = faregate_benches::usage_events(n);
    let codec: AvroCodec<UsageEvent> =
        AvroCodec::new(SchemaFamily::UsageEvent, &kafka.topics.usage, kafka.schema_registry.registry())
            .await
            .unwrap();
    let payloads: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| (e.partition_key(), codec.encode(e).unwrap())).collect();
    let mut producer_config = kafka.producer_config("load");
    producer_config.set("queue.buffering.max.messages", "1000000");
    if let Ok(batch) = std::env::var("FAREGATE_LOAD_BATCH_MESSAGES") {
        producer_config.set("batch.num.messages", batch);
    }
    let producer: FutureProducer = producer_config.create().unwrap();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(payloads.len());
    for (key, payload) in &payloads {
        pending.push(
            producer.send_result(FutureRecord::to(&kafka.topics.usage).key(key).payload(payload)).unwrap(),
        );
    }
    for delivery in pending {
        delivery.await.unwrap().unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    println!("produce:            {:>10.0} events/s", rate(n, started.elapsed()));
    // Its polling thread would otherwise keep running (and be counted) while the processor is
    // timed below: an idle librdkafka producer costs about 1 % of a core.
    drop(producer);

    // Baseline: a plain consumer reading the same messages (FAREGATE_LOAD_SKIP_BASELINE=1 skips it).
    let skip_baseline = std::env::var("FAREGATE_LOAD_SKIP_BASELINE").is_ok();
    let subscribed = Instant::now();
    let mut baseline_config = kafka.consumer_config("load", &format!("baseline-{suffix}"));
    if let Ok(debug) = std::env::var("FAREGATE_LOAD_DEBUG") {
        baseline_config.set("debug", debug);
    }
    let consumer: StreamConsumer = baseline_config.create().unwrap();
    consumer.subscribe(&[&kafka.topics.usage]).unwrap();
    let baseline = if skip_baseline {
        Duration::from_secs(1)
    } else {
        let (low, high) = consumer.fetch_watermarks(&kafka.topics.usage, 0, Duration::from_secs(10)).unwrap();
        println!("topic watermarks:   {low}..{high}");
        // Timed from the subscription, like the processor below (both include joining the group).
        let started = subscribed;
        let _ = consumer.recv().await.unwrap();
        println!("baseline first message after {:.2} s (joining the group)", started.elapsed().as_secs_f64());
        for i in 1..n {
            match tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await {
                Ok(message) => drop(message.unwrap()),
                Err(_) => panic!("the baseline consumer stalled after {i} of {n} messages"),
            }
        }
        started.elapsed()
    };
    drop(consumer);

    // The processor, end to end into the ledger.
    let config = ProcessorConfig {
        group_id: format!("load-{suffix}"),
        batch_max_rows: 50_000,
        batch_max_wait_ms: 200,
        ..ProcessorConfig::default()
    };
    // FAREGATE_LOAD_CH_COMPRESSION=none: the processor's ClickHouse client without LZ4.
    let ledger_client = match std::env::var("FAREGATE_LOAD_CH_COMPRESSION").as_deref() {
        Ok("none") => clickhouse.client().with_compression(clickhouse::Compression::None),
        _ => clickhouse.client(),
    };
    let ledger = Arc::new(ClickHouseLedger::new(ledger_client));
    let pricer = Arc::new(faregate_pricing::PriceCatalog::embedded().unwrap());
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::new(config, kafka.clone(), ledger, pricer, Arc::new(AtomicBool::new(false)));
    let token = shutdown.clone();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let task = tokio::spawn(async move { pipeline.run(token).await.unwrap() });
    let client = clickhouse.client();
    loop {
        let rows: u64 = client.query("SELECT count() FROM usage_ledger").fetch_one().await.unwrap();
        if rows as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let processed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    shutdown.cancel();
    task.await.unwrap();

    let baseline_rate = rate(n, baseline);
    let pipeline_rate = rate(n, processed);
    println!("baseline consume:   {baseline_rate:>10.0} events/s");
    println!(
        "processor to ledger:{pipeline_rate:>10.0} events/s  ({:.2} x baseline)",
        pipeline_rate / baseline_rate
    );
    let per_cpu = n as f64 / cpu.max(0.01);
    println!("processor process:  {per_cpu:>10.0} events per CPU-second of this process ({cpu:.3} s CPU)");
    let unpriced: u64 = client
        .query("SELECT count() FROM usage_ledger WHERE pricing_status = 'unpriced'")
        .fetch_one()
        .await
        .unwrap();
    println!("unpriced events:    {unpriced:>10}");
}

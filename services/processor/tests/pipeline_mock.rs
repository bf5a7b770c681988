//! The processing pipeline against librdkafka's mock cluster and the in-memory ledger: every
//! valid event is written once (duplicates and replays included), bad values reach the
//! dead-letter topic with their reason, spend totals equal the ledger's, and a ledger outage
//! pauses the pipeline without losing anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faregate_core::avro::SchemaFamily;
use faregate_core::clickhouse::ledger::{CostBreakdown, Pricing};
use faregate_core::event::{BucketWidth, SpendAggregate, UsageEvent, arbitrary};
use faregate_core::kafka::{KafkaConfig, RecordProducer};
use faregate_core::money::Usd;
use faregate_processor::dlq::header;
use faregate_processor::{MemoryLedger, Pipeline, Pricer, ProcessorConfig};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

fn events(n: usize, seed_skip: usize) -> Vec<UsageEvent> {
    let mut runner = TestRunner::deterministic();
    let strategy = arbitrary::usage_event();
    (0..n + seed_skip)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .skip(seed_skip)
        .enumerate()
        .map(|(i, mut e)| {
            e.event_id = uuid::Uuid::now_v7();
            e.org = "acme".into();
            e.user = Some("ana".into());
            e.provider = "anthropic".into();
            e.requested_model = "claude-sonnet-4-5".into();
            e.served_model = None;
            e.http_status = 200;
            e.latency_us = 1_000;
            e.ttfb_us = None;
            e.received_at = chrono::Utc::now();
            e.occurred_at = e.received_at - chrono::TimeDelta::minutes(7 * i as i64);
            e.tokens.input = e.tokens.input.rem_euclid(100_000);
            e.tokens.output = e.tokens.output.rem_euclid(10_000);
            e.tokens.cache_read = 0;
            e.tokens.cache_write_5m = 0;
            e.tokens.cache_write_1h = 0;
            e.tokens.reasoning = 0;
            e.tags.clear();
            e
        })
        .collect()
}

/// $3 per million input tokens and $15 per million output tokens, exactly.
fn pricer() -> Arc<dyn Pricer> {
    Arc::new(|event: &UsageEvent| {
        let input = rust_decimal::Decimal::new(event.tokens.input, 0) * rust_decimal::Decimal::new(3, 6);
        let output = rust_decimal::Decimal::new(event.tokens.output, 0) * rust_decimal::Decimal::new(15, 6);
        Pricing::Priced {
            price_ref: "test".into(),
            cost: CostBreakdown { input: Usd(input), output: Usd(output), ..CostBreakdown::default() },
        }
    })
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Setup {
    _mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    kafka: KafkaConfig,
}

fn setup() -> Setup {
    let mock = MockCluster::new(1).unwrap();
    let mut kafka = KafkaConfig { brokers: mock.bootstrap_servers(), ..KafkaConfig::default() };
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    kafka.topics.usage = format!("usage-{suffix}");
    kafka.topics.spend = format!("spend-{suffix}");
    kafka.topics.dlq = format!("dlq-{suffix}");
    for topic in [&kafka.topics.usage, &kafka.topics.spend, &kafka.topics.dlq] {
        mock.create_topic(topic, 1, 1).unwrap();
    }
    Setup { _mock: mock, kafka }
}

fn config(group: &str) -> ProcessorConfig {
    ProcessorConfig {
        group_id: group.into(),
        batch_max_rows: 7,
        batch_max_wait_ms: 20,
        retry_initial_ms: 10,
        retry_max_ms: 50,
        ..ProcessorConfig::default()
    }
}

fn start(
    setup: &Setup,
    group: &str,
    ledger: Arc<MemoryLedger>,
    ok: Arc<AtomicBool>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::new(config(group), setup.kafka.clone(), ledger, pricer(), ok);
    let token = shutdown.clone();
    let handle = tokio::spawn(async move { pipeline.run(token).await.unwrap() });
    (shutdown, handle)
}

async fn raw(kafka: &KafkaConfig, value: &[u8]) {
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&kafka.topics.usage).key("acme/ana").payload(value),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
}

async fn drain(kafka: &KafkaConfig, topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: StreamConsumer =
        kafka.consumer_config("test", &format!("read-{}", uuid::Uuid::now_v7())).create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("message in time")
            .unwrap();
        out.push(message.detach());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_written_once_and_bad_values_are_dead_lettered() {
    let setup = setup();
    let usage: RecordProducer<UsageEvent> =
        RecordProducer::new(&setup.kafka, "test", SchemaFamily::UsageEvent, &setup.kafka.topics.usage)
            .await
            .unwrap();
    let sent = events(20, 0);
    for event in &sent {
        usage.send(&event.partition_key(), event).await.unwrap();
    }
    // The same events again, as if re-sent after lost acknowledgements.
    for event in &sent[..5] {
        usage.send(&event.partition_key(), event).await.unwrap();
    }
    raw(&setup.kafka, b"not avro at all").await;
    let mut invalid = events(1, 20).remove(0);
    invalid.tokens.input = -3;
    usage.send("acme/ana", &invalid).await.unwrap();

    let ledger = Arc::new(MemoryLedger::default());
    let ok = Arc::new(AtomicBool::new(false));
    let (shutdown, handle) = start(&setup, "g1", ledger.clone(), ok.clone());
    wait_for("20 rows in the ledger", || ledger.rows().len() >= 20);

    let dead = drain(&setup.kafka, &setup.kafka.topics.dlq, 2).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            let h = m.headers().unwrap();
            let reason = h.iter().find(|h| h.key == header::ERROR).unwrap().value.unwrap();
            String::from_utf8(reason.to_vec()).unwrap()
        })
        .collect();
    assert!(reasons[0].contains("not the Confluent magic byte"), "{reasons:?}");
    assert_eq!(reasons[1], "field `tokens.input`: must not be negative (got -3)");

    // Spend totals: the last record published equals the exact sum of what was sent.
    let expected: rust_decimal::Decimal = sent
        .iter()
        .map(|e| {
            rust_decimal::Decimal::new(e.tokens.input, 0) * rust_decimal::Decimal::new(3, 6)
                + rust_decimal::Decimal::new(e.tokens.output, 0) * rust_decimal::Decimal::new(15, 6)
        })
        .sum();
    let codec = faregate_core::avro::AvroCodec::<SpendAggregate>::new(
        SchemaFamily::SpendAggregate,
        &setup.kafka.topics.spend,
        setup.kafka.schema_registry.registry(),
    )
    .await
    .unwrap();
    let spend_consumer: StreamConsumer =
        setup.kafka.consumer_config("test", &format!("spend-{}", uuid::Uuid::now_v7())).create().unwrap();
    spend_consumer.subscribe(&[&setup.kafka.topics.spend]).unwrap();
    let mut latest: std::collections::BTreeMap<String, SpendAggregate> = Default::default();
    let mut published = Vec::new();
    loop {
        let hourly = || latest.values().filter(|a| a.bucket_width == BucketWidth::Hour);
        let total: rust_decimal::Decimal = hourly().map(|a| a.cost_usd.0).sum();
        let requests: i64 = hourly().map(|a| a.requests).sum();
        if total == expected && requests == 20 {
            break;
        }
        let message = tokio::time::timeout(Duration::from_secs(60), spend_consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("spend totals reach {expected}; have {total} over {requests} requests")
            })
            .unwrap();
        let aggregate = codec.decode(message.payload().unwrap()).await.unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        if aggregate.bucket_width == BucketWidth::Hour {
            published.push(aggregate.clone());
        }
        let keep = latest.get(&key).is_none_or(|old| old.revision <= aggregate.revision);
        if keep {
            latest.insert(key, aggregate);
        }
    }
    // Every hourly record is in a usage group, and every group is whole: as many distinct
    // records of its org, revision and partition as it says (the budget service's watermark).
    let mut groups: std::collections::BTreeMap<
        (String, i64, i32),
        (i32, std::collections::BTreeSet<String>),
    > = Default::default();
    for a in &published {
        assert!(!a.usage_positions.is_empty(), "{a:?}");
        for g in &a.usage_positions {
            assert!(g.next_offset > 0, "{g:?}");
            let entry = groups.entry((a.org.clone(), a.revision, g.partition)).or_default();
            entry.0 = g.group_size;
            entry.1.insert(format!("{}@{}", a.subject, a.bucket_start));
        }
    }
    for (group, (size, members)) in &groups {
        assert_eq!(usize::try_from(*size).unwrap(), members.len(), "group {group:?}");
    }

    // A processor that lost every commit (a new group) replays it all and writes nothing twice;
    // every batch of the replay found rows already stored, and had their rollups rebuilt.
    shutdown.cancel();
    handle.await.unwrap();
    let sentinel = events(1, 30).remove(0);
    usage.send(&sentinel.partition_key(), &sentinel).await.unwrap();
    let (shutdown, handle) = start(&setup, "g2", ledger.clone(), ok);
    wait_for("the sentinel in the ledger", || ledger.rows().iter().any(|r| r.event_id == sentinel.event_id));
    shutdown.cancel();
    handle.await.unwrap();
    let repaired = ledger.repaired();
    assert!(sent.iter().all(|e| repaired.contains(&e.event_id)), "the replay's rollups were repaired");
    // The replay wrote nothing, yet republished in groups every total it read (a write whose
    // totals were never published would otherwise stay unpublished by the batch).
    let mut stale: std::collections::BTreeSet<String> =
        latest.iter().filter(|(_, a)| a.bucket_width == BucketWidth::Hour).map(|(k, _)| k.clone()).collect();
    while !stale.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(60), spend_consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("the replay republishes {stale:?}"))
            .unwrap();
        let aggregate = codec.decode(message.payload().unwrap()).await.unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        // (The start's republication of recent totals comes first, without groups.)
        if latest.get(&key).is_some_and(|old| old.revision < aggregate.revision)
            && !aggregate.usage_positions.is_empty()
        {
            stale.remove(&key);
        }
    }
    let rows = ledger.rows();
    assert_eq!(rows.len(), 21, "each event once, replay and duplicates included");
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.event_id).collect();
    assert_eq!(ids.len(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_outage_pauses_and_loses_nothing() {
    let setup = setup();
    let usage: RecordProducer<UsageEvent> =
        RecordProducer::new(&setup.kafka, "test", SchemaFamily::UsageEvent, &setup.kafka.topics.usage)
            .await
            .unwrap();
    let ledger = Arc::new(MemoryLedger::default());
    ledger.set_available(false);
    let ok = Arc::new(AtomicBool::new(true));
    let (shutdown, handle) = start(&setup, "g", ledger.clone(), ok.clone());
    let sent = events(15, 40);
    for event in &sent[..10] {
        usage.send(&event.partition_key(), event).await.unwrap();
    }
    wait_for("the pipeline to notice the outage", || !ok.load(Ordering::Acquire));
    assert!(ledger.rows().is_empty());
    ledger.set_available(true);
    wait_for("all 10 rows after the outage", || ledger.rows().len() == 10);
    assert!(ok.load(Ordering::Acquire), "health recovers with the ledger");
    // Clean writes rebuild no rollups.
    for event in &sent[10..12] {
        usage.send(&event.partition_key(), event).await.unwrap();
    }
    wait_for("2 more rows", || ledger.rows().len() == 12);
    // An outage in the middle of writes: the write that failed and then succeeded may have
    // reached the ledger (and only some rollup views) before the failure: its rollups are
    // rebuilt from the ledger.
    ledger.set_available(false);
    for event in &sent[12..] {
        usage.send(&event.partition_key(), event).await.unwrap();
    }
    wait_for("the pipeline to notice the second outage", || !ok.load(Ordering::Acquire));
    ledger.set_available(true);
    wait_for("all 15 rows", || ledger.rows().len() == 15);
    shutdown.cancel();
    handle.await.unwrap();
    assert_eq!(ledger.rows().len(), 15);
    let repaired = ledger.repaired();
    assert!(
        sent[12..].iter().any(|e| repaired.contains(&e.event_id)),
        "the retried write's rollups were repaired"
    );
    assert!(!sent[10..12].iter().any(|e| repaired.contains(&e.event_id)), "a clean write repairs nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_no_retry_can_cure_stops_the_processor_with_the_reason() {
    let setup = setup();
    let usage: RecordProducer<UsageEvent> =
        RecordProducer::new(&setup.kafka, "test", SchemaFamily::UsageEvent, &setup.kafka.topics.usage)
            .await
            .unwrap();
    for event in &events(3, 60) {
        usage.send(&event.partition_key(), event).await.unwrap();
    }
    let ledger = Arc::new(MemoryLedger::default());
    ledger.set_refusing(true);
    let pipeline = Pipeline::new(
        config("g"),
        setup.kafka.clone(),
        ledger.clone(),
        pricer(),
        Arc::new(AtomicBool::new(true)),
    );
    let result = tokio::time::timeout(Duration::from_secs(60), pipeline.run(CancellationToken::new()))
        .await
        .expect("the processor stops by itself");
    let error = result.unwrap_err().to_string();
    assert!(error.contains("refuses every query"), "{error}");
    assert!(ledger.rows().is_empty());
}

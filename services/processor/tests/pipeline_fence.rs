//! What the processor must never commit or write, against librdkafka's mock cluster and the
//! in-memory ledger: the offset of a value whose dead letter was not acknowledged, and rows of a
//! partition revoked from it (two consumers of one group).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use faregate_core::avro::SchemaFamily;
use faregate_core::clickhouse::ledger::Pricing;
use faregate_core::event::{UsageEvent, arbitrary};
use faregate_core::kafka::{KafkaConfig, RecordProducer};
use faregate_processor::{MemoryLedger, Pipeline, Pricer, ProcessorConfig};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio_util::sync::CancellationToken;

type Mock = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

fn events(n: usize, seed_skip: usize) -> Vec<UsageEvent> {
    let mut runner = TestRunner::deterministic();
    let strategy = arbitrary::usage_event();
    (0..n + seed_skip)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .skip(seed_skip)
        .map(|mut e| {
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
            e.occurred_at = e.received_at;
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

/// Every event unpriced, counting the events the pipeline took into a batch.
fn counting_pricer(taken: Arc<AtomicUsize>) -> Arc<dyn Pricer> {
    Arc::new(move |_: &UsageEvent| {
        taken.fetch_add(1, Ordering::SeqCst);
        Pricing::Unpriced { reason: "test".into() }
    })
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn setup(partitions: i32) -> (Mock, KafkaConfig) {
    let mock = MockCluster::new(1).unwrap();
    let mut kafka = KafkaConfig { brokers: mock.bootstrap_servers(), ..KafkaConfig::default() };
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    kafka.topics.usage = format!("usage-{suffix}");
    kafka.topics.spend = format!("spend-{suffix}");
    kafka.topics.dlq = format!("dlq-{suffix}");
    mock.create_topic(&kafka.topics.usage, partitions, 1).unwrap();
    mock.create_topic(&kafka.topics.spend, 1, 1).unwrap();
    mock.create_topic(&kafka.topics.dlq, 1, 1).unwrap();
    (mock, kafka)
}

fn config(batch_max_wait_ms: u64) -> ProcessorConfig {
    ProcessorConfig {
        group_id: "g".into(),
        batch_max_rows: 1_000,
        batch_max_wait_ms,
        retry_initial_ms: 10,
        retry_max_ms: 50,
        ..ProcessorConfig::default()
    }
}

fn high_watermark(kafka: &KafkaConfig, topic: &str) -> i64 {
    let consumer: StreamConsumer = kafka.consumer_config("test", "watermarks").create().unwrap();
    consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_dead_letter_keeps_its_offset_uncommitted() {
    let (mock, mut kafka) = setup(1);
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&kafka.topics.usage).key("k").payload(b"garbage"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    // From now on the broker takes no dead letter: each times out quickly and is retried.
    kafka.properties.insert("message.timeout.ms".into(), "200".into());
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 10_000],
    );

    let ledger = Arc::new(MemoryLedger::default());
    let ok = Arc::new(AtomicBool::new(true));
    let taken = Arc::new(AtomicUsize::new(0));
    let pipeline =
        Pipeline::new(config(20), kafka.clone(), ledger.clone(), counting_pricer(taken.clone()), ok.clone());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(pipeline.run(shutdown.clone()));
    wait_for("a failed dead-letter write", || !ok.load(Ordering::Acquire)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    kafka.properties.remove("message.timeout.ms");
    assert_eq!(high_watermark(&kafka, &kafka.topics.dlq), 0, "nothing reached the dead-letter topic yet");

    // The same group again: the garbage is read again and dead-lettered, because its offset
    // was not committed. A valid event after it shows the second run got past it.
    let usage: RecordProducer<UsageEvent> =
        RecordProducer::new(&kafka, "test", SchemaFamily::UsageEvent, &kafka.topics.usage).await.unwrap();
    let sentinel = events(1, 0).remove(0);
    usage.send("k", &sentinel).await.unwrap();
    let pipeline = Pipeline::new(config(20), kafka.clone(), ledger.clone(), counting_pricer(taken), ok);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(pipeline.run(shutdown.clone()));
    wait_for("the sentinel in the ledger", || ledger.rows().iter().any(|r| r.event_id == sentinel.event_id))
        .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(
        high_watermark(&kafka, &kafka.topics.dlq),
        1,
        "the garbage was dead-lettered on the second run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_revoked_partition_are_not_written_after_the_revocation() {
    let (mock, mut kafka) = setup(2);
    kafka.properties.insert("heartbeat.interval.ms".into(), "100".into());
    // The second member below is a bare consumer that never commits, so the ownership watchdog
    // would rightly take its partition for stalled and rejoin; this test is about the fence, so
    // the watchdog waits longer than the test runs.
    kafka.ownership.starved_after_ms = 3_600_000;
    let usage: RecordProducer<UsageEvent> =
        RecordProducer::new(&kafka, "test", SchemaFamily::UsageEvent, &kafka.topics.usage).await.unwrap();
    let sent = events(10, 10);
    for (i, event) in sent.iter().enumerate() {
        usage.send_to((i % 2) as i32, "k", event).await.unwrap();
    }

    // The processor reads all ten into one batch, to be written on its deadline.
    let ledger = Arc::new(MemoryLedger::default());
    let ok = Arc::new(AtomicBool::new(true));
    let taken = Arc::new(AtomicUsize::new(0));
    let pipeline = Pipeline::new(
        config(20_000),
        kafka.clone(),
        ledger.clone(),
        counting_pricer(taken.clone()),
        ok.clone(),
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(pipeline.run(shutdown.clone()));
    wait_for("the processor to read all ten events", || taken.load(Ordering::SeqCst) >= 10).await;
    // From now on nothing can be read again (so the processor's consumer returns nothing), and
    // the ledger is down (so the deadline's write attempt shows, and is retried).
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 100_000],
    );
    ledger.set_available(false);

    // A second consumer joins the group: every partition is revoked from the processor, which
    // gets one back, and the other consumer takes the other.
    let other: StreamConsumer = kafka.consumer_config("test", "g").create().unwrap();
    other.subscribe(&[&kafka.topics.usage]).unwrap();
    let other = Arc::new(other);
    let polling = {
        let other = other.clone();
        tokio::spawn(async move {
            loop {
                let _ = other.recv().await;
            }
        })
    };
    let mut taken_by_other = Vec::new();
    wait_for("the second consumer's assignment", || {
        taken_by_other = other.assignment().unwrap().elements().iter().map(|p| p.partition()).collect();
        !taken_by_other.is_empty()
    })
    .await;
    assert_eq!(taken_by_other.len(), 1, "{taken_by_other:?}");
    let (lost, kept) = (taken_by_other[0], 1 - taken_by_other[0]);
    assert!(
        ok.load(Ordering::Acquire),
        "the batch deadline passed before the rebalance; raise batch_max_wait_ms"
    );

    // The deadline's write attempt fails, then the ledger returns and the retry succeeds.
    wait_for("the write attempt on the deadline", || !ok.load(Ordering::Acquire)).await;
    ledger.set_available(true);
    wait_for("the retried write", || ok.load(Ordering::Acquire)).await;
    let written_lost = ledger.rows().iter().filter(|r| r.kafka_partition == lost).count();
    assert_eq!(written_lost, 0, "rows of partition {lost} were written after its revocation");
    assert!(
        ledger.rows().is_empty(),
        "the batch was read under the revoked assignment: nothing of it is written"
    );

    // Reading again, the processor writes the partition it kept, and never the one it lost.
    mock.clear_request_errors(RDKafkaApiKey::Fetch);
    wait_for("the kept partition's rows", || {
        ledger.rows().iter().filter(|r| r.kafka_partition == kept).count() == 5
    })
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    polling.abort();
    assert_eq!(ledger.rows().iter().filter(|r| r.kafka_partition == lost).count(), 0);
}

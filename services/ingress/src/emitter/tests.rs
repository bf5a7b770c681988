//! The emitter's own pieces: spool records, and parking and waking (against librdkafka's mock
//! cluster).

use super::*;
use faregate_core::event::arbitrary;
use proptest::strategy::{Strategy, ValueTree};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

fn event() -> UsageEvent {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut event = arbitrary::usage_event().new_tree(&mut runner).unwrap().current();
    event.event_id = uuid::Uuid::now_v7();
    event
}

/// A mock cluster with a one-partition usage topic, and the config that names it.
fn mock_kafka()
-> (rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>, KafkaConfig) {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let mut kafka = KafkaConfig { brokers: mock.bootstrap_servers(), ..KafkaConfig::default() };
    kafka.topics.usage = format!("usage-{}", uuid::Uuid::now_v7().simple());
    kafka.topics.partitions = 1;
    mock.create_topic(&kafka.topics.usage, 1, 1).unwrap();
    (mock, kafka)
}

/// A consumer of the usage topic, and the codec of its records.
async fn usage_reader(kafka: &KafkaConfig) -> (StreamConsumer, AvroCodec<UsageEvent>) {
    let consumer: StreamConsumer =
        kafka.consumer_config("test", &format!("g-{}", uuid::Uuid::now_v7())).create().unwrap();
    consumer.subscribe(&[&kafka.topics.usage]).unwrap();
    let codec = AvroCodec::<UsageEvent>::new(
        SchemaFamily::UsageEvent,
        &kafka.topics.usage,
        kafka.schema_registry.registry(),
    )
    .await
    .unwrap();
    (consumer, codec)
}

/// Wait until the emitter is parked (polled: the condition, not a fixed time).
async fn parked(sink: &KafkaSink) {
    while !sink.inbox.lock().unwrap().parked {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// With an idle wait of an hour, only the emitted event itself and the shutdown can wake a
/// parked emitter: a missed wake-up fails this test (by its timeout) instead of passing late.
#[tokio::test]
async fn a_parked_emitter_is_woken_by_the_next_event_and_by_shutdown() {
    let (_mock, kafka) = mock_kafka();
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (sink, emitter) =
        spawn_with(&kafka, spool.path(), 1 << 20, shutdown.clone(), Duration::from_secs(3600)).await.unwrap();
    let (consumer, codec) = usage_reader(&kafka).await;
    let within = Duration::from_secs(60);
    for _ in 0..3 {
        parked(&sink).await;
        let sent = event();
        sink.emit(sent.clone());
        let message = tokio::time::timeout(within, consumer.recv())
            .await
            .expect("the event woke the parked emitter and was delivered")
            .unwrap();
        assert_eq!(codec.decode(message.payload().unwrap()).await.unwrap().event_id, sent.event_id);
    }
    parked(&sink).await;
    shutdown.cancel();
    tokio::time::timeout(within, emitter.join()).await.expect("the shutdown woke the parked emitter");
    assert!(sink.inbox.lock().unwrap().closed);
}

/// A reservation's cost is held until a headroom record shows its event's position: the
/// landing an event was emitted with is set to the partition and offset it was consumed at.
#[tokio::test]
async fn an_event_emitted_with_a_landing_learns_where_it_landed() {
    let (_mock, kafka) = mock_kafka();
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (sink, emitter) =
        spawn_with(&kafka, spool.path(), 1 << 20, shutdown.clone(), Duration::from_secs(3600)).await.unwrap();
    let (consumer, codec) = usage_reader(&kafka).await;
    let landings: Vec<Option<Landing>> = vec![Some(Landing::default()), None, Some(Landing::default())];
    let mut sent = Vec::new();
    for landing in &landings {
        let e = event();
        sent.push(e.event_id);
        match landing {
            Some(landing) => sink.emit_landed(e, landing.clone()),
            None => sink.emit(e),
        }
    }
    let within = Duration::from_secs(60);
    for (id, landing) in sent.iter().zip(&landings) {
        let message = tokio::time::timeout(within, consumer.recv()).await.expect("delivered").unwrap();
        assert_eq!(codec.decode(message.payload().unwrap()).await.unwrap().event_id, *id);
        let Some(landing) = landing else { continue };
        let landed = tokio::time::timeout(within, async {
            loop {
                if let Some(landed) = landing.get() {
                    return landed;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the acknowledgement set the landing");
        assert_eq!(landed, (message.partition(), message.offset()));
    }
    assert!(sent.len() == 3 && landings[1].is_none());
    shutdown.cancel();
    emitter.join().await;
}

#[test]
fn spool_records_split_back() {
    let record = spool_record("acme/ana", b"\x00\x00\x00\x00\x65avro");
    assert_eq!(split_record(&record), Some((&b"acme/ana"[..], &b"\x00\x00\x00\x00\x65avro"[..])));
    assert_eq!(split_record(&[5, 0, b'a']), None);
}

/// A durable batch is in the spool's file when its promise resolves, with the broker
/// unreachable (the acknowledgement never waits for Kafka); after the shutdown the promise
/// says the emitter stopped instead.
#[tokio::test]
async fn a_durable_batch_is_in_the_spool_when_acknowledged_and_refused_after_shutdown() {
    let mut kafka = KafkaConfig { brokers: "127.0.0.1:1".into(), ..KafkaConfig::default() };
    kafka.topics.usage = format!("usage-{}", uuid::Uuid::now_v7().simple());
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (sink, emitter) = spawn(&kafka, spool.path(), 1 << 20, shutdown.clone()).await.unwrap();
    let mut sent = Vec::new();
    for _ in 0..3 {
        let batch: Vec<UsageEvent> = (0..5).map(|_| event()).collect();
        sent.extend(batch.iter().map(|e| e.event_id));
        let durable = sink.emit_durable(batch);
        tokio::time::timeout(Duration::from_secs(60), durable.wait()).await.unwrap().unwrap();
        // Read back by a second reader of the same files: what was acknowledged is there.
        let copy = Spool::open(spool.path(), 1 << 20, SEGMENT_BYTES).unwrap();
        let stored = copy.read_from(copy.acked(), 1_000).unwrap();
        assert_eq!(stored.len(), sent.len(), "every acknowledged event is in the spool file");
    }
    shutdown.cancel();
    emitter.join().await;
    assert_eq!(sink.emit_durable(vec![event()]).wait().await, Err(NotDurable::Stopped));
}

/// A record the producer will never send (larger than `message.max.bytes`) is kept in the
/// spool's `refused/` directory, and the records after it are delivered in order: it does not
/// hold the usage topic up for ever.
#[tokio::test]
async fn a_record_refused_for_good_is_kept_aside_and_the_rest_goes_on() {
    let (_mock, mut kafka) = mock_kafka();
    let (consumer, codec) = usage_reader(&kafka).await;
    kafka.properties.insert("message.max.bytes".into(), "3000".into());
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (sink, emitter) = spawn(&kafka, spool.path(), 1 << 20, shutdown.clone()).await.unwrap();
    let (small, mut large, after) = (event(), event(), event());
    large.tags = (0..20).map(|i| (format!("tag-{i}"), "x".repeat(200))).collect();
    for e in [&small, &large, &after] {
        sink.emit(e.clone());
    }
    let mut delivered = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("the records around the refused one are delivered")
            .unwrap();
        delivered.push(codec.decode(message.payload().unwrap()).await.unwrap().event_id);
    }
    assert_eq!(delivered, vec![small.event_id, after.event_id]);
    let kept: Vec<_> =
        std::fs::read_dir(spool.path().join("refused")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let record = std::fs::read(&kept[0]).unwrap();
    let (key, value) = split_record(&record).unwrap();
    assert_eq!(key, large.partition_key().as_bytes());
    assert_eq!(codec.decode(value).await.unwrap().event_id, large.event_id);
    shutdown.cancel();
    emitter.join().await;
}

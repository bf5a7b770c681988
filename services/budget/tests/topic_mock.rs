//! A paced [`TopicReader`] driven the way the budget service drives it: one branch of a
//! `select!` whose other branches win many times a second, so `next()` is dropped again and
//! again. A record produced while the reader sleeps must still arrive: the look that finds it
//! outlives the dropped future (it once did not, and a gateway's demand report, hence its
//! share, came 9 s late in the fault soak). librdkafka's mock cluster, a few hundred ms.

use std::time::Duration;

use faregate_budget::topic::TopicReader;
use faregate_core::kafka::acks::Outgoing;
use faregate_core::kafka::idle::IdleConfig;
use faregate_core::kafka::{AckProducer, KafkaConfig};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_reader_dropped_by_busier_branches_still_finds_a_new_record() {
    let mock = MockCluster::new(1).unwrap();
    let topic = format!("reader-{}", uuid::Uuid::now_v7());
    mock.create_topic(&topic, 3, 1).unwrap();
    let mut config =
        KafkaConfig { brokers: mock.bootstrap_servers(), fetch_wait_max_ms: 10, ..KafkaConfig::default() };
    // Not validated: short spells keep the test quick (asleep after 200 ms, a look every 50 ms).
    config.idle = IdleConfig { after_ms: 200 };
    config.ownership.check_interval_ms = 50;
    let mut reader = TopicReader::open(&config, &topic, "test", true).await.unwrap();
    // Another branch ready every millisecond, as spend messages and ticks are under load.
    let mut busy = tokio::time::interval(Duration::from_millis(1));
    let deadline = Instant::now() + DEADLINE;
    while !reader.is_asleep() {
        assert!(Instant::now() < deadline, "the reader never fell asleep on an empty topic");
        tokio::select! {
            _ = busy.tick() => {}
            message = reader.next() => panic!("nothing was produced, yet it read {:?}", message.map(|m| m.offset())),
        }
    }
    // A look (two offsets requests per partition) now takes far longer than the busy branch's
    // millisecond, as on a loaded broker.
    mock.broker_round_trip_time(1, Duration::from_millis(20)).unwrap();
    let producer = AckProducer::new(&config, "test").unwrap();
    // Partition 2: one the reader never read anything from.
    let record = Outgoing { topic: &topic, key: Some(b"key"), payload: Some(b"report"), partition: Some(2) };
    producer.send(record, OwnedHeaders::new()).await.expect("the mock cluster takes it");
    let message = loop {
        assert!(Instant::now() < deadline, "a record produced while the reader slept was never read");
        tokio::select! {
            _ = busy.tick() => {}
            message = reader.next() => break message.unwrap(),
        }
    };
    assert_eq!(message.payload(), Some(b"report".as_slice()));
}

//! `kafka::offsets::ends` (one ListOffsets for many partitions) against what
//! `fetch_watermarks` (two per partition) says, on tansu (`FAREGATE_TEST_KAFKA_BROKERS`, set by
//! deploy/local/test) and on librdkafka's mock cluster: partitions with no record, a few, and
//! more, and a partition of a second topic in the same request.

use std::time::Duration;

use faregate_core::kafka::offsets::{End, ends};
use faregate_core::kafka::{KafkaConfig, TopicSpec, ensure_topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TIMEOUT: Duration = Duration::from_secs(10);

/// `mock`: the mock cluster to create the topics on (it has no admin API).
async fn check(
    brokers: String,
    mock: Option<&MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
) {
    let config = KafkaConfig { brokers, ..KafkaConfig::default() };
    let (a, b) = (format!("ends-a-{}", uuid::Uuid::now_v7()), format!("ends-b-{}", uuid::Uuid::now_v7()));
    let spec = |name: &str, partitions| TopicSpec {
        name: name.into(),
        partitions,
        replication: 1,
        compacted: false,
        retention_hours: 1,
    };
    match mock {
        Some(mock) => {
            mock.create_topic(&a, 3, 1).unwrap();
            mock.create_topic(&b, 1, 1).unwrap();
        }
        None => {
            ensure_topics(&config, &[spec(&a, 3), spec(&b, 1)]).await.unwrap();
        }
    }
    let producer: FutureProducer = config.producer_config("test").create().unwrap();
    for (topic, partition, records) in [(&a, 1, 2), (&a, 2, 5), (&b, 0, 1)] {
        for i in 0..records {
            let payload = [i as u8];
            let record = FutureRecord::to(topic).partition(partition).key("k").payload(&payload[..]);
            producer.send(record, TIMEOUT).await.map_err(|(e, _)| e).unwrap();
        }
    }
    let consumer: BaseConsumer = config.consumer_config("test", "ends-probe").create().unwrap();
    let partitions = [(a.clone(), 0), (a.clone(), 1), (a.clone(), 2), (b.clone(), 0)];
    let latest =
        tokio::task::block_in_place(|| ends(&consumer, partitions.clone(), End::Latest, TIMEOUT)).unwrap();
    let earliest =
        tokio::task::block_in_place(|| ends(&consumer, partitions.clone(), End::Earliest, TIMEOUT)).unwrap();
    for (topic, partition) in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *partition, TIMEOUT).unwrap();
        let key = (topic.clone(), *partition);
        assert_eq!(latest.get(&key), Some(&high), "{topic}/{partition} latest");
        assert_eq!(earliest.get(&key), Some(&low), "{topic}/{partition} earliest");
    }
    assert_eq!(latest[&(a.clone(), 2)] - earliest[&(a.clone(), 2)], 5);
    assert_eq!(latest[&(a.clone(), 0)], earliest[&(a, 0)], "an empty partition's ends meet");
    assert!(tokio::task::block_in_place(|| ends(&consumer, [], End::Latest, TIMEOUT)).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_equal_the_watermarks_on_tansu() {
    let brokers = std::env::var("FAREGATE_TEST_KAFKA_BROKERS")
        .expect("FAREGATE_TEST_KAFKA_BROKERS is not set: run the tests with deploy/local/test");
    check(brokers, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_equal_the_watermarks_on_the_mock_cluster() {
    let mock = MockCluster::new(1).unwrap();
    check(mock.bootstrap_servers(), Some(&mock)).await;
}

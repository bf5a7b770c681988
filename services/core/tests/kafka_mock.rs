//! Component tests of the Kafka plumbing against librdkafka's in-process mock cluster: Avro
//! records round-trip through a real client, and a consumer group resumes from its committed
//! offset. (The mock cluster has no CreateTopics; topic creation is tested against tansu.)

use std::time::Duration;

use faregate_core::avro::SchemaFamily;
use faregate_core::event::{Decision, arbitrary};
use faregate_core::kafka::{KafkaConfig, RecordProducer};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};

fn config(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> KafkaConfig {
    let mut config = KafkaConfig { brokers: mock.bootstrap_servers(), ..KafkaConfig::default() };
    config.topics.usage = format!("usage-{}", uuid::Uuid::now_v7());
    config.topics.partitions = 1;
    config
}

fn decisions(n: usize) -> Vec<Decision> {
    let mut runner = TestRunner::deterministic();
    (0..n).map(|_| arbitrary::decision().new_tree(&mut runner).unwrap().current()).collect()
}

async fn next(consumer: &StreamConsumer) -> rdkafka::message::OwnedMessage {
    tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .expect("no consumer error")
        .detach()
}

#[tokio::test]
async fn records_round_trip_and_a_group_resumes_from_its_commit() {
    let mock = MockCluster::new(1).unwrap();
    let config = config(&mock);
    let topic = config.topics.usage.clone();
    mock.create_topic(&topic, 1, 1).unwrap();
    let producer: RecordProducer<Decision> =
        RecordProducer::new(&config, "test", SchemaFamily::Decision, &topic).await.unwrap();
    let sent = decisions(10);
    for (i, decision) in sent.iter().enumerate() {
        let delivered = producer.send(&format!("k{i}"), decision).await.unwrap();
        assert_eq!(delivered.offset, i as i64);
    }
    let codec = producer.codec();
    let group = format!("g-{}", uuid::Uuid::now_v7());

    let first: StreamConsumer = config.consumer_config("test", &group).create().unwrap();
    first.subscribe(&[&topic]).unwrap();
    for expected in &sent[..4] {
        let message = next(&first).await;
        let decoded = codec.decode(message.payload().unwrap()).await.unwrap();
        assert_eq!(&decoded, expected);
    }
    let mut commit = TopicPartitionList::new();
    commit.add_partition_offset(&topic, 0, Offset::Offset(4)).unwrap();
    first.commit(&commit, CommitMode::Sync).unwrap();
    drop(first);

    let second: StreamConsumer = config.consumer_config("test", &group).create().unwrap();
    second.subscribe(&[&topic]).unwrap();
    for (i, expected) in sent[4..].iter().enumerate() {
        let message = next(&second).await;
        assert_eq!(message.offset(), 4 + i as i64, "resumed at the committed offset");
        assert_eq!(&codec.decode(message.payload().unwrap()).await.unwrap(), expected);
    }
}

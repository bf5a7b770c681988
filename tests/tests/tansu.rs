//! The Kafka plumbing against a real broker (tansu with sqlite storage): topics are created
//! through the admin API exactly once, and a consumer group resumes from its committed offset
//! after the consumer restarts and after the broker restarts.

use std::time::Duration;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::event::{UsageEvent, arbitrary};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};
use faregate_tests::{PrivateBroker, kafka_config, kafka_config_for, samples, unique};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

async fn next(consumer: &StreamConsumer) -> OwnedMessage {
    tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a message within 60 s")
        .expect("no consumer error")
        .detach()
}

fn commit(consumer: &StreamConsumer, topic: &str, next_offset: i64) {
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(topic, 0, Offset::Offset(next_offset)).unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
}

fn consumer(config: &KafkaConfig, group: &str) -> StreamConsumer {
    let consumer: StreamConsumer = config.consumer_config("test", group).create().unwrap();
    consumer.subscribe(&[&config.topics.usage]).unwrap();
    consumer
}

async fn produce_all(producer: &RecordProducer<UsageEvent>, events: &[UsageEvent]) {
    for event in events {
        producer.send(&event.partition_key(), event).await.unwrap();
    }
}

async fn expect_in_order(
    consumer: &StreamConsumer,
    codec: &AvroCodec<UsageEvent>,
    first_offset: i64,
    expected: &[UsageEvent],
) {
    for (i, event) in expected.iter().enumerate() {
        let message = next(consumer).await;
        assert_eq!(message.offset(), first_offset + i as i64);
        assert_eq!(&codec.decode(message.payload().expect("a value")).await.unwrap(), event);
    }
}

#[tokio::test]
async fn topics_are_created_once_with_their_layout() {
    let mut config = kafka_config();
    config.topics.partitions = 3;
    let specs = config.topic_specs();
    let mut created = ensure_topics(&config, &specs).await.unwrap();
    created.sort();
    let mut expected: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    expected.sort();
    assert_eq!(created, expected);
    assert!(ensure_topics(&config, &specs).await.unwrap().is_empty(), "second run creates nothing");

    let metadata_client: BaseConsumer = config.consumer_config("test", &unique("meta")).create().unwrap();
    let metadata =
        metadata_client.fetch_metadata(Some(&config.topics.usage), Duration::from_secs(30)).unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 3);
}

#[tokio::test]
async fn a_group_resumes_from_its_committed_offset_after_the_consumer_restarts() {
    let config = kafka_config();
    ensure_topics(&config, &config.topic_specs()).await.unwrap();
    let producer: RecordProducer<UsageEvent> =
        RecordProducer::new(&config, "test", SchemaFamily::UsageEvent, &config.topics.usage).await.unwrap();
    let events = samples(arbitrary::usage_event(), 20);
    produce_all(&producer, &events).await;
    let codec = producer.codec();
    let group = unique("group");

    let first = consumer(&config, &group);
    expect_in_order(&first, &codec, 0, &events[..8]).await;
    commit(&first, &config.topics.usage, 8);
    drop(first);

    let second = consumer(&config, &group);
    expect_in_order(&second, &codec, 8, &events[8..]).await;
}

#[tokio::test]
async fn messages_and_committed_offsets_survive_a_broker_restart() {
    let mut broker = PrivateBroker::start();
    let config = kafka_config_for(&broker.brokers());
    ensure_topics(&config, &config.topic_specs()).await.unwrap();
    let events = samples(arbitrary::usage_event(), 15);
    let group = unique("group");
    {
        let producer: RecordProducer<UsageEvent> =
            RecordProducer::new(&config, "test", SchemaFamily::UsageEvent, &config.topics.usage)
                .await
                .unwrap();
        produce_all(&producer, &events[..10]).await;
        let first = consumer(&config, &group);
        expect_in_order(&first, &producer.codec(), 0, &events[..5]).await;
        commit(&first, &config.topics.usage, 5);
    }

    broker.restart();

    let producer: RecordProducer<UsageEvent> =
        RecordProducer::new(&config, "test", SchemaFamily::UsageEvent, &config.topics.usage).await.unwrap();
    produce_all(&producer, &events[10..]).await;
    let second = consumer(&config, &group);
    expect_in_order(&second, &producer.codec(), 5, &events[5..]).await;
}

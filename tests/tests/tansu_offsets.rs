//! Where the broker says a record landed is where it is: three producers (as three ingress
//! replicas' emitters) write concurrently to one partition of tansu, and every acknowledged
//! (partition, offset) is checked against the record a consumer reads at that offset. The
//! gateway's books release a settled cost when a headroom watermark passes its acknowledged
//! offset (docs/ARCHITECTURE.md, "Admission by reservation"): an offset reported too low
//! releases a cost the spend does not show yet.

use std::collections::HashMap;
use std::time::Duration;

use faregate_core::kafka::{TopicSpec, ensure_topics};
use faregate_tests::{kafka_config, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const PRODUCERS: usize = 3;
const PER_PRODUCER: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_offsets_of_concurrent_producers_are_where_their_records_are() {
    let config = kafka_config();
    let topic = unique("landing");
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 1,
        replication: 1,
        compacted: false,
        retention_hours: 1,
    };
    ensure_topics(&config, &[spec]).await.unwrap();
    let producers: Vec<FutureProducer> =
        (0..PRODUCERS).map(|_| config.producer_config("test").create().unwrap()).collect();
    let sends = producers.iter().enumerate().flat_map(|(p, producer)| {
        let topic = topic.clone();
        (0..PER_PRODUCER).map(move |i| {
            let payload = format!("{p}-{i}");
            let topic = topic.clone();
            async move {
                let record = FutureRecord::to(&topic).partition(0).key("k").payload(&payload);
                let delivery =
                    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
                (payload.clone(), (delivery.partition, delivery.offset))
            }
        })
    });
    let acknowledged: HashMap<String, (i32, i64)> =
        futures::future::join_all(sends).await.into_iter().collect();

    let consumer: BaseConsumer = config.consumer_config("test", &unique("landing")).create().unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut found: HashMap<String, (i32, i64)> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while found.len() < acknowledged.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {} within 60 s",
            found.len(),
            acknowledged.len()
        );
        if let Some(message) = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(500))) {
            let message = message.unwrap();
            let payload = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
            found.insert(payload, (message.partition(), message.offset()));
        }
    }
    let wrong: Vec<_> = acknowledged
        .iter()
        .filter(|(payload, at)| found.get(*payload) != Some(at))
        .map(|(payload, at)| format!("{payload}: acknowledged at {at:?}, read at {:?}", found.get(payload)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} records are not where the broker said: {:?}",
        wrong.len(),
        acknowledged.len(),
        &wrong[..wrong.len().min(20)]
    );
}

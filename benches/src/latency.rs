//! Latency measurements several harnesses share: percentiles, the plain Kafka hop (the
//! baseline of every chain figure) and following ingresses' decisions streams until a subject
//! is blocked.

use std::time::{Duration, Instant};

use faregate_core::event::{Decision, DecisionState};
use faregate_core::kafka::{KafkaConfig, TopicSpec, ensure_topics};
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

/// Nearest-rank percentile of sorted durations, in milliseconds.
#[allow(clippy::float_arithmetic)]
pub fn pct(sorted: &[Duration], p: usize) -> f64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1].as_secs_f64() * 1000.0
}

pub fn sorted(mut samples: Vec<Duration>) -> Vec<Duration> {
    samples.sort_unstable();
    samples
}

/// Plain produce -> consume latency of one message at a time on `kafka`'s broker (the
/// project's producer settings, a consumer assigned to the partition with
/// `kafka.fetch_wait_max_ms`); `samples` after 10 of warm-up, sorted.
pub async fn kafka_baseline(kafka: &KafkaConfig, samples: usize) -> Vec<Duration> {
    let topic = format!("baseline-{}", uuid::Uuid::now_v7().simple());
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 1,
        replication: 1,
        compacted: false,
        retention_hours: 1,
    };
    ensure_topics(kafka, &[spec]).await.expect("the baseline topic is created");
    let producer: FutureProducer = kafka.producer_config("bench").create().unwrap();
    let group = format!("baseline-{}", uuid::Uuid::now_v7().simple());
    let consumer: StreamConsumer = kafka.consumer_config("bench", &group).create().unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&partitions).unwrap();
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples + 10 {
        let payload = format!("{i}");
        let start = Instant::now();
        producer
            .send(FutureRecord::to(&topic).key("k").payload(&payload), Duration::from_secs(10))
            .await
            .expect("the broker takes the message");
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.unwrap().unwrap();
        let elapsed = start.elapsed();
        assert_eq!(rdkafka::Message::payload(&message), Some(payload.as_bytes()));
        if i >= 10 {
            latencies.push(elapsed);
        }
    }
    sorted(latencies)
}

/// Follow the decisions stream of every ingress at `urls` (bearer `token`): (replica,
/// decision, when it arrived).
pub fn follow_decisions(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
) -> mpsc::UnboundedReceiver<(usize, Decision, Instant)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    for (replica, url) in urls.iter().enumerate() {
        let (sender, request) =
            (sender.clone(), http.get(format!("{url}/v1/decisions/stream")).bearer_auth(token));
        tokio::spawn(async move {
            let mut body = request.send().await.expect("the decisions stream opens").bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find('\n') {
                    let line: String = buffer.drain(..=end).collect();
                    if let Some(data) = line.trim_end().strip_prefix("data:")
                        && let Ok(decision) = serde_json::from_str::<Decision>(data.trim())
                        && sender.send((replica, decision, Instant::now())).is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
    receiver
}

/// Wait until every one of `replicas` holds a block for `subject`; (first, last) arrival times.
pub async fn blocked_everywhere(
    decisions: &mut mpsc::UnboundedReceiver<(usize, Decision, Instant)>,
    subject: &str,
    replicas: usize,
) -> (Instant, Instant) {
    let mut seen: Vec<Option<Instant>> = vec![None; replicas];
    while seen.iter().any(Option::is_none) {
        let (replica, decision, at) = tokio::time::timeout(Duration::from_secs(120), decisions.recv())
            .await
            .unwrap_or_else(|_| panic!("no block for {subject} within 120 s"))
            .expect("the decision streams are open");
        if decision.subject == subject && decision.state == DecisionState::Block {
            seen[replica].get_or_insert(at);
        }
    }
    let times: Vec<Instant> = seen.into_iter().flatten().collect();
    (*times.iter().min().unwrap(), *times.iter().max().unwrap())
}

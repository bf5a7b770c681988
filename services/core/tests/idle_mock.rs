//! Idle pacing against librdkafka's mock cluster: a sleeping consumer sends no fetch at all
//! (counted from librdkafka's own statistics), and loses nothing: a message produced while it
//! sleeps arrives after a nudge, or once a backlog look finds it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use faregate_core::kafka::acks::Outgoing;
use faregate_core::kafka::idle::{IdleConfig, IdlePacer, backlog, nudge};
use faregate_core::kafka::{AckProducer, KafkaConfig};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);

/// Counts the Fetch requests librdkafka reports in its statistics (every 50 ms).
#[derive(Default)]
struct FetchCount {
    fetches: Mutex<i64>,
    reports: AtomicU64,
    report: Notify,
}

impl ClientContext for FetchCount {
    fn stats(&self, statistics: Statistics) {
        let fetches = statistics.brokers.values().filter_map(|b| b.req.get("Fetch")).sum();
        *self.fetches.lock().unwrap() = fetches;
        self.reports.fetch_add(1, Ordering::Release);
        self.report.notify_waiters();
    }
}

impl ConsumerContext for FetchCount {}

struct Rig {
    consumer: StreamConsumer<FetchCount>,
    pacer: IdlePacer,
    producer: AckProducer,
    config: KafkaConfig,
    topic: String,
    /// Look for a backlog while asleep, as the services do at each ownership check.
    looks: bool,
    _mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

fn rig(after_ms: u64) -> Rig {
    let mock = MockCluster::new(1).unwrap();
    let topic = format!("idle-{}", uuid::Uuid::now_v7());
    mock.create_topic(&topic, 1, 1).unwrap();
    let mut config =
        KafkaConfig { brokers: mock.bootstrap_servers(), fetch_wait_max_ms: 10, ..KafkaConfig::default() };
    // Not validated: a short idle spell keeps the test quick.
    config.idle = IdleConfig { after_ms };
    let mut client = config.consumer_config("test", &format!("g-{}", uuid::Uuid::now_v7()));
    client.set("statistics.interval.ms", "50");
    let consumer: StreamConsumer<FetchCount> = client.create_with_context(FetchCount::default()).unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let producer = AckProducer::new(&config, "test").unwrap();
    // Paced once the consumer fetches (see `Rig::fetching`).
    let pacer = IdlePacer::off();
    Rig { consumer, pacer, producer, config, topic, looks: false, _mock: mock }
}

impl Rig {
    fn fetches(&self) -> i64 {
        *self.consumer.context().fetches.lock().unwrap()
    }

    /// Drive the consumer and the pacer until `done` (checked after every event), or panic at
    /// the deadline; returns the payloads received meanwhile.
    async fn drive(&mut self, what: &str, mut done: impl FnMut(&Rig, &[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + DEADLINE;
        let mut received = Vec::new();
        let mut look = tokio::time::interval(Duration::from_millis(100));
        while !done(self, &received) {
            let report = self.consumer.context().report.notified();
            let looking = self.looks && self.pacer.is_asleep();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => panic!("{what}: not within {DEADLINE:?}"),
                _ = look.tick(), if looking => {
                    if backlog(&self.consumer, DEADLINE).expect("the mock cluster answers") {
                        self.pacer.active(&self.consumer);
                    }
                }
                _ = self.pacer.due() => self.pacer.step(&self.consumer),
                message = self.consumer.recv() => {
                    let message = message.expect("no consumer error");
                    received.push(message.payload().unwrap_or_default().to_vec());
                    self.pacer.active(&self.consumer);
                }
                _ = report => {}
            }
        }
        received
    }

    /// Drive until the consumer fetches, then start pacing it.
    async fn fetching(&mut self) {
        self.drive("the first fetches", |rig, _| rig.fetches() >= 2).await;
        self.pacer = IdlePacer::new(&self.config, "test");
    }

    /// Drive until `n` more statistics reports arrived.
    async fn reports(&mut self, n: u64) {
        let until = self.consumer.context().reports.load(Ordering::Acquire) + n;
        let got = self
            .drive("statistics", |rig, _| rig.consumer.context().reports.load(Ordering::Acquire) >= until)
            .await;
        assert!(got.is_empty(), "nothing was produced yet");
    }

    async fn produce(&self, payload: &[u8]) {
        let record = Outgoing { topic: &self.topic, key: None, payload: Some(payload), partition: Some(0) };
        self.producer.send(record, OwnedHeaders::new()).await.expect("the mock cluster takes it");
    }
}

#[tokio::test]
async fn a_sleeping_consumer_sends_no_fetch_and_a_nudge_brings_what_arrived_meanwhile() {
    // Only the nudge can wake it here. Once woken it stays awake for a second, time enough for
    // the fetch that brings the message.
    let mut rig = rig(1_000);
    rig.fetching().await;
    let awake_from = rig.fetches();
    rig.drive("falling asleep", |rig, _| rig.pacer.is_asleep()).await;
    assert!(rig.fetches() > awake_from, "an awake consumer fetches ({} then {})", awake_from, rig.fetches());
    // A fetch in flight when it paused may still be counted.
    rig.reports(3).await;
    let asleep_from = rig.fetches();
    rig.reports(6).await;
    assert_eq!(rig.fetches(), asleep_from, "a sleeping consumer sends no fetch");
    assert!(rig.pacer.is_asleep());

    rig.produce(b"while asleep").await;
    nudge();
    let got = rig.drive("the message after a nudge", |_, got| !got.is_empty()).await;
    assert_eq!(got, vec![b"while asleep".to_vec()]);
    assert!(!rig.pacer.is_asleep(), "a message keeps it awake");
    assert!(!backlog(&rig.consumer, DEADLINE).unwrap(), "everything produced was read");
}

#[tokio::test]
async fn a_backlog_look_finds_what_arrived_while_asleep() {
    // Once woken it stays awake for a second, time enough for the fetch that brings the message.
    let mut rig = rig(1_000);
    rig.fetching().await;
    rig.drive("falling asleep", |rig, _| rig.pacer.is_asleep()).await;
    assert!(!backlog(&rig.consumer, DEADLINE).unwrap(), "nothing to read yet");
    rig.produce(b"found by a look").await;
    assert!(backlog(&rig.consumer, DEADLINE).unwrap(), "the look sees the new record");
    assert!(rig.pacer.is_asleep(), "nothing but the owner's look wakes it here");
    rig.looks = true;
    let got = rig.drive("the message after the look", |_, got| !got.is_empty()).await;
    assert_eq!(got, vec![b"found by a look".to_vec()]);
    // Awake, later messages come at once.
    rig.produce(b"next").await;
    let got = rig.drive("the next message", |_, got| !got.is_empty()).await;
    assert_eq!(got, vec![b"next".to_vec()]);
}

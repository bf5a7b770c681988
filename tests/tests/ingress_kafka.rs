//! The ingress with a real broker (tansu): virtual keys and decisions read from their compacted
//! topics before it reports ready, every request's usage event on the usage topic exactly
//! once, and a broker outage under load, or a hung broker, losing and duplicating nothing (the
//! spool).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::config::Secret;
use faregate_core::event::{ConfigEntity, ConfigRecord, Decision, DecisionState, Outcome, UsageEvent};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};
use faregate_core::money::Usd;
use faregate_fake_upstream::{FakeConfig, FakeUpstream};
use faregate_ingress::config::{IngressConfig, Provider, UpstreamConfig};
use faregate_tests::{
    PrivateBroker, config_record, kafka_config, kafka_config_for, unique, virtual_key, wait_for,
};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ANA: &str = "fgk_kafka_test_ana";
const BOB: &str = "fgk_kafka_test_bob";

fn key(id: &str, secret: &str, user: &str) -> ConfigRecord {
    config_record(ConfigEntity::VirtualKey(virtual_key(id, secret, "acme", Some("infra"), Some(user))))
}

fn ingress_config(fake: &FakeUpstream, spool: &std::path::Path) -> IngressConfig {
    IngressConfig {
        upstreams: vec![UpstreamConfig {
            name: "fake".into(),
            provider: Provider::Anthropic,
            base_url: fake.url(),
            api_key: Secret::new("sk-upstream"),
            models: vec![],
        }],
        spool_dir: spool.to_path_buf(),
        ..IngressConfig::default()
    }
}

async fn seed(kafka: &KafkaConfig, block_bob: bool) {
    ensure_topics(kafka, &kafka.topic_specs()).await.unwrap();
    let config: RecordProducer<ConfigRecord> =
        RecordProducer::new(kafka, "test", SchemaFamily::ConfigRecord, &kafka.topics.config).await.unwrap();
    for record in [key("k-ana", ANA, "ana"), key("k-bob", BOB, "bob")] {
        config.send(&record.topic_key(), &record).await.unwrap();
    }
    if block_bob {
        let decisions: RecordProducer<Decision> =
            RecordProducer::new(kafka, "test", SchemaFamily::Decision, &kafka.topics.decisions)
                .await
                .unwrap();
        let decision = Decision {
            subject: "org=acme/user=bob".into(),
            state: DecisionState::Block,
            reason: "daily limit reached".into(),
            budget_id: Some("bob-daily".into()),
            budget_name: None,
            spent_usd: Usd("5".parse().unwrap()),
            limit_usd: Some(Usd("5".parse().unwrap())),
            window_start: None,
            resets_at: None,
            downgrade_to: None,
            decided_at: Utc::now(),
            revision: 1,
        };
        decisions.send(&decision.subject, &decision).await.unwrap();
    }
}

struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    url: String,
}

async fn start(config: IngressConfig, kafka: KafkaConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let (ready, stop) = (ready.clone(), stop.clone());
        async move { faregate_ingress::run_on(listener, config, kafka, ready, stop).await.unwrap() }
    });
    let flag = ready.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the ingress to catch up", Duration::from_secs(60), || flag.load(Ordering::Acquire))
    })
    .await
    .unwrap();
    Running { stop, handle, url }
}

async fn post(client: &reqwest::Client, url: &str, secret: &str, n: usize) -> reqwest::StatusCode {
    client
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", secret)
        .header("x-fake-usage", format!("input={n},output=7,cache_read=11"))
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Send `n` more requests as ana, numbered on from `sent` (the fake reports the number as the
/// input tokens); each must be served.
async fn post_ok(client: &reqwest::Client, url: &str, sent: &mut usize, n: usize) {
    for _ in 0..n {
        *sent += 1;
        assert_eq!(post(client, url, ANA, *sent).await, 200);
    }
}

/// Every request's event on the usage topic, told by its input tokens (1..=sent); returns
/// how many arrived twice.
async fn every_request_on_the_topic(kafka: &KafkaConfig, sent: usize) -> usize {
    let (events, duplicates) = usage_events(kafka, sent).await;
    let mut inputs: Vec<i64> = events.values().map(|e| e.tokens.input).collect();
    inputs.sort_unstable();
    assert_eq!(inputs, (1..=sent as i64).collect::<Vec<i64>>(), "every request's event, each once by id");
    duplicates
}

/// Read the usage topic until `n` distinct events arrived; duplicates are counted.
async fn usage_events(kafka: &KafkaConfig, n: usize) -> (HashMap<uuid::Uuid, UsageEvent>, usize) {
    let codec: AvroCodec<UsageEvent> =
        AvroCodec::new(SchemaFamily::UsageEvent, &kafka.topics.usage, kafka.schema_registry.registry())
            .await
            .unwrap();
    let consumer: StreamConsumer = kafka.consumer_config("test", &unique("usage")).create().unwrap();
    consumer.subscribe(&[&kafka.topics.usage]).unwrap();
    let mut events = HashMap::new();
    let mut duplicates = 0;
    while events.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} usage events arrived", events.len()))
            .unwrap();
        let event = codec.decode(message.payload().unwrap()).await.unwrap();
        assert_eq!(message.key(), Some(event.partition_key().as_bytes()));
        if events.insert(event.event_id, event).is_some() {
            duplicates += 1;
        }
    }
    (events, duplicates)
}

#[tokio::test]
async fn keys_and_decisions_come_from_their_topics_and_every_request_is_on_the_usage_topic() {
    let kafka = kafka_config();
    seed(&kafka, true).await;
    let fake = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    let ingress = start(ingress_config(&fake, spool.path()), kafka.clone()).await;
    let client = reqwest::Client::new();
    for n in 1..=10 {
        assert_eq!(post(&client, &ingress.url, ANA, n).await, 200);
    }
    assert_eq!(post(&client, &ingress.url, BOB, 1).await, 402, "bob's block was read at start");
    assert_eq!(post(&client, &ingress.url, "fgk_unknown", 1).await, 401);
    let (events, duplicates) = usage_events(&kafka, 11).await;
    assert_eq!(duplicates, 0);
    let mut inputs: Vec<i64> =
        events.values().filter(|e| e.outcome == Outcome::Ok).map(|e| e.tokens.input).collect();
    inputs.sort_unstable();
    assert_eq!(inputs, (1..=10).collect::<Vec<i64>>());
    let blocked: Vec<_> = events.values().filter(|e| e.outcome == Outcome::Blocked).collect();
    assert_eq!((blocked.len(), blocked[0].user.as_deref()), (1, Some("bob")));
    ingress.stop.cancel();
    ingress.handle.await.unwrap();
}

#[tokio::test]
async fn a_broker_outage_under_load_loses_and_duplicates_nothing() {
    let mut broker = PrivateBroker::start();
    let mut kafka = kafka_config_for(&broker.brokers());
    // Notice the outage quickly so the test exercises the rewind too.
    kafka.properties.insert("message.timeout.ms".into(), "3000".into());
    seed(&kafka, false).await;
    let fake = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    fake.set_recording(false);
    let spool = tempfile::tempdir().unwrap();
    let ingress = start(ingress_config(&fake, spool.path()), kafka.clone()).await;
    let client = reqwest::Client::new();
    let mut sent = 0;
    post_ok(&client, &ingress.url, &mut sent, 50).await;
    broker.kill();
    // The request path never waits on Kafka: everything is served while the broker is down.
    post_ok(&client, &ingress.url, &mut sent, 150).await;
    // Stop the ingress while the broker is still down: the rest waits in the spool on disk.
    ingress.stop.cancel();
    ingress.handle.await.unwrap();
    broker.restart();
    let ingress = start(ingress_config(&fake, spool.path()), kafka.clone()).await;
    post_ok(&client, &ingress.url, &mut sent, 50).await;
    let _duplicates_absorbed_downstream = every_request_on_the_topic(&kafka, sent).await;
    ingress.stop.cancel();
    ingress.handle.await.unwrap();
}

#[tokio::test]
async fn a_hung_broker_delays_events_and_loses_and_duplicates_nothing() {
    let mut broker = PrivateBroker::start();
    let kafka = kafka_config_for(&broker.brokers());
    seed(&kafka, false).await;
    let fake = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    fake.set_recording(false);
    let spool = tempfile::tempdir().unwrap();
    let ingress = start(ingress_config(&fake, spool.path()), kafka.clone()).await;
    let client = reqwest::Client::new();
    let mut sent = 0;
    post_ok(&client, &ingress.url, &mut sent, 20).await;
    // The broker keeps its connections and answers nothing: requests are still served at once,
    // and their events wait (in flight, then in the spool).
    broker.pause();
    post_ok(&client, &ingress.url, &mut sent, 100).await;
    broker.resume();
    post_ok(&client, &ingress.url, &mut sent, 20).await;
    let duplicates = every_request_on_the_topic(&kafka, sent).await;
    assert_eq!(duplicates, 0, "a hang shorter than message.timeout.ms sends nothing twice");
    ingress.stop.cancel();
    ingress.handle.await.unwrap();
}

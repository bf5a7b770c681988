//! Bad records on the budget service's input topics go to the dead-letter topic with the reason
//! in headers, are counted in `faregate_budget_dead_letters_total`, and the service keeps
//! deciding: undecodable bytes and an invalid budget on the config topic, a budget under the
//! wrong key, undecodable bytes and impossible aggregates on the spend topic.

mod budget_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;

use budget_support::{Instance, budget, eventually, hourly, org_scope, put_budget, read_all};
use faregate_budget::topic::TopicReader;
use faregate_budget::{BudgetConfig, ManualClock};
use faregate_core::avro::SchemaFamily;
use faregate_core::event::{
    BucketWidth, ConfigEntity, ConfigRecord, Decision, DecisionState, SpendAggregate,
};
use faregate_core::kafka::dlq::header;
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};
use faregate_core::money::Usd;
use faregate_tests::{kafka_config, unique};

async fn raw(kafka: &KafkaConfig, topic: &str, key: &str, payload: &[u8]) {
    let producer: FutureProducer = kafka.producer_config("test-raw").create().unwrap();
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// (reason, stage, source topic) of every dead letter, read to the end of the topic.
async fn dead_letters(kafka: &KafkaConfig) -> Vec<(String, String, String)> {
    let mut reader = TopicReader::open(kafka, &kafka.topics.dlq, &unique("dlq"), false).await.unwrap();
    let mut letters = Vec::new();
    while !reader.caught_up() {
        let message = reader.next().await.unwrap();
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                found.insert(h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into());
            }
        }
        letters.push((
            found.remove(header::ERROR).unwrap_or_default(),
            found.remove(header::STAGE).unwrap_or_default(),
            found.remove(header::SOURCE_TOPIC).unwrap_or_default(),
        ));
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_dead_lettered_counted_and_skipped() {
    let metrics = faregate_core::telemetry::prometheus();
    let kafka = kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let t = kafka.topics.clone();
    let noon = Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(noon + chrono::TimeDelta::minutes(30)));
    let config = BudgetConfig { tick_ms: 20, group_id: unique("budget"), ..BudgetConfig::default() };
    let config_topic: RecordProducer<ConfigRecord> =
        RecordProducer::new(&kafka, "test", SchemaFamily::ConfigRecord, &t.config).await.unwrap();
    let spend_topic: RecordProducer<SpendAggregate> =
        RecordProducer::new(&kafka, "test", SchemaFamily::SpendAggregate, &t.spend).await.unwrap();

    // One bad config record before the service starts (read while catching up), the rest live.
    raw(&kafka, &t.config, "budget/garbage", b"not avro at all").await;
    let service = Instance::start(config, &kafka, clock);
    service.until_ready().await;
    let mut bad_zone = budget("bad-zone", org_scope("acme"), 10, "ana@acme.example");
    bad_zone.window.time_zone = "Europe/Berln".into();
    put_budget(&config_topic, bad_zone).await;
    let misfiled = ConfigRecord {
        updated_at: Utc::now(),
        updated_by: None,
        entity: ConfigEntity::Budget(budget("misfiled", org_scope("acme"), 1, "ana@acme.example")),
    };
    config_topic.send("budget/somebody-else", &misfiled).await.unwrap();
    raw(&kafka, &t.spend, "org=acme@x", b"\x00\x00\x00\x00\x01garbage").await;
    let negative = SpendAggregate { cost_usd: Usd(Decimal::from(-5)), ..hourly("acme", "ana", noon, 0, 1) };
    spend_topic.send("org=acme/user=ana@negative", &negative).await.unwrap();
    let sessionless =
        SpendAggregate { bucket_width: BucketWidth::Minute, ..hourly("acme", "ana", noon, 3, 1) };
    spend_topic.send("org=acme/user=ana@sessionless", &sessionless).await.unwrap();

    // The service keeps going: a valid budget and spend still block.
    put_budget(&config_topic, budget("acme-daily", org_scope("acme"), 10, "ana@acme.example")).await;
    spend_topic.send("org=acme/user=ana@ok", &hourly("acme", "ana", noon, 12, 2)).await.unwrap();
    let blocked: Decision = eventually("the valid spend to block", || async {
        read_all::<Decision>(&kafka, &t.decisions, SchemaFamily::Decision)
            .await
            .into_iter()
            .find(|d| d.subject == "org=acme" && d.state == DecisionState::Block)
    })
    .await;
    assert_eq!(blocked.budget_id.as_deref(), Some("acme-daily"), "neither misfiled nor bad-zone counts");
    assert_eq!(blocked.spent_usd, Usd(Decimal::from(12)), "the negative total was not applied");

    let letters = eventually("six dead letters", || async {
        let letters = dead_letters(&kafka).await;
        (letters.len() >= 6).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 6, "{letters:#?}");
    let expect = [
        ("decode", &t.config, "magic byte"),
        ("validate", &t.config, "window.time_zone"),
        ("validate", &t.config, "does not match the budget's key \"budget/misfiled\""),
        ("decode", &t.spend, "schema id 1"),
        ("validate", &t.spend, "`cost_usd`"),
        ("validate", &t.spend, "`session_id`"),
    ];
    for (stage, topic, reason) in expect {
        assert!(
            letters.iter().any(|(r, s, t)| s == stage && t == topic && r.contains(reason)),
            "no {stage} dead letter from {topic} saying {reason:?}: {letters:#?}"
        );
    }
    let rendered = metrics.render();
    for (topic, stage, count) in
        [("config", "decode", 1), ("config", "validate", 2), ("spend", "decode", 1), ("spend", "validate", 2)]
    {
        let line = rendered
            .lines()
            .find(|l| {
                l.starts_with("faregate_budget_dead_letters_total")
                    && l.contains(&format!("topic=\"{topic}\""))
                    && l.contains(&format!("stage=\"{stage}\""))
            })
            .unwrap_or_else(|| panic!("no counter for {topic}/{stage} in:\n{rendered}"));
        assert!(line.ends_with(&format!(" {count}")), "{line}");
    }
    service.stop().await;
}

//! The processor through the real chain: tansu -> pipeline -> ClickHouse (chDB behind the front).
//! The ledger's count and exact cost sum equal an oracle computed from the produced events, with
//! duplicates sent and a full replay (a new consumer group) thrown in, and the published spend
//! totals equal the ledger's.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::clickhouse::ledger::{CostBreakdown, Pricing};
use faregate_core::clickhouse::migrations;
use faregate_core::event::{BucketWidth, SpendAggregate, UsageEvent, arbitrary};
use faregate_core::kafka::{RecordProducer, ensure_topics};
use faregate_core::money::Usd;
use faregate_processor::{ClickHouseLedger, Pipeline, Pricer, ProcessorConfig};
use faregate_tests::{clickhouse_config, kafka_config, samples, unique};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

fn realistic(events: Vec<UsageEvent>) -> Vec<UsageEvent> {
    let users = ["ana", "bo", "chen"];
    events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.event_id = uuid::Uuid::now_v7();
            e.org = "acme".into();
            e.team = Some("infra".into());
            e.user = Some(users[i % 3].into());
            e.provider = "anthropic".into();
            e.requested_model = "claude-sonnet-4-5".into();
            e.served_model = None;
            e.http_status = 200;
            e.latency_us = 1_000;
            e.ttfb_us = Some(100);
            e.received_at = chrono::Utc::now();
            e.occurred_at = e.received_at - chrono::TimeDelta::minutes(7 * i as i64);
            e.tokens.input = e.tokens.input.rem_euclid(200_000);
            e.tokens.output = e.tokens.output.rem_euclid(20_000);
            e.tokens.cache_read = e.tokens.cache_read.rem_euclid(50_000);
            e.tokens.cache_write_5m = 0;
            e.tokens.cache_write_1h = 0;
            e.tokens.reasoning = 0;
            e
        })
        .collect()
}

fn cost(event: &UsageEvent) -> CostBreakdown {
    let per_million = |tokens: i64, usd: &str| {
        Usd(Decimal::from(tokens) * usd.parse::<Decimal>().unwrap() / Decimal::from(1_000_000))
    };
    CostBreakdown {
        input: per_million(event.tokens.input, "3"),
        output: per_million(event.tokens.output, "15"),
        cache_read: per_million(event.tokens.cache_read, "0.30"),
        ..CostBreakdown::default()
    }
}

fn pricer() -> Arc<dyn Pricer> {
    Arc::new(|event: &UsageEvent| Pricing::Priced { price_ref: "test/sonnet".into(), cost: cost(event) })
}

fn start(
    config: ProcessorConfig,
    kafka: faregate_core::kafka::KafkaConfig,
    ledger: Arc<ClickHouseLedger>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::new(config, kafka, ledger, pricer(), Arc::new(AtomicBool::new(false)));
    let token = shutdown.clone();
    (shutdown, tokio::spawn(async move { pipeline.run(token).await.unwrap() }))
}

async fn ledger_count(client: &clickhouse::Client) -> u64 {
    client.query("SELECT count() FROM usage_ledger").fetch_one().await.unwrap()
}

async fn wait_for_rows(client: &clickhouse::Client, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let count = ledger_count(client).await;
        if count >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "ledger has {count} of {n} rows after 90 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_equals_the_oracle_across_duplicates_and_a_full_replay() {
    let kafka = kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let clickhouse = clickhouse_config();
    migrations::apply(&clickhouse).await.unwrap();
    let client = clickhouse.client();
    let ledger = Arc::new(ClickHouseLedger::new(client.clone()));

    let events = realistic(samples(arbitrary::usage_event(), 60));
    let producer: RecordProducer<UsageEvent> =
        RecordProducer::new(&kafka, "test", SchemaFamily::UsageEvent, &kafka.topics.usage).await.unwrap();
    for event in events.iter().chain(&events[..10]) {
        producer.send(&event.partition_key(), event).await.unwrap();
    }
    let config = ProcessorConfig {
        group_id: unique("processor"),
        batch_max_rows: 16,
        batch_max_wait_ms: 50,
        ..ProcessorConfig::default()
    };
    let (shutdown, handle) = start(config, kafka.clone(), ledger.clone());
    wait_for_rows(&client, 60).await;

    // The oracle, computed from the produced events independently of the pipeline.
    let oracle: Decimal = events.iter().map(|e| cost(e).total().0).sum();
    let (count, sum): (u64, String) = client
        .query("SELECT count(), toString(sum(assumeNotNull(cost_total))) FROM usage_ledger")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(count, 60);
    assert_eq!(sum.parse::<Decimal>().unwrap(), oracle);

    // Spend totals published to Kafka add up to the oracle too: the hourly ones over every
    // event, the per-session minute ones over the events of a session.
    let in_session = |e: &&UsageEvent| e.session_id.as_deref().is_some_and(|s| !s.is_empty());
    let session_oracle: Decimal = events.iter().filter(in_session).map(|e| cost(e).total().0).sum();
    let session_events = events.iter().filter(in_session).count() as i64;
    assert!(session_events > 0 && session_events < 60, "the sample mixes sessions and none");
    let codec: AvroCodec<SpendAggregate> =
        AvroCodec::new(SchemaFamily::SpendAggregate, &kafka.topics.spend, kafka.schema_registry.registry())
            .await
            .unwrap();
    let consumer: StreamConsumer = kafka.consumer_config("test", &unique("spend")).create().unwrap();
    consumer.subscribe(&[&kafka.topics.spend]).unwrap();
    let mut latest: BTreeMap<String, SpendAggregate> = BTreeMap::new();
    loop {
        let (sessions, hourly): (Vec<&SpendAggregate>, Vec<&SpendAggregate>) =
            latest.values().partition(|a| a.bucket_width == BucketWidth::Minute);
        let total: Decimal = hourly.iter().map(|a| a.cost_usd.0).sum();
        let session_total: Decimal = sessions.iter().map(|a| a.cost_usd.0).sum();
        if total == oracle
            && hourly.iter().map(|a| a.requests).sum::<i64>() == 60
            && session_total == session_oracle
            && sessions.iter().map(|a| a.requests).sum::<i64>() == session_events
        {
            assert!(sessions.iter().all(|a| a.session_id.is_some() && a.model.is_none()));
            assert!(hourly.iter().all(|a| a.session_id.is_none() && a.bucket_width == BucketWidth::Hour));
            break;
        }
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("spend totals {total} never reached {oracle}"))
            .unwrap();
        let aggregate = codec.decode(message.payload().unwrap()).await.unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        if latest.get(&key).is_none_or(|old| old.revision <= aggregate.revision) {
            latest.insert(key, aggregate);
        }
    }
    let users: HashSet<Option<String>> =
        latest.values().filter(|a| a.session_id.is_none()).map(|a| a.user.clone()).collect();
    assert_eq!(users.len(), 3, "one subject per user");

    // A processor that lost every commit replays the whole topic: nothing is written twice.
    shutdown.cancel();
    handle.await.unwrap();
    let sentinel = realistic(samples(arbitrary::usage_event(), 1)).remove(0);
    producer.send(&sentinel.partition_key(), &sentinel).await.unwrap();
    let config = ProcessorConfig {
        group_id: unique("replay"),
        batch_max_rows: 16,
        batch_max_wait_ms: 50,
        ..ProcessorConfig::default()
    };
    let (shutdown, handle) = start(config, kafka, ledger);
    wait_for_rows(&client, 61).await;
    shutdown.cancel();
    handle.await.unwrap();
    assert_eq!(ledger_count(&client).await, 61);
    let distinct: u64 =
        client.query("SELECT uniqExact(event_id) FROM usage_ledger").fetch_one().await.unwrap();
    assert_eq!(distinct, 61);
}

/// A batch far larger than one query may name: the duplicate check still answers (in chunks).
#[tokio::test]
async fn the_duplicate_check_handles_large_batches() {
    use faregate_core::clickhouse::LedgerRow;
    use faregate_core::clickhouse::ledger::KafkaPosition;
    use faregate_processor::Ledger;
    let clickhouse = clickhouse_config();
    migrations::apply(&clickhouse).await.unwrap();
    let ledger = ClickHouseLedger::new(clickhouse.client());
    let rows: Vec<LedgerRow> = realistic(samples(arbitrary::usage_event(), 9_000))
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let position = KafkaPosition { topic: "t".into(), partition: 0, offset: i as i64 };
            LedgerRow::new(
                e,
                &Pricing::Priced { price_ref: "p".into(), cost: cost(e) },
                &position,
                e.received_at,
            )
        })
        .collect();
    assert!(ledger.existing(&rows).await.unwrap().is_empty());
    ledger.insert(&rows[..6_000]).await.unwrap();
    let found = ledger.existing(&rows).await.unwrap();
    assert_eq!(found.len(), 6_000);
    assert!(rows[..6_000].iter().all(|r| found.contains(&r.event_id)));

    // A small batch whose time range is dense with other ledger rows: the check sends its ids.
    let at = rows[0].occurred_at;
    let dense: Vec<LedgerRow> = rows[6_000..]
        .iter()
        .map(|r| LedgerRow {
            event_id: uuid::Uuid::now_v7(),
            occurred_at: at,
            org: "dense".into(),
            ..r.clone()
        })
        .collect();
    ledger.insert(&dense[..2_500]).await.unwrap();
    let asked: Vec<LedgerRow> = dense[2_490..2_510].to_vec();
    let found = ledger.existing(&asked).await.unwrap();
    assert_eq!(found, asked[..10].iter().map(|r| r.event_id).collect());
    // The next checks send the ids straight away; the answer is the same.
    assert_eq!(ledger.existing(&asked).await.unwrap(), found);
    assert_eq!(ledger.existing(&rows).await.unwrap().len(), 6_000);
}

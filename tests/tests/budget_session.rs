//! The runaway-session tripwire through the real chain: usage events -> tansu -> processor
//! (ClickHouse ledger, per-session minute totals read back from it) -> spend topic -> budget
//! service. A session spending more than $5 within 10 minutes raises exactly one
//! runaway-session alert naming the session, the user and key, and the owner of the most
//! specific budget covering them; a calm session of the same user raises none.

mod budget_support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::{TimeDelta, Utc};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use budget_support::{Instance, budget, eventually, hourly, org_scope, put_budget, read_all};
use faregate_budget::{AnomalyConfig, BudgetConfig, ManualClock};
use faregate_core::avro::SchemaFamily;
use faregate_core::clickhouse::ledger::{CostBreakdown, Pricing};
use faregate_core::clickhouse::migrations;
use faregate_core::event::{
    Alert, AlertKind, BucketWidth, BudgetScope, ConfigRecord, Decision, SpendAggregate, UsageEvent, arbitrary,
};
use faregate_core::kafka::{RecordProducer, ensure_topics};
use faregate_core::money::Usd;
use faregate_processor::{ClickHouseLedger, Pipeline, Pricer, ProcessorConfig};
use faregate_tests::{clickhouse_config, kafka_config, samples, unique};

/// $1 per million input tokens.
fn pricer() -> Arc<dyn Pricer> {
    Arc::new(|event: &UsageEvent| Pricing::Priced {
        price_ref: "test/flat".into(),
        cost: CostBreakdown {
            input: Usd(Decimal::from(event.tokens.input) / Decimal::from(1_000_000)),
            ..CostBreakdown::default()
        },
    })
}

/// A $1 request of ana's key in `session`, `minutes_ago` minutes ago.
fn request(template: &UsageEvent, session: &str, minutes_ago: i64) -> UsageEvent {
    let mut e = template.clone();
    e.event_id = uuid::Uuid::now_v7();
    e.org = "acme".into();
    e.team = Some("infra".into());
    e.user = Some("ana".into());
    e.key_id = Some("k-ana".into());
    e.session_id = Some(session.into());
    e.provider = "anthropic".into();
    e.requested_model = "claude-sonnet-4-5".into();
    e.served_model = None;
    e.http_status = 200;
    e.received_at = Utc::now();
    e.occurred_at = e.received_at - TimeDelta::minutes(minutes_ago);
    e.tokens = faregate_core::event::TokenCounts { input: 1_000_000, ..Default::default() };
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_session_alerts_once_naming_session_user_key_and_owner() {
    let kafka = kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let t = kafka.topics.clone();
    let clickhouse = clickhouse_config();
    migrations::apply(&clickhouse).await.unwrap();

    let config_topic: RecordProducer<ConfigRecord> =
        RecordProducer::new(&kafka, "test", SchemaFamily::ConfigRecord, &t.config).await.unwrap();
    put_budget(&config_topic, budget("acme", org_scope("acme"), 1_000, "finance@acme.example")).await;
    let ana = BudgetScope { user: Some("ana".into()), ..org_scope("acme") };
    put_budget(&config_topic, budget("ana", ana, 1_000, "ana-lead@acme.example")).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let anomaly = AnomalyConfig {
        session_usd: "5".into(),
        session_minutes: 10,
        burn_rate_usd_per_hour: String::new(),
        ..AnomalyConfig::default()
    };
    let config = BudgetConfig { tick_ms: 20, group_id: unique("budget"), anomaly, ..BudgetConfig::default() };
    let service = Instance::start(config, &kafka, clock);
    service.until_ready().await;

    // Eight $1 requests over eight minutes in one session, two in a calm one.
    let template = samples(arbitrary::usage_event(), 1).remove(0);
    let mut events: Vec<UsageEvent> = (0..8).rev().map(|m| request(&template, "s-runaway", m)).collect();
    events.extend((0..2).map(|m| request(&template, "s-calm", m)));
    let usage: RecordProducer<UsageEvent> =
        RecordProducer::new(&kafka, "test", SchemaFamily::UsageEvent, &t.usage).await.unwrap();
    for event in &events {
        usage.send(&event.partition_key(), event).await.unwrap();
    }
    let processor_config = ProcessorConfig {
        group_id: unique("processor"),
        instance_id: unique("processor"),
        batch_max_rows: 3,
        batch_max_wait_ms: 50,
        ..ProcessorConfig::default()
    };
    let ledger = Arc::new(ClickHouseLedger::new(clickhouse.client()));
    let stop = CancellationToken::new();
    let pipeline =
        Pipeline::new(processor_config, kafka.clone(), ledger, pricer(), Arc::new(AtomicBool::new(false)));
    let processor = tokio::spawn(pipeline.run(stop.clone()));

    // The processor published both sessions' minutes: $8 and $2.
    eventually("the session totals on the spend topic", || async {
        let spend: Vec<SpendAggregate> = read_all(&kafka, &t.spend, SchemaFamily::SpendAggregate).await;
        let mut latest = std::collections::BTreeMap::new();
        for a in spend.into_iter().filter(|a| a.bucket_width == BucketWidth::Minute) {
            let key = (a.session_id.clone(), a.bucket_start);
            if latest.get(&key).is_none_or(|old: &SpendAggregate| old.revision < a.revision) {
                latest.insert(key, a);
            }
        }
        let total = |s: &str| -> Decimal {
            latest.values().filter(|a| a.session_id.as_deref() == Some(s)).map(|a| a.cost_usd.0).sum()
        };
        (total("s-runaway") == Decimal::from(8) && total("s-calm") == Decimal::from(2)).then_some(())
    })
    .await;
    // A barrier on the same (single) spend partition: once its decision is out, the service has
    // taken every session minute before it.
    let barrier = BudgetScope { project: Some("barrier".into()), ..org_scope("acme") };
    put_budget(&config_topic, budget("barrier", barrier, 1, "ops@acme.example")).await;
    let mut marker = hourly("acme", "ops", budget_support::hour_of(Utc::now()), 2, 1);
    marker.project = Some("barrier".into());
    let spend_topic: RecordProducer<SpendAggregate> =
        RecordProducer::new(&kafka, "test", SchemaFamily::SpendAggregate, &t.spend).await.unwrap();
    spend_topic.send("barrier", &marker).await.unwrap();
    eventually("the barrier decision", || async {
        let decisions: Vec<Decision> = read_all(&kafka, &t.decisions, SchemaFamily::Decision).await;
        decisions.iter().any(|d| d.subject == "org=acme/project=barrier").then_some(())
    })
    .await;

    let alerts: Vec<Alert> = read_all(&kafka, &t.alerts, SchemaFamily::Alert).await;
    let runaway: Vec<&Alert> = alerts.iter().filter(|a| a.kind == AlertKind::RunawaySession).collect();
    assert_eq!(runaway.len(), 1, "{alerts:#?}");
    let alert = runaway[0];
    assert_eq!(alert.subject, "org=acme/team=infra/user=ana/key=k-ana/session=s-runaway");
    assert_eq!(
        alert.owner.as_deref(),
        Some("ana-lead@acme.example"),
        "the user's budget is the most specific"
    );
    assert!(alert.spent_usd.0 > Decimal::from(5) && alert.spent_usd.0 <= Decimal::from(8), "{alert:?}");
    assert_eq!(alert.limit_usd, Some(Usd(Decimal::from(5))));
    assert!(alert.message.contains("session s-runaway"), "{}", alert.message);
    assert!(alerts.iter().all(|a| !a.subject.contains("s-calm")), "{alerts:#?}");

    stop.cancel();
    processor.await.unwrap().unwrap();
    service.stop().await;
}

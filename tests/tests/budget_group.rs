//! Several budget instances share the work through the spend topic's consumer group (tansu,
//! static membership). Spend is placed on its org's partition as the processor places it; each
//! instance decides only for the orgs of its partitions, together they cover every org, no
//! decision or alert is published twice, and an instance that restarts takes its partitions
//! back, rebuilds its orgs from the compacted topics and publishes nothing again.

mod budget_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{TimeZone, Utc};

use budget_support::{Instance, budget, eventually, hourly, org_scope, put_budget, read_all};
use faregate_budget::engine::Ownership;
use faregate_budget::{BudgetConfig, ManualClock};
use faregate_core::avro::SchemaFamily;
use faregate_core::event::{Alert, BudgetScope, ConfigRecord, Decision, DecisionState, SpendAggregate};
use faregate_core::kafka::{RecordProducer, ensure_topics, partition_for};
use faregate_tests::{kafka_config, unique};

const PARTITIONS: i32 = 4;

fn owned(instance: &Instance) -> Option<BTreeSet<i32>> {
    let engine = instance.engine.lock().unwrap();
    match engine.ownership() {
        Ownership::Partitions { count, assigned } if *count == PARTITIONS && engine.is_warm() => {
            Some(assigned.clone())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_orgs_and_publish_everything_once() {
    let mut kafka = kafka_config();
    kafka.topics.partitions = PARTITIONS;
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let t = kafka.topics.clone();
    let noon = Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(noon + chrono::TimeDelta::minutes(30)));
    let group = unique("budget");
    let config = |instance: &str| BudgetConfig {
        tick_ms: 20,
        group_id: group.clone(),
        instance_id: instance.into(),
        ..BudgetConfig::default()
    };

    let a = Instance::start(config("a"), &kafka, clock.clone());
    a.until_ready().await;
    let b = Instance::start(config("b"), &kafka, clock.clone());
    let (mine_a, mine_b) = eventually("the group to split the partitions", || async {
        let (pa, pb) = (owned(&a)?, owned(&b)?);
        (!pa.is_empty()
            && !pb.is_empty()
            && pa.is_disjoint(&pb)
            && pa.len() + pb.len() == PARTITIONS as usize)
            .then_some((pa, pb))
    })
    .await;

    // Twelve orgs, each $12 over a $10 daily budget; spend goes to the org's partition.
    let orgs: Vec<String> = (0..12).map(|i| format!("org{i}")).collect();
    let owner_of = |org: &str| {
        let p = partition_for(org, PARTITIONS);
        if mine_a.contains(&p) { "a" } else { "b" }
    };
    let by_owner: BTreeSet<&str> = orgs.iter().map(|o| owner_of(o)).collect();
    assert_eq!(by_owner.len(), 2, "the sample gives both instances orgs");
    let config_topic: RecordProducer<ConfigRecord> =
        RecordProducer::new(&kafka, "test", SchemaFamily::ConfigRecord, &t.config).await.unwrap();
    let spend_topic: RecordProducer<SpendAggregate> =
        RecordProducer::new(&kafka, "test", SchemaFamily::SpendAggregate, &t.spend).await.unwrap();
    for org in &orgs {
        put_budget(&config_topic, budget(&format!("{org}-daily"), org_scope(org), 10, &format!("cfo@{org}")))
            .await;
    }
    for (i, org) in orgs.iter().enumerate() {
        for (user, dollars) in [("ana", 7), ("bo", 5)] {
            let record = hourly(org, user, noon, dollars, noon.timestamp_micros() + i as i64);
            let key = format!("{}@{}", record.subject, noon.format("%Y-%m-%dT%H:00Z"));
            spend_topic.send_to(partition_for(org, PARTITIONS), &key, &record).await.unwrap();
        }
    }

    let blocked: BTreeSet<String> = orgs.iter().map(|o| format!("org={o}")).collect();
    let decisions: Vec<Decision> = eventually("a block decision for every org", || async {
        let decisions: Vec<Decision> = read_all(&kafka, &t.decisions, SchemaFamily::Decision).await;
        let have: BTreeSet<String> =
            decisions.iter().filter(|d| d.state == DecisionState::Block).map(|d| d.subject.clone()).collect();
        (have == blocked).then_some(decisions)
    })
    .await;
    let alerts: Vec<Alert> = eventually("a 100% alert for every budget", || async {
        let alerts: Vec<Alert> = read_all(&kafka, &t.alerts, SchemaFamily::Alert).await;
        (alerts.len() >= orgs.len()).then_some(alerts)
    })
    .await;

    // Once each: two instances deciding the same org would have published it twice.
    let mut per_scope: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &decisions {
        *per_scope.entry(&d.subject).or_default() += 1;
    }
    assert!(per_scope.values().all(|n| *n == 1), "{per_scope:?}");
    let mut per_alert: BTreeMap<&str, usize> = BTreeMap::new();
    for alert in &alerts {
        *per_alert.entry(&alert.alert_key).or_default() += 1;
    }
    assert_eq!(per_alert.len(), orgs.len(), "{per_alert:?}");
    assert!(per_alert.values().all(|n| *n == 1), "{per_alert:?}");
    // Each instance holds only its own orgs' decisions, and between them every org.
    let held = |i: &Instance| -> BTreeSet<String> {
        i.engine.lock().unwrap().decisions().map(|d| d.subject.clone()).collect()
    };
    let (held_a, held_b) = (held(&a), held(&b));
    assert!(held_a.iter().all(|s| owner_of(&s["org=".len()..]) == "a"), "{held_a:?}");
    assert!(held_b.iter().all(|s| owner_of(&s["org=".len()..]) == "b"), "{held_b:?}");
    assert_eq!(held_a.union(&held_b).cloned().collect::<BTreeSet<_>>(), blocked);

    // b restarts with its instance id (a pod of a StatefulSet coming back): static membership
    // gives it its partitions back at once; it rebuilds its orgs from the compacted topics and
    // publishes nothing again.
    b.stop().await;
    let b = Instance::start(config("b"), &kafka, clock.clone());
    eventually("b to get its partitions back", || async { (owned(&b)? == mine_b).then_some(()) }).await;
    assert_eq!(held(&b), held_b, "b restored its orgs' decisions before deciding");
    // A new budget in one of b's orgs is a barrier: once its decision is out, b has handled
    // everything before it.
    let org = orgs.iter().find(|o| owner_of(o) == "b").unwrap();
    let tiny = budget("tiny", BudgetScope { user: Some("ana".into()), ..org_scope(org) }, 1, "ana@example");
    put_budget(&config_topic, tiny).await;
    let barrier = format!("org={org}/user=ana");
    eventually("the barrier decision", || async {
        let decisions: Vec<Decision> = read_all(&kafka, &t.decisions, SchemaFamily::Decision).await;
        decisions.iter().any(|d| d.subject == barrier).then_some(())
    })
    .await;
    let decisions: Vec<Decision> = read_all(&kafka, &t.decisions, SchemaFamily::Decision).await;
    assert_eq!(decisions.len(), orgs.len() + 1, "only the barrier's decision is new");
    let alerts: Vec<Alert> = read_all(&kafka, &t.alerts, SchemaFamily::Alert).await;
    assert_eq!(alerts.len(), orgs.len() + 1, "only the barrier's alert is new");
    a.stop().await;
    b.stop().await;
}

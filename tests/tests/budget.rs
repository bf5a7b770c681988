//! The budget service against the real broker: a budget on the config topic and spend totals on
//! the spend topic turn into a block decision on the decisions topic (with a threshold alert);
//! a restarted service rebuilds its state and publishes nothing again; a window reset publishes
//! allow on time with no traffic. Time is a manual clock; waiting is for conditions, with
//! deadlines.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use faregate_budget::{BudgetConfig, ManualClock};
use faregate_core::avro::SchemaFamily;
use faregate_core::event::{
    Alert, AlertKind, BucketWidth, Budget, BudgetAction, BudgetScope, BudgetWindow, ConfigEntity,
    ConfigRecord, Decision, DecisionState, SpendAggregate, WindowPeriod,
};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};
use faregate_core::money::Usd;
use faregate_tests::{kafka_config, unique};

mod budget_support;

use budget_support::{eventually, read_all};

fn budget() -> Budget {
    Budget {
        id: "infra-daily".into(),
        name: "Infra daily".into(),
        scope: BudgetScope { org: "acme".into(), team: Some("infra".into()), ..BudgetScope::default() },
        window: BudgetWindow {
            period: WindowPeriod::Day,
            days: None,
            rolling: false,
            time_zone: "UTC".into(),
        },
        limit_usd: Usd(Decimal::from(10)),
        action: BudgetAction::Block,
        downgrade_to: None,
        thresholds_pct: vec![50, 80, 100],
        owner: Some("ana@acme.example".into()),
        notify: vec![],
    }
}

fn spend(user: &str, hour: DateTime<Utc>, cost: &str) -> SpendAggregate {
    SpendAggregate {
        subject: format!("org=acme/team=infra/user={user}"),
        org: "acme".into(),
        team: Some("infra".into()),
        user: Some(user.into()),
        key_id: None,
        project: None,
        model: Some("claude-opus-4-1".into()),
        tool: Some("claude-code".into()),
        session_id: None,
        bucket_start: hour,
        bucket_width: BucketWidth::Hour,
        cost_usd: Usd(Decimal::from_str(cost).unwrap()),
        requests: 3,
        unpriced_requests: 0,
        tokens_total: 1000,
        revision: hour.timestamp_micros() + 1,
        computed_at: hour,
        usage_positions: Vec::new(),
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), faregate_budget::BudgetError>>,
}

async fn start(kafka: &KafkaConfig, clock: Arc<ManualClock>) -> Running {
    let config = BudgetConfig { tick_ms: 20, group_id: unique("budget"), ..BudgetConfig::default() };
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let task = tokio::spawn(faregate_budget::run_with_clock(
        config,
        kafka.clone(),
        clock,
        ready.clone(),
        stop.clone(),
    ));
    eventually("the budget service to be ready", || {
        let ready = ready.load(Ordering::Acquire);
        async move { ready.then_some(()) }
    })
    .await;
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_over_a_budget_blocks_survives_a_restart_and_resets_at_midnight() {
    let kafka = kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let t = &kafka.topics;
    let config_topic: RecordProducer<ConfigRecord> =
        RecordProducer::new(&kafka, "test", SchemaFamily::ConfigRecord, &t.config).await.unwrap();
    let spend_topic: RecordProducer<SpendAggregate> =
        RecordProducer::new(&kafka, "test", SchemaFamily::SpendAggregate, &t.spend).await.unwrap();
    let record =
        ConfigRecord { updated_at: Utc::now(), updated_by: None, entity: ConfigEntity::Budget(budget()) };
    config_topic.send(&record.topic_key(), &record).await.unwrap();

    let noon = Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(noon + chrono::TimeDelta::minutes(30)));
    let service = start(&kafka, clock.clone()).await;

    // $12 of a $10 day, from two users.
    for (user, cost) in [("ana", "7"), ("bo", "5")] {
        let record = spend(user, noon, cost);
        spend_topic
            .send(&format!("{}@{}", record.subject, noon.format("%Y-%m-%dT%H:00Z")), &record)
            .await
            .unwrap();
    }
    let scope = "org=acme/team=infra";
    let blocked: Decision = eventually("a block decision", || async {
        read_all::<Decision>(&kafka, &t.decisions, SchemaFamily::Decision)
            .await
            .into_iter()
            .find(|d| d.subject == scope && d.state == DecisionState::Block)
    })
    .await;
    assert_eq!(blocked.spent_usd, Usd(Decimal::from(12)));
    assert_eq!(blocked.limit_usd, Some(Usd(Decimal::from(10))));
    assert_eq!(blocked.budget_id.as_deref(), Some("infra-daily"));
    let midnight = Utc.with_ymd_and_hms(2026, 11, 11, 0, 0, 0).unwrap();
    assert_eq!(blocked.resets_at, Some(midnight));
    let alerts: Vec<Alert> = eventually("the 100% alert", || async {
        let alerts: Vec<Alert> = read_all(&kafka, &t.alerts, SchemaFamily::Alert).await;
        alerts.iter().any(|a| a.threshold_pct == Some(100)).then_some(alerts)
    })
    .await;
    // $7 crossed 50%, then $12 crossed 80% and 100% at once: one alert each, the highest only.
    let mut crossed: Vec<i32> =
        alerts.iter().filter(|a| a.kind == AlertKind::Threshold).filter_map(|a| a.threshold_pct).collect();
    crossed.sort_unstable();
    assert_eq!(crossed, vec![50, 100], "{alerts:?}");
    assert!(alerts.iter().all(|a| a.owner.as_deref() == Some("ana@acme.example")));

    // A restart rebuilds the state from the topics and publishes nothing new.
    service.stop().await;
    let decisions_before = read_all::<Decision>(&kafka, &t.decisions, SchemaFamily::Decision).await.len();
    let alerts_before = read_all::<Alert>(&kafka, &t.alerts, SchemaFamily::Alert).await.len();
    let service = start(&kafka, clock.clone()).await;
    assert_eq!(
        read_all::<Decision>(&kafka, &t.decisions, SchemaFamily::Decision).await.len(),
        decisions_before
    );
    assert_eq!(read_all::<Alert>(&kafka, &t.alerts, SchemaFamily::Alert).await.len(), alerts_before);

    // Midnight UTC: the new day allows again, with no traffic at all.
    clock.set(midnight);
    let allowed: Decision = eventually("an allow decision at the reset", || async {
        read_all::<Decision>(&kafka, &t.decisions, SchemaFamily::Decision)
            .await
            .into_iter()
            .rev()
            .find(|d| d.subject == scope)
            .filter(|d| d.state == DecisionState::Allow)
    })
    .await;
    assert_eq!(allowed.window_start, Some(midnight));
    assert_eq!(allowed.spent_usd, Usd::ZERO);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_writes_budgets_through_the_config_topic() {
    let kafka = kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let engine = Arc::new(std::sync::Mutex::new(faregate_budget::Engine::default()));
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let config = BudgetConfig { tick_ms: 20, ..BudgetConfig::default() };
    let service = tokio::spawn(faregate_budget::service::serve(
        config,
        kafka.clone(),
        clock,
        engine.clone(),
        ready.clone(),
        stop.clone(),
    ));
    let producer = Arc::new(
        RecordProducer::new(&kafka, "admin", SchemaFamily::ConfigRecord, &kafka.topics.config).await.unwrap(),
    );
    let token = faregate_core::config::Secret::new("s3cret-admin-token");
    let router = faregate_budget::admin::router(&token, engine, producer).expect("a token turns the API on");
    assert!(
        faregate_budget::admin::router(&faregate_core::config::Secret::default(), Default::default(), {
            Arc::new(
                RecordProducer::new(&kafka, "admin", SchemaFamily::ConfigRecord, &kafka.topics.config)
                    .await
                    .unwrap(),
            )
        })
        .is_none(),
        "no token, no admin API"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(faregate_core::telemetry::serve(listener, router, stop.clone()));
    let http = reqwest::Client::new();
    let auth = "Bearer s3cret-admin-token";
    let listed = || async {
        let body: serde_json::Value = http
            .get(format!("{base}/v1/budgets"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    let body = serde_json::json!({
        "id": "ignored", "scope": {"org": "acme", "team": "infra"},
        "window": {"period": "day", "time_zone": "Europe/Berlin"}, "limit_usd": "500",
    });
    for wrong in ["", "Bearer nope", "Bearer s3cret-admin-tokeN"] {
        let response = http
            .put(format!("{base}/v1/budgets/b1"))
            .header("authorization", wrong)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{wrong:?}");
    }
    let mut bad = body.clone();
    bad["window"]["time_zone"] = "Europe/Berln".into();
    let response = http
        .put(format!("{base}/v1/budgets/b1"))
        .header("authorization", auth)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("window.time_zone"));

    let response = http
        .put(format!("{base}/v1/budgets/b1"))
        .header("authorization", auth)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually("the budget to be listed", || async { (listed().await == ["b1"]).then_some(()) }).await;

    let yaml = "budgets:\n  - id: b2\n    scope: { org: acme }\n    window: { period: month }\n    limit_usd: 1000\n";
    let response = http
        .post(format!("{base}/v1/budgets/apply"))
        .header("authorization", auth)
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response =
        http.delete(format!("{base}/v1/budgets/b1")).header("authorization", auth).send().await.unwrap();
    assert_eq!(response.status(), 204);
    eventually("b1 gone and b2 listed", || async { (listed().await == ["b2"]).then_some(()) }).await;

    stop.cancel();
    service.await.unwrap().ok();
}

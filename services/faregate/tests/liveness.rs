//! Enforcement liveness with real processes (needs the local stack deploy/local/test starts):
//! `faregate budget` runs as a process of its own and heart-beats; an ingress (in-process, the
//! library's `run_on`) follows the heartbeats. Killing the budget service with SIGKILL makes the
//! ingress report stale enforcement within `ingress.enforcement_stale_after_secs` (10 s) and,
//! failing closed, answer 503 saying since when; restarting it makes enforcement live again.
//! `faregate status` exits 0 with the heartbeat and the budget group's owner while the budget
//! service runs, and 2 naming the stale heartbeat once it is dead.
//!
//! Every wait is for a condition with a deadline; ports are chosen by the OS; names are unique.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faregate_core::clickhouse::{ClickHouseConfig, migrations};
use faregate_core::config::Secret;
use faregate_core::kafka::{KafkaConfig, ensure_topics};
use faregate_fake_upstream::{FakeConfig, FakeUpstream};
use faregate_ingress::{AuthMode, FailMode, IngressConfig, Provider, UpstreamConfig};
use faregate_tests::{clickhouse_config, kafka_config, unique};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "collector-token";

/// The environment a `faregate` process of this test's deployment runs with.
fn deployment_env(
    kafka: &KafkaConfig,
    clickhouse: &ClickHouseConfig,
    budget_group: &str,
) -> Vec<(String, String)> {
    let t = &kafka.topics;
    [
        ("FAREGATE__KAFKA__BROKERS", kafka.brokers.as_str()),
        ("FAREGATE__KAFKA__FETCH_WAIT_MAX_MS", "10"),
        ("FAREGATE__KAFKA__TOPICS__USAGE", &t.usage),
        ("FAREGATE__KAFKA__TOPICS__SPEND", &t.spend),
        ("FAREGATE__KAFKA__TOPICS__DECISIONS", &t.decisions),
        ("FAREGATE__KAFKA__TOPICS__CONFIG", &t.config),
        ("FAREGATE__KAFKA__TOPICS__DLQ", &t.dlq),
        ("FAREGATE__KAFKA__TOPICS__ALERTS", &t.alerts),
        ("FAREGATE__KAFKA__TOPICS__HEARTBEATS", &t.heartbeats),
        ("FAREGATE__KAFKA__TOPICS__HEADROOM", &t.headroom),
        ("FAREGATE__KAFKA__TOPICS__PARTITIONS", "1"),
        ("FAREGATE__CLICKHOUSE__URL", &clickhouse.url),
        ("FAREGATE__CLICKHOUSE__DATABASE", &clickhouse.database),
        ("FAREGATE__BUDGET__GROUP_ID", budget_group),
        ("FAREGATE__BUDGET__INSTANCE_ID", "budget-0"),
        ("FAREGATE__TELEMETRY__METRICS_LISTEN", "127.0.0.1:0"),
        ("FAREGATE__TELEMETRY__LOG_FILTER", "info"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn faregate(args: &[&str], env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_faregate"));
    command.args(args).env_remove("FAREGATE_CONFIG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FAREGATE__")) {
        command.env_remove(key);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// `faregate budget`, killed with SIGKILL on drop.
struct Budget(Child);

impl Budget {
    fn start(env: &[(String, String)]) -> Budget {
        Budget(
            faregate(&["budget"], env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("faregate budget starts"),
        )
    }

    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Deployment {
    kafka: KafkaConfig,
    env: Vec<(String, String)>,
    _spool: tempfile::TempDir,
    ingress_url: String,
    fake: FakeUpstream,
    stop: CancellationToken,
    client: reqwest::Client,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn deployment(fail_mode: FailMode) -> Deployment {
    let kafka = kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let clickhouse = clickhouse_config();
    migrations::apply(&clickhouse).await.unwrap();
    let env = deployment_env(&kafka, &clickhouse, &unique("budget"));
    let fake = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    let config = IngressConfig {
        upstreams: vec![UpstreamConfig {
            name: "anthropic".into(),
            provider: Provider::Anthropic,
            base_url: fake.url(),
            api_key: Secret::default(),
            models: vec![],
        }],
        auth: AuthMode::Passthrough,
        fail_mode,
        collector_token: Secret::new(TOKEN),
        spool_dir: spool.path().to_path_buf(),
        ..IngressConfig::default()
    };
    assert_eq!(config.enforcement_stale_after_secs, 10, "the default bound is what is tested");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress_url = format!("http://{}", listener.local_addr().unwrap());
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    tokio::spawn(faregate_ingress::run_on(listener, config, kafka.clone(), ready.clone(), stop.clone()));
    eventually("the ingress is ready", Duration::from_secs(60), || {
        let ready = ready.clone();
        async move { ready.load(Ordering::Acquire) }
    })
    .await;
    Deployment { kafka, env, _spool: spool, ingress_url, fake, stop, client: reqwest::Client::new() }
}

impl Deployment {
    async fn enforcement(&self) -> Value {
        let body: Value = self
            .client
            .get(format!("{}/v1/decisions", self.ingress_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["enforcement"].clone()
    }

    async fn enforcement_stale(&self) -> bool {
        self.enforcement().await["stale"].as_bool().expect("enforcement.stale is a bool")
    }

    async fn request(&self) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/messages", self.ingress_url))
            .header("x-api-key", "sk-ant-client-own-key")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    }

    /// `faregate status --format json`: (exit code, report).
    async fn status(&self) -> (i32, Value) {
        let output = tokio::process::Command::from(faregate(&["status", "--format", "json"], &self.env))
            .output()
            .await
            .expect("faregate status runs");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("status JSON: {e}: {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code().expect("exit code"), report)
    }
}

async fn eventually<F, Fut>(what: &str, deadline: Duration, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < deadline, "{what} did not happen within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_sees_enforcement_go_stale_within_10s_of_a_budget_kill_and_fails_closed() {
    let d = deployment(FailMode::Closed).await;
    let mut budget = Budget::start(&d.env);
    eventually("enforcement is live", Duration::from_secs(60), || async { !d.enforcement_stale().await })
        .await;
    let served = d.request().await;
    assert_eq!(served.status(), 200);
    assert!(!served.headers().contains_key("x-faregate-enforcement"));

    budget.kill();
    let took = eventually("the ingress reports stale enforcement", Duration::from_secs(10), || async {
        d.enforcement_stale().await
    })
    .await;
    eprintln!("stale reported {took:?} after SIGKILL");
    let enforcement = d.enforcement().await;
    assert!(
        enforcement["stale_since"].is_string() && enforcement["heartbeat_age_ms"].as_i64().unwrap() > 10_000,
        "{enforcement}"
    );
    let refused = d.request().await;
    assert_eq!(refused.status(), 503);
    let message = refused.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("enforcement is stale since"), "{message}");
    assert_eq!(d.fake.requests().len(), 1, "nothing is forwarded while stale and failing closed");

    let _budget = Budget::start(&d.env);
    eventually("enforcement is live again", Duration::from_secs(60), || async {
        !d.enforcement_stale().await
    })
    .await;
    assert_eq!(d.request().await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_open_serves_marked_stale() {
    let d = deployment(FailMode::Open).await;
    // No budget service at all: enforcement is stale from the start.
    assert!(d.enforcement_stale().await);
    let served = d.request().await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers().get("x-faregate-enforcement").unwrap(), "stale");
    let mut stream = d
        .client
        .get(format!("{}/v1/decisions/stream", d.ingress_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"stale\":true") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.chunk())
            .await
            .expect("the enforcement status first");
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(seen.contains("event: enforcement"), "{seen}");
    let _budget = Budget::start(&d.env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("\"stale\":false") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.chunk())
            .await
            .expect("a live enforcement event within 60 s");
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    let served = d.request().await;
    assert!(!served.headers().contains_key("x-faregate-enforcement"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faregate_status_exits_0_when_live_and_2_when_the_budget_service_is_dead() {
    let d = deployment(FailMode::Open).await;
    let (code, report) = d.status().await;
    assert_eq!(code, 2, "no budget service yet: {report}");
    assert_eq!(report["heartbeat"]["live"], false);

    let mut budget = Budget::start(&d.env);
    let mut last;
    let start = Instant::now();
    loop {
        let (code, report) = d.status().await;
        last = report;
        if code == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "faregate status did not say live within 60 s: {last}"
        );
    }
    assert_eq!(last["live"], true, "{last}");
    assert_eq!(last["heartbeat"]["instances"][0]["instance_id"], "budget-0", "{last}");
    assert_eq!(last["heartbeat"]["uncovered_partitions"], json!([]), "{last}");
    assert!(last["ledger"]["reachable"].as_bool().unwrap(), "{last}");
    assert_eq!(last["dead_letters"]["records"], 0, "{last}");
    let budget_group =
        last["groups"].as_array().unwrap().iter().find(|g| g["role"] == "budget").unwrap().clone();
    assert!(
        budget_group["partitions"][0]["owner"].is_string(),
        "the broker or a heartbeat names the owner: {budget_group}"
    );
    eprintln!("budget group as reported: {budget_group}");
    assert_eq!(budget_group["topic"], d.kafka.topics.spend.as_str());

    budget.kill();
    let start = Instant::now();
    loop {
        let (code, report) = d.status().await;
        last = report;
        if code == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "faregate status did not say blind within 20 s: {last}"
        );
    }
    assert_eq!(last["heartbeat"]["live"], false, "{last}");
    let problems = last["problems"].to_string();
    assert!(problems.contains("enforcement is stale"), "{problems}");
}

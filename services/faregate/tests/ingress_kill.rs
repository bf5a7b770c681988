//! Acknowledged means durable, under SIGKILL: `faregate ingress` runs as its own process while
//! collector batches and gateway requests (the fake provider, whole and streamed) come in from
//! several clients at once, and it is killed with SIGKILL right after an acknowledgement
//! (triggered by progress: a number of 202s since the round began), then restarted on the same
//! spool, `ROUNDS` times. Then:
//! - every record the collector answered `202` is on the usage topic (none may be missing);
//! - every gateway request whose response the client read to its end is on the topic, unless
//!   it ended within `WINDOW` before a kill: the gateway's events reach the spool within the
//!   emitter's tick after the response (docs/ingress.md), and that window is measured and
//!   printed here. A lost event older than `WINDOW` fails the test.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faregate_core::kafka::{KafkaConfig, ensure_topics};
use faregate_fake_upstream::{FakeConfig, FakeUpstream};
use faregate_tests::process::{Service, common_toml};
use faregate_tests::{kafka_config, usage_events_until};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

const ROUNDS: usize = 4;
/// Collector batches acknowledged in a round before the kill.
const ACKS_PER_ROUND: usize = 25;
const RECORDS_PER_BATCH: usize = 40;
/// A completed gateway request may be lost only if it ended this close before a kill.
const WINDOW: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(90);

fn config_toml(kafka: &KafkaConfig, spool: &Path, upstream: &str) -> String {
    format!(
        r#"{common}
[ingress]
listen = "127.0.0.1:0"
auth = "passthrough"
collector_token = "kill-test-token"
spool_dir = "{spool}"
[[ingress.upstreams]]
name = "fake"
provider = "anthropic"
base_url = "{upstream}"
"#,
        common = common_toml(kafka),
        spool = spool.display(),
    )
}

/// Start an ingress and wait until it is ready; its gateway URL.
async fn start_ready(config: &Path, dir: &Path, round: usize) -> (Service, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_faregate"));
    let log = dir.join(format!("ingress-{round}.log"));
    let ingress = Service::start_ready(bin, config, "ingress", log, DEADLINE).await;
    let gateway = ingress
        .logged_addr("ingress listening")
        .expect("an ingress says where it listens before it is ready");
    (ingress, format!("http://{gateway}"))
}

#[derive(Default)]
struct Ledger {
    /// Collector records answered 202.
    acknowledged: HashSet<uuid::Uuid>,
    acknowledged_batches: usize,
    /// Gateway requests read to their end: tag -> when.
    completed: HashMap<String, Instant>,
}

/// Collector clients: batches of fresh records, as long as `stop` is false.
async fn collector_client(url: watch::Receiver<String>, ledger: Arc<Mutex<Ledger>>, progress: Arc<Notify>) {
    let http = reqwest::Client::new();
    loop {
        let target = url.borrow().clone();
        if target.is_empty() {
            return;
        }
        let ids: Vec<uuid::Uuid> = (0..RECORDS_PER_BATCH).map(|_| uuid::Uuid::now_v7()).collect();
        let records: Vec<Value> = ids
            .iter()
            .map(|id| json!({"event_id": id, "occurred_at": chrono::Utc::now(), "org": "kill", "provider": "anthropic",
                              "model": "claude-sonnet-4-5", "tokens": {"input": 10, "output": 2}}))
            .collect();
        let sent = http
            .post(format!("{target}/v1/usage"))
            .bearer_auth("kill-test-token")
            .json(&json!({ "records": records }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 202 => {
                let mut ledger = ledger.lock().unwrap();
                ledger.acknowledged.extend(ids);
                ledger.acknowledged_batches += 1;
                progress.notify_one();
            }
            // Refused or cut by the kill: not acknowledged, nothing promised.
            _ => tokio::task::yield_now().await,
        }
    }
}

/// Gateway clients: whole and streamed messages, each tagged so its event can be found.
async fn gateway_client(url: watch::Receiver<String>, ledger: Arc<Mutex<Ledger>>, stream: bool) {
    let http = reqwest::Client::new();
    loop {
        let target = url.borrow().clone();
        if target.is_empty() {
            return;
        }
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
                          "messages": [{"role": "user", "content": "count"}]});
        let sent = http
            .post(format!("{target}/v1/messages"))
            .header("x-api-key", "sk-kill-test")
            .header("anthropic-version", "2023-06-01")
            .header("x-faregate-tags", format!("req={tag}"))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let Ok(response) = sent else { continue };
        if response.status() != 200 {
            continue;
        }
        // Read to the end: only a response the client has whole counts as received.
        if response.bytes().await.is_ok() {
            ledger.lock().unwrap().completed.insert(tag, Instant::now());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_usage_survives_sigkill_of_the_ingress() {
    let kafka = kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let fake = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    fake.set_recording(false);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("faregate.toml");
    std::fs::write(&config, config_toml(&kafka, &dir.path().join("spool"), &fake.url())).unwrap();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let progress = Arc::new(Notify::new());
    let (mut ingress, url) = start_ready(&config, dir.path(), 0).await;
    let (url_tx, url_rx) = watch::channel(url);
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(tokio::spawn(collector_client(url_rx.clone(), ledger.clone(), progress.clone())));
        clients.push(tokio::spawn(gateway_client(url_rx.clone(), ledger.clone(), i % 2 == 0)));
    }
    let mut kills = Vec::new();
    for round in 1..=ROUNDS {
        let target = ledger.lock().unwrap().acknowledged_batches + ACKS_PER_ROUND;
        let waited = Instant::now();
        while ledger.lock().unwrap().acknowledged_batches < target {
            assert!(
                waited.elapsed() < DEADLINE,
                "round {round}: {ACKS_PER_ROUND} batches were not acknowledged in time"
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), progress.notified()).await;
        }
        ingress.kill();
        kills.push(Instant::now());
        let (next, url) = start_ready(&config, dir.path(), round).await;
        ingress = next;
        url_tx.send_replace(url);
    }
    url_tx.send_replace(String::new());
    for client in clients {
        client.await.unwrap();
    }

    let (acknowledged, completed) = {
        let ledger = ledger.lock().unwrap();
        (ledger.acknowledged.clone(), ledger.completed.clone())
    };
    // A completed request may be missing only if it ended within WINDOW before a kill.
    let gap_to_kill = |at: &Instant| kills.iter().filter(|k| **k >= *at).map(|k| k.duration_since(*at)).min();
    let excusable: HashSet<&str> = completed
        .iter()
        .filter(|(_, at)| gap_to_kill(at).is_some_and(|gap| gap <= WINDOW))
        .map(|(tag, _)| tag.as_str())
        .collect();
    let mut missing_ids = acknowledged.clone();
    let mut missing_tags: HashSet<&str> =
        completed.keys().map(String::as_str).filter(|tag| !excusable.contains(tag)).collect();
    let mut metered: HashSet<String> = HashSet::new();
    let mut read = 0;
    usage_events_until(&kafka, DEADLINE * 2, |events| {
        for event in &events[read..] {
            missing_ids.remove(&event.event_id);
            if let Some(tag) = event.tags.get("req") {
                missing_tags.remove(tag.as_str());
                metered.insert(tag.clone());
            }
        }
        read = events.len();
        missing_ids.is_empty() && missing_tags.is_empty()
    })
    .await;
    drop(ingress);
    let lost_within: Vec<Duration> = completed
        .iter()
        .filter(|(tag, _)| !metered.contains(tag.as_str()))
        .filter_map(|(_, at)| gap_to_kill(at))
        .collect();
    eprintln!(
        "{ROUNDS} SIGKILLs: {} collector records acknowledged, all on the topic; {} gateway responses received \
         whole, {} not metered, each within {:?} before a kill",
        acknowledged.len(),
        completed.len(),
        lost_within.len(),
        lost_within.iter().max()
    );
    assert!(acknowledged.len() >= ROUNDS * ACKS_PER_ROUND * RECORDS_PER_BATCH);
    assert!(!completed.is_empty(), "no gateway request completed: the load did not run");
}

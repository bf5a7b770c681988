//! A cap holds when a gateway replica dies holding reservations (docs/ARCHITECTURE.md,
//! "Admission by reservation", failure cases). Two replicas share a $3 budget by demand: `A` is
//! `faregate ingress` as its own process, `B` runs in the test with the processor and the
//! budget service. Four loops per replica spend it as fast as the fake provider answers (50 ms),
//! each request reserving exactly its cost (`sized_request`). At `A`'s 40th
//! response, while its loops have requests in flight, `A` gets SIGKILL; `B`'s loops go on until
//! the gateway refuses them. Then `A` starts again on the same spool, which it sends, and once
//! a marker request through each replica is in the ledger (one usage partition: everything
//! before it is too) the budget's ledger spend must be at most its limit, and every loop at B
//! must have ended refused (402 or 429), not cut off.
//! Not necessarily at the limit: A's unused share stays set aside for `ORPHAN_HOLD` after its
//! reports stop, since a replica cut off from Kafka, not dead, could still admit against it
//! (docs/ARCHITECTURE.md, "Admission by reservation"), and shares follow demand, so that share
//! can be most of what was left (seen: B refused at $0.93 of $3). What was left unspent is
//! printed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use faregate_core::kafka::KafkaConfig;
use faregate_fake_upstream::{FakeConfig, USAGE_HEADER};
use faregate_tests::chain::{Chain, ChainSetup, KeySpec, rolling_day_budget, sized_request};
use faregate_tests::process::{Service, common_toml};
use faregate_tests::{clickhouse_config, eventually_within, kafka_config};
use rust_decimal::Decimal;
use tokio::sync::Notify;

const LIMIT: &str = "3";
const LOOPS: usize = 4;
/// `A`'s responses before it is killed.
const KILL_AT: usize = 40;
const DEADLINE: Duration = Duration::from_secs(120);

fn config_toml(kafka: &KafkaConfig, dir: &Path, upstream: &str, prices: &Path) -> String {
    format!(
        r#"{common}
[ingress]
listen = "127.0.0.1:0"
source_name = "replica-a"
replica_id = "replica-a"
collector_token = "caps-kill-token"
spool_dir = "{spool}"
[ingress.reservation]
prices_dir = "{prices}"
[[ingress.upstreams]]
name = "anthropic"
provider = "anthropic"
base_url = "{upstream}"
api_key = "sk-upstream"
"#,
        common = common_toml(kafka),
        spool = dir.join("spool").display(),
        prices = prices.display(),
    )
}

/// A request of `key` reserving exactly what the fake will bill for it: about 800 input tokens
/// (its body) and 500 output tokens (its `max_tokens`).
fn request(http: &reqwest::Client, url: &str, key: &KeySpec) -> reqwest::RequestBuilder {
    let (body, usage, _) = sized_request(800, 500);
    http.post(format!("{url}/v1/messages"))
        .header("x-api-key", &key.secret)
        .header("anthropic-version", "2023-06-01")
        .header(USAGE_HEADER, usage)
        .json(&body)
}

/// Spend until the gateway refuses (402 or 429: `Some(status)`) or cannot be reached (`None`);
/// every 200 counts in `served` and rings `progress`.
async fn spend(url: String, key: KeySpec, served: Arc<AtomicUsize>, progress: Arc<Notify>) -> Option<u16> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    loop {
        let response = request(&http, &url, &key).send().await.ok()?;
        let status = response.status().as_u16();
        response.bytes().await.ok()?;
        match status {
            200 => {
                served.fetch_add(1, Ordering::SeqCst);
                progress.notify_waiters();
            }
            402 | 429 => return Some(status),
            other => panic!("{url}: unexpected {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_holding_reservations_leaves_the_cap_held() {
    let ana = KeySpec::new("acme", "infra", "ana");
    let marker = KeySpec::new("acme", "infra", "marker");
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    setup.keys = vec![ana.clone(), marker.clone()];
    setup.budgets = vec![rolling_day_budget("acme", "ana", "ana-day", "ana's day", LIMIT)];
    setup.fake = FakeConfig { latency: Duration::from_millis(50), ..FakeConfig::default() };
    let chain = Chain::start(setup).await;
    chain.fake.set_recording(false);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("faregate.toml");
    std::fs::write(&config, config_toml(&chain.kafka, dir.path(), &chain.fake.url(), chain.prices_dir()))
        .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_faregate"));
    let start_a = |run: usize| {
        let log = dir.path().join(format!("a-{run}.log"));
        Service::start_ready(bin, &config, "ingress", log, DEADLINE)
    };
    let mut a = start_a(0).await;
    let url_a = format!("http://{}", a.logged_addr("ingress listening").expect("logged before ready"));
    let url_b = chain.url().to_string();

    let (served_a, served_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let progress = Arc::new(Notify::new());
    let loops = |url: &str, served: &Arc<AtomicUsize>| -> Vec<_> {
        (0..LOOPS)
            .map(|_| tokio::spawn(spend(url.to_string(), ana.clone(), served.clone(), progress.clone())))
            .collect()
    };
    let loops_a = loops(&url_a, &served_a);
    let loops_b = loops(&url_b, &served_b);
    eventually_within(&format!("{KILL_AT} responses from A"), DEADLINE, || async {
        let notified = progress.notified();
        if served_a.load(Ordering::SeqCst) >= KILL_AT {
            return Some(());
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        None
    })
    .await;
    a.kill();
    let served_b_at_kill = served_b.load(Ordering::SeqCst);
    let mut ended_a = Vec::new();
    for task in loops_a {
        ended_a.push(task.await.unwrap());
    }
    let mut ended_b = Vec::new();
    for task in loops_b {
        let ended = tokio::time::timeout(DEADLINE, task).await.expect("B's loops end within the deadline");
        ended_b.push(ended.unwrap());
    }
    assert!(ended_b.iter().all(Option::is_some), "every loop at B ends refused, not cut off: {ended_b:?}");
    let killed_at = served_a.load(Ordering::SeqCst);

    // A again, on the same spool: what it held at death reaches the ledger.
    let a = start_a(1).await;
    let url_a = format!("http://{}", a.logged_addr("ingress listening").expect("logged before ready"));
    eventually_within("A's spool to be sent", DEADLINE, || async {
        (a.metric("faregate_ingress_spool_pending_bytes").await? == 0.0).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    for url in [&url_a, &url_b] {
        let response = request(&http, url, &marker).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "the marker at {url}");
    }
    chain.ledger_settles("user = 'marker'", 2).await;
    let (rows, spent) = chain.ledger("user = 'ana'").await.expect("the ledger answers");
    let limit: Decimal = LIMIT.parse().unwrap();
    eprintln!(
        "A served {killed_at} before SIGKILL (loops ended {ended_a:?}), B {served_b_at_kill} then {} (ended {ended_b:?}); \
         ledger {rows} rows, ${spent} of ${limit} (${} left unspent: A's share set aside)",
        served_b.load(Ordering::SeqCst),
        limit - spent
    );
    assert!(spent <= limit, "the cap held: ${spent} spent of ${limit}");
    chain.assert_running();
}

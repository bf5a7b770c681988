//! Idle CPU of the single-machine stack: what tansu (sqlite, as `deploy/local/up` runs it), the
//! ClickHouse front and `faregate up` (the release binary, as a process of its own) cost with no
//! traffic, as % of one core, and what a budget crossing costs in latency with the same settings.
//!
//! In one run: a private tansu and a private front are started; the **baseline** is both of them
//! alone, no client connected. Then for each series (a pair of fetch waits, `kafka.fetch_wait_max_ms`
//! / `kafka.background_fetch_wait_max_ms`; default `10/10`, every consumer at 10 ms as before the
//! background wait existed, and `10/500`, the local stack's values now), `faregate up
//! --fake-upstream` runs on topics and a database of its own, with keys and $0.01 budgets
//! written before it starts. Once ready and settled, the CPU time of the three processes
//! (utime + stime from /proc/<pid>/stat, every thread) is taken over the window. Then, still in
//! the series: the plain Kafka hop (produce -> consume, one message at a time, with the series'
//! hot fetch wait), and for each trial, after an idle second, one request whose cost alone
//! crosses its user's budget: from its response being complete to the gateway's decisions stream
//! holding the block (the event-to-decision path: usage -> processor -> ledger -> spend ->
//! budget -> decisions -> ingress).
//!
//!   cargo build --release -p faregate -p faregate-benches
//!   FAREGATE_TEST_TANSU=~/.cache/faregate/tansu-0.6.0/bin/tansu \
//!   FAREGATE_TEST_CHFRONT_PYTHON=<chfront venv>/bin/python FAREGATE_TEST_CHFRONT_DIR=deploy/local/chfront \
//!     target/release/idle-cpu
//!   # FAREGATE_IDLE_SECONDS (30, the CPU window), FAREGATE_IDLE_SERIES ("10/10,10/500";
//!   #   HOT/BACKGROUND[/IDLE_AFTER]: fetch waits and `kafka.idle.after_ms`, in ms),
//!   # FAREGATE_IDLE_GAP_MS (1000: the idle time before each crossing),
//!   # FAREGATE_IDLE_ROUNDS (1: every series once per round, alternating), FAREGATE_IDLE_TRIALS (10),
//!   # FAREGATE_BIN (the faregate binary; next to this one by default)
//!
//! `source deploy/local/lib.sh` names the paths: $TANSU_BIN, $(chfront_venv)/bin/python, $CHFRONT_DIR.

// Percentages and milliseconds are measurements printed for people.
#![allow(clippy::float_arithmetic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faregate_benches::{
    blocked_everywhere, env_or, faregate_bin, follow_decisions, kafka_baseline, pct, sorted,
};
use faregate_core::kafka::KafkaConfig;
use faregate_tests::chain::{KeySpec, rolling_day_budget, write_config};
use faregate_tests::{PrivateBroker, PrivateClickHouse};

const TOKEN: &str = "idle-bench-token";
/// About 10,000 input tokens and one output token of claude-sonnet-4-5 ($3 / $15 per million in
/// the compiled catalog), about $0.03: a trial's whole limit, reserved exactly, so the request
/// fits and its spend reaches the limit (see `faregate_tests::chain::sized_request`).
fn crossing_request() -> (serde_json::Value, String, rust_decimal::Decimal) {
    faregate_tests::chain::sized_request(10_000, 1)
}
const SETTLE: Duration = Duration::from_secs(5);

/// utime + stime of `pid` in clock ticks (100 per second), every thread, exited ones included.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// % of one core each of `pids` used over `window` (100 ticks a second = 100 %).
fn cpu_percent(pids: &[u32], window: Duration) -> Vec<f64> {
    let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    let start = Instant::now();
    std::thread::sleep(window);
    let seconds = start.elapsed().as_secs_f64();
    pids.iter().zip(before).map(|(&p, b)| (cpu_ticks(p) - b) as f64 / seconds).collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `faregate up`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Up {
    child: Child,
    log: PathBuf,
}

impl Up {
    /// The `addr` field of the first JSON log line whose message is `message`.
    fn logged_addr(&self, message: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).find_map(
            |line| {
                let fields = line.get("fields").unwrap_or(&line);
                (fields.get("message")?.as_str()? == message)
                    .then(|| fields.get("addr")?.as_str().map(String::from))?
            },
        )
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Waits {
    hot: u32,
    background: u32,
    /// `kafka.idle.after_ms` (0: no idle pacing).
    idle_after: u64,
}

fn parse_series(text: &str) -> Vec<Waits> {
    text.split(',')
        .map(|pair| {
            let parts: Vec<&str> = pair.trim().split('/').collect();
            if !(2..=3).contains(&parts.len()) {
                panic!("FAREGATE_IDLE_SERIES: {pair:?} is not HOT/BACKGROUND[/IDLE_AFTER] (ms)");
            }
            Waits {
                hot: parts[0].parse().expect("a hot fetch wait in ms"),
                background: parts[1].parse().expect("a background fetch wait in ms"),
                idle_after: parts.get(2).map_or(0, |v| v.parse().expect("kafka.idle.after_ms")),
            }
        })
        .collect()
}

fn config_toml(brokers: &str, clickhouse: &str, suffix: &str, spool: &Path) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"

[kafka.topics]
usage = "idle-usage-{suffix}"
spend = "idle-spend-{suffix}"
decisions = "idle-decisions-{suffix}"
config = "idle-config-{suffix}"
dlq = "idle-dlq-{suffix}"
alerts = "idle-alerts-{suffix}"
heartbeats = "idle-heartbeats-{suffix}"

[clickhouse]
url = "{clickhouse}"
database = "idle_{suffix}"

[telemetry]
log_format = "json"
metrics_listen = "127.0.0.1:0"

[ingress]
listen = "127.0.0.1:0"
spool_dir = "{spool}"
collector_token = "{TOKEN}"
"#,
        spool = spool.display()
    )
}

async fn eventually<T>(what: &str, up: &mut Up, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if up.exited() || Instant::now() > deadline {
            panic!(
                "{what}: not within 120 s; the log:\n{}",
                std::fs::read_to_string(&up.log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Measured {
    cpu: Vec<f64>,
    hop: Vec<Duration>,
    crossing: Vec<Duration>,
}

async fn series(
    broker: &PrivateBroker,
    front: &PrivateClickHouse,
    waits: Waits,
    window: Duration,
    trials: usize,
    gap: Duration,
) -> Measured {
    let bin = faregate_bin();
    let dir = tempfile::tempdir().unwrap();
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let config_path = dir.path().join("faregate.toml");
    std::fs::write(
        &config_path,
        config_toml(&broker.brokers(), &front.url(), &suffix, &dir.path().join("spool")),
    )
    .unwrap();
    let mut kafka = KafkaConfig {
        brokers: broker.brokers(),
        fetch_wait_max_ms: waits.hot,
        background_fetch_wait_max_ms: waits.background,
        ..KafkaConfig::default()
    };
    for (name, topic) in kafka.topics.names_mut() {
        *topic = format!("idle-{name}-{suffix}");
    }
    faregate_core::kafka::ensure_topics(&kafka, &kafka.topic_specs()).await.expect("the series' topics");
    let keys: Vec<KeySpec> = (0..trials).map(|i| KeySpec::new("idle", "bench", &format!("u{i}"))).collect();
    let limit = crossing_request().2.to_string();
    let budgets: Vec<_> = (0..trials)
        .map(|i| {
            rolling_day_budget("idle", &format!("u{i}"), &format!("u{i}-day"), &format!("u{i} day"), &limit)
        })
        .collect();
    write_config(&kafka, &keys, &budgets).await;

    let log = dir.path().join("up.log");
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&config_path)
        .args(["up", "--fake-upstream"])
        .env("FAREGATE__KAFKA__FETCH_WAIT_MAX_MS", waits.hot.to_string())
        .env("FAREGATE__KAFKA__BACKGROUND_FETCH_WAIT_MAX_MS", waits.background.to_string())
        .env("FAREGATE__KAFKA__IDLE__AFTER_MS", waits.idle_after.to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let mut up = Up { child, log };
    let addrs = {
        let mut found = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        while found.is_none() {
            found = up
                .logged_addr("ops endpoint: /metrics /health /ready")
                .zip(up.logged_addr("ingress listening"));
            assert!(Instant::now() < deadline && !up.exited(), "faregate up did not log its addresses");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.unwrap()
    };
    let (ops, gateway) = (addrs.0, format!("http://{}", addrs.1));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let ready = format!("http://{ops}/ready");
    eventually("faregate up is ready", &mut up, async || {
        let response = http.get(&ready).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    // Paced consumers fall asleep between one and two idle spells after their last message.
    tokio::time::sleep(SETTLE + Duration::from_millis(2 * waits.idle_after)).await;

    let pids = [broker.pid().unwrap(), front.pid().unwrap(), up.child.id()];
    let cpu = tokio::task::spawn_blocking(move || cpu_percent(&pids, window)).await.unwrap();

    let hop = kafka_baseline(&kafka, 50).await;
    // The stream stays open across every trial (with long gaps, longer than `http`'s timeout).
    let streaming = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().unwrap();
    let mut decisions = follow_decisions(&streaming, std::slice::from_ref(&gateway), TOKEN);
    let mut crossing = Vec::with_capacity(trials);
    let (body, usage, _) = crossing_request();
    for (i, key) in keys.iter().enumerate() {
        tokio::time::sleep(gap).await;
        let response = http
            .post(format!("{gateway}/v1/messages"))
            .header("x-api-key", &key.secret)
            .header("anthropic-version", "2023-06-01")
            .header("x-fake-usage", &usage)
            .json(&body)
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status();
        response.bytes().await.expect("the whole body");
        let done = Instant::now();
        assert_eq!(status, 200, "the crossing request is served");
        let (at, _) = blocked_everywhere(&mut decisions, &format!("org=idle/user=u{i}"), 1).await;
        crossing.push(at - done);
    }
    assert!(!up.exited(), "faregate up stopped during the series");
    Measured { cpu, hop, crossing: sorted(crossing) }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for name in ["FAREGATE_TEST_TANSU", "FAREGATE_TEST_CHFRONT_PYTHON", "FAREGATE_TEST_CHFRONT_DIR"] {
        if std::env::var_os(name).is_none() {
            eprintln!("{name} is not set: see the header of benches/src/bin/idle_cpu.rs");
            std::process::exit(2);
        }
    }
    let window = Duration::from_secs(env_or("FAREGATE_IDLE_SECONDS", 30));
    let rounds: usize = env_or("FAREGATE_IDLE_ROUNDS", 1);
    let trials: usize = env_or("FAREGATE_IDLE_TRIALS", 10);
    let gap = Duration::from_millis(env_or("FAREGATE_IDLE_GAP_MS", 1_000));
    let series_list =
        parse_series(&std::env::var("FAREGATE_IDLE_SERIES").unwrap_or_else(|_| "10/10,10/500".into()));

    let broker = PrivateBroker::start();
    let front = PrivateClickHouse::start();
    tokio::time::sleep(SETTLE).await;
    let pids = [broker.pid().unwrap(), front.pid().unwrap()];
    println!("load average before: {}", loadavg());
    let baseline = tokio::task::spawn_blocking(move || cpu_percent(&pids, window)).await.unwrap();
    println!(
        "baseline, no client connected, {} s: tansu {:.2} %, ClickHouse front {:.2} % of a core",
        window.as_secs(),
        baseline[0],
        baseline[1]
    );
    for round in 1..=rounds {
        for &waits in &series_list {
            let m = series(&broker, &front, waits, window, trials, gap).await;
            println!(
                "round {round}, fetch waits {} ms (decision path) / {} ms (background), idle pacing after {} ms, \
                 `faregate up` idle {} s: \
                 tansu {:.2} %, front {:.2} %, faregate {:.2} %, total {:.2} % of a core (baseline total {:.2} %); \
                 Kafka hop p50 {:.1} / p99 {:.1} ms; crossing -> block at the gateway ({} trials, {} ms apart) p50 {:.0} / \
                 p99 {:.0} / max {:.0} ms; load average {}",
                waits.hot,
                waits.background,
                waits.idle_after,
                window.as_secs(),
                m.cpu[0],
                m.cpu[1],
                m.cpu[2],
                m.cpu.iter().sum::<f64>(),
                baseline.iter().sum::<f64>(),
                pct(&m.hop, 50),
                pct(&m.hop, 99),
                m.crossing.len(),
                gap.as_millis(),
                pct(&m.crossing, 50),
                pct(&m.crossing, 99),
                pct(&m.crossing, 100),
                loadavg(),
            );
        }
    }
}

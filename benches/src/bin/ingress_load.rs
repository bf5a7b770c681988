//! Load harness: the ingress's added latency, against the same fast fake upstream, in one run.
//!
//! Starts `faregate fake-upstream` and `faregate ingress` (the release binaries, as separate
//! processes, so the ingress's memory can be read from /proc), with metering and enforcement on:
//! the ingress authenticates a virtual key, checks decisions and spools every usage event to
//! Kafka. Then it sends an open-loop load at a fixed rate over keep-alive connections, in six
//! series measured in the same run, rotating round by round so all targets see the same
//! machine state:
//! - direct to the fake, through a plain proxy (a minimal forwarder in its own process, this
//!   binary with `--plain-proxy`: the floor any extra hop costs here) and through the ingress,
//!   non-streaming `POST /v1/messages`;
//! - the same with `"stream": true` (latency up to the complete body).
//!
//! It prints p50/p99/p999 for each series, the added latency (ingress minus direct, plain proxy
//! minus direct, ingress minus plain proxy), the ratios, the ingress's peak RSS beside the
//! fake's and the plain proxy's, CPU per request of every process, and counts the usage events
//! on the usage topic: exactly one per request sent through the ingress.
//!
//!   FAREGATE_TEST_TANSU=... cargo run --release -p faregate-benches --bin ingress-load
//!
//! The broker: by default (FAREGATE_INGRESS_BROKER=memory) a tansu of the run's own
//! (FAREGATE_TEST_TANSU, the binary `deploy/local/up` installs) storing in memory; with
//! FAREGATE_INGRESS_BROKER=given, the one at FAREGATE_TEST_KAFKA_BROKERS, such as the local
//! stack's (tansu storing in sqlite). The broker shares the 2 cores with everything measured,
//! and the sqlite engine takes about 135 µs of CPU per event (more than the ingress's whole
//! request), against about 30 µs in memory; the run prints the private broker's CPU so the
//! two can be told apart (docs/benchmarks.md).
//!
//! Build the `faregate` binary first (`cargo build --release -p faregate -p faregate-benches`);
//! it is looked for beside this one, or at FAREGATE_BIN. Settings: FAREGATE_INGRESS_RATE
//! (requests/s, default 2000), FAREGATE_INGRESS_SECONDS (seconds per series, default 10),
//! FAREGATE_INGRESS_ROUNDS (rounds each series is split into, default 10),
//! FAREGATE_INGRESS_EXTRA_TOML (appended to the ingress's configuration file),
//! FAREGATE_INGRESS_SERVER_THREADS (runtime threads of each server process, default 1),
//! FAREGATE_INGRESS_MODES (`whole`, `streaming` or both, comma-separated: default both; one
//! mode alone gives that mode's CPU per request), FAREGATE_INGRESS_HEADROOM=1 (a budget covering
//! the key, with a headroom no request exhausts: every request through the ingress reserves and
//! settles; compare with `[ingress.reservation] enabled = false` in the extra configuration).

// Latencies, rates, ratios and megabytes are measurements printed for people; no money is
// computed here.
#![allow(clippy::float_arithmetic)]

use axum::serve::ListenerExt as _;
use faregate_benches::{env_or, faregate_bin};

/// The same allocator as the `faregate` binary, so the plain proxy (this binary) is compared
/// like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::event::{Outcome, UsageEvent};
use faregate_core::kafka::KafkaConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

const USAGE: &str = "input=100,output=20";
const TARGET_P50_MS: f64 = 0.1;
const TARGET_P99_MS: f64 = 0.5;
const TARGET_RSS_MB: f64 = 50.0;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmRSS, VmHWM) in kB, from /proc/<pid>/status.
    fn memory_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn cpu_ticks(&self) -> u64 {
        cpu_ticks(&self.pid().to_string())
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// utime + stime of a process (`self` or a pid) in clock ticks (100 Hz on Linux).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Run a `faregate` command to completion; its stdout.
fn faregate(bin: &Path, config: &Path, args: &[&str]) -> String {
    let output = Command::new(bin).arg("--config").arg(config).args(args).output().unwrap();
    if !output.status.success() {
        panic!(
            "faregate {} failed: {}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).unwrap()
}

/// Start a process that prints its URL as its first line of output.
fn start_serving(name: &'static str, mut command: Command, log: &Path, threads: usize) -> (Process, String) {
    let mut child = command
        .env("TOKIO_WORKER_THREADS", threads.to_string())
        .env("FAREGATE__TELEMETRY__LOG_FILTER", "warn")
        .env("FAREGATE__TELEMETRY__METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().to_string();
    assert!(url.starts_with("http://"), "the {name} printed {line:?}, not its URL (log: {})", log.display());
    (Process { name, child }, url)
}

/// A day budget on the bench key's user with $1,000,000 left, on the run's headroom topic.
async fn put_headroom(brokers: &str, suffix: &str) {
    use faregate_core::event::Headroom;
    use faregate_core::kafka::RecordProducer;
    let mut kafka = KafkaConfig { brokers: brokers.to_string(), ..KafkaConfig::default() };
    kafka.topics.headroom = format!("bench-headroom-{suffix}");
    let usd = |v: i64| faregate_core::money::Usd(rust_decimal::Decimal::from(v));
    let record = faregate_tests::day_headroom(
        "org=acme/user=bench",
        "bench-day",
        "bench day",
        usd(1_000_000),
        usd(1_000_000),
    );
    let producer: RecordProducer<Headroom> =
        RecordProducer::new(&kafka, "bench", SchemaFamily::Headroom, &kafka.topics.headroom).await.unwrap();
    producer.send(&record.key(), &record).await.unwrap();
}

fn config_toml(brokers: &str, suffix: &str, listen: u16, ops: u16, spool: &Path, fake_url: &str) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"

[kafka.topics]
usage = "bench-usage-{suffix}"
spend = "bench-spend-{suffix}"
decisions = "bench-decisions-{suffix}"
config = "bench-config-{suffix}"
dlq = "bench-dlq-{suffix}"
alerts = "bench-alerts-{suffix}"
heartbeats = "bench-heartbeats-{suffix}"
headroom = "bench-headroom-{suffix}"
partitions = 1

[telemetry]
log_filter = "warn"
metrics_listen = "127.0.0.1:{ops}"

[ingress]
listen = "127.0.0.1:{listen}"
spool_dir = "{spool}"
# No budget service runs here: the enforcement watermark check is off, as before it existed.
enforcement_stale_after_secs = 0

[[ingress.upstreams]]
name = "fake"
provider = "anthropic"
base_url = "{fake_url}"
api_key = "sk-bench-upstream"
models = []
"#,
        spool = spool.display()
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    /// The minimal forwarder of [`plain_proxy`]: the cost of any extra hop on this machine.
    Plain,
    Ingress,
}

/// `ingress-load --plain-proxy UPSTREAM`: a minimal HTTP forwarder with no authentication, no
/// checks and no metering (whole request body in, response streamed back), in its own process
/// like the ingress; prints its URL. It is the floor an extra hop costs here.
async fn plain_proxy(upstream: String) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();
    let state = Arc::new((client, upstream));
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let state = state.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            let mut up = state.0.request(parts.method, format!("{}{}", state.1, parts.uri.path())).body(body);
            for (name, value) in &parts.headers {
                if name != "host" && name != "content-length" && name != "connection" {
                    up = up.header(name, value);
                }
            }
            let mut response = axum::response::Response::builder();
            match up.send().await {
                Ok(upstream) => {
                    response = response.status(upstream.status());
                    for (name, value) in upstream.headers() {
                        if name != "transfer-encoding" && name != "connection" && name != "content-length" {
                            response = response.header(name, value);
                        }
                    }
                    response.body(axum::body::Body::from_stream(upstream.bytes_stream())).unwrap()
                }
                Err(e) => response.status(502).body(axum::body::Body::from(e.to_string())).unwrap(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("http://{}", listener.local_addr().unwrap());
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.unwrap();
}

/// Latencies of one series, with what went wrong.
#[derive(Default)]
struct Series {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    sent: u64,
    elapsed: Duration,
    /// How late the load generator sent requests against their schedule.
    lag_ns: Vec<u64>,
}

impl Series {
    /// The value at `q` parts per 100,000 (50_000 = p50), nearest rank.
    fn quantile(sorted: &[u64], q: usize) -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = (sorted.len() * q).div_ceil(100_000).max(1);
        sorted[rank.min(sorted.len()) - 1]
    }

    fn sort(&mut self) {
        self.latencies_ns.sort_unstable();
        self.lag_ns.sort_unstable();
    }

    fn p(&self, q: usize) -> f64 {
        ms(Self::quantile(&self.latencies_ns, q))
    }

    fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

struct Load {
    client: reqwest::Client,
    secret: String,
    direct_url: String,
    ingress_url: String,
    plain_url: String,
    plain_body: bytes::Bytes,
    stream_body: bytes::Bytes,
}

async fn one(load: Arc<Load>, target: Target, stream: bool) -> Result<u64, String> {
    let base = match target {
        Target::Direct => &load.direct_url,
        Target::Plain => &load.plain_url,
        Target::Ingress => &load.ingress_url,
    };
    let body = if stream { load.stream_body.clone() } else { load.plain_body.clone() };
    let started = Instant::now();
    let response = load
        .client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &load.secret)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .header("x-fake-usage", USAGE)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("body: {e}"))?;
    let elapsed = started.elapsed();
    if status != 200 {
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let complete =
        if stream { bytes.windows(12).any(|w| w == b"message_stop") } else { bytes.ends_with(b"}") };
    if !complete {
        return Err(format!("incomplete body: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(elapsed.as_nanos() as u64)
}

/// Send `rate` requests per second for `duration`, open loop: a pacing thread starts each
/// request at its scheduled time whatever the others are doing; latency is from the actual send.
async fn run(
    load: &Arc<Load>,
    target: Target,
    stream: bool,
    rate: u32,
    duration: Duration,
    into: &mut Series,
) {
    let n = (u64::from(rate) * duration.as_millis() as u64 / 1000) as u32;
    let interval = Duration::from_secs(1) / rate;
    let handle = tokio::runtime::Handle::current();
    let pacer_load = load.clone();
    let started = Instant::now();
    let (tasks, lags) = tokio::task::spawn_blocking(move || {
        let mut tasks = Vec::with_capacity(n as usize);
        let mut lags = Vec::with_capacity(n as usize);
        let start = Instant::now();
        for i in 0..n {
            let due = start + interval * i;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            lags.push(due.elapsed().as_nanos() as u64);
            tasks.push(handle.spawn(one(pacer_load.clone(), target, stream)));
        }
        (tasks, lags)
    })
    .await
    .unwrap();
    for task in tasks {
        match task.await.unwrap() {
            Ok(ns) => into.latencies_ns.push(ns),
            Err(error) => {
                into.errors += 1;
                into.first_error.get_or_insert(error);
            }
        }
    }
    into.elapsed += started.elapsed();
    into.sent += u64::from(n);
    into.lag_ns.extend(lags);
}

async fn wait_ready(client: &reqwest::Client, url: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "the ingress did not report ready at {url} within 90 s; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Read the usage topic until `expected` distinct events arrived or nothing came for 20 s.
async fn usage_events(kafka: &KafkaConfig, expected: u64) -> (u64, u64, u64) {
    let codec: AvroCodec<UsageEvent> =
        AvroCodec::new(SchemaFamily::UsageEvent, &kafka.topics.usage, kafka.schema_registry.registry())
            .await
            .unwrap();
    let group = format!("bench-count-{}", uuid::Uuid::now_v7().simple());
    let consumer: StreamConsumer = kafka.consumer_config("bench", &group).create().unwrap();
    consumer.subscribe(&[&kafka.topics.usage]).unwrap();
    let mut ids = HashSet::new();
    let (mut duplicates, mut unexpected) = (0, 0);
    while (ids.len() as u64) < expected {
        let Ok(message) = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await else {
            break;
        };
        let message = message.unwrap();
        let event = codec.decode(message.payload().unwrap_or_default()).await.unwrap();
        let metered = event.outcome == Outcome::Ok
            && event.user.as_deref() == Some("bench")
            && event.tokens.input == 100
            && event.tokens.output == 20;
        if !metered {
            unexpected += 1;
        }
        if !ids.insert(event.event_id) {
            duplicates += 1;
        }
    }
    (ids.len() as u64, duplicates, unexpected)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--plain-proxy") {
        return plain_proxy(args.get(2).cloned().expect("--plain-proxy UPSTREAM_URL")).await;
    }
    let broker_setting = std::env::var("FAREGATE_INGRESS_BROKER").unwrap_or_else(|_| "memory".into());
    let (private_broker, brokers) = match broker_setting.as_str() {
        "memory" => {
            if std::env::var_os("FAREGATE_TEST_TANSU").is_none() {
                eprintln!(
                    "FAREGATE_TEST_TANSU is not set: this benchmark starts a tansu broker of its own (in \
                     memory); point FAREGATE_TEST_TANSU at the tansu binary (`deploy/local/up` installs it; \
                     `source deploy/local/lib.sh` names it $TANSU_BIN), or run against a broker of yours \
                     with FAREGATE_INGRESS_BROKER=given and FAREGATE_TEST_KAFKA_BROKERS."
                );
                std::process::exit(2);
            }
            let broker = faregate_tests::PrivateBroker::start_in_memory();
            let brokers = broker.brokers();
            (Some(broker), brokers)
        }
        "given" => {
            let Ok(brokers) = std::env::var("FAREGATE_TEST_KAFKA_BROKERS") else {
                eprintln!(
                    "FAREGATE_INGRESS_BROKER=given but FAREGATE_TEST_KAFKA_BROKERS is not set. Start the \
                     local stack with `deploy/local/up --dir $(mktemp -d) --kafka-port 0 --clickhouse-port 0` \
                     and export FAREGATE_TEST_KAFKA_BROKERS from the stack.env it writes."
                );
                std::process::exit(2);
            };
            (None, brokers)
        }
        other => {
            eprintln!(
                "FAREGATE_INGRESS_BROKER={other:?}: use `memory` (a tansu of the run's own) or `given`"
            );
            std::process::exit(2);
        }
    };
    let broker_cpu_ticks =
        || private_broker.as_ref().and_then(|b| b.pid()).map_or(0, |pid| cpu_ticks(&pid.to_string()));
    let rate: u32 = env_or("FAREGATE_INGRESS_RATE", 2000);
    let seconds: u64 = env_or("FAREGATE_INGRESS_SECONDS", 10);
    let rounds: u64 = env_or::<u64>("FAREGATE_INGRESS_ROUNDS", 10).clamp(1, seconds.max(1) * 10);
    assert!(rate > 0 && seconds > 0, "rate and seconds must be above 0");
    let round = Duration::from_millis(seconds * 1000 / rounds);
    let modes_setting = std::env::var("FAREGATE_INGRESS_MODES").unwrap_or_else(|_| "whole,streaming".into());
    let modes: Vec<bool> = modes_setting
        .split(',')
        .map(|mode| match mode.trim() {
            "whole" => false,
            "streaming" => true,
            other => panic!("FAREGATE_INGRESS_MODES: {other:?} is neither `whole` nor `streaming`"),
        })
        .collect();
    let bin = faregate_bin();
    let dir = tempfile::tempdir().unwrap();
    let suffix = uuid::Uuid::now_v7().simple().to_string();

    // The servers' runtime threads (TOKIO_WORKER_THREADS, the same for all three so the
    // comparison stays fair): one each measured best on the 2-core machine that also runs the
    // load generator and the broker (fewer cross-thread wake-ups per request).
    let server_threads: usize = env_or("FAREGATE_INGRESS_SERVER_THREADS", 1);
    println!("server runtime threads: {server_threads} each (FAREGATE_INGRESS_SERVER_THREADS)");
    let mut fake_command = Command::new(&bin);
    fake_command.args(["fake-upstream", "--listen", "127.0.0.1:0"]);
    let (mut fake, fake_url) =
        start_serving("fake upstream", fake_command, &dir.path().join("fake.log"), server_threads);
    let mut plain_command = Command::new(std::env::current_exe().unwrap());
    plain_command.args(["--plain-proxy", &fake_url]);
    let (mut plain, plain_url) =
        start_serving("plain proxy", plain_command, &dir.path().join("plain.log"), server_threads);
    let (listen, ops) = (free_port(), free_port());
    let spool = dir.path().join("spool");
    let config_path = dir.path().join("faregate.toml");
    // FAREGATE_INGRESS_EXTRA_TOML is appended to the ingress's configuration file, for experiments
    // such as `[kafka.properties]` overrides.
    let mut config = config_toml(&brokers, &suffix, listen, ops, &spool, &fake_url);
    if let Ok(extra) = std::env::var("FAREGATE_INGRESS_EXTRA_TOML") {
        println!("extra ingress configuration: {extra:?}");
        config = format!("{config}\n{extra}\n");
    }
    std::fs::write(&config_path, config).unwrap();
    faregate(&bin, &config_path, &["topics", "create"]);
    let created = faregate(&bin, &config_path, &["keys", "create", "--org", "acme", "--user", "bench"]);
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("`faregate keys create` printed no secret: {created}"))
        .trim()
        .to_string();

    if std::env::var("FAREGATE_INGRESS_HEADROOM").is_ok_and(|v| v == "1") {
        put_headroom(&brokers, &suffix).await;
        println!("a budget covers the key (FAREGATE_INGRESS_HEADROOM=1): every request reserves");
    }

    let ingress_log = dir.path().join("ingress.log");
    let mut ingress = Process {
        name: "ingress",
        child: Command::new(&bin)
            .arg("--config")
            .arg(&config_path)
            .arg("ingress")
            .env("TOKIO_WORKER_THREADS", server_threads.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&ingress_log).unwrap())
            .spawn()
            .unwrap(),
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_ready(&client, &format!("http://127.0.0.1:{ops}/ready"), &ingress_log).await;

    let body = |stream: bool| {
        bytes::Bytes::from(format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":20,"stream":{stream},"messages":[{{"role":"user","content":"Say hello to the benchmark."}}]}}"#
        ))
    };
    let load = Arc::new(Load {
        client,
        secret,
        direct_url: fake_url.clone(),
        ingress_url: format!("http://127.0.0.1:{listen}"),
        plain_url,
        plain_body: body(false),
        stream_body: body(true),
    });

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "ingress load: {rate} requests/s open loop, {seconds} s per series in {rounds} rounds rotating \
         direct / plain proxy / ingress"
    );
    println!(
        "machine: {cores} cores shared by this load generator, the fake upstream, the plain proxy, the \
         ingress and the broker (and anything else running); absolute figures are indicative, compare \
         the ratios"
    );
    println!(
        "fake upstream {fake_url} (pid {}), plain proxy {} (pid {}), ingress {} (pid {})",
        fake.pid(),
        load.plain_url,
        plain.pid(),
        load.ingress_url,
        ingress.pid()
    );

    // Warm-up: connection pools, allocator, the ingress's caches; not counted except on the topic.
    const TARGETS: [Target; 3] = [Target::Direct, Target::Plain, Target::Ingress];
    let mut ingress_requests = 0;
    for stream in [false, true] {
        for target in TARGETS {
            let mut warm = Series::default();
            run(&load, target, stream, rate, Duration::from_secs(1), &mut warm).await;
            if warm.errors > 0 {
                panic!(
                    "{} warm-up requests failed, the first: {}",
                    warm.errors,
                    warm.first_error.unwrap_or_default()
                );
            }
            if target == Target::Ingress {
                ingress_requests += warm.sent;
            }
        }
    }

    // Per mode, the series of each target in the order of TARGETS.
    let mut results: Vec<(bool, [Series; 3])> = Vec::new();
    let cpu_before =
        [fake.cpu_ticks(), plain.cpu_ticks(), ingress.cpu_ticks(), cpu_ticks("self"), broker_cpu_ticks()];
    let mut peak_rss_kb = 0;
    for &stream in &modes {
        let mut series: [Series; 3] = Default::default();
        for r in 0..rounds {
            // Rotate which side goes first, so none always follows another.
            for i in 0..TARGETS.len() {
                let t = (i + r as usize) % TARGETS.len();
                run(&load, TARGETS[t], stream, rate, round, &mut series[t]).await;
                peak_rss_kb = peak_rss_kb.max(ingress.memory_kb().0);
            }
        }
        ingress_requests += series[2].sent;
        series.iter_mut().for_each(Series::sort);
        results.push((stream, series));
    }
    let cpu_after =
        [fake.cpu_ticks(), plain.cpu_ticks(), ingress.cpu_ticks(), cpu_ticks("self"), broker_cpu_ticks()];
    let cpu: Vec<u64> = cpu_after.iter().zip(cpu_before).map(|(a, b)| a - b).collect();
    let sent = |t: usize| results.iter().map(|(_, s)| s[t].sent).sum::<u64>();

    println!();
    println!(
        "{:<10} {:<8} {:>7} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>14}",
        "mode",
        "target",
        "sent",
        "errors",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "sched lag p99"
    );
    let mut failures = Vec::new();
    let mut verdicts = Vec::new();
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    for (stream, series) in &results {
        let mode = if *stream { "streaming" } else { "whole" };
        for (name, s) in ["direct", "plain", "ingress"].iter().zip(series) {
            println!(
                "{:<10} {:<8} {:>7} {:>6} {:>7.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>11.3} ms",
                mode,
                name,
                s.sent,
                s.errors,
                s.rate(),
                s.p(50_000),
                s.p(99_000),
                s.p(99_900),
                ms(s.latencies_ns.last().copied().unwrap_or(0)),
                ms(Series::quantile(&s.lag_ns, 99_000)),
            );
            if s.errors > 0 {
                failures.push(format!(
                    "{mode} {name}: {} errors, the first: {}",
                    s.errors,
                    s.first_error.clone().unwrap_or_default()
                ));
            }
        }
        let [direct, plain, through] = series;
        for (label, s, base) in [
            ("ingress added (vs direct)", through, direct),
            ("plain proxy added (vs direct)", plain, direct),
            ("ingress beyond plain proxy", through, plain),
        ] {
            println!(
                "{:<10} {label:<30} p50 {:+.3} ms, p99 {:+.3} ms, p999 {:+.3} ms; ratio p50 {:.2} x, p99 {:.2} x",
                mode,
                s.p(50_000) - base.p(50_000),
                s.p(99_000) - base.p(99_000),
                s.p(99_900) - base.p(99_900),
                s.p(50_000) / base.p(50_000).max(1e-9),
                s.p(99_000) / base.p(99_000).max(1e-9),
            );
        }
        let (added50, added99) = (through.p(50_000) - direct.p(50_000), through.p(99_000) - direct.p(99_000));
        verdicts.push(format!(
            "{mode}: added p50 {added50:.3} ms (target <= {TARGET_P50_MS}) {}, added p99 {added99:.3} ms \
             (target <= {TARGET_P99_MS}) {}",
            met(added50 <= TARGET_P50_MS),
            met(added99 <= TARGET_P99_MS)
        ));
    }

    println!();
    let per_request_us = |ticks: u64, n: u64| ticks as f64 * 10_000.0 / n.max(1) as f64;
    let all: u64 = (0..3).map(sent).sum();
    let (fake_us, plain_us, ingress_us, own_us) = (
        per_request_us(cpu[0], all),
        per_request_us(cpu[1], sent(1)),
        per_request_us(cpu[2], sent(2)),
        per_request_us(cpu[3], all),
    );
    println!(
        "CPU per request:  ingress {ingress_us:.0} us ({:.1} x the fake's, {:.1} x the plain proxy's), \
         plain proxy {plain_us:.0} us, fake upstream {fake_us:.0} us, load generator {own_us:.0} us",
        ingress_us / fake_us.max(1e-9),
        ingress_us / plain_us.max(1e-9),
    );
    match &private_broker {
        Some(_) => println!(
            "broker:           a tansu of this run's own, storing in memory: {:.2} s of CPU over the series, \
             {:.0} us per request through the ingress",
            cpu[4] as f64 / 100.0,
            per_request_us(cpu[4], sent(2)),
        ),
        None => println!(
            "broker:           given (FAREGATE_TEST_KAFKA_BROKERS={brokers}); its CPU is not measured"
        ),
    }
    let ((ingress_rss, ingress_hwm), (_, fake_hwm), (_, plain_hwm)) =
        (ingress.memory_kb(), fake.memory_kb(), plain.memory_kb());
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!(
        "ingress RSS:      peak (VmHWM) {:.1} MB, now {:.1} MB, highest sampled {:.1} MB; peak of the fake \
         upstream {:.1} MB ({:.1} x), of the plain proxy {:.1} MB ({:.1} x)",
        mb(ingress_hwm),
        mb(ingress_rss),
        mb(peak_rss_kb),
        mb(fake_hwm),
        mb(ingress_hwm) / mb(fake_hwm).max(1e-9),
        mb(plain_hwm),
        mb(ingress_hwm) / mb(plain_hwm).max(1e-9),
    );
    verdicts.push(format!(
        "ingress peak RSS {:.1} MB (target < {TARGET_RSS_MB} MB) {}",
        mb(ingress_hwm),
        met(mb(ingress_hwm) < TARGET_RSS_MB)
    ));

    let mut kafka = KafkaConfig { brokers: brokers.clone(), ..KafkaConfig::default() };
    kafka.topics.usage = format!("bench-usage-{suffix}");
    let (events, duplicates, unexpected) = usage_events(&kafka, ingress_requests).await;
    println!(
        "usage topic:      {events} distinct events for {ingress_requests} requests through the ingress \
         (warm-up included), {duplicates} duplicates, {unexpected} not metered as sent"
    );
    if events != ingress_requests || duplicates > 0 || unexpected > 0 {
        failures.push(format!(
            "usage topic: {events} events ({duplicates} duplicates, {unexpected} unexpected) for {ingress_requests} requests"
        ));
    }

    let worst_lag = results
        .iter()
        .flat_map(|(_, series)| series)
        .map(|s| Series::quantile(&s.lag_ns, 99_000))
        .max()
        .unwrap_or(0);
    if ms(worst_lag) > 5.0 {
        println!(
            "warning: the load generator started 1% of some series' requests over {:.1} ms late: the \
             machine was busy (another build?); the figures of this run are noisy, run it again",
            ms(worst_lag)
        );
    }
    println!();
    for verdict in &verdicts {
        println!("target: {verdict}");
    }
    ingress.stop();
    plain.stop();
    fake.stop();
    // Before a failing exit, which runs no destructors.
    drop(private_broker);
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("FAILED: {failure}");
        }
        std::process::exit(1);
    }
}

//! Partitions always owned: `faregate processor` and `faregate budget` run as processes against
//! tansu, are killed with SIGKILL and restarted at once with the same static instance id,
//! several times in a row, while a backlog waits on their topic. After each restart, within
//! 30 s, every partition of the topic is owned again (their `faregate_consumer_owned_partitions`
//! gauge), the backlog is consumed (the ledger holds every event; the budget's lag is 0) and
//! `/ready` says ready; and at no point is `/ready` ready while the process owns nothing.
//!
//! Restarts are triggered by progress (the previous round's backlog consumed), never by timers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faregate_core::avro::SchemaFamily;
use faregate_core::clickhouse::migrations;
use faregate_core::event::{BucketWidth, SpendAggregate, UsageEvent, arbitrary};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics, partition_for};
use faregate_core::money::Usd;
use faregate_tests::{clickhouse_config, kafka_config, samples, unique};

const PARTITIONS: i32 = 2;
const ROUNDS: usize = 4;
/// The guarantee: owned and consumed again within this long after a restart.
const WITHIN: Duration = Duration::from_secs(30);

/// A `faregate` process with its own log file; killed with SIGKILL on drop.
struct Process {
    child: Child,
    log: PathBuf,
    ops: Option<String>,
}

impl Process {
    fn start(service: &str, env: &[(String, String)], log: PathBuf) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_faregate"))
            .arg(service)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("FAREGATE__TELEMETRY__METRICS_LISTEN", "127.0.0.1:0")
            .env("FAREGATE__TELEMETRY__LOG_FILTER", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("faregate starts");
        Process { child, log, ops: None }
    }

    /// The ops endpoint's address, from the log once it is bound.
    fn ops(&mut self) -> Option<String> {
        if self.ops.is_none() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            self.ops = log
                .lines()
                .find(|l| l.contains("ops endpoint"))
                .and_then(|l| l.split("addr=").nth(1))
                .map(|a| a.split_whitespace().next().unwrap_or_default().to_string());
        }
        self.ops.clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// `GET path` over HTTP/1.0: (status, body).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The value of `metric{group="<group>"}` in a Prometheus text page.
fn gauge(page: &str, metric: &str, group: &str) -> Option<i64> {
    let prefix = format!("{metric}{{group=\"{group}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

/// What the process reports: (owned partitions, lag, ready), read so that "nothing owned and
/// ready" cannot be missed: the owned gauge is read before and after `/ready`, and the gauge
/// and the readiness flag are updated in that order by one check.
fn report(process: &mut Process, group: &str) -> Option<(i64, i64, bool)> {
    let addr = process.ops()?;
    let before = gauge(&get(&addr, "/metrics")?.1, "faregate_consumer_owned_partitions", group);
    let (status, body) = get(&addr, "/ready")?;
    let page = get(&addr, "/metrics")?.1;
    let after = gauge(&page, "faregate_consumer_owned_partitions", group);
    let ready = status == 200;
    if before.unwrap_or(0) == 0 && after.unwrap_or(0) == 0 {
        let consumer: Vec<&str> = page.lines().filter(|l| l.starts_with("faregate_consumer")).collect();
        assert!(!ready, "/ready said ready while the process owned no partition: {body} {consumer:?}");
    }
    Some((after?, gauge(&page, "faregate_consumer_lag", group)?, ready))
}

/// Poll `probe` (which may assert) until it holds, failing after `deadline`.
async fn within<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(start.elapsed() < deadline, "{what} did not happen within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn topics_env(kafka: &KafkaConfig) -> Vec<(String, String)> {
    let t = &kafka.topics;
    [
        ("KAFKA__BROKERS", kafka.brokers.as_str()),
        ("KAFKA__FETCH_WAIT_MAX_MS", "10"),
        ("KAFKA__TOPICS__PARTITIONS", "2"),
        ("KAFKA__TOPICS__USAGE", &t.usage),
        ("KAFKA__TOPICS__SPEND", &t.spend),
        ("KAFKA__TOPICS__DECISIONS", &t.decisions),
        ("KAFKA__TOPICS__CONFIG", &t.config),
        ("KAFKA__TOPICS__DLQ", &t.dlq),
        ("KAFKA__TOPICS__ALERTS", &t.alerts),
    ]
    .into_iter()
    .map(|(k, v)| (format!("FAREGATE__{k}"), v.to_string()))
    .collect()
}

/// Usage events of subjects on both partitions of the usage topic.
fn usage_events(n: usize) -> Vec<UsageEvent> {
    samples(arbitrary::usage_event(), n)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.event_id = uuid::Uuid::now_v7();
            e.org = "acme".into();
            e.user = Some(format!("user{}", i % 8));
            e.provider = "anthropic".into();
            e.requested_model = "ownership-model".into();
            e.served_model = None;
            e.service_tier = None;
            e.inference_region = None;
            e.http_status = 200;
            e.latency_us = 1_000;
            e.ttfb_us = None;
            e.received_at = chrono::Utc::now();
            e.occurred_at = e.received_at;
            let t = &mut e.tokens;
            t.input = t.input.rem_euclid(300_000);
            t.output = t.output.rem_euclid(30_000);
            t.cache_read = t.cache_read.rem_euclid(100_000);
            t.cache_write_5m = t.cache_write_5m.rem_euclid(10_000);
            t.cache_write_1h = t.cache_write_1h.rem_euclid(10_000);
            t.reasoning = t.reasoning.rem_euclid(5_000);
            e
        })
        .collect()
}

/// Two instances of `service` (`<service>-0`, `<service>-1`) share the group; `backlog(n)`
/// puts the n-th backlog on the topic. Each round: the instance that owns every partition is
/// killed with SIGKILL and the other one (killed at the end of the previous round) is started at
/// once with its instance id; within 30 s it owns every partition and `consumed` holds. Then
/// the dead one restarts with its instance id; within 30 s every partition is owned by a ready
/// instance and `consumed` holds; and the restarted one is killed. `report` checks throughout
/// that no instance owning nothing says ready.
async fn kill_and_restart_rounds<B, BF>(
    service: &str,
    env: &[(String, String)],
    group: &str,
    mut backlog: B,
    consumed: impl Fn(&[(i64, i64, bool)]) -> bool,
) where
    B: FnMut(usize) -> BF,
    BF: std::future::Future<Output = ()>,
{
    let logs = tempfile::tempdir().unwrap();
    let id_var = format!("FAREGATE__{}__INSTANCE_ID", service.to_uppercase());
    let mut starts = 0;
    let mut start = |instance: usize| {
        starts += 1;
        let mut env = env.to_vec();
        env.push((id_var.clone(), format!("{service}-{instance}")));
        Process::start(service, &env, logs.path().join(format!("{service}-{instance}-{starts}.log")))
    };
    let mut up = start(0);
    within("the first instance to own every partition", WITHIN, || {
        let (owned, _, _) = report(&mut up, group)?;
        (owned == i64::from(PARTITIONS)).then_some(())
    })
    .await;
    let (mut alive_id, mut other_id) = (0, 1);
    for round in 0..ROUNDS {
        backlog(round).await;
        // The owner of every partition dies; the other instance (killed at the end of the
        // previous round) starts while the dead one is still a member of the group.
        up.kill();
        let mut joined = start(other_id);
        let killed = Instant::now();
        within(&format!("round {round}: every partition owned after the owner's death"), WITHIN, || {
            let report = report(&mut joined, group)?;
            (report.0 == i64::from(PARTITIONS) && report.2 && consumed(&[report])).then_some(())
        })
        .await;
        eprintln!("round {round}: every partition owned {:?} after the owner was killed", killed.elapsed());
        // The dead one restarts with its instance id; the group splits the partitions.
        backlog(ROUNDS + round).await;
        let mut back = start(alive_id);
        let restarted = Instant::now();
        within(
            &format!("round {round}: every partition owned by a ready instance after the restart"),
            WITHIN,
            || {
                let reports = [report(&mut back, group)?, report(&mut joined, group)?];
                let owned: i64 = reports.iter().map(|(owned, _, _)| owned).sum();
                let owners_ready = reports.iter().all(|(owned, _, ready)| *owned == 0 || *ready);
                (owned == i64::from(PARTITIONS) && owners_ready && consumed(&reports)).then_some(())
            },
        )
        .await;
        eprintln!("round {round}: every partition owned {:?} after the restart", restarted.elapsed());
        // The restarted one is killed at once; the next round restarts it quickly.
        back.kill();
        up = joined;
        std::mem::swap(&mut alive_id, &mut other_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_partitions_are_owned_again_after_sigkills_and_quick_restarts() {
    let mut kafka = kafka_config();
    kafka.topics.partitions = PARTITIONS;
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let clickhouse = clickhouse_config();
    migrations::apply(&clickhouse).await.unwrap();
    let client = clickhouse.client();
    let group = unique("processor");
    let mut env = topics_env(&kafka);
    env.extend(
        [
            ("FAREGATE__CLICKHOUSE__URL", clickhouse.url.as_str()),
            ("FAREGATE__CLICKHOUSE__DATABASE", &clickhouse.database),
            ("FAREGATE__PROCESSOR__GROUP_ID", &group),
            ("FAREGATE__PROCESSOR__BATCH_MAX_WAIT_MS", "20"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let producer: RecordProducer<UsageEvent> =
        RecordProducer::new(&kafka, "test", SchemaFamily::UsageEvent, &kafka.topics.usage).await.unwrap();
    let events = usage_events(2 * ROUNDS * 100);
    let sent = std::sync::atomic::AtomicU64::new(0);
    let backlog = |round: usize| {
        let (producer, events, sent) = (&producer, &events, &sent);
        async move {
            for event in &events[round * 100..(round + 1) * 100] {
                producer.send(&event.partition_key(), event).await.unwrap();
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    };
    let consumed =
        |_: &[(i64, i64, bool)]| ledger_rows(&client) == Some(sent.load(std::sync::atomic::Ordering::SeqCst));
    kill_and_restart_rounds("processor", &env, &group, backlog, consumed).await;
}

/// The ledger's row count (blocking on the runtime's behalf: the probe is synchronous).
fn ledger_rows(client: &clickhouse::Client) -> Option<u64> {
    let client = client.clone();
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async move {
            client.query("SELECT count() FROM usage_ledger").fetch_one::<u64>().await.ok()
        })
    })
}

fn spend(org: &str, i: i64) -> SpendAggregate {
    let hour = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() / 3600 * 3600, 0).unwrap();
    SpendAggregate {
        subject: format!("org={org}/user=ana"),
        org: org.into(),
        team: None,
        user: Some("ana".into()),
        key_id: None,
        project: None,
        model: Some("claude-opus-4-1".into()),
        tool: None,
        session_id: None,
        bucket_start: hour,
        bucket_width: BucketWidth::Hour,
        cost_usd: Usd(rust_decimal::Decimal::from(i)),
        requests: i,
        unpriced_requests: 0,
        tokens_total: 1000 * i,
        revision: i,
        computed_at: hour,
        usage_positions: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_partitions_are_owned_again_after_sigkills_and_quick_restarts() {
    let mut kafka = kafka_config();
    kafka.topics.partitions = PARTITIONS;
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let group = unique("budget");
    let mut env = topics_env(&kafka);
    env.push(("FAREGATE__BUDGET__GROUP_ID".into(), group.clone()));
    let producer: RecordProducer<SpendAggregate> =
        RecordProducer::new(&kafka, "test", SchemaFamily::SpendAggregate, &kafka.topics.spend).await.unwrap();
    // Orgs on both partitions.
    let orgs: Vec<String> = (0..8).map(|i| format!("org{i}")).collect();
    assert!((0..PARTITIONS).all(|p| orgs.iter().any(|o| partition_for(o, PARTITIONS) == p)));
    let backlog = |round: usize| {
        let (producer, orgs) = (&producer, &orgs);
        async move {
            for (i, org) in orgs.iter().enumerate() {
                let record = spend(org, (round * 100 + i) as i64 + 1);
                producer.send_to(partition_for(org, PARTITIONS), &record.subject, &record).await.unwrap();
            }
        }
    };
    let consumed = |reports: &[(i64, i64, bool)]| reports.iter().all(|(_, lag, _)| *lag == 0);
    kill_and_restart_rounds("budget", &env, &group, backlog, consumed).await;
}

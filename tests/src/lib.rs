//! The harness of Faregate's real-component tests.
//!
//! The tests run against a local stack started by `deploy/local/test` on free ports, found in
//! `FAREGATE_TEST_KAFKA_BROKERS` and `FAREGATE_TEST_CLICKHOUSE_URL`; tests share it safely by
//! using random topic, group and database names. A test that must restart a broker starts a
//! private tansu of its own ([`PrivateBroker`], binary from `FAREGATE_TEST_TANSU`); one that
//! must stop ClickHouse starts a private front ([`PrivateClickHouse`], from
//! `FAREGATE_TEST_CHFRONT_PYTHON` and `FAREGATE_TEST_CHFRONT_DIR`).
//! Waiting is always for a condition with a deadline, never a fixed sleep.

pub mod chain;
pub mod forward_auth;
pub mod process;
pub mod soak;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::kafka::KafkaConfig;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with deploy/local/test, which starts the local stack and sets it")
    })
}

/// A name no other test uses: `prefix_<uuid v7>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Kafka settings for the shared test broker, with topic names of this test's own.
pub fn kafka_config() -> KafkaConfig {
    kafka_config_for(&required_env("FAREGATE_TEST_KAFKA_BROKERS"))
}

/// Kafka settings for `brokers`, with topic names of this test's own and one partition each.
pub fn kafka_config_for(brokers: &str) -> KafkaConfig {
    // tansu answers a fetch only when its wait expires: keep every consumer hop short.
    let mut config =
        KafkaConfig { brokers: brokers.to_string(), fetch_wait_max_ms: 10, ..KafkaConfig::default() };
    for (name, topic) in config.topics.names_mut() {
        *topic = unique(name);
    }
    config.topics.partitions = 1;
    config
}

/// ClickHouse settings for the shared test front, with a database of this test's own.
pub fn clickhouse_config() -> ClickHouseConfig {
    ClickHouseConfig {
        url: required_env("FAREGATE_TEST_CLICKHOUSE_URL"),
        database: unique("test"),
        ..ClickHouseConfig::default()
    }
}

/// A one-model price catalog file (`anthropic.toml`) for tests that price through the real
/// catalog: $3 input, $15 output (reasoning billed as output), $0.30 cache read, $3.75 and $6
/// cache writes (5m, 1h), per million tokens. [`hand_priced`] is its oracle.
pub fn test_catalog(model: &str) -> String {
    format!(
        "[models.{model}]\n[[models.{model}.prices]]\neffective_from = 2020-01-01\nunit = \"per_million\"\n\
         input = \"3\"\noutput = \"15\"\ncache_read = \"0.30\"\ncache_write_5m = \"3.75\"\ncache_write_1h = \"6\"\n"
    )
}

/// The cost of `tokens` under [`test_catalog`], worked out by hand and independently of it.
pub fn hand_priced(tokens: &faregate_core::event::TokenCounts) -> rust_decimal::Decimal {
    use rust_decimal::Decimal;
    let per_million = |count: i64, usd: &str| Decimal::from(count) * usd.parse::<Decimal>().unwrap();
    (per_million(tokens.input, "3")
        + per_million(tokens.output + tokens.reasoning, "15")
        + per_million(tokens.cache_read, "0.30")
        + per_million(tokens.cache_write_5m, "3.75")
        + per_million(tokens.cache_write_1h, "6"))
        / Decimal::from(1_000_000)
}

/// `n` values of `strategy`, the same ones on every run.
pub fn samples<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..n).map(|_| strategy.new_tree(&mut runner).expect("a sample").current()).collect()
}

/// Poll `condition` until it holds, failing the test after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "{what} did not happen within {deadline:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tansu broker of one test's own, on a free port with its own sqlite file (or in memory);
/// killed on drop.
pub struct PrivateBroker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    tansu: PathBuf,
    storage: &'static str,
}

impl PrivateBroker {
    /// A broker storing in sqlite: what it acknowledged survives [`PrivateBroker::restart`].
    pub fn start() -> PrivateBroker {
        Self::start_with("sqlite://tansu.db")
    }

    /// A broker storing in memory: several times less CPU per record than sqlite (for load
    /// harnesses that share their cores with it); a restart loses everything.
    pub fn start_in_memory() -> PrivateBroker {
        Self::start_with("memory://tansu/")
    }

    fn start_with(storage: &'static str) -> PrivateBroker {
        let tansu = PathBuf::from(required_env("FAREGATE_TEST_TANSU"));
        let port = free_port();
        let mut broker =
            PrivateBroker { child: None, port, dir: tempfile::tempdir().unwrap(), tansu, storage };
        broker.spawn();
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap();
        let child = Command::new(&self.tansu)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // tansu reads the path of a sqlite URL relative to its working directory.
            .args(["--storage-engine", self.storage])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.tansu.display()));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("tansu to accept connections", Duration::from_secs(30), || {
            TcpStream::connect(&addr).is_ok()
        });
    }

    /// Kill the broker with SIGKILL (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze the broker (SIGSTOP): its connections stay open and nothing is answered, like a
    /// hung broker. [`PrivateBroker::resume`] lets it go on.
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// Let a paused broker go on (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the broker is running");
        let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill {signal} {} failed: {status}", child.id());
    }

    /// Kill the broker and start it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

fn answers_ping(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("Ok.")
}

/// A ClickHouse front of one test's own, on a free port with its own data; stopped on drop.
pub struct PrivateClickHouse {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateClickHouse {
    pub fn start() -> PrivateClickHouse {
        let mut front =
            PrivateClickHouse { child: None, port: free_port(), dir: tempfile::tempdir().unwrap() };
        front.spawn();
        front
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The front's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let python = required_env("FAREGATE_TEST_CHFRONT_PYTHON");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("chfront.log"))
            .unwrap();
        let child = Command::new(&python)
            .args(["-m", "chfront", "--host", "127.0.0.1", "--port", &self.port.to_string(), "--data-dir"])
            .arg(self.dir.path().join("data"))
            .current_dir(required_env("FAREGATE_TEST_CHFRONT_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python}: {e}"));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("the ClickHouse front to answer /ping", Duration::from_secs(60), || answers_ping(&addr));
    }

    /// Stop the front (SIGTERM, then wait for it to exit).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and data.
    pub fn resume(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freeze the front (SIGSTOP): connections stay open and nothing is answered, like a hung
    /// server. [`PrivateClickHouse::thaw`] lets it go on.
    pub fn freeze(&mut self) {
        self.signal("-STOP");
    }

    /// Let a frozen front go on (SIGCONT).
    pub fn thaw(&mut self) {
        self.signal("-CONT");
    }

    /// Kill the front with SIGKILL (no clean shutdown) and start it again on the same port and
    /// data.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// Kill the front with SIGKILL (no clean shutdown); [`PrivateClickHouse::restart`] starts it
    /// again.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start a killed front again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the front is running");
        self.spawn();
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the front is running");
        let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill {signal} {} failed: {status}", child.id());
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A virtual key as `faregate keys create` stores it (only the hash and display prefix of
/// `secret`), active, with no model allowlist and no rate limits.
pub fn virtual_key(
    key_id: &str,
    secret: &str,
    org: &str,
    team: Option<&str>,
    user: Option<&str>,
) -> faregate_core::event::VirtualKey {
    faregate_core::event::VirtualKey {
        key_id: key_id.into(),
        secret_hash: faregate_ingress::keys::hash_secret(secret),
        secret_prefix: faregate_ingress::keys::display_prefix(secret),
        org: org.into(),
        team: team.map(Into::into),
        user: user.map(Into::into),
        allowed_models: vec![],
        rpm_limit: None,
        tpm_limit: None,
        status: faregate_core::event::KeyStatus::Active,
        created_at: chrono::Utc::now(),
        expires_at: None,
    }
}

/// A config-topic record of `entity`, written now.
pub fn config_record(entity: faregate_core::event::ConfigEntity) -> faregate_core::event::ConfigRecord {
    faregate_core::event::ConfigRecord { updated_at: chrono::Utc::now(), updated_by: None, entity }
}

/// Poll `probe` until it returns a value, failing the test after `deadline`.
pub async fn eventually_within<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "{what} did not happen within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A block decision for `subject` from an "Infra daily" budget ($12.50 spent of $10, resetting
/// in three hours), as the budget service publishes it.
pub fn budget_block(subject: &str) -> faregate_core::event::Decision {
    use faregate_core::money::Usd;
    faregate_core::event::Decision {
        subject: subject.into(),
        state: faregate_core::event::DecisionState::Block,
        reason: "daily limit reached".into(),
        budget_id: Some("infra-daily".into()),
        budget_name: Some("Infra daily".into()),
        spent_usd: Usd("12.5".parse().expect("a decimal")),
        limit_usd: Some(Usd("10".parse().expect("a decimal"))),
        window_start: None,
        resets_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(3)),
        downgrade_to: None,
        decided_at: chrono::Utc::now(),
        revision: 1,
    }
}

/// A rolling day budget's headroom record for `scope_key`, `remaining` of `limit` left, as the
/// budget service publishes it now.
pub fn day_headroom(
    scope_key: &str,
    budget_id: &str,
    budget_name: &str,
    limit: faregate_core::money::Usd,
    remaining: faregate_core::money::Usd,
) -> faregate_core::event::Headroom {
    let now = chrono::Utc::now();
    faregate_core::event::Headroom {
        scope_key: scope_key.into(),
        budget_id: budget_id.into(),
        budget_name: budget_name.into(),
        period: "day".into(),
        days: None,
        rolling: true,
        time_zone: "UTC".into(),
        limit_usd: limit,
        spent_usd: faregate_core::money::Usd(limit.0 - remaining.0),
        remaining_usd: remaining,
        window_start: now - chrono::TimeDelta::days(1),
        window_end: now,
        resets_at: None,
        spend_revision: now.timestamp_micros(),
        usage_watermarks: None,
        shares: None,
        published_at: now,
        revision: 1,
    }
}

/// Every usage event on partition 0 of `kafka.topics.usage`, read from its beginning until
/// `done` says the events read so far are enough; fails the test after `deadline`.
pub async fn usage_events_until(
    kafka: &KafkaConfig,
    deadline: Duration,
    mut done: impl FnMut(&[faregate_core::event::UsageEvent]) -> bool,
) -> Vec<faregate_core::event::UsageEvent> {
    use faregate_core::avro::{AvroCodec, SchemaFamily};
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = kafka.consumer_config("test-reader", &unique("reader")).create().unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(&kafka.topics.usage, 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let codec = AvroCodec::<faregate_core::event::UsageEvent>::new(
        SchemaFamily::UsageEvent,
        &kafka.topics.usage,
        kafka.schema_registry.registry(),
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    let start = Instant::now();
    while !done(&events) {
        assert!(
            start.elapsed() < deadline,
            "the usage topic did not have what was expected within {deadline:?}"
        );
        if let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            events.push(codec.decode(message.payload().unwrap()).await.unwrap());
        }
    }
    events
}

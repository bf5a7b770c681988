//! The whole chain in one test process: the fake provider, `replicas` ingresses, the processor
//! and the budget service, on a broker and a ClickHouse front the caller chooses (shared or
//! private), with topics and a database of the caller's own. Keys and budgets are written to the
//! config topic before any service starts, so every service has read them once it is ready.
//!
//! The processor runs as a task that [`Chain::kill_processor`] aborts (no drain, no flush, no
//! offset commit: the in-process equivalent of `kill -9`); [`Chain::start_processor`] starts it
//! again with the same group and static member id. The budget service runs on the clock the
//! caller passes, so tests can move windows on.
//!
//! Prices come from a catalog of the caller's models under [`crate::test_catalog`]'s prices, so
//! [`crate::hand_priced`] is the oracle of every cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use faregate_budget::{BudgetConfig, Clock};
use faregate_core::avro::SchemaFamily;
use faregate_core::clickhouse::{ClickHouseConfig, migrations};
use faregate_core::config::Secret;
use faregate_core::event::{Budget, ConfigEntity, ConfigRecord, Decision, DecisionState, TokenCounts};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};
use faregate_fake_upstream::{FakeConfig, FakeUpstream, FakeUsage, RecordedRequest, USAGE_HEADER};
use faregate_ingress::config::{IngressConfig, Provider, UpstreamConfig};
use faregate_processor::ProcessorConfig;
use rust_decimal::Decimal;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{test_catalog, unique};

/// The bearer token of every ingress's collector and decisions API.
pub const COLLECTOR_TOKEN: &str = "chain-collector-token";
/// Models of the test catalog, by provider file.
pub const ANTHROPIC_MODELS: &[&str] = &["claude-sonnet-4-5"];
pub const OPENAI_MODELS: &[&str] = &["gpt-5", "gpt-5-codex"];
const DEADLINE: Duration = Duration::from_secs(120);

/// A virtual key to create before the services start.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub key_id: String,
    pub secret: String,
    pub org: String,
    pub team: Option<String>,
    pub user: Option<String>,
}

impl KeySpec {
    /// A key `k-<user>` with secret `fgk_chain_<user>` for `org/team/user`.
    pub fn new(org: &str, team: &str, user: &str) -> KeySpec {
        KeySpec {
            key_id: format!("k-{user}"),
            secret: format!("fgk_chain_{user}"),
            org: org.into(),
            team: Some(team.into()),
            user: Some(user.into()),
        }
    }
}

/// What to start.
#[derive(Debug)]
pub struct ChainSetup {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    /// Ingress replicas (1 by default).
    pub replicas: usize,
    pub keys: Vec<KeySpec>,
    pub budgets: Vec<Budget>,
    /// The budget service's clock (the system clock by default).
    pub budget_clock: Arc<dyn Clock>,
    /// The processor's settings (its defaults, but batches of at most 500 rows and retries at
    /// most 500 ms apart); the chain sets its group, member id and price catalog.
    pub processor: ProcessorConfig,
    /// Every ingress's reservation settings (`prices_dir` and `replicas` are set by the chain:
    /// the chain's catalog and the replica count).
    pub reservation: faregate_ingress::config::ReservationConfig,
    /// The fake provider's settings.
    pub fake: FakeConfig,
}

impl ChainSetup {
    pub fn new(kafka: KafkaConfig, clickhouse: ClickHouseConfig) -> ChainSetup {
        ChainSetup {
            kafka,
            clickhouse,
            replicas: 1,
            keys: Vec::new(),
            budgets: Vec::new(),
            budget_clock: Arc::new(faregate_budget::SystemClock),
            processor: ProcessorConfig {
                batch_max_rows: 500,
                retry_max_ms: 500,
                ..ProcessorConfig::default()
            },
            reservation: faregate_ingress::config::ReservationConfig::default(),
            fake: FakeConfig::default(),
        }
    }
}

/// One running ingress replica.
pub struct Ingress {
    pub url: String,
    stop: CancellationToken,
    handle: JoinHandle<()>,
    _spool: tempfile::TempDir,
}

/// The running chain; every task is stopped on drop.
pub struct Chain {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub fake: FakeUpstream,
    pub ingresses: Vec<Ingress>,
    processor: Option<(CancellationToken, JoinHandle<()>)>,
    budget: (CancellationToken, JoinHandle<()>),
    processor_group: String,
    processor_config: ProcessorConfig,
    /// The running processor's readiness flag: it owns and consumes its partitions.
    processor_owns: Arc<AtomicBool>,
    prices: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Chain {
    pub async fn start(setup: ChainSetup) -> Chain {
        let ChainSetup {
            kafka,
            clickhouse,
            replicas,
            keys,
            budgets,
            budget_clock,
            processor: processor_config,
            mut reservation,
            fake,
        } = setup;
        ensure_topics(&kafka, &kafka.topic_specs()).await.expect("topics are created");
        migrations::apply(&clickhouse).await.expect("the schema applies");
        write_config(&kafka, &keys, &budgets).await;
        let prices = tempfile::tempdir().unwrap();
        // The fake reports each provider's standard tier; at a multiplier of 1 the oracle holds.
        let catalog = |tier: &str, models: &[&str]| {
            let models: Vec<String> = models.iter().map(|m| test_catalog(m)).collect();
            format!("[service_tiers]\n{tier} = {{ multiplier = \"1\" }}\n\n{}", models.join("\n"))
        };
        std::fs::write(prices.path().join("anthropic.toml"), catalog("standard", ANTHROPIC_MODELS)).unwrap();
        std::fs::write(prices.path().join("openai.toml"), catalog("default", OPENAI_MODELS)).unwrap();
        let fake = FakeUpstream::start(fake).await.expect("the fake provider starts");
        reservation.prices_dir = prices.path().display().to_string();
        reservation.replicas = u32::try_from(replicas).expect("a few replicas");
        let mut chain = Chain {
            kafka: kafka.clone(),
            clickhouse,
            fake,
            ingresses: Vec::new(),
            processor: None,
            budget: start_budget(&kafka, budget_clock).await,
            processor_group: unique("processor"),
            processor_config,
            processor_owns: Arc::new(AtomicBool::new(false)),
            prices,
            http: reqwest::Client::new(),
        };
        chain.start_processor();
        for replica in 0..replicas {
            let ingress = start_ingress(&kafka, &chain.fake, replica, &reservation).await;
            chain.ingresses.push(ingress);
        }
        chain
    }

    /// The price catalog every service of the chain reads (`prices_dir`).
    pub fn prices_dir(&self) -> &std::path::Path {
        self.prices.path()
    }

    /// The first ingress's URL (no `/v1`).
    pub fn url(&self) -> &str {
        &self.ingresses[0].url
    }

    /// Start the processor (again): same group, same static member id.
    pub fn start_processor(&mut self) {
        assert!(self.processor.is_none(), "the processor is already running");
        let config = ProcessorConfig {
            group_id: self.processor_group.clone(),
            instance_id: "processor-0".into(),
            prices_dir: self.prices.path().display().to_string(),
            ..self.processor_config.clone()
        };
        let stop = CancellationToken::new();
        let catalog_tasks = faregate_core::shutdown::Tasks::new(stop.clone());
        let pricer =
            faregate_processor::catalog_pricer(&config, &catalog_tasks).expect("the test catalog loads");
        let (kafka, clickhouse, token) = (self.kafka.clone(), self.clickhouse.clone(), stop.clone());
        let partitions_ok = Arc::new(AtomicBool::new(false));
        self.processor_owns = partitions_ok.clone();
        let handle = tokio::spawn(async move {
            let ok = Arc::new(AtomicBool::new(false));
            faregate_processor::run(config, kafka, clickhouse, pricer, ok, partitions_ok, token)
                .await
                .expect("the processor runs");
        });
        self.processor = Some((stop, handle));
    }

    /// Wait until the processor owns and consumes its usage partitions (its readiness): a group
    /// join takes seconds on tansu, and an event sent before it waits for the assignment.
    pub async fn processor_owns_its_partitions(&self) {
        eventually("the processor owns its usage partitions", || async {
            self.processor_owns.load(Ordering::Acquire).then_some(())
        })
        .await
    }

    /// Abort the processor mid-flight: no drain, no flush, no commit.
    pub async fn kill_processor(&mut self) {
        if let Some((stop, handle)) = self.processor.take() {
            handle.abort();
            let _ = handle.await;
            stop.cancel();
        }
    }

    /// Wait until every ingress holds a decision for `subject` in `state`; returns the first's.
    pub async fn decision_everywhere(&self, subject: &str, state: DecisionState) -> Decision {
        let mut found = None;
        for ingress in &self.ingresses {
            found = Some(
                eventually(&format!("{state:?} for {subject} at {}", ingress.url), || async {
                    self.decision_at(&ingress.url, subject).await.filter(|d| d.state == state)
                })
                .await,
            );
        }
        found.expect("at least one ingress")
    }

    /// The decision an ingress holds for `subject` (its decisions API).
    pub async fn decision_at(&self, url: &str, subject: &str) -> Option<Decision> {
        let response = self
            .http
            .get(format!("{url}/v1/decisions/{}", encode_path(subject)))
            .bearer_auth(COLLECTOR_TOKEN)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json::<faregate_core::event::DecisionJson>().await.ok().map(Decision::from)
    }

    /// Ledger rows and their exact cost sum (`WHERE` clause optional, e.g. `user = 'ana'`).
    pub async fn ledger(&self, filter: &str) -> Option<(u64, Decimal)> {
        let filter = if filter.is_empty() { String::new() } else { format!("WHERE {filter}") };
        let sql = format!("SELECT count(), toString(sum(ifNull(cost_total, 0))) FROM usage_ledger {filter}");
        let (rows, sum): (u64, String) = self.clickhouse.client().query(&sql).fetch_one().await.ok()?;
        Some((rows, sum.parse().ok()?))
    }

    /// Wait until the ledger holds `rows` rows matching `filter`; returns their exact cost sum.
    pub async fn ledger_settles(&self, filter: &str, rows: u64) -> Decimal {
        eventually(&format!("{rows} ledger rows ({filter})"), || async {
            self.ledger(filter).await.filter(|(n, _)| *n >= rows).map(|(_, sum)| sum)
        })
        .await
    }
}

impl Chain {
    /// `GET /v1/me` at the ingress at `url` with the virtual key `secret`; None until it answers
    /// with JSON.
    pub async fn me(&self, url: &str, secret: &str) -> Option<serde_json::Value> {
        self.http.get(format!("{url}/v1/me")).header("x-api-key", secret).send().await.ok()?.json().await.ok()
    }

    /// Fail unless every service task is still running (none stopped on an error).
    pub fn assert_running(&self) {
        for ingress in &self.ingresses {
            assert!(!ingress.handle.is_finished(), "the ingress at {} stopped", ingress.url);
        }
        let processor = self.processor.as_ref().expect("the processor was started");
        assert!(!processor.1.is_finished(), "the processor stopped");
        assert!(!self.budget.1.is_finished(), "the budget service stopped");
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for ingress in &self.ingresses {
            ingress.stop.cancel();
            ingress.handle.abort();
        }
        if let Some((stop, handle)) = self.processor.take() {
            stop.cancel();
            handle.abort();
        }
        self.budget.0.cancel();
    }
}

/// The tokens a fake response reported for `request`, as the event's disjoint classes: what
/// the provider billed, the oracle of a test (OpenAI routes report no cache writes).
pub fn served_tokens(request: &RecordedRequest) -> TokenCounts {
    let usage =
        FakeUsage::for_request(&request.body, request.header(USAGE_HEADER)).expect("a valid usage header");
    let openai = !request.path.starts_with("/v1/messages");
    let (w5, w1h) = if openai { (0, 0) } else { (usage.cache_write_5m, usage.cache_write_1h) };
    let count = |n: u64| i64::try_from(n).unwrap();
    TokenCounts {
        input: count(usage.input),
        output: count(usage.output),
        cache_read: count(usage.cache_read),
        cache_write_5m: count(w5),
        cache_write_1h: count(w1h),
        reasoning: count(usage.reasoning),
    }
}

/// tests/clients/e2e_clients.py with the official SDKs, against `urls` with `key`, in `mode`
/// (see the script); stdout is one JSON line per call.
pub fn sdk_clients(urls: &[&str], key: &str, mode: &str) -> tokio::process::Command {
    let python = std::env::var("FAREGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| {
        panic!("FAREGATE_TEST_CLIENTS_PYTHON is not set: run the tests with deploy/local/test (it installs the SDKs)")
    });
    let mut command = tokio::process::Command::new(python);
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/e2e_clients.py"))
        .env("FAREGATE_URL", urls.join(","))
        .env("FAREGATE_KEY", key)
        .env("MODE", mode)
        .kill_on_drop(true);
    command
}

/// Run [`sdk_clients`] to the end; the JSON value of each line it printed.
pub async fn run_sdk_clients(mut command: tokio::process::Command) -> Vec<serde_json::Value> {
    let output = command.output().await.expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "e2e_clients.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
}

/// Poll `probe` until it returns a value, failing after two minutes.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::eventually_within(what, DEADLINE, probe).await
}

fn encode_path(subject: &str) -> String {
    subject.replace('%', "%25").replace('/', "%2F").replace('=', "%3D")
}

/// Write `keys` and `budgets` to the config topic.
pub async fn write_config(kafka: &KafkaConfig, keys: &[KeySpec], budgets: &[Budget]) {
    let producer: RecordProducer<ConfigRecord> =
        RecordProducer::new(kafka, "test", SchemaFamily::ConfigRecord, &kafka.topics.config).await.unwrap();
    let record = |entity| ConfigRecord { updated_at: Utc::now(), updated_by: None, entity };
    for key in keys {
        let entity = ConfigEntity::VirtualKey(crate::virtual_key(
            &key.key_id,
            &key.secret,
            &key.org,
            key.team.as_deref(),
            key.user.as_deref(),
        ));
        let record = record(entity);
        producer.send(&record.topic_key(), &record).await.unwrap();
    }
    for budget in budgets {
        let record = record(ConfigEntity::Budget(budget.clone()));
        producer.send(&record.topic_key(), &record).await.unwrap();
    }
}

async fn start_budget(kafka: &KafkaConfig, clock: Arc<dyn Clock>) -> (CancellationToken, JoinHandle<()>) {
    let config = BudgetConfig { tick_ms: 50, group_id: unique("budget"), ..BudgetConfig::default() };
    let (ready, stop) = (Arc::new(AtomicBool::new(false)), CancellationToken::new());
    let handle = tokio::spawn({
        let (kafka, ready, stop) = (kafka.clone(), ready.clone(), stop.clone());
        async move {
            faregate_budget::run_with_clock(config, kafka, clock, ready, stop)
                .await
                .expect("the budget service runs");
        }
    });
    eventually("the budget service to be ready", || async { ready.load(Ordering::Acquire).then_some(()) })
        .await;
    (stop, handle)
}

async fn start_ingress(
    kafka: &KafkaConfig,
    fake: &FakeUpstream,
    replica: usize,
    reservation: &faregate_ingress::config::ReservationConfig,
) -> Ingress {
    let spool = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = |provider: Provider| UpstreamConfig {
        name: provider.name().into(),
        provider,
        base_url: fake.url(),
        api_key: Secret::new("sk-upstream"),
        models: vec![],
    };
    let config = IngressConfig {
        source_name: format!("ingress-{replica}"),
        upstreams: vec![upstream(Provider::Anthropic), upstream(Provider::Openai)],
        spool_dir: spool.path().to_path_buf(),
        collector_token: Secret::new(COLLECTOR_TOKEN),
        reservation: reservation.clone(),
        ..IngressConfig::default()
    };
    let (ready, stop) = (Arc::new(AtomicBool::new(false)), CancellationToken::new());
    let handle = tokio::spawn({
        let (kafka, ready, stop) = (kafka.clone(), ready.clone(), stop.clone());
        async move {
            faregate_ingress::run_on(listener, config, kafka, ready, stop).await.expect("the ingress runs")
        }
    });
    eventually("the ingress to be ready", || async { ready.load(Ordering::Acquire).then_some(()) }).await;
    Ingress { url, stop, handle, _spool: spool }
}

/// A block budget on one user of `org` over a rolling day (so a run across midnight UTC sees one
/// window), alerting at 100 %.
pub fn rolling_day_budget(org: &str, user: &str, id: &str, name: &str, limit: &str) -> Budget {
    use faregate_core::event::{BudgetAction, BudgetScope, BudgetWindow, WindowPeriod};
    Budget {
        id: id.into(),
        name: name.into(),
        scope: BudgetScope { org: org.into(), user: Some(user.into()), ..BudgetScope::default() },
        window: BudgetWindow {
            period: WindowPeriod::Day,
            days: None,
            rolling: true,
            time_zone: "UTC".into(),
        },
        limit_usd: faregate_core::money::Usd(limit.parse().expect("a decimal limit")),
        action: BudgetAction::Block,
        downgrade_to: None,
        thresholds_pct: vec![100],
        owner: None,
        notify: vec![],
    }
}

/// A Claude Sonnet 4.5 request the gateway reserves exactly what it is billed for: a body of
/// about `input` tokens' worth of bytes (the estimate counts 3 bytes a token), `max_tokens` =
/// `output` (at least 1), and an `x-fake-usage` that bills the estimate's own input tokens and
/// `output` output tokens. Its input ratio is 1, so it teaches the gateway's history nothing
/// that would change another request's reservation. Returns the body, the usage header's
/// value and the exact cost at the test catalog's $3 / $15 per million ([`crate::test_catalog`]; the compiled-in
/// catalog prices Claude Sonnet 4.5 the same).
pub fn sized_request(input: usize, output: u32) -> (serde_json::Value, String, rust_decimal::Decimal) {
    let body = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": output.max(1),
        "messages": [{"role": "user", "content": "x".repeat(input * 3)}]});
    let bytes = serde_json::to_vec(&body).expect("a JSON body").len();
    let estimated = bytes.div_ceil(3);
    let cost = rust_decimal::Decimal::from(estimated as u64 * 3 + u64::from(output) * 15)
        / rust_decimal::Decimal::from(1_000_000);
    (body, format!("input={estimated},output={output}"), cost)
}

//! The soak's processes: a private tansu (sqlite storage, so what it acknowledged survives a
//! SIGKILL), a private ClickHouse front, and `faregate ingress`, `faregate processor` and
//! `faregate budget`, each its own process, all from one TOML file. Every listener binds port 0;
//! a service's addresses are read from its JSON log (`ingress listening`, `ops endpoint: ...`).
//! A service counts as up when its `/ready` answers 200. Every process is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faregate_core::clickhouse::{ClickHouseConfig, migrations};
use faregate_core::kafka::{KafkaConfig, ensure_topics};

use super::status::StatusCommand;
use crate::process::logged_addr;
use crate::{PrivateBroker, PrivateClickHouse, eventually_within, kafka_config_for, test_catalog, unique};

/// The collector's bearer token in the soak's configuration.
pub const COLLECTOR_TOKEN: &str = "soak-collector-token";
/// The model every request and record uses; the catalog prices it with [`test_catalog`].
pub const MODEL: &str = "claude-sonnet-4-5";
const START_DEADLINE: Duration = Duration::from_secs(90);

/// The three services, each run as `faregate <name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Ingress,
    Processor,
    Budget,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Ingress, Role::Processor, Role::Budget];

    pub fn name(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Processor => "processor",
            Role::Budget => "budget",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One run of a service.
struct Service {
    child: Child,
    /// `http://host:port` of `/metrics`, `/health`, `/ready`.
    ops: String,
    /// The gateway's `http://host:port` (the ingress only).
    gateway: Option<String>,
}

/// Everything the soak runs, with the topics and database of this run.
pub struct Stack {
    pub broker: PrivateBroker,
    pub front: PrivateClickHouse,
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    services: [Option<Service>; 3],
    /// The metrics address of the ingress's latest run (kept while it is dead).
    ingress_ops: Option<String>,
    starts: usize,
    http: reqwest::Client,
}

impl Stack {
    /// Start the broker and the front, create the topics (`partitions` each) and the schema,
    /// write the configuration and the price catalog into `dir`; no service runs yet.
    pub async fn prepare(bin: &Path, dir: &Path, partitions: i32) -> Stack {
        let broker = PrivateBroker::start();
        let front = PrivateClickHouse::start();
        let mut kafka = kafka_config_for(&broker.brokers());
        kafka.topics.partitions = partitions;
        ensure_topics(&kafka, &kafka.topic_specs()).await.expect("the soak's topics are created");
        let clickhouse =
            ClickHouseConfig { url: front.url(), database: unique("soak"), ..ClickHouseConfig::default() };
        migrations::apply(&clickhouse).await.expect("the schema applies");
        let prices = dir.join("prices");
        std::fs::create_dir_all(&prices).unwrap();
        // The fake reports Anthropic's standard tier; at a multiplier of 1 the oracle holds.
        let catalog =
            format!("[service_tiers]\nstandard = {{ multiplier = \"1\" }}\n\n{}", test_catalog(MODEL));
        std::fs::write(prices.join("anthropic.toml"), catalog).unwrap();
        let config = dir.join("faregate.toml");
        Stack {
            broker,
            front,
            kafka,
            clickhouse,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            config,
            services: [None, None, None],
            ingress_ops: None,
            starts: 0,
            http: reqwest::Client::new(),
        }
    }

    /// Write the configuration file, with the fake provider at `upstream`.
    pub fn configure(&self, upstream: &str) {
        let t = &self.kafka.topics;
        let toml = format!(
            r#"[kafka]
brokers = "{brokers}"
fetch_wait_max_ms = 10
[kafka.topics]
usage = "{usage}"
spend = "{spend}"
decisions = "{decisions}"
config = "{config}"
dlq = "{dlq}"
alerts = "{alerts}"
partitions = {partitions}
# As deploy/local/up sets it: tansu may need repeated dynamic rejoins after a restart.
[kafka.ownership]
starved_after_ms = 5000
# As deploy/local/up sets it: the decision-path consumers sleep while nothing arrives, so the
# faults also hit consumers that pause, resume and rebalance.
[kafka.idle]
after_ms = 5000
[clickhouse]
url = "{ch_url}"
database = "{database}"
[telemetry]
metrics_listen = "127.0.0.1:0"
log_format = "json"
log_filter = "info,faregate_ingress::headroom=debug,faregate_ingress::demand=debug,faregate_ingress::reserve=debug,faregate_budget::service=debug,faregate_core::kafka::idle=debug"
[ingress]
listen = "127.0.0.1:0"
source_name = "soak-ingress"
collector_token = "{COLLECTOR_TOKEN}"
spool_dir = "{spool}"
[[ingress.upstreams]]
name = "fake"
provider = "anthropic"
base_url = "{upstream}"
api_key = "sk-soak-upstream"
[processor]
group_id = "{processor_group}"
instance_id = "soak-processor-0"
batch_max_rows = 2000
batch_max_wait_ms = 50
retry_max_ms = 1000
prices_dir = "{prices}"
[budget]
group_id = "{budget_group}"
instance_id = "soak-budget-0"
admin_listen = "127.0.0.1:0"
tick_ms = 100
"#,
            brokers = self.kafka.brokers,
            usage = t.usage,
            spend = t.spend,
            decisions = t.decisions,
            config = t.config,
            dlq = t.dlq,
            alerts = t.alerts,
            partitions = t.partitions,
            ch_url = self.clickhouse.url,
            database = self.clickhouse.database,
            spool = self.dir.join("spool").display(),
            prices = self.dir.join("prices").display(),
            processor_group = unique("soak-processor"),
            budget_group = unique("soak-budget"),
        );
        std::fs::write(&self.config, toml).unwrap();
    }

    /// Start `role` and wait until its `/ready` answers 200.
    pub async fn start(&mut self, role: Role) {
        assert!(self.services[role.index()].is_none(), "{} is already running", role.name());
        self.starts += 1;
        let log = self.dir.join(format!("{:02}-{}.log", self.starts, role.name()));
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg(role.name())
            .env("TOKIO_WORKER_THREADS", "2")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let mut service = Service { child, ops: String::new(), gateway: None };
        let (ops, gateway) =
            eventually_within(&format!("{} to log its addresses", role.name()), START_DEADLINE, || {
                if let Ok(Some(status)) = service.child.try_wait() {
                    panic!("{} exited at start ({status}); log: {}", role.name(), log.display());
                }
                let ops = logged_addr(&log, "ops endpoint: /metrics /health /ready");
                let gateway = if role == Role::Ingress {
                    logged_addr(&log, "ingress listening").map(Some)
                } else {
                    Some(None)
                };
                std::future::ready(ops.zip(gateway))
            })
            .await;
        service.ops = format!("http://{ops}");
        service.gateway = gateway.map(|addr| format!("http://{addr}"));
        if role == Role::Ingress {
            self.ingress_ops = Some(service.ops.clone());
        }
        self.services[role.index()] = Some(service);
        self.until_ready(role, START_DEADLINE).await;
    }

    /// Kill `role` with SIGKILL; the instant it died.
    pub fn kill(&mut self, role: Role) -> Instant {
        if let Some(mut service) = self.services[role.index()].take() {
            let _ = service.child.kill();
            let _ = service.child.wait();
        }
        Instant::now()
    }

    /// The gateway's URL, while the ingress runs.
    pub fn gateway(&self) -> Option<String> {
        self.services[Role::Ingress.index()].as_ref().and_then(|s| s.gateway.clone())
    }

    /// `faregate status` with the services' configuration and the ingress's latest metrics
    /// address.
    pub fn status_command(&self) -> StatusCommand {
        StatusCommand {
            bin: self.bin.clone(),
            config: self.config.clone(),
            ingress: self.ingress_ops.clone(),
        }
    }

    /// Whether `role`'s `/ready` answers 200 now.
    pub async fn ready(&self, role: Role) -> bool {
        let Some(service) = &self.services[role.index()] else { return false };
        let request = self.http.get(format!("{}/ready", service.ops)).timeout(Duration::from_secs(2));
        matches!(request.send().await, Ok(r) if r.status() == 200)
    }

    /// Wait until `role` is ready.
    pub async fn until_ready(&self, role: Role, deadline: Duration) {
        eventually_within(&format!("{} to be ready", role.name()), deadline, || async {
            self.ready(role).await.then_some(())
        })
        .await;
    }

    /// Services that exited on their own (never killed by the soak), with their exit status.
    pub fn exited(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for role in Role::ALL {
            if let Some(service) = &mut self.services[role.index()]
                && let Ok(Some(status)) = service.child.try_wait()
            {
                exited.push(format!("{} exited on its own ({status})", role.name()));
            }
        }
        exited
    }

    /// Where the logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for role in Role::ALL {
            self.kill(role);
        }
    }
}

//! A Faregate service as its own process, for tests that SIGKILL it: started from a TOML file,
//! it binds port 0 itself and logs its addresses (JSON logs), which [`Service::start_ready`]
//! reads back before waiting for `/ready`. Killed with SIGKILL on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faregate_core::kafka::KafkaConfig;
use serde_json::Value;

use crate::eventually_within;

/// The `[kafka]` section (every topic of `kafka`, its partition count) and the `[telemetry]`
/// section (JSON logs, metrics on port 0) of a service's TOML file, for [`Service::start_ready`].
pub fn common_toml(kafka: &KafkaConfig) -> String {
    let mut topics = kafka.topics.clone();
    let names: Vec<String> =
        topics.names_mut().into_iter().map(|(name, topic)| format!("{name} = \"{topic}\"")).collect();
    format!(
        "[kafka]\nbrokers = \"{}\"\nfetch_wait_max_ms = 10\n[kafka.topics]\n{}\npartitions = {}\n\
         [telemetry]\nmetrics_listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nlog_filter = \"info\"\n",
        kafka.brokers,
        names.join("\n"),
        kafka.topics.partitions
    )
}

/// One run of `faregate <role>`.
pub struct Service {
    child: Child,
    log: PathBuf,
    /// The ops listener (`/ready`, `/metrics`), as `host:port`.
    pub ops: String,
}

impl Service {
    /// Start `bin --config config role`, logging to `log`, and wait (up to `deadline`) until it
    /// logged its ops address and `/ready` answers 200.
    pub async fn start_ready(
        bin: &Path,
        config: &Path,
        role: &str,
        log: PathBuf,
        deadline: Duration,
    ) -> Service {
        let child = Command::new(bin)
            .args(["--config", &config.display().to_string(), role])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("faregate {role} does not start: {e}"));
        let mut service = Service { child, log, ops: String::new() };
        service.ops =
            eventually_within(&format!("faregate {role} to log its ops address"), deadline, || async {
                service.logged_addr("ops endpoint: /metrics /health /ready")
            })
            .await;
        let http = reqwest::Client::new();
        let ready = format!("http://{}/ready", service.ops);
        eventually_within(&format!("faregate {role} to be ready"), deadline, || {
            let request = http.get(&ready).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        service
    }

    /// The address logged with `message`.
    pub fn logged_addr(&self, message: &str) -> Option<String> {
        logged_addr(&self.log, message)
    }

    /// A gauge or counter from its `/metrics` (the first series of that name).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let body = reqwest::get(format!("http://{}/metrics", self.ops)).await.ok()?.text().await.ok()?;
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .find(|(metric, _)| *metric == name || metric.starts_with(&format!("{name}{{")))
            .and_then(|(_, v)| v.trim().parse().ok())
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `addr` field of the first JSON log line of `log` whose message is `message` (a service
/// binds port 0 and says where).
pub fn logged_addr(log: &Path, message: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).find_map(|line| {
        let fields = line.get("fields").unwrap_or(&line);
        (fields.get("message")?.as_str()? == message)
            .then(|| fields.get("addr")?.as_str().map(String::from))?
    })
}

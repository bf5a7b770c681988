//! `faregate status`: is metering and enforcement live in a running deployment? From the same
//! configuration as the services, it asks the broker about the processor's group on the usage
//! topic (members, assignments, lag = high watermark minus committed offset) and the budget
//! service's group on the spend topic (members, assignments, lag from the heartbeats' decided
//! positions, since the budget service never commits), reads the heartbeat watermark, counts
//! the dead letters, asks ClickHouse when the ledger was last written, and optionally reads each
//! `--ingress` metrics endpoint (spool backlog, spool full, enforcement stale).
//!
//! The report says `live` or lists each problem that makes the deployment blind ([`judge`]:
//! sentences, and a stable cause each); the command exits 0 when live and 2 when blind, a dead
//! broker or ClickHouse included (1 stays for "could not run", e.g. a bad config).
//! Informational rows (dead letters, lag with an owner) never fail it.
//!
//! It answers in bounded time whatever is down: the broker is asked first (5 s), and when it
//! does not answer the other Kafka probes are skipped; every other probe has 10 s.

mod judge;
mod probe;
mod render;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::AppConfig;
use crate::cli::{StatusArgs, StatusFormat};
use faregate_core::event::{Coverage, Heartbeat};
pub use judge::Cause;
pub use probe::Member;

/// The longest any one probe may take (a frozen ClickHouse or ingress answers nothing).
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// The deployment is blind: the report was printed; exit 2.
#[derive(Debug, thiserror::Error)]
#[error("blind: {0}")]
pub struct Blind(pub String);

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub live: bool,
    /// What makes the deployment blind, one sentence each.
    pub problems: Vec<String>,
    /// The cause of each problem, in the same order: a stable code for scripts.
    pub causes: Vec<Cause>,
    pub checked_at: DateTime<Utc>,
    pub broker: BrokerStatus,
    pub groups: Vec<GroupStatus>,
    pub heartbeat: HeartbeatStatus,
    pub dead_letters: DeadLetterStatus,
    pub ledger: LedgerStatus,
    pub ingress: Vec<IngressStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerStatus {
    /// `kafka.brokers`.
    pub brokers: String,
    pub reachable: bool,
    /// Why no broker answered (the groups, heartbeats and dead letters were then not asked).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// `processor` or `budget`.
    pub role: &'static str,
    pub group: String,
    pub topic: String,
    pub state: Option<String>,
    pub members: Vec<Member>,
    pub partitions: Vec<PartitionStatus>,
    /// Total lag over the partitions where it is known.
    pub lag: Option<i64>,
    /// The group could not be asked at all (blind).
    pub error: Option<String>,
    /// The broker did not describe the group's members (owners then come from heartbeats).
    pub describe_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: i32,
    pub high_watermark: i64,
    /// The committed offset (processor) or the heartbeat's decided position (budget).
    pub position: Option<i64>,
    pub lag: Option<i64>,
    /// The member the broker assigned it to (budget: else the instance whose heartbeat covers
    /// it).
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatStatus {
    pub topic: String,
    pub live: bool,
    pub watermark: Option<DateTime<Utc>>,
    pub age_ms: Option<i64>,
    pub stale_after_secs: u64,
    pub partition_count: i32,
    pub uncovered_partitions: Vec<i32>,
    pub instances: Vec<InstanceBeat>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceBeat {
    pub instance_id: String,
    pub published_at: DateTime<Utc>,
    pub age_ms: i64,
    pub partitions: Vec<i32>,
    pub sequence: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterStatus {
    pub topic: String,
    pub records: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LedgerStatus {
    pub reachable: bool,
    pub last_write: Option<DateTime<Utc>>,
    pub age_ms: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngressStatus {
    pub url: String,
    pub reachable: bool,
    #[serde(flatten)]
    pub metrics: probe::IngressMetrics,
    pub error: Option<String>,
}

pub async fn status(config: &AppConfig, args: StatusArgs) -> anyhow::Result<()> {
    let report = gather(config, &args).await;
    match args.format {
        StatusFormat::Table => print!("{}", render::table(&report)),
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if report.live { Ok(()) } else { Err(Blind(report.problems.join("; ")).into()) }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// `probe`'s answer, or an error when it gives none within `deadline`.
async fn within<T>(deadline: Duration, probe: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(deadline, probe)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {}s", deadline.as_secs())))
}

/// What the Kafka side answered; every probe an error when no broker answered.
struct KafkaAnswers {
    broker: anyhow::Result<()>,
    processor: anyhow::Result<probe::GroupProbe>,
    budget: anyhow::Result<probe::GroupProbe>,
    dead_letters: anyhow::Result<i64>,
    heartbeats: anyhow::Result<Vec<Heartbeat>>,
}

async fn ask_kafka(config: &AppConfig) -> KafkaAnswers {
    let kafka = &config.kafka;
    let t = &kafka.topics;
    let broker = blocking({
        let kafka = kafka.clone();
        move || probe::broker(&kafka)
    })
    .await;
    if let Err(e) = &broker {
        fn skipped<T>(e: &anyhow::Error) -> anyhow::Result<T> {
            Err(anyhow::anyhow!("not asked: no broker answered ({e:#})"))
        }
        return KafkaAnswers {
            processor: skipped(e),
            budget: skipped(e),
            dead_letters: skipped(e),
            heartbeats: skipped(e),
            broker,
        };
    }
    let (processor, budget, dead_letters, heartbeats) = tokio::join!(
        within(
            PROBE_DEADLINE,
            blocking({
                let (kafka, group, topic) =
                    (kafka.clone(), config.processor.group_id.clone(), t.usage.clone());
                move || probe::group(&kafka, &group, &topic)
            })
        ),
        within(
            PROBE_DEADLINE,
            blocking({
                let (kafka, group, topic) = (kafka.clone(), config.budget.group_id.clone(), t.spend.clone());
                move || probe::group(&kafka, &group, &topic)
            })
        ),
        within(
            PROBE_DEADLINE,
            blocking({
                let kafka = kafka.clone();
                move || probe::dead_letters(&kafka)
            })
        ),
        within(PROBE_DEADLINE, probe::heartbeats(kafka)),
    );
    KafkaAnswers { broker, processor, budget, dead_letters, heartbeats }
}

/// Ask every component, then judge.
pub async fn gather(config: &AppConfig, args: &StatusArgs) -> Report {
    let now = Utc::now();
    let t = &config.kafka.topics;
    let stale_after_secs =
        args.stale_after_secs.unwrap_or(match config.ingress.enforcement_stale_after_secs {
            0 => 10,
            secs => secs,
        });
    let (answers, ledger, ingress) = tokio::join!(
        ask_kafka(config),
        within(PROBE_DEADLINE, probe::last_ledger_write(&config.clickhouse)),
        ingress_status(&args.ingress),
    );
    let KafkaAnswers { broker, processor, budget, dead_letters, heartbeats } = answers;
    let broker = BrokerStatus {
        brokers: config.kafka.brokers.clone(),
        reachable: broker.is_ok(),
        error: broker.err().map(|e| format!("{e:#}")),
    };
    let (heartbeat, beats) = heartbeat_status(&t.heartbeats, heartbeats, now, stale_after_secs);
    // Spend partition -> (instance, position) of its newest covering heartbeat.
    let covering: BTreeMap<i32, (String, i64)> = Coverage::of(&beats)
        .newest
        .into_iter()
        .map(|(p, (_, instance, offset))| (p, (instance, offset)))
        .collect();
    let groups = vec![
        group_status("processor", &config.processor.group_id, &t.usage, processor, |p, probe| {
            (probe.committed.get(&p).copied(), None)
        }),
        group_status("budget", &config.budget.group_id, &t.spend, budget, |p, _| match covering.get(&p) {
            Some((instance, position)) => (Some(*position), Some(instance.clone())),
            None => (None, None),
        }),
    ];
    let dead_letters = DeadLetterStatus {
        topic: t.dlq.clone(),
        records: dead_letters.as_ref().ok().copied(),
        error: dead_letters.err().map(|e| format!("{e:#}")),
    };
    let ledger = match ledger {
        Ok(last) => LedgerStatus {
            reachable: true,
            last_write: last,
            age_ms: last.map(|l| (now - l).num_milliseconds().max(0)),
            error: None,
        },
        Err(e) => {
            LedgerStatus { reachable: false, last_write: None, age_ms: None, error: Some(format!("{e:#}")) }
        }
    };
    let problems = judge::judge(&judge::Facts {
        broker: &broker,
        groups: &groups,
        heartbeat: &heartbeat,
        ledger: &ledger,
        ingress: &ingress,
        stale_after_secs,
    });
    Report {
        live: problems.is_empty(),
        problems: problems.iter().map(|p| p.message.clone()).collect(),
        causes: problems.iter().map(|p| p.cause).collect(),
        checked_at: now,
        broker,
        groups,
        heartbeat,
        dead_letters,
        ledger,
        ingress,
    }
}

/// Every `--ingress` at once, each within [`PROBE_DEADLINE`], in the order given.
async fn ingress_status(urls: &[String]) -> Vec<IngressStatus> {
    let mut probes = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().cloned().enumerate() {
        probes.spawn(async move { (i, within(PROBE_DEADLINE, probe::ingress(&url)).await, url) });
    }
    let mut out = Vec::new();
    while let Some(joined) = probes.join_next().await {
        let (i, answer, url) = joined.expect("an ingress probe does not panic");
        out.push((
            i,
            match answer {
                Ok(metrics) => IngressStatus { url, reachable: true, metrics, error: None },
                Err(e) => IngressStatus {
                    url,
                    reachable: false,
                    metrics: probe::IngressMetrics::default(),
                    error: Some(format!("{e:#}")),
                },
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, status)| status).collect()
}

fn heartbeat_status(
    topic: &str,
    heartbeats: anyhow::Result<Vec<Heartbeat>>,
    now: DateTime<Utc>,
    stale_after_secs: u64,
) -> (HeartbeatStatus, Vec<Heartbeat>) {
    let (heartbeats, error) = match heartbeats {
        Ok(h) => (h, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let coverage = Coverage::of(&heartbeats);
    let watermark = coverage.watermark();
    let public = HeartbeatStatus {
        topic: topic.to_string(),
        live: error.is_none() && coverage.live(now, TimeDelta::seconds(stale_after_secs as i64)),
        watermark,
        age_ms: watermark.map(|w| (now - w).num_milliseconds().max(0)),
        stale_after_secs,
        partition_count: coverage.partition_count,
        uncovered_partitions: coverage.uncovered.clone(),
        instances: heartbeats
            .iter()
            .map(|h| InstanceBeat {
                instance_id: h.instance_id.clone(),
                published_at: h.published_at,
                age_ms: (now - h.published_at).num_milliseconds().max(0),
                partitions: h.partitions.iter().map(|p| p.partition).collect(),
                sequence: h.sequence,
            })
            .collect(),
        error,
    };
    (public, heartbeats)
}

fn group_status(
    role: &'static str,
    group: &str,
    topic: &str,
    probe: anyhow::Result<probe::GroupProbe>,
    position: impl Fn(i32, &probe::GroupProbe) -> (Option<i64>, Option<String>),
) -> GroupStatus {
    let probe = match probe {
        Ok(probe) => probe,
        Err(e) => {
            return GroupStatus {
                role,
                group: group.to_string(),
                topic: topic.to_string(),
                state: None,
                members: Vec::new(),
                partitions: Vec::new(),
                lag: None,
                error: Some(format!("{e:#}")),
                describe_error: None,
            };
        }
    };
    let partitions: Vec<PartitionStatus> = probe
        .watermarks
        .iter()
        .map(|(&partition, &(low, high))| {
            let (position, vouched) = position(partition, &probe);
            // Nothing to read when the partition is empty (compacted or retained away).
            let lag = match position {
                Some(position) => Some((high - position.max(low)).max(0)),
                None if high == low => Some(0),
                None => None,
            };
            let owner = probe
                .members
                .iter()
                .find(|m| m.partitions.contains(&partition))
                .map(|m| m.client_id.clone())
                .or(vouched);
            PartitionStatus { partition, high_watermark: high, position, lag, owner }
        })
        .collect();
    let lag = partitions.iter().filter_map(|p| p.lag).reduce(|a, b| a + b);
    GroupStatus {
        role,
        group: group.to_string(),
        topic: topic.to_string(),
        state: Some(probe.state.clone()),
        members: probe.members.clone(),
        partitions,
        lag,
        error: None,
        describe_error: probe.describe_error.clone(),
    }
}

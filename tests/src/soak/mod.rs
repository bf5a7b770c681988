//! The fault soak: the services as separate processes on a private local stack ([`stack`]), a
//! steady load through the gateway and the collector ([`load`]), and rounds of faults, each
//! triggered by progress (a number of acknowledgements since the round began), never by a timer.
//!
//! After every round, and again at the end over the whole ledger ([`check`]):
//! - **recovered**: every service answers `/ready`, every usage partition has rows processed
//!   after the fault (its partitions are owned again) and the ledger holds everything
//!   acknowledged before the fault ended; the time from the fault to all three is the round's
//!   recovery, at most [`SoakSettings::recovery_limit`];
//! - **enforcement live**: a key whose budget ($0.01 a rolling day) the round crosses after the
//!   recovery is refused (402) at the gateway within the same limit;
//! - **nothing lost**: every record answered 202 and every gateway response read to its end is in
//!   the ledger, except a gateway request completed within [`IN_FLIGHT_WINDOW`] before an ingress
//!   SIGKILL (its event may not have reached the spool yet): those are counted apart;
//! - **nothing doubled**, every row priced exactly as by hand, every rollup equal to the ledger;
//! - **status tells the truth** ([`status`]): while the fault holds, `faregate status` says
//!   blind (exit 2) and names the fault, with no false alarm, answering within
//!   [`status::STATUS_BOUND`]; after the recovery it says live (exit 0) within the limit.
//!
//! The bench binary `fault-soak` and the CI test `soak` both call [`run`].

pub mod check;
pub mod load;
mod report;
mod round;
pub mod stack;
pub mod status;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use faregate_core::avro::SchemaFamily;
use faregate_core::event::{ConfigEntity, ConfigRecord};
use faregate_core::kafka::RecordProducer;
use faregate_fake_upstream::{FakeConfig, FakeUpstream};
use rust_decimal::Decimal;

use check::Ledger;
use load::{Load, LoadKey, LoadShape};
pub use report::{RoundReport, SoakReport};
use round::{recover, settle, strike};
use stack::{Role, Stack};
use status::StatusSeen;

/// A gateway response read this close before an ingress SIGKILL may be unmetered.
pub const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(1);
const ORGS: [&str; 4] = ["soak-a", "soak-b", "soak-c", "soak-d"];
const BUDGET_LIMIT: &str = "0.01";

/// One round's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then start again.
    Kill(Role),
    /// SIGKILL of the broker, then start it again on the same storage.
    KillBroker,
    /// SIGSTOP of the ClickHouse front for [`SoakSettings::freeze`], then SIGCONT.
    FreezeClickHouse,
    /// SIGKILL of the ClickHouse front, then start it again on the same data.
    KillClickHouse,
    /// Kill, start, kill again as soon as it is ready, start: the same instance id each time.
    DoubleRestart(Role),
}

impl Fault {
    /// Every fault once, in the order a long soak cycles through them.
    pub const CYCLE: [Fault; 9] = [
        Fault::Kill(Role::Ingress),
        Fault::Kill(Role::Processor),
        Fault::Kill(Role::Budget),
        Fault::KillBroker,
        Fault::FreezeClickHouse,
        Fault::KillClickHouse,
        Fault::DoubleRestart(Role::Processor),
        Fault::DoubleRestart(Role::Budget),
        Fault::DoubleRestart(Role::Ingress),
    ];

    /// `rounds` faults, cycling through [`Fault::CYCLE`].
    pub fn rounds(rounds: usize) -> Vec<Fault> {
        Fault::CYCLE.iter().copied().cycle().take(rounds).collect()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(role) => write!(f, "kill -9 {}", role.name()),
            Fault::KillBroker => f.write_str("kill -9 broker"),
            Fault::FreezeClickHouse => f.write_str("freeze clickhouse"),
            Fault::KillClickHouse => f.write_str("kill -9 clickhouse"),
            Fault::DoubleRestart(role) => write!(f, "double restart {}", role.name()),
        }
    }
}

/// How to soak.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// The `faregate` binary.
    pub bin: PathBuf,
    pub faults: Vec<Fault>,
    /// Acknowledgements since a round began that trigger its fault.
    pub acks_per_round: usize,
    /// How long the ClickHouse front stays frozen.
    pub freeze: Duration,
    /// The longest a recovery, and enforcement after it, may take.
    pub recovery_limit: Duration,
    /// Partitions of every topic.
    pub partitions: i32,
    pub load: LoadShape,
}

impl SoakSettings {
    /// The soak: 30 s freezes, 30 s limits, 3 partitions, about 200 events a second.
    pub fn new(bin: PathBuf, faults: Vec<Fault>) -> SoakSettings {
        let subjects =
            ORGS.iter().flat_map(|org| (0..6).map(move |u| (org.to_string(), format!("c{u}")))).collect();
        SoakSettings {
            bin,
            faults,
            acks_per_round: 2_000,
            freeze: Duration::from_secs(30),
            recovery_limit: Duration::from_secs(30),
            partitions: 3,
            load: LoadShape {
                collector_clients: 2,
                records_per_batch: 10,
                gateway_clients: 4,
                pause: Duration::from_millis(100),
                subjects,
            },
        }
    }
}

/// Run the soak; panics only on a harness failure (a service that never starts), reporting
/// every expectation that failed in the report instead.
pub async fn run(settings: SoakSettings) -> SoakReport {
    let dir = tempfile::Builder::new().prefix("faregate-soak-").tempdir().unwrap().keep();
    let mut stack = Stack::prepare(&settings.bin, &dir, settings.partitions).await;
    let fake = FakeUpstream::start(FakeConfig::default()).await.expect("the fake provider starts");
    fake.set_recording(false);
    stack.configure(&fake.url());
    let rounds = settings.faults.len();
    let load_keys: Vec<LoadKey> =
        ORGS.iter().map(|org| LoadKey { secret: format!("fgk_soak_{org}") }).collect();
    let crossing: Vec<LoadKey> =
        (1..=rounds).map(|r| LoadKey { secret: format!("fgk_soak_cross_{r}") }).collect();
    write_config(&stack, rounds).await;
    for role in Role::ALL {
        stack.start(role).await;
    }
    let mut load = Load::start(stack.gateway().expect("the gateway's address"), &settings.load, &load_keys);
    // Reads overlap by more than any batch can wait between pricing and writing.
    let mut ledger = Ledger::new(&stack.clickhouse, settings.freeze + Duration::from_secs(60));
    let mut round_reports = Vec::new();
    let mut ingress_kills: Vec<Instant> = Vec::new();
    let mut known_lost = HashSet::new();
    for (i, fault) in settings.faults.iter().copied().enumerate() {
        let round = i + 1;
        let mut problems = Vec::new();
        let from = load.acknowledged();
        if !load.until_acknowledged(from, settings.acks_per_round, Duration::from_secs(180)).await {
            problems.push(format!("only {} acknowledgements in 3 min", load.acknowledged() - from));
        }
        let in_flight = load.in_flight();
        let mut status = StatusSeen::default();
        let ended = strike(&mut stack, &load, fault, settings.freeze, &mut ingress_kills, &mut status).await;
        let recovery =
            recover(&stack, &load, &mut ledger, &ingress_kills, ended, settings.partitions, &known_lost)
                .await;
        status.until_live(&stack.status_command(), &fault.to_string(), ended).await;
        let enforcement = load.until_blocked(&crossing[i], settings.recovery_limit).await;
        problems.extend(stack.exited());
        let mut report = settle(&load, &mut ledger, &ingress_kills, &mut known_lost, false).await;
        report.round = round;
        report.fault = fault.to_string();
        report.recovery = recovery;
        report.enforcement = enforcement;
        report.in_flight = in_flight;
        report.problems.extend(problems);
        report.problems.extend(status.problems.iter().cloned());
        report.status = status;
        eprintln!("soak: round {round} ({fault}) done: {report:?}");
        round_reports.push(report);
    }
    load.stop().await;
    let mut last = settle(&load, &mut ledger, &ingress_kills, &mut known_lost, true).await;
    last.round = rounds + 1;
    last.fault = "end (load stopped)".into();
    last.recovery = Some(Duration::ZERO);
    // Idle, with nothing waiting: live.
    last.status.until_live(&stack.status_command(), &last.fault, Instant::now()).await;
    last.problems.extend(last.status.problems.iter().cloned());
    last.problems.extend(stack.exited());
    let ledger_total = ledger.total().await.unwrap_or(Decimal::MIN);
    let report = SoakReport {
        rounds: round_reports,
        ledger_rows: ledger.len(),
        ledger_total,
        oracle_total: ledger.oracle_total,
        last,
        logs: stack.dir().to_path_buf(),
    };
    drop(stack);
    report
}

/// Keys (one per org for the steady load, one per round to cross a budget) and the rounds'
/// budgets, on the config topic before any service starts.
async fn write_config(stack: &Stack, rounds: usize) {
    let kafka = &stack.kafka;
    let producer: RecordProducer<ConfigRecord> =
        RecordProducer::new(kafka, "soak", SchemaFamily::ConfigRecord, &kafka.topics.config).await.unwrap();
    let mut entities = Vec::new();
    for org in ORGS {
        let key =
            crate::virtual_key(&format!("k-{org}"), &format!("fgk_soak_{org}"), org, None, Some("gateway"));
        entities.push(ConfigEntity::VirtualKey(key));
    }
    for r in 1..=rounds {
        let (org, user) = (ORGS[r % ORGS.len()], format!("cross-{r}"));
        let key = crate::virtual_key(
            &format!("k-cross-{r}"),
            &format!("fgk_soak_cross_{r}"),
            org,
            None,
            Some(&user),
        );
        entities.push(ConfigEntity::VirtualKey(key));
        let budget = crate::chain::rolling_day_budget(
            org,
            &user,
            &format!("b-{r}"),
            &format!("round {r}"),
            BUDGET_LIMIT,
        );
        entities.push(ConfigEntity::Budget(budget));
    }
    for entity in entities {
        let record = crate::config_record(entity);
        producer.send(&record.topic_key(), &record).await.expect("the config topic takes the record");
    }
}

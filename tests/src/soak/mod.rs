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
//! - **nothing doubled**, every row priced exactly as by hand, every rollup equal to the ledger.
//!
//! The bench binary `fault-soak` and the CI test `soak` both call [`run`].

pub mod check;
pub mod load;
pub mod stack;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use faregate_core::avro::SchemaFamily;
use faregate_core::event::{ConfigEntity, ConfigRecord};
use faregate_core::kafka::RecordProducer;
use faregate_fake_upstream::{FakeConfig, FakeUpstream};
use rust_decimal::Decimal;

use check::{Identity, Ledger};
use load::{Load, LoadKey, LoadShape};
use stack::{Role, Stack};

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

/// What one round measured.
#[derive(Debug, Clone)]
pub struct RoundReport {
    pub round: usize,
    /// The fault, or `end` for the final check.
    pub fault: String,
    /// From the fault's end (the last kill, or the thaw) to recovered; `None`: not within 2 min.
    pub recovery: Option<Duration>,
    /// From the crossing request's response to a 402; `None`: not within the limit.
    pub enforcement: Option<Duration>,
    pub acknowledged: usize,
    /// Records and requests sent and unanswered when the fault struck.
    pub in_flight: usize,
    /// Gateway responses read within [`IN_FLIGHT_WINDOW`] before an ingress kill, not metered.
    pub unmetered_at_kill: usize,
    pub lost: usize,
    pub doubled: u64,
    pub wrong_costs: usize,
    /// Rollup buckets unequal to the ledger: minute, hour, day.
    pub rollups: [u64; 3],
    pub problems: Vec<String>,
}

/// The whole soak's outcome.
#[derive(Debug)]
pub struct SoakReport {
    pub rounds: Vec<RoundReport>,
    /// The final check over the whole ledger, after the load stopped.
    pub last: RoundReport,
    pub ledger_rows: usize,
    pub ledger_total: Decimal,
    pub oracle_total: Decimal,
    pub logs: PathBuf,
}

impl SoakReport {
    /// Every failed expectation, with its round; empty when the soak passed.
    pub fn failures(&self, limit: Duration) -> Vec<String> {
        let mut failures = Vec::new();
        for r in self.rounds.iter().chain([&self.last]) {
            let mut fail = |what: String| failures.push(format!("round {} ({}): {what}", r.round, r.fault));
            match r.recovery {
                Some(d) if d <= limit => {}
                Some(d) => fail(format!("recovery took {d:?}")),
                None => fail("did not recover".into()),
            }
            if r.round <= self.rounds.len() && r.enforcement.is_none() {
                fail(format!("the crossed budget did not block within {limit:?}"));
            }
            if r.lost > 0 {
                fail(format!("{} acknowledged lost", r.lost));
            }
            if r.doubled > 0 {
                fail(format!("{} doubled", r.doubled));
            }
            if r.wrong_costs > 0 {
                fail(format!("{} rows priced wrong or unknown", r.wrong_costs));
            }
            if r.rollups != [0; 3] {
                fail(format!("rollup buckets unequal to the ledger (minute, hour, day): {:?}", r.rollups));
            }
            for problem in &r.problems {
                fail(problem.clone());
            }
        }
        if self.ledger_total != self.oracle_total {
            failures
                .push(format!("ledger total {} != priced by hand {}", self.ledger_total, self.oracle_total));
        }
        failures
    }

    /// The per-round table and the summary, for people.
    pub fn print(&self) {
        let secs = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!(
            "\n| round | fault | recovery | enforcement | acknowledged | in flight at the fault | unmetered at a kill | lost | doubled | wrong costs | rollups off |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for r in self.rounds.iter().chain([&self.last]) {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.round,
                r.fault,
                secs(r.recovery),
                secs(r.enforcement),
                r.acknowledged,
                r.in_flight,
                r.unmetered_at_kill,
                r.lost,
                r.doubled,
                r.wrong_costs,
                r.rollups.iter().sum::<u64>()
            );
        }
        let recoveries: Vec<Duration> = self.rounds.iter().filter_map(|r| r.recovery).collect();
        let enforcement: Vec<Duration> = self.rounds.iter().filter_map(|r| r.enforcement).collect();
        println!(
            "\n{} rounds; ledger {} rows, ${} exactly = ${} priced by hand; recovery max {}; enforcement max {}; logs in {}",
            self.rounds.len(),
            self.ledger_rows,
            self.ledger_total.normalize(),
            self.oracle_total.normalize(),
            secs(recoveries.iter().max().copied()),
            secs(enforcement.iter().max().copied()),
            self.logs.display()
        );
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
        let ended = strike(&mut stack, &load, fault, settings.freeze, &mut ingress_kills).await;
        let recovery =
            recover(&stack, &load, &mut ledger, &ingress_kills, ended, settings.partitions, &known_lost)
                .await;
        let enforcement = load.until_blocked(&crossing[i], settings.recovery_limit).await;
        problems.extend(stack.exited());
        let mut report = settle(&load, &mut ledger, &ingress_kills, &mut known_lost, false).await;
        report.round = round;
        report.fault = fault.to_string();
        report.recovery = recovery;
        report.enforcement = enforcement;
        report.in_flight = in_flight;
        report.problems.extend(problems);
        eprintln!("soak: round {round} ({fault}) done: {report:?}");
        round_reports.push(report);
    }
    load.stop().await;
    let mut last = settle(&load, &mut ledger, &ingress_kills, &mut known_lost, true).await;
    last.round = rounds + 1;
    last.fault = "end (load stopped)".into();
    last.recovery = Some(Duration::ZERO);
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

/// Apply `fault`; the instant it ended (the last kill, or the thaw).
async fn strike(
    stack: &mut Stack,
    load: &Load,
    fault: Fault,
    freeze: Duration,
    ingress_kills: &mut Vec<Instant>,
) -> Instant {
    match fault {
        Fault::Kill(role) => restart(stack, load, role, ingress_kills).await,
        Fault::DoubleRestart(role) => {
            restart(stack, load, role, ingress_kills).await;
            restart(stack, load, role, ingress_kills).await
        }
        Fault::KillBroker => {
            stack.broker.kill();
            let at = Instant::now();
            tokio::task::block_in_place(|| stack.broker.restart());
            at
        }
        Fault::FreezeClickHouse => {
            stack.front.freeze();
            tokio::time::sleep(freeze).await;
            stack.front.thaw();
            Instant::now()
        }
        Fault::KillClickHouse => {
            let at = Instant::now();
            tokio::task::block_in_place(|| stack.front.kill_and_restart());
            at
        }
    }
}

async fn restart(stack: &mut Stack, load: &Load, role: Role, ingress_kills: &mut Vec<Instant>) -> Instant {
    let at = stack.kill(role);
    if role == Role::Ingress {
        ingress_kills.push(at);
    }
    stack.start(role).await;
    if role == Role::Ingress {
        load.set_url(stack.gateway().expect("the gateway's address"));
    }
    at
}

/// Wait until recovered (see the module's contract); the time from `ended`, or `None` after
/// 2 min. When everything else holds but some owed rows stay missing for 20 s, the ledger has
/// caught up with all it will get: the time it last caught up is returned, and the missing rows
/// are reported lost by [`settle`].
async fn recover(
    stack: &Stack,
    load: &Load,
    ledger: &mut Ledger,
    ingress_kills: &[Instant],
    ended: Instant,
    partitions: i32,
    known_lost: &HashSet<Identity>,
) -> Option<Duration> {
    let ended_wall = Utc::now() - chrono::TimeDelta::from_std(ended.elapsed()).unwrap();
    let mut owed = owed(load, ingress_kills, Some(ended));
    owed.retain(|id| !known_lost.contains(id));
    let mut missing_since: Option<(usize, Duration)> = None;
    while ended.elapsed() < Duration::from_secs(120) {
        let mut ready = true;
        for role in Role::ALL {
            ready &= stack.ready(role).await;
        }
        if ready
            && refresh(load, ledger, false, owed.len()).await
            && ledger.partitions_since(ended_wall).await == Some(partitions as u64)
        {
            let missing = owed.iter().filter(|id| !ledger.contains(id)).count();
            if missing == 0 {
                return Some(ended.elapsed());
            }
            match missing_since {
                Some((before, since)) if before == missing => {
                    if ended.elapsed() - since > Duration::from_secs(20) {
                        return Some(since);
                    }
                }
                _ => missing_since = Some((missing, ended.elapsed())),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Read the ledger's new rows and check them against the book as it is after the read; false
/// when the ledger did not answer or holds fewer rows than `owed` (not read then).
async fn refresh(load: &Load, ledger: &mut Ledger, full: bool, owed: usize) -> bool {
    if ledger.count().await.is_none_or(|rows| rows < owed) {
        return false;
    }
    let Some(rows) = ledger.fetch(full).await else { return false };
    let book = load.book.lock().unwrap();
    ledger.absorb(rows, &book);
    true
}

/// What the ledger must hold: everything acknowledged (up to `until`), except gateway responses
/// read within [`IN_FLIGHT_WINDOW`] before an ingress kill.
fn owed(load: &Load, ingress_kills: &[Instant], until: Option<Instant>) -> Vec<Identity> {
    let book = load.book.lock().unwrap();
    let before = |at: &Instant| until.is_none_or(|until| *at <= until);
    let mut owed: Vec<Identity> =
        book.acked_records.iter().filter(|(_, at)| before(at)).map(|(id, _)| Identity::Record(*id)).collect();
    owed.extend(
        book.acked_requests
            .iter()
            .filter(|(_, (at, _))| before(at) && !near_kill(at, ingress_kills))
            .map(|(tag, _)| Identity::Request(tag.clone())),
    );
    owed
}

fn near_kill(at: &Instant, ingress_kills: &[Instant]) -> bool {
    ingress_kills.iter().any(|kill| *kill >= *at && kill.duration_since(*at) <= IN_FLIGHT_WINDOW)
}

/// Wait (up to 60 s) until the ledger holds everything acknowledged so far, then check it.
/// Rows found lost in an earlier round are not waited for again (they are counted again).
async fn settle(
    load: &Load,
    ledger: &mut Ledger,
    ingress_kills: &[Instant],
    known_lost: &mut HashSet<Identity>,
    full: bool,
) -> RoundReport {
    let owed = owed(load, ingress_kills, None);
    let mut problems = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if refresh(load, ledger, false, owed.len()).await
            && owed.iter().all(|id| ledger.contains(id) || known_lost.contains(id))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // One more read, whatever the count says (of everything at the end), so that what is
    // counted lost was not there.
    if !refresh(load, ledger, full, 0).await {
        problems.push("the ledger did not answer".to_string());
    }
    let lost: Vec<&Identity> = owed.iter().filter(|id| !ledger.contains(id)).collect();
    let newly_lost = lost.iter().filter(|id| !known_lost.contains(**id));
    problems.extend(newly_lost.take(5).map(|id| describe_lost(load, id, ingress_kills)));
    known_lost.extend(lost.iter().map(|id| (*id).clone()));
    let (acknowledged, unmetered_at_kill) = {
        let book = load.book.lock().unwrap();
        let unmetered = book
            .acked_requests
            .iter()
            .filter(|(tag, (at, _))| {
                near_kill(at, ingress_kills) && !ledger.contains(&Identity::Request((*tag).clone()))
            })
            .count();
        (book.acknowledged(), unmetered)
    };
    let doubled = ledger.doubled().await.unwrap_or_else(|| {
        problems.push("the duplicate query failed".into());
        0
    });
    let rollups = ledger.rollup_mismatches().await.unwrap_or_else(|| {
        problems.push("the rollup query failed".into());
        [0; 3]
    });
    for wrong in ledger.wrong.iter().take(5) {
        problems.push(wrong.clone());
    }
    RoundReport {
        round: 0,
        fault: String::new(),
        recovery: None,
        enforcement: None,
        acknowledged,
        in_flight: 0,
        unmetered_at_kill,
        lost: lost.len(),
        doubled,
        wrong_costs: ledger.wrong.len(),
        rollups,
        problems,
    }
}

/// A lost identity, when it was acknowledged and how long before the next ingress kill.
fn describe_lost(load: &Load, id: &Identity, ingress_kills: &[Instant]) -> String {
    let book = load.book.lock().unwrap();
    let at = match id {
        Identity::Record(id) => book.acked_records.get(id).copied(),
        Identity::Request(tag) => book.acked_requests.get(tag).map(|(at, _)| *at),
    };
    let next_kill =
        at.and_then(|at| ingress_kills.iter().filter(|k| **k >= at).map(|k| k.duration_since(at)).min());
    format!("lost {id:?}: acknowledged {next_kill:?} before the next ingress kill")
}

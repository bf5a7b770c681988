//! `faregate status` against the soak's stack: the real command as a process, with the
//! services' own TOML file and `--ingress` at the ingress's metrics address (its last one while
//! it is dead), `--format json`. Every run must answer within [`STATUS_BOUND`] with exit 0
//! (live) or 2 (blind); exit 1, no answer or a report that contradicts its exit code is a
//! problem of the round.
//!
//! What each fault must make it say while the fault holds ([`Expectation::of`]): a cause it
//! must name (polled until it does, with a deadline, never a fixed wait), and the causes it may
//! name besides (anything else is a false alarm, a problem too):
//!
//! | fault | must name | may also name |
//! |---|---|---|
//! | ingress dead | `ingress_unreachable` | |
//! | processor dead | `metering_stalled` (usage waits, the ledger unwritten for the bound) or `partition_unowned` | the other one |
//! | budget service dead | `enforcement_stale` | `ingress_enforcement_stale`, `partition_unowned` |
//! | broker dead | `broker_unreachable` | `ingress_enforcement_stale`, `ingress_demand_unreported` |
//! | ClickHouse frozen or dead | `ledger_unreachable` | |
//!
//! A double restart is too short to hold: status runs once right after the second kill, while
//! the service starts again, and may say live or blind, but only with the causes its single
//! kill may name. After every recovery it must say live within the recovery limit of the
//! fault's end.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Fault;
use super::stack::Role;

/// The longest one `faregate status` may take to answer, whatever is down.
pub const STATUS_BOUND: Duration = Duration::from_secs(20);
/// The longest a fault is held waiting for status to name it.
const NAME_DEADLINE: Duration = Duration::from_secs(60);
/// How long status may take to say live after the recovery before the soak gives up asking.
const LIVE_DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);

/// `faregate --config <toml> status --format json --ingress <metrics>`.
#[derive(Debug, Clone)]
pub struct StatusCommand {
    pub bin: PathBuf,
    pub config: PathBuf,
    /// The ingress's metrics address (`http://host:port`).
    pub ingress: Option<String>,
}

/// One run's answer.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `Some(true)` exit 0, `Some(false)` exit 2.
    pub live: Option<bool>,
    pub causes: Vec<String>,
    pub problems: Vec<String>,
    pub took: Duration,
    /// Why the run itself failed (no answer in time, exit 1, a report unlike its exit code).
    pub error: Option<String>,
}

impl StatusCommand {
    pub async fn run(&self) -> Verdict {
        let start = Instant::now();
        let mut command = tokio::process::Command::new(&self.bin);
        command.arg("--config").arg(&self.config).args(["status", "--format", "json"]);
        if let Some(ingress) = &self.ingress {
            command.args(["--ingress", ingress]);
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut verdict = Verdict {
            live: None,
            causes: Vec::new(),
            problems: Vec::new(),
            took: Duration::ZERO,
            error: None,
        };
        let output = match tokio::time::timeout(STATUS_BOUND, command.output()).await {
            Err(_) => {
                verdict.took = start.elapsed();
                verdict.error = Some(format!("faregate status did not answer within {STATUS_BOUND:?}"));
                return verdict;
            }
            Ok(output) => output.expect("faregate status starts"),
        };
        verdict.took = start.elapsed();
        let report: Option<Value> = serde_json::from_slice(&output.stdout).ok();
        let strings = |field: &str| -> Vec<String> {
            report
                .as_ref()
                .and_then(|r| r[field].as_array())
                .map_or_else(Vec::new, |a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        };
        verdict.causes = strings("causes");
        let mut seen = BTreeSet::new();
        verdict.causes.retain(|c| seen.insert(c.clone()));
        verdict.problems = strings("problems");
        let said_live = report.as_ref().and_then(|r| r["live"].as_bool());
        match (output.status.code(), said_live) {
            (Some(0), Some(true)) => verdict.live = Some(true),
            (Some(2), Some(false)) if !verdict.causes.is_empty() => verdict.live = Some(false),
            (code, said) => {
                verdict.error = Some(format!(
                    "faregate status exited {code:?} with live = {said:?} (causes {:?}): {}",
                    verdict.causes,
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        }
        verdict
    }
}

/// What a fault must make status say.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// Status must name one of these.
    pub named: &'static [&'static str],
    /// It may also name these (and `named`); any other cause is a false alarm.
    pub permitted: &'static [&'static str],
}

impl Expectation {
    pub fn of(fault: Fault) -> Expectation {
        let (named, permitted): (&'static [&'static str], &'static [&'static str]) = match fault {
            Fault::Kill(role) | Fault::DoubleRestart(role) => match role {
                Role::Ingress => (&["ingress_unreachable"], &[]),
                Role::Processor => (&["metering_stalled", "partition_unowned"], &[]),
                Role::Budget => (&["enforcement_stale"], &["ingress_enforcement_stale", "partition_unowned"]),
            },
            Fault::KillBroker => {
                (&["broker_unreachable"], &["ingress_enforcement_stale", "ingress_demand_unreported"])
            }
            Fault::FreezeClickHouse | Fault::KillClickHouse => (&["ledger_unreachable"], &[]),
        };
        Expectation { named, permitted }
    }

    fn allows(&self, cause: &str) -> bool {
        self.named.contains(&cause) || self.permitted.contains(&cause)
    }
}

/// What a round saw of status.
#[derive(Debug, Clone, Default)]
pub struct StatusSeen {
    /// While the fault held: the causes of the verdict that named it, and how long after the
    /// fault began (`None`: never named, or a double restart's single run).
    pub named: Option<(Vec<String>, Duration)>,
    /// A double restart's single run: `None` live, else the causes.
    pub once: Option<Option<Vec<String>>>,
    /// From the fault's end until status said live.
    pub live_after: Option<Duration>,
    /// The causes status named last before it said live after the recovery.
    pub blind_before_live: Vec<String>,
    /// The slowest run of the round.
    pub slowest: Duration,
    pub runs: usize,
    /// Everything status got wrong in the round.
    pub problems: BTreeSet<String>,
}

impl StatusSeen {
    fn record(&mut self, fault: Fault, expectation: &Expectation, verdict: &Verdict) {
        self.runs += 1;
        self.slowest = self.slowest.max(verdict.took);
        if let Some(error) = &verdict.error {
            self.problems.insert(format!("status while {fault}: {error}"));
        }
        for cause in verdict.causes.iter().filter(|c| !expectation.allows(c)) {
            let problem = verdict.problems.iter().find(|p| !p.is_empty()).cloned().unwrap_or_default();
            self.problems.insert(format!("status while {fault} named {cause} ({problem})"));
        }
    }

    /// Poll status while `fault` holds, until it names the fault (or [`NAME_DEADLINE`] from
    /// `began`).
    pub async fn until_named(&mut self, command: &StatusCommand, fault: Fault, began: Instant) {
        let expectation = Expectation::of(fault);
        loop {
            let verdict = command.run().await;
            self.record(fault, &expectation, &verdict);
            if verdict.live == Some(false)
                && verdict.causes.iter().any(|c| expectation.named.contains(&c.as_str()))
            {
                self.named = Some((verdict.causes, began.elapsed()));
                return;
            }
            if began.elapsed() > NAME_DEADLINE {
                self.problems.insert(format!(
                    "status did not name {:?} within {NAME_DEADLINE:?} of {fault} (last: live {:?}, {:?})",
                    expectation.named, verdict.live, verdict.problems
                ));
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A double restart's single run, started right after the second kill.
    pub fn once(&mut self, fault: Fault, verdict: &Verdict) {
        self.record(fault, &Expectation::of(fault), verdict);
        self.once = verdict.live.map(|live| (!live).then(|| verdict.causes.clone()));
    }

    /// Poll status after the recovery from `fault` (a description) until it says live; the
    /// time from `ended`.
    pub async fn until_live(&mut self, command: &StatusCommand, fault: &str, ended: Instant) {
        let start = Instant::now();
        loop {
            let verdict = command.run().await;
            self.runs += 1;
            self.slowest = self.slowest.max(verdict.took);
            if verdict.live == Some(true) {
                self.live_after = Some(ended.elapsed());
                return;
            }
            if verdict.live == Some(false) {
                self.blind_before_live = verdict.causes.clone();
            }
            if let Some(error) = &verdict.error {
                self.problems.insert(format!("status after {fault}: {error}"));
            }
            if start.elapsed() > LIVE_DEADLINE {
                self.problems.insert(format!(
                    "status did not say live within {LIVE_DEADLINE:?} of the recovery from {fault} (last: {:?})",
                    verdict.problems
                ));
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// For the report's table: when status said live, and what it said before.
    pub fn live(&self) -> String {
        let Some(after) = self.live_after else { return "-".into() };
        match self.blind_before_live.is_empty() {
            true => format!("{:.1} s", after.as_secs_f64()),
            false => format!("{:.1} s (before: {})", after.as_secs_f64(), self.blind_before_live.join(", ")),
        }
    }

    /// For the report's table: what status said while the fault held.
    pub fn during(&self) -> String {
        match (&self.named, &self.once) {
            (Some((causes, after)), _) => {
                format!("blind: {} ({:.1} s)", causes.join(", "), after.as_secs_f64())
            }
            (None, Some(None)) => "live (once)".into(),
            (None, Some(Some(causes))) => format!("blind: {} (once)", causes.join(", ")),
            (None, None) => "-".into(),
        }
    }
}

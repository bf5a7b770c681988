//! What a soak measured, per round and in all, printed for people and judged against the
//! limits (every failed expectation named with its round).

use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;

use super::status::StatusSeen;

/// What one round measured.
#[derive(Debug, Clone)]
pub struct RoundReport {
    pub round: usize,
    /// The fault, or `end` for the final check.
    pub fault: String,
    /// From the fault's end (the restart of what was killed, or the thaw; a double restart: the
    /// second kill) to recovered; `None`: not within 2 min.
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
    /// What `faregate status` said while the fault held and after the recovery (its problems
    /// are in `problems` too).
    pub status: StatusSeen,
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
            let faulted = r.round <= self.rounds.len();
            match r.status.live_after {
                Some(d) if d > limit => fail(format!("status said live only {d:?} after the fault ended")),
                None => fail("status never said live after the recovery".into()),
                Some(_) => {}
            }
            if faulted && r.enforcement.is_none() {
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
            "\n| round | fault | recovery | enforcement | status while faulted | status live | slowest status | acknowledged | in flight at the fault | unmetered at a kill | lost | doubled | wrong costs | rollups off |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in self.rounds.iter().chain([&self.last]) {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.round,
                r.fault,
                secs(r.recovery),
                secs(r.enforcement),
                r.status.during(),
                r.status.live(),
                secs((r.status.runs > 0).then_some(r.status.slowest)),
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

//! One round's steps: strike the fault, wait for the recovery, then settle (wait for every
//! acknowledgement in the ledger and check it). See the contract in the parent module.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::check::{Identity, Ledger};
use super::load::Load;
use super::report::RoundReport;
use super::stack::{Role, Stack};
use super::status::StatusSeen;
use super::{Fault, IN_FLIGHT_WINDOW};

/// Apply `fault` and hold it until `faregate status` names it (see [`super::status`]); the
/// instant it ended: when the killed process was started again, or the thaw (a double restart:
/// the second kill, since it is not held).
pub(super) async fn strike(
    stack: &mut Stack,
    load: &Load,
    fault: Fault,
    freeze: Duration,
    ingress_kills: &mut Vec<Instant>,
    status: &mut StatusSeen,
) -> Instant {
    let command = stack.status_command();
    match fault {
        Fault::Kill(role) => {
            let began = kill(stack, role, ingress_kills);
            status.until_named(&command, fault, began).await;
            let ended = Instant::now();
            start(stack, load, role).await;
            ended
        }
        Fault::DoubleRestart(role) => {
            kill(stack, role, ingress_kills);
            start(stack, load, role).await;
            let second = kill(stack, role, ingress_kills);
            let once = tokio::spawn({
                let command = stack.status_command();
                async move { command.run().await }
            });
            start(stack, load, role).await;
            status.once(fault, &once.await.expect("the status run"));
            second
        }
        Fault::KillBroker => {
            stack.broker.kill();
            status.until_named(&command, fault, Instant::now()).await;
            let ended = Instant::now();
            tokio::task::block_in_place(|| stack.broker.restart());
            ended
        }
        Fault::FreezeClickHouse => {
            stack.front.freeze();
            // The freeze lasts `freeze` (the fault's definition) and at least until status named it.
            tokio::join!(tokio::time::sleep(freeze), status.until_named(&command, fault, Instant::now()));
            stack.front.thaw();
            Instant::now()
        }
        Fault::KillClickHouse => {
            stack.front.kill();
            status.until_named(&command, fault, Instant::now()).await;
            let ended = Instant::now();
            tokio::task::block_in_place(|| stack.front.restart());
            ended
        }
    }
}

fn kill(stack: &mut Stack, role: Role, ingress_kills: &mut Vec<Instant>) -> Instant {
    let at = stack.kill(role);
    if role == Role::Ingress {
        ingress_kills.push(at);
    }
    at
}

async fn start(stack: &mut Stack, load: &Load, role: Role) {
    stack.start(role).await;
    if role == Role::Ingress {
        load.set_url(stack.gateway().expect("the gateway's address"));
    }
}

/// Wait until recovered (see the module's contract); the time from `ended`, or `None` after
/// 2 min. When everything else holds but some owed rows stay missing for 20 s, the ledger has
/// caught up with all it will get: the time it last caught up is returned, and the missing rows
/// are reported lost by [`settle`].
pub(super) async fn recover(
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
pub(super) async fn settle(
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
        status: StatusSeen::default(),
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

//! Demand shares: each budget's remaining headroom shared among the gateway replicas that
//! reported demand on it (`faregate_core::event::Demand`), published on its headroom records
//! (`Headroom::shares`) so that every replica reads its share from the same record as the
//! remaining it applies to.
//!
//! Contract ([`Demands::shares`]):
//! - no record for a budget (or its records all expired holding nothing, and were forgotten):
//!   no shares (`None`); a gateway then has no share either and reports its demand at once (a
//!   gateway facing a budget service without demand shares, `headroom.v1`, takes
//!   `remaining / ingress.reservation.replicas` instead);
//! - with records but none live, the shares are empty: nobody admits until a report names it;
//! - what every replica reported holding, open reservations and unshown settled costs (live
//!   ones, and expired ones of the current window for [`ORPHAN_HOLD`] after their report: a
//!   replica that died or was cut off may still have costs on their way, which its restart
//!   sends), is set aside first, and only the rest (`remaining - all holdings`, at least zero)
//!   is divided;
//! - each live replica's share is its reported open reservations plus its part of the rest,
//!   with the time of the report (`report_at`): the replica counts against it its open
//!   reservations and the costs it settled *after* that report (those before were set aside
//!   whole; counting them in the share too would give a replica back, once the headroom shows
//!   them, money already spent). So what all replicas hold beyond the spend stays within the
//!   remaining;
//! - the rest goes to the live replicas with demand, in proportion to it; while one of them
//!   would get less than one likely request (`unit_usd`) and there are others, the one with the
//!   least demand gets none and the rest is divided again, so near the end of a budget the last
//!   requests fit somewhere instead of every replica holding a sliver too small for any;
//! - when the remaining does not even cover the holdings (reservations in flight beyond what
//!   is left), nobody gets anything new: what is left after the settled costs is shared in
//!   proportion to each live replica's open reservations, so a replica whose requests settle
//!   below their reservations cannot admit again on the difference while the budget is spent;
//! - **a share is a lease**: a replica admits against the share of the newest record it has
//!   read, while the next record is computed from its newest report *read*, which may predate
//!   what it admitted since (reports are read up to a second late). So each replica's
//!   **room** is what it may hold beyond its report under the records it may still use: under
//!   the record its report names (`record_revision`), that record's share less what it counted
//!   there (`used_usd`); under every record published to it since, that share less its
//!   reported open reservations. Every live replica may use the larger of its room and its
//!   new part, and an expired one its room (it may have used it before it stopped): so the
//!   expired rooms are set aside with the holdings (for as long as [`Demands::prune`] keeps the
//!   record: one that reported no holdings goes at expiry, its room with it), and the parts are cut where they grow
//!   beyond a replica's room until the live replicas' larger-of sums to at most the rest.
//!   When the live rooms alone exceed the rest (the spend grew under those records since),
//!   or a live replica names a record this instance did not publish (before its start or its
//!   newest assignment: its shares there are unknown), nobody gets anything new: every share
//!   is zero until the reports name newer records. A replica that stops names
//!   [`Demand::STOPPED`]: no room. Without leases a 3-replica runaway overspent a $2 limit by
//!   up to 8.8 %, its shares computed from reports older than what the replicas took under the
//!   record before (docs/benchmarks.md); gateways before `demand.v2` name no record and are
//!   not covered (their room is their newer shares less what they had in flight);
//! - shares are rounded down to 10^-18 dollars; they and everything set aside sum to at most
//!   `remaining` (when that is positive). So what all replicas hold beyond the spend (each
//!   replica's open reservations and what it settled after its report within its share, the
//!   settled costs reported before set aside) is at most the remaining.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use faregate_core::event::{Demand, ReplicaShare};
use faregate_core::money::Usd;

/// How long an expired report's holdings stay set aside: the time a replica that died has to
/// come back and send its spool. Costs it sends later than that may exceed the limit by what
/// it held (docs/ARCHITECTURE.md, "Admission by reservation").
pub(crate) const ORPHAN_HOLD: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The demand records held, per budget id and replica.
#[derive(Debug, Default, Clone)]
pub(crate) struct Demands {
    by_budget: HashMap<String, BTreeMap<String, Demand>>,
    /// When each record arrived, by this service's clock (budget id, replica): liveness and the
    /// orphan hold are judged by it, so a gateway's clock never decides them.
    received: HashMap<String, HashMap<String, DateTime<Utc>>>,
    /// Per budget id and replica, the shares published to it since the record its newest
    /// report names: (record revision, share), oldest first (its leases).
    leases: HashMap<String, HashMap<String, Vec<(i64, Decimal)>>>,
    /// Per budget id, the first record revision this instance published since it knows the
    /// leases (its start, or its newest assignment): a report naming an older record names one
    /// whose shares this instance does not know.
    first_published: HashMap<String, i64>,
}

/// Leases kept per budget and replica at most (one that never names a record): the oldest go.
const MAX_LEASES: usize = 64;

impl Demands {
    /// Apply a demand-topic record (`None`: the tombstone of `key`'s replica and budget).
    /// Returns the budget id whose shares may have changed.
    pub(crate) fn apply(&mut self, key: &str, record: Option<Demand>, now: DateTime<Utc>) -> Option<String> {
        match record {
            Some(demand) => {
                let id = demand.budget_id.clone();
                let entries = self.by_budget.entry(id.clone()).or_default();
                let newer =
                    entries.get(&demand.replica).is_none_or(|d| d.published_at <= demand.published_at);
                newer.then(|| {
                    self.received.entry(id.clone()).or_default().insert(demand.replica.clone(), now);
                    if let Some(named) = demand.record_revision
                        && let Some(leases) =
                            self.leases.get_mut(&id).and_then(|l| l.get_mut(&demand.replica))
                    {
                        // It admits under no share of an older record any more.
                        leases.retain(|(revision, _)| *revision >= named);
                    }
                    entries.insert(demand.replica.clone(), demand);
                    id
                })
            }
            None => {
                let (replica, rest) = key.split_once('#')?;
                let id = rest.rsplit_once("#budget=")?.1.to_string();
                self.by_budget.get(&id)?.get(replica)?;
                self.forget(&id, &[replica.to_string()]);
                Some(id)
            }
        }
    }

    /// Forget budget `id`'s records that expired and set nothing aside any more (nothing held,
    /// or reported before the window starting at `window_start`).
    pub(crate) fn prune(&mut self, id: &str, window_start: DateTime<Utc>, now: DateTime<Utc>) {
        let Some(entries) = self.by_budget.get(id) else { return };
        let gone: Vec<String> = entries
            .values()
            .filter(|d| {
                !(self.live(d, now) || (held(d) > Decimal::ZERO && self.sets_aside(d, window_start, now)))
            })
            .map(|d| d.replica.clone())
            .collect();
        self.forget(id, &gone);
    }

    /// Forget budget `id`'s records of `replicas`: the record, when it arrived, its leases (and
    /// the budget's entries once no record is left).
    fn forget(&mut self, id: &str, replicas: &[String]) {
        let Some(entries) = self.by_budget.get_mut(id) else { return };
        for replica in replicas {
            entries.remove(replica);
            if let Some(received) = self.received.get_mut(id) {
                received.remove(replica);
            }
            if let Some(leases) = self.leases.get_mut(id) {
                leases.remove(replica);
            }
        }
        if entries.is_empty() {
            self.by_budget.remove(id);
            self.received.remove(id);
            self.leases.remove(id);
        }
    }

    /// When `d` arrived (its own time where it was never received: tests that build state).
    fn received_at(&self, d: &Demand) -> DateTime<Utc> {
        self.received.get(&d.budget_id).and_then(|r| r.get(&d.replica)).copied().unwrap_or(d.published_at)
    }

    /// Whether `d` is live at `now`: [`Demand::live_at`], by when it arrived here.
    fn live(&self, d: &Demand, now: DateTime<Utc>) -> bool {
        now - self.received_at(d) <= d.lifetime()
    }

    /// Whether `d`'s holdings are set aside at `now` in the window starting at `window_start`.
    fn sets_aside(&self, d: &Demand, window_start: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let at = self.received_at(d);
        self.live(d, now) || (at >= window_start && now - at <= ORPHAN_HOLD)
    }

    /// Budget `id`'s record of revision `revision` was published with `shares`: each share is
    /// a lease of its replica until the replica reports naming a newer record.
    pub(crate) fn published(&mut self, id: &str, revision: i64, shares: Option<&[ReplicaShare]>) {
        self.first_published.entry(id.to_string()).or_insert(revision);
        let Some(shares) = shares else { return };
        if !self.by_budget.contains_key(id) {
            return;
        }
        let budget = self.leases.entry(id.to_string()).or_default();
        for share in shares {
            let leases = budget.entry(share.replica.clone()).or_default();
            leases.push((revision, share.share_usd.0));
            if leases.len() > MAX_LEASES {
                leases.remove(0);
            }
        }
    }

    /// The same records, with no lease known (a new assignment: another instance may have
    /// published records of these budgets meanwhile).
    pub(crate) fn without_leases(&self) -> Demands {
        Demands {
            by_budget: self.by_budget.clone(),
            received: self.received.clone(),
            leases: HashMap::new(),
            first_published: HashMap::new(),
        }
    }

    /// What `d`'s replica may still admit beyond its report under the records it may hold (its
    /// **room**, see the module docs); `None` when its report names a record this instance
    /// did not publish (its shares are unknown).
    fn room(&self, d: &Demand) -> Option<Decimal> {
        if d.record_revision == Some(Demand::STOPPED) {
            return Some(Decimal::ZERO);
        }
        let leases =
            self.leases.get(&d.budget_id).and_then(|l| l.get(&d.replica)).map_or(&[][..], Vec::as_slice);
        if let Some(named) = d.record_revision
            && self.first_published.get(&d.budget_id).is_none_or(|first| named < *first)
        {
            return None;
        }
        let room = leases
            .iter()
            .map(|(revision, share)| match d.record_revision {
                // Under the record it named, it had counted `used` already (all of it when a
                // report leaves `used` out).
                Some(named) if *revision == named => {
                    *share - d.used_usd.map_or(Decimal::ZERO, |used| used.0.max(Decimal::ZERO))
                }
                // Under a record published since, its share less what it had in flight.
                _ => *share - open(d),
            })
            .max()
            .unwrap_or(Decimal::ZERO);
        Some(room.max(Decimal::ZERO))
    }

    /// Budgets with any demand record (their shares move with time as records expire).
    pub(crate) fn budgets(&self) -> impl Iterator<Item = &String> {
        self.by_budget.keys()
    }

    /// The shares of budget `id` with `remaining` left in the window starting at
    /// `window_start`, at `now`; see the module docs.
    pub(crate) fn shares(
        &self,
        id: &str,
        remaining: Usd,
        window_start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Vec<ReplicaShare>> {
        let entries = self.by_budget.get(id)?;
        let live: Vec<&Demand> = entries.values().filter(|d| self.live(d, now)).collect();
        let zeros = || {
            live.iter()
                .map(|d| ReplicaShare {
                    replica: d.replica.clone(),
                    share_usd: Usd::ZERO,
                    report_at: d.published_at,
                })
                .collect()
        };
        // Rooms: of live replicas (they may use them as well as a new part) and of expired ones
        // (they may have used them before they stopped reporting). A live replica whose room
        // is unknown may use anything its last share gave it: nobody gets anything new until
        // it names a record of this instance (its next report after the next record).
        let mut rooms: HashMap<&str, Decimal> = HashMap::new();
        let (mut live_rooms, mut expired_rooms, mut held_all) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        for d in entries.values().filter(|d| self.sets_aside(d, window_start, now)) {
            held_all += held(d);
            let is_live = self.live(d, now);
            match self.room(d) {
                Some(room) if is_live => {
                    live_rooms += room;
                    rooms.insert(d.replica.as_str(), room);
                }
                Some(room) => expired_rooms += room,
                None if is_live => {
                    withheld(id, "unknown_record");
                    return Some(zeros());
                }
                None => {}
            }
        }
        let held = held_all;
        let live_open: Decimal = live.iter().map(|d| open(d)).sum();
        // What live replicas may hold in all: the remaining less every settled cost, every
        // expired replica's reservations (`held - live_open`) and rooms.
        let total = remaining.0 - (held - live_open) - expired_rooms;
        if live_rooms > Decimal::ZERO && total - live_open < live_rooms {
            // The rooms already given out do not fit what is left (the spend grew under them
            // since): nobody gets anything new until the replicas report the records they use.
            withheld(id, "rooms");
            return Some(zeros());
        }
        if total < live_open {
            // Over-committed: the reservations in flight alone exceed what is left. Nobody
            // admits anything new; each keeps a part of what is left in proportion to what it
            // has in flight (so the shares still sum to at most the remaining).
            withheld(id, "overcommitted");
            let left = total.max(Decimal::ZERO);
            return Some(
                live.iter()
                    .map(|d| ReplicaShare {
                        replica: d.replica.clone(),
                        share_usd: Usd(if live_open.is_zero() {
                            Decimal::ZERO
                        } else {
                            (left * open(d))
                                .checked_div(live_open)
                                .unwrap_or(Decimal::ZERO)
                                .round_dp_with_strategy(18, RoundingStrategy::ToZero)
                        }),
                        report_at: d.published_at,
                    })
                    .collect(),
            );
        }
        let rest = total - live_open;
        let mut takers: Vec<&Demand> =
            live.iter().copied().filter(|d| d.demand_usd.0 > Decimal::ZERO).collect();
        takers.sort_by(|a, b| b.demand_usd.0.cmp(&a.demand_usd.0).then_with(|| a.replica.cmp(&b.replica)));
        let mut parts = divide(rest, &takers);
        while takers.len() > 1 && takers.iter().zip(&parts).any(|(d, part)| *part < d.unit_usd.0) {
            takers.pop();
            parts = divide(rest, &takers);
        }
        keep_rooms(&live, &rooms, &takers, &mut parts, rest);
        let part_of = |replica: &str| {
            takers.iter().position(|d| d.replica == replica).map_or(Decimal::ZERO, |i| parts[i])
        };
        Some(
            live.iter()
                .map(|d| ReplicaShare {
                    replica: d.replica.clone(),
                    share_usd: Usd(open(d) + part_of(&d.replica)),
                    report_at: d.published_at,
                })
                .collect(),
        )
    }
}

/// A computation of budget `id`'s shares gave no replica anything new, for `reason`:
/// `unknown_record` (a live replica named a record this instance did not publish: after a
/// restart or a new assignment, until its next report), `rooms` (the rooms already given out
/// exceed what is left, until the reports catch up) or `overcommitted` (the reservations in
/// flight alone exceed it). Expected briefly near a limit; counted as
/// `faregate_budget_shares_withheld_total{reason}`, so a budget stuck there shows.
fn withheld(id: &str, reason: &'static str) {
    metrics::counter!("faregate_budget_shares_withheld_total", "reason" => reason).increment(1);
    tracing::debug!(budget = id, reason, "shares withheld: nothing new for any replica");
}

/// Cut the growth of `takers`' `parts` beyond their rooms until every live replica's larger
/// of room and part sums to at most `rest` (it fits: the rooms alone do, see
/// [`Demands::shares`]); see the module docs.
fn keep_rooms(
    live: &[&Demand],
    rooms: &HashMap<&str, Decimal>,
    takers: &[&Demand],
    parts: &mut [Decimal],
    rest: Decimal,
) {
    let room = |replica: &str| rooms.get(replica).copied().unwrap_or(Decimal::ZERO);
    let part_of = |replica: &str, parts: &[Decimal]| {
        takers.iter().position(|d| d.replica == replica).map_or(Decimal::ZERO, |i| parts[i])
    };
    let claimed: Decimal = live.iter().map(|d| room(&d.replica).max(part_of(&d.replica, parts))).sum();
    let need = claimed - rest;
    if need <= Decimal::ZERO {
        return;
    }
    let slack: Vec<Decimal> = takers
        .iter()
        .zip(parts.iter())
        .map(|(d, part)| (*part - room(&d.replica)).max(Decimal::ZERO))
        .collect();
    let total: Decimal = slack.iter().sum();
    for (part, slack) in parts.iter_mut().zip(&slack) {
        let cut = if total <= need {
            *slack
        } else {
            // Rounded up: the cuts cover what is needed.
            (need * *slack)
                .checked_div(total)
                .unwrap_or(*slack)
                .round_dp_with_strategy(18, RoundingStrategy::AwayFromZero)
                .min(*slack)
        };
        *part -= cut;
    }
}

/// What a report holds: open reservations and unshown settled costs.
fn held(d: &Demand) -> Decimal {
    open(d) + d.settled_usd.0.max(Decimal::ZERO)
}

fn open(d: &Demand) -> Decimal {
    d.open_usd.0.max(Decimal::ZERO)
}

/// `rest` divided in proportion to the takers' demand (largest first): each part rounded down,
/// the first taking what rounding left, so the parts sum to exactly `rest`.
fn divide(rest: Decimal, takers: &[&Demand]) -> Vec<Decimal> {
    let total: Decimal = takers.iter().map(|d| d.demand_usd.0).sum();
    if takers.is_empty() || total.is_zero() {
        return vec![Decimal::ZERO; takers.len()];
    }
    let mut parts: Vec<Decimal> = takers
        .iter()
        .map(|d| {
            let fraction = d.demand_usd.0.checked_div(total).unwrap_or(Decimal::ZERO);
            rest.checked_mul(fraction)
                .unwrap_or(Decimal::ZERO)
                .round_dp_with_strategy(18, RoundingStrategy::ToZero)
                .min(rest)
        })
        .collect();
    let others: Decimal = parts[1..].iter().sum();
    parts[0] = (rest - others).max(Decimal::ZERO);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Usd {
        Usd(s.parse().unwrap())
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn demand(replica: &str, held: &str, asked: &str, unit: &str, published_ms: i64) -> Demand {
        Demand {
            replica: replica.into(),
            scope_key: "org=acme".into(),
            budget_id: "b".into(),
            open_usd: Usd(usd(held).0 / Decimal::TWO),
            settled_usd: Usd(usd(held).0 / Decimal::TWO),
            demand_usd: usd(asked),
            unit_usd: usd(unit),
            interval_ms: 250,
            published_at: at(published_ms),
            record_revision: None,
            used_usd: None,
        }
    }

    fn shares_of(d: &Demands, remaining: &str, now_ms: i64) -> Vec<(String, Usd)> {
        d.shares("b", usd(remaining), at(-10_000), at(now_ms))
            .unwrap()
            .into_iter()
            .map(|s| (s.replica, s.share_usd))
            .collect()
    }

    /// Received when published (this service's clock agrees with the gateway's).
    fn put(d: &mut Demands, demand: Demand) {
        let key = demand.key();
        let received = demand.published_at;
        d.apply(&key, Some(demand), received);
    }

    #[test]
    fn the_rest_after_every_hold_follows_demand_and_the_shares_never_exceed_the_remaining() {
        let mut d = Demands::default();
        assert_eq!(d.shares("b", usd("10"), at(0), at(0)), None, "no demand: static shares");
        put(&mut d, demand("a", "1", "3", "0.01", 0));
        put(&mut d, demand("b", "0.5", "1", "0.01", 0));
        put(&mut d, demand("c", "0", "0", "0", 0));
        // 10 - 1.5 held = 8.5, split 3:1; each share adds the replica's open reservations, the
        // settled costs stay set aside: shares and settled costs sum to the remaining.
        let shares = shares_of(&d, "10", 600);
        assert_eq!(
            shares,
            vec![("a".into(), usd("6.875")), ("b".into(), usd("2.375")), ("c".into(), usd("0"))]
        );
        let sum: Decimal = shares.iter().map(|s| s.1.0).sum();
        assert_eq!(sum + usd("0.75").0, usd("10").0);
        let at_report = d.shares("b", usd("10"), at(0), at(600)).unwrap();
        assert_eq!(at_report[0].report_at, at(0), "tied to the report it was computed from");
        // A third of a cent in thirds: exact to the 18th place, never more than the rest.
        put(&mut d, demand("a", "0", "1", "0", 1));
        put(&mut d, demand("b", "0", "1", "0", 1));
        put(&mut d, demand("c", "0", "1", "0", 1));
        let shares = shares_of(&d, "0.01", 600);
        let sum: Decimal = shares.iter().map(|s| s.1.0).sum();
        assert_eq!(sum, Decimal::new(1, 2));
        assert_eq!(shares[1].1, usd("0.003333333333333333"));
    }

    /// Budget "b" published as revision `revision` with `remaining` at `now_ms`: its shares.
    fn publish(d: &mut Demands, remaining: &str, revision: i64, now_ms: i64) -> Vec<(String, Usd)> {
        let shares = d.shares("b", usd(remaining), at(-10_000), at(now_ms));
        d.published("b", revision, shares.as_deref());
        shares.unwrap_or_default().into_iter().map(|s| (s.replica, s.share_usd)).collect()
    }

    /// A report of `replica` at `at_ms` naming record `revision`, having counted `used` there.
    fn naming(replica: &str, open: &str, settled: &str, revision: i64, used: &str, at_ms: i64) -> Demand {
        Demand {
            open_usd: usd(open),
            settled_usd: usd(settled),
            record_revision: Some(revision),
            used_usd: Some(usd(used)),
            ..demand(replica, "0", "0.01", "0.003", at_ms)
        }
    }

    #[test]
    fn shares_computed_from_reports_older_than_what_the_replicas_took_since_give_nothing_new() {
        // The 3-replica runaway of docs/benchmarks.md, as traced: $2, three replicas asking.
        let mut d = Demands::default();
        let replicas = ["a", "b", "c"];
        publish(&mut d, "2", 1, 0);
        for r in replicas {
            put(&mut d, naming(r, "0", "0", 1, "0", 10));
        }
        let first = publish(&mut d, "2", 2, 20);
        assert!(
            first
                .iter()
                .all(|(_, share)| *share == usd("0.666666666666666666")
                    || *share == usd("0.666666666666666668"))
        );
        // Each takes its whole share under record 2 (its reports of it are not read yet); the
        // spend shows $0.52 of that. From the old reports (nothing held) the remaining $1.48
        // would be divided again, while the replicas still hold $1.48 unshown: twice. The rooms
        // of record 2 ($2 in all) do not fit: nobody gets anything new.
        assert_eq!(
            publish(&mut d, "1.48", 3, 260),
            vec![("a".into(), usd("0")), ("b".into(), usd("0")), ("c".into(), usd("0"))]
        );
        // Their reports of record 2 come (each used $0.66, unshown), the spend shows $1.98:
        // over-committed, still nothing new.
        for r in replicas {
            put(&mut d, naming(r, "0", "0.66", 2, "0.66", 300));
        }
        assert!(publish(&mut d, "0.02", 4, 320).iter().all(|(_, share)| share.0.is_zero()));
        // They name record 4 (no share there), and its watermark showed all but $0.005 each:
        // what is left beyond that is shared again.
        for r in replicas {
            put(&mut d, naming(r, "0", "0.005", 4, "0.005", 400));
        }
        let last = publish(&mut d, "0.02", 5, 420);
        let sum: Decimal = last.iter().map(|(_, share)| share.0).sum();
        assert_eq!(sum, usd("0.005").0, "0.02 less the 0.015 still unshown");
    }

    #[test]
    fn a_report_naming_a_record_of_another_instance_gives_nothing_new_until_it_names_one_of_this() {
        let mut d = Demands::default();
        // Records 1-5 came from an instance before this one (a restart, another assignment).
        put(&mut d, naming("a", "0", "0", 5, "0", 0));
        put(&mut d, naming("b", "0", "0", 5, "0", 0));
        assert_eq!(publish(&mut d, "10", 6, 10), vec![("a".into(), usd("0")), ("b".into(), usd("0"))]);
        put(&mut d, naming("a", "0", "0", 6, "0", 100));
        assert_eq!(publish(&mut d, "10", 7, 110), vec![("a".into(), usd("0")), ("b".into(), usd("0"))]);
        put(&mut d, naming("b", "0", "0", 7, "0", 120));
        assert_eq!(publish(&mut d, "10", 8, 130), vec![("a".into(), usd("5")), ("b".into(), usd("5"))]);
        // A new assignment forgets the leases: the same reports are unknown again.
        let d = d.without_leases();
        assert!(
            d.shares("b", usd("10"), at(-10_000), at(140)).unwrap().iter().all(|s| s.share_usd.0.is_zero())
        );
        // A replica that stopped names no record: nothing of it is unknown.
        let mut d = d;
        put(&mut d, Demand { record_revision: Some(Demand::STOPPED), ..naming("a", "0", "0", 0, "0", 150) });
        put(&mut d, naming("b", "0", "0", 0, "0", 150));
        d.published("b", 9, None);
        put(&mut d, naming("b", "0", "0", 9, "0", 160));
        assert_eq!(publish(&mut d, "10", 10, 170), vec![("a".into(), usd("5")), ("b".into(), usd("5"))]);
    }

    #[test]
    fn a_share_is_a_lease_the_others_grow_into_only_once_its_replica_reports_the_smaller_one() {
        let mut d = Demands::default();
        let named = |replica: &str, asked: &str, at_ms: i64, revision: i64, used: &str| Demand {
            demand_usd: usd(asked),
            unit_usd: usd("0.01"),
            ..naming(replica, "0", "0", revision, used, at_ms)
        };
        let publish = |d: &mut Demands, revision: i64, now_ms: i64| publish(d, "100", revision, now_ms);
        put(&mut d, demand("a", "0", "1", "0.01", 0));
        put(&mut d, demand("b", "0", "1", "0.01", 0));
        assert_eq!(publish(&mut d, 1, 10), vec![("a".into(), usd("50")), ("b".into(), usd("50"))]);
        // b goes quiet, reporting record 1 and nothing used: it may still admit $50 under it,
        // so a, which asks, may not grow into that yet; b's own share shrinks at once.
        put(&mut d, named("a", "1", 100, 1, "0"));
        put(&mut d, named("b", "0", 100, 1, "0"));
        assert_eq!(publish(&mut d, 2, 110), vec![("a".into(), usd("50")), ("b".into(), usd("0"))]);
        // b reports record 2 (its share of 0): its room is gone, a takes the whole remaining.
        put(&mut d, named("b", "0", 200, 2, "0"));
        assert_eq!(publish(&mut d, 3, 210), vec![("a".into(), usd("100")), ("b".into(), usd("0"))]);
        // Had b used $30 of record 1's $50 when it reported it, only $20 would have been held.
        let mut d = Demands::default();
        put(&mut d, demand("a", "0", "1", "0.01", 0));
        put(&mut d, demand("b", "0", "1", "0.01", 0));
        publish(&mut d, 1, 10);
        put(&mut d, named("a", "1", 100, 1, "0"));
        put(&mut d, Demand { settled_usd: usd("30"), ..named("b", "0", 100, 1, "30") });
        // 100 - 30 settled = 70 to share: a's target 70, less b's room of 20.
        assert_eq!(publish(&mut d, 2, 110), vec![("a".into(), usd("50")), ("b".into(), usd("0"))]);
    }

    #[test]
    fn over_committed_nobody_gets_more_than_what_is_left() {
        let mut d = Demands::default();
        // a has $0.4 open and $0.2 settled, b $0.2 open: $0.5 left covers neither.
        put(
            &mut d,
            Demand { open_usd: usd("0.4"), settled_usd: usd("0.2"), ..demand("a", "0", "1", "0", 0) },
        );
        put(&mut d, Demand { open_usd: usd("0.2"), ..demand("b", "0", "1", "0", 0) });
        // $0.5 - $0.2 settled = $0.3 for $0.6 in flight: halves of their reservations.
        assert_eq!(shares_of(&d, "0.5", 600), vec![("a".into(), usd("0.2")), ("b".into(), usd("0.1"))]);
        // Overspent: nothing for anyone.
        assert_eq!(shares_of(&d, "-0.016", 600), vec![("a".into(), usd("0")), ("b".into(), usd("0"))]);
    }

    #[test]
    fn near_the_end_the_rest_goes_where_a_whole_request_fits() {
        let mut d = Demands::default();
        put(&mut d, demand("a", "0", "0.05", "0.009", 0));
        put(&mut d, demand("b", "0", "0.04", "0.009", 0));
        put(&mut d, demand("c", "0", "0.03", "0.009", 0));
        // $0.02 in thirds fits nobody's $0.009, in halves b's $0.0089 is short of one: a takes it.
        assert_eq!(
            shares_of(&d, "0.02", 600),
            vec![("a".into(), usd("0.02")), ("b".into(), usd("0")), ("c".into(), usd("0"))]
        );
        // With more left, halves fit: b and a share it, c still too small at a third.
        assert_eq!(
            shares_of(&d, "0.027", 600),
            vec![("a".into(), usd("0.015")), ("b".into(), usd("0.012")), ("c".into(), usd("0"))]
        );
    }

    #[test]
    fn an_expired_replica_keeps_its_holds_set_aside_and_a_tombstone_forgets_it() {
        let mut d = Demands::default();
        put(&mut d, demand("a", "0", "1", "0", 0));
        put(&mut d, demand("dead", "2", "1", "0", 0));
        // Both live: a gets the rest after the dead one's holds.
        assert_eq!(shares_of(&d, "10", 700), vec![("a".into(), usd("4")), ("dead".into(), usd("5"))]);
        // Refreshed a; the other expired (older than three intervals and the read slack): not
        // shared, still set aside.
        put(&mut d, demand("a", "0", "1", "0", 3_000));
        assert_eq!(shares_of(&d, "10", 3_100), vec![("a".into(), usd("8"))]);
        // An older record of a replica does not replace a newer one.
        put(&mut d, demand("a", "5", "1", "0", 10));
        assert_eq!(shares_of(&d, "10", 3_100), vec![("a".into(), usd("8"))]);
        assert_eq!(d.apply("dead#org=acme#budget=b", None, at(3_100)), Some("b".to_string()));
        assert_eq!(shares_of(&d, "10", 3_100), vec![("a".into(), usd("10"))]);
        assert_eq!(d.shares("b", usd("10"), at(0), at(6_000)), Some(vec![]), "nobody live: nobody admits");
        d.prune("b", at(0), at(6_000));
        assert_eq!(d.budgets().count(), 0, "expired with nothing held: forgotten");
        // Set aside for a while after its last report, not for the rest of the window.
        put(&mut d, demand("a", "0", "1", "0", 900_000));
        put(&mut d, demand("gone", "2", "1", "0", 0));
        assert_eq!(shares_of(&d, "10", 900_000), vec![("a".into(), usd("8"))]);
        put(&mut d, demand("a", "0", "1", "0", 900_001));
        assert_eq!(shares_of(&d, "10", 900_001), vec![("a".into(), usd("10"))]);
    }

    proptest::proptest! {
        /// Whatever the reports: live shares, plus every settled cost and every expired
        /// replica's reservations set aside, never exceed a positive remaining (the argument in
        /// docs/ARCHITECTURE.md needs no more).
        #[test]
        fn shares_and_what_is_set_aside_never_exceed_the_remaining(
            reports in proptest::collection::vec((0u32..5_000, 0u32..5_000, 0u32..5_000, 0u32..2_000, proptest::bool::ANY), 1..6),
            remaining in -2_000i64..20_000,
        ) {
            let cents = |n: u32| Usd(Decimal::new(i64::from(n), 3));
            let mut d = Demands::default();
            for (i, (open, settled, asked, unit, live)) in reports.iter().enumerate() {
                let published_ms = if *live { 0 } else { -5_000 };
                put(&mut d, Demand {
                    open_usd: cents(*open),
                    settled_usd: cents(*settled),
                    ..demand(&format!("r{i}"), "0", "0", "0", published_ms)
                });
                if let Some(entry) = d.by_budget.get_mut("b").and_then(|e| e.get_mut(&format!("r{i}"))) {
                    entry.demand_usd = cents(*asked);
                    entry.unit_usd = cents(*unit);
                }
            }
            let remaining = Usd(Decimal::new(remaining, 3));
            let Some(shares) = d.shares("b", remaining, at(-10_000), at(600)) else { return Ok(()) };
            let live: Vec<&Demand> = d.by_budget["b"].values().filter(|x| x.live_at(at(600))).collect();
            let orphans_open: Decimal = d.by_budget["b"].values().filter(|x| !x.live_at(at(600))).map(open).sum();
            let settled: Decimal = d.by_budget["b"].values().map(|x| x.settled_usd.0).sum();
            let shared: Decimal = shares.iter().map(|s| s.share_usd.0).sum();
            proptest::prop_assert_eq!(shares.len(), live.len());
            proptest::prop_assert!(shares.iter().all(|s| s.share_usd.0 >= Decimal::ZERO));
            proptest::prop_assert!(
                shared + settled + orphans_open <= remaining.0.max(settled + orphans_open),
                "shared {} settled {} orphans {} remaining {}", shared, settled, orphans_open, remaining.0
            );
        }
    }
}

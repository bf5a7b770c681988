//! One budget's book on this replica: what the replica holds against the budget's published
//! headroom. Two amounts are held:
//!
//! - **open**: the reservations of requests in flight (their estimated maximum cost);
//! - **settled**: what requests that finished here actually cost, from their settlement until
//!   the headroom this replica holds shows it.
//!
//! Contract: a request fits when `open + settled + its reservation <= share`, the share being
//! the budget's published remaining divided by `ingress.reservation.replicas`; the check and
//! the addition happen under the book's lock, so two requests never take the same headroom.
//! One request at a time may instead be admitted on its *likely* cost (the **overdraft**: its
//! reservation, added in full, no longer fits, its likely cost does): near the end of a share
//! the last request that probably fits is served rather than refused, and the overshoot this
//! allows is at most one request per budget and replica.
//!
//! A settled amount leaves the book when the record held shows it, exactly: each settlement
//! carries the [`Landing`] of its usage event (the usage partition and offset the broker
//! acknowledged it at, learnt by the emitter), and a record whose usage watermark on that
//! partition is past that offset has the event in its spent. Until the event has landed and a
//! record shows it the cost is held (it errs toward a refusal, never toward overspend); so is a
//! cost whose event never lands (kept aside as refused by the broker), until its window ends.
//! Settlements before the record's window start leave with the window. A record without
//! watermarks (from a budget service before `headroom.v2`) falls back to time: the record's
//! `spend_revision`, the processor's read time, at least [`ReleaseRules::margin_us`] past the
//! settlement, or [`ReleaseRules::hold_max_us`] passed and the record read after it. The lock
//! is per budget: only requests of one budget meet.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use faregate_core::event::UsageWatermark;
use faregate_core::money::Usd;

/// Where a request's usage event landed on the usage topic (partition, offset), once the broker
/// acknowledged it; set by the emitter, read by the books that hold the request's cost.
#[derive(Debug, Clone, Default)]
pub struct Landing(Arc<OnceLock<(i32, i64)>>);

impl Landing {
    /// The broker acknowledged the event at `offset` of `partition` (the first time counts).
    pub fn set(&self, partition: i32, offset: i64) {
        let _ = self.0.set((partition, offset));
    }

    pub fn get(&self) -> Option<(i32, i64)> {
        self.0.get().copied()
    }

    /// Whether `marks` (sorted by partition) are past this landing.
    fn shown_by(&self, marks: &[UsageWatermark]) -> bool {
        self.get().is_some_and(|(partition, offset)| {
            marks
                .binary_search_by_key(&partition, |m| m.partition)
                .is_ok_and(|i| marks[i].next_offset > offset)
        })
    }
}

/// How often a book looks through its settled amounts again under one record (µs): new
/// landings may show under the record it already looked with.
const RESCAN_US: i64 = 1_000;

/// When a settled amount leaves the book without watermarks (microseconds; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseRules {
    pub margin_us: i64,
    pub hold_max_us: i64,
}

/// The published position of a budget a request is admitted against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// The budget's remaining in its window, as published.
    pub remaining: Usd,
    /// The highest spend revision (processor read time, µs since the epoch) the record reflects.
    pub spend_revision: i64,
    /// The record's window start, µs since the epoch.
    pub window_start_us: i64,
    /// The record's revision.
    pub revision: i64,
    /// How far the record's spent holds the org's usage events, sorted by partition; `None`
    /// from a budget service that does not say.
    pub watermarks: Option<Arc<[UsageWatermark]>>,
    /// The remaining shared among the replicas by demand; `None`: static shares.
    pub shares: Option<Arc<[faregate_core::event::ReplicaShare]>>,
}

#[derive(Debug, Default)]
pub struct Book {
    /// The budget's name, for refusals.
    pub name: String,
    state: Mutex<BookState>,
    /// Woken when room may have appeared: a settlement, a release, a new record.
    pub(crate) changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
pub(crate) struct BookState {
    open: Usd,
    /// In settlement order.
    settled: VecDeque<Settled>,
    settled_sum: Usd,
    /// A request admitted on its likely cost is in flight.
    overdraft: bool,
    /// The record revision and time of the last look through `settled` under watermarks.
    scanned: Option<(i64, i64)>,
    /// The newest record revision this book released against: a look with an older position
    /// (taken before that record came) would count against the older, larger remaining while
    /// the costs the newer one shows are gone from the book.
    seen: i64,
    /// Reservations asked for here lately (µs, amount, likely cost), oldest first.
    asked: VecDeque<(i64, Usd, Usd)>,
    /// Requests waiting for room here: how many, their reservations, the largest likely cost.
    waiting: (usize, Usd, Usd),
}

/// How far back a book's demand looks (µs).
const DEMAND_WINDOW_US: i64 = 2_000_000;
/// Asks a book remembers at most (a busy budget's window is summed from these).
const MAX_ASKED: usize = 8_192;

/// This replica's share of a budget: what its open reservations and settled costs (all of
/// them, or those settled after `settled_after_us`) may come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub amount: Usd,
    /// A share by demand: the time (µs) of the report it was computed from.
    pub settled_after_us: Option<i64>,
}

impl From<Usd> for Share {
    fn from(amount: Usd) -> Share {
        Share { amount, settled_after_us: None }
    }
}

/// What a replica reports of one budget (`faregate_core::event::Demand`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Open reservations.
    pub open: Usd,
    /// Settled costs not yet shown.
    pub settled: Usd,
    /// Reservations asked for in the last window and those waiting now.
    pub demand: Usd,
    /// The largest likely cost among them.
    pub unit: Usd,
    /// What the replica counts against its share of the reported position (read under the
    /// same lock as the holds).
    pub used: Usd,
}

impl Report {
    pub fn is_zero(&self) -> bool {
        self.open.0.is_zero() && self.settled.0.is_zero() && self.demand.0.is_zero()
    }
}

#[derive(Debug)]
struct Settled {
    /// µs since the epoch.
    at: i64,
    cost: Usd,
    landing: Landing,
}

/// What a book holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub open: Usd,
    pub settled: Usd,
}

impl Held {
    pub fn total(self) -> Usd {
        Usd(self.open.0 + self.settled.0)
    }
}

impl Book {
    pub fn new(name: String) -> Book {
        Book { name, state: Mutex::default(), changed: tokio::sync::Notify::new() }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the requests waiting for room here (see [`crate::reserve::Reserver::admit_within`]).
    pub fn wake(&self) {
        self.changed.notify_waiters();
    }

    /// What the book holds against `position` at `now_us` (after releasing what it shows).
    pub fn held(&self, position: &Position, rules: ReleaseRules, now_us: i64) -> Held {
        let mut state = self.lock();
        state.release(position, rules, now_us);
        state.held()
    }

    /// What to report of this budget at `now_us`: holds (after releasing what `position`
    /// shows), demand, and what counts against `share` (this replica's share of `position`).
    pub fn report(&self, position: &Position, share: Share, rules: ReleaseRules, now_us: i64) -> Report {
        let mut state = self.lock();
        state.release(position, rules, now_us);
        state.prune_asked(now_us);
        let (waiting, waiting_sum, waiting_unit) = state.waiting;
        let asked: rust_decimal::Decimal = state.asked.iter().map(|(_, amount, _)| amount.0).sum();
        let unit = state.asked.iter().map(|(_, _, likely)| likely.0).max().unwrap_or_default();
        let held = state.held();
        Report {
            open: held.open,
            settled: held.settled,
            demand: Usd(asked + waiting_sum.0),
            unit: Usd(if waiting > 0 { unit.max(waiting_unit.0) } else { unit }),
            used: state.counted(share),
        }
    }
}

impl BookState {
    pub(crate) fn held(&self) -> Held {
        Held { open: self.open, settled: self.settled_sum }
    }

    /// Drop the settled amounts `position` shows (see the module docs); whether any went.
    pub(crate) fn release(&mut self, position: &Position, rules: ReleaseRules, now_us: i64) -> bool {
        self.seen = self.seen.max(position.revision);
        let before = self.settled.len();
        match &position.watermarks {
            Some(marks) => self.release_shown(position, marks, now_us),
            None => self.release_by_time(position, rules, now_us),
        }
        if self.settled.is_empty() {
            self.settled_sum = Usd::ZERO;
        }
        if self.settled.len() < before {
            tracing::trace!(book = self as *const BookState as usize, revision = position.revision,
                released = before - self.settled.len(), held = %self.settled_sum, "released");
        }
        self.settled.len() < before
    }

    fn release_shown(&mut self, position: &Position, marks: &[UsageWatermark], now_us: i64) {
        if self.settled.is_empty()
            || self.scanned.is_some_and(|(revision, at)| {
                revision == position.revision && now_us >= at && now_us < at.saturating_add(RESCAN_US)
            })
        {
            return;
        }
        self.scanned = Some((position.revision, now_us));
        let mut released = rust_decimal::Decimal::ZERO;
        self.settled.retain(|s| {
            let gone = s.at < position.window_start_us || s.landing.shown_by(marks);
            if gone {
                released += s.cost.0;
            }
            !gone
        });
        self.settled_sum = Usd(self.settled_sum.0 - released);
    }

    fn release_by_time(&mut self, position: &Position, rules: ReleaseRules, now_us: i64) {
        while let Some(s) = self.settled.front() {
            let shown = position.spend_revision >= s.at.saturating_add(rules.margin_us);
            let held_long =
                now_us >= s.at.saturating_add(rules.hold_max_us) && position.spend_revision >= s.at;
            let old_window = s.at < position.window_start_us;
            if !(shown || held_long || old_window) {
                break;
            }
            let cost = s.cost;
            self.settled.pop_front();
            self.settled_sum = Usd(self.settled_sum.0 - cost.0);
        }
    }

    /// Whether `position` is older than a record this book already released against.
    pub(crate) fn outdated(&self, position: &Position) -> bool {
        position.revision < self.seen
    }

    /// A request asked for `amount` (likely `likely`) here at `now_us`: demand.
    pub(crate) fn ask(&mut self, now_us: i64, amount: Usd, likely: Usd) {
        self.prune_asked(now_us);
        if self.asked.len() >= MAX_ASKED {
            self.asked.pop_front();
        }
        self.asked.push_back((now_us, amount, likely));
    }

    fn prune_asked(&mut self, now_us: i64) {
        while self.asked.front().is_some_and(|(at, _, _)| *at < now_us.saturating_sub(DEMAND_WINDOW_US)) {
            self.asked.pop_front();
        }
    }

    /// A request of `amount` (likely `likely`) starts (`true`) or stops waiting for room here.
    pub(crate) fn waiting(&mut self, amount: Usd, likely: Usd, starts: bool) {
        let (count, sum, unit) = &mut self.waiting;
        if starts {
            *count += 1;
            *sum = Usd(sum.0 + amount.0);
            *unit = Usd(unit.0.max(likely.0));
        } else {
            *count = count.saturating_sub(1);
            *sum = if *count == 0 { Usd::ZERO } else { Usd(sum.0 - amount.0) };
            if *count == 0 {
                *unit = Usd::ZERO;
            }
        }
    }

    /// What counts against `share`: the open reservations, and the settled costs (those
    /// settled after the report a share by demand was computed from: the earlier ones were set
    /// aside for this replica apart from its share).
    pub(crate) fn counted(&self, share: Share) -> Usd {
        let settled = match share.settled_after_us {
            None => self.settled_sum.0,
            // At or after the report: a settlement stamped in the report's own microsecond
            // may have missed it (counted twice at worst, never by nobody).
            Some(since) => self.settled.iter().rev().take_while(|s| s.at >= since).map(|s| s.cost.0).sum(),
        };
        Usd(self.open.0 + settled)
    }

    /// Whether `amount` more fits in `share`.
    pub(crate) fn fits(&self, amount: Usd, share: Share) -> bool {
        self.counted(share).0 + amount.0 <= share.amount.0
    }

    pub(crate) fn open(&mut self, amount: Usd) {
        self.open = Usd(self.open.0 + amount.0);
    }

    /// Whether a request whose reservation does not fit may go on its `likely` cost: no other
    /// overdraft is in flight and the likely cost fits.
    pub(crate) fn overdraft_fits(&self, likely: Usd, share: Share) -> bool {
        !self.overdraft && self.fits(likely, share)
    }

    pub(crate) fn set_overdraft(&mut self, open: bool) {
        self.overdraft = open;
    }

    /// A reservation of `reserved` ends at `now_us`, having cost `cost`, its usage event landing
    /// at `landing`.
    pub(crate) fn settle(&mut self, reserved: Usd, cost: Usd, now_us: i64, landing: &Landing) {
        self.open = Usd((self.open.0 - reserved.0).max(rust_decimal::Decimal::ZERO));
        if cost.0 > rust_decimal::Decimal::ZERO {
            // Settlement times only grow on one replica, but the clock may step back: keep order.
            let at = self.settled.back().map_or(now_us, |last| now_us.max(last.at));
            tracing::trace!(book = self as *const BookState as usize, %cost, %reserved, at, "settled");
            self.settled.push_back(Settled { at, cost, landing: landing.clone() });
            self.settled_sum = Usd(self.settled_sum.0 + cost.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Usd {
        Usd(s.parse().unwrap())
    }

    const RULES: ReleaseRules = ReleaseRules { margin_us: 1_000, hold_max_us: 30_000 };

    fn at(remaining: &str, spend_revision: i64) -> Position {
        Position { remaining: usd(remaining), spend_revision, ..Position::default() }
    }

    fn marked(revision: i64, marks: &[(i32, i64)], window_start_us: i64) -> Position {
        let marks: Vec<UsageWatermark> =
            marks.iter().map(|&(partition, next_offset)| UsageWatermark { partition, next_offset }).collect();
        Position {
            remaining: usd("1"),
            revision,
            window_start_us,
            watermarks: Some(marks.into()),
            ..Position::default()
        }
    }

    #[test]
    fn with_watermarks_a_cost_leaves_exactly_when_a_record_shows_its_event() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        let (first, second, lost) = (Landing::default(), Landing::default(), Landing::default());
        state.settle(usd("0"), usd("0.2"), 10_000, &first);
        state.settle(usd("0"), usd("0.3"), 11_000, &second);
        state.settle(usd("0"), usd("0.1"), 12_000, &lost);
        // Nothing has landed: no record shows anything, however late.
        state.release(&marked(1, &[(0, 1_000), (1, 1_000)], 0), RULES, i64::MAX / 2);
        assert_eq!(state.held().settled, usd("0.6"));
        first.set(1, 41);
        second.set(0, 7);
        // Partition 1 only up to offset 41 (exclusive): neither shows yet.
        state.release(&marked(2, &[(0, 7), (1, 41)], 0), RULES, 20_000);
        assert_eq!(state.held().settled, usd("0.6"));
        // The second's partition moved past it; out of settlement order is fine.
        state.release(&marked(3, &[(0, 8), (1, 41)], 0), RULES, 20_000);
        assert_eq!(state.held().settled, usd("0.3"));
        // A landing learnt after the record came is looked at again within a millisecond.
        state.release(&marked(4, &[(0, 8), (1, 42)], 0), RULES, 21_000);
        assert_eq!(state.held().settled, usd("0.1"));
        // The event that never landed stays until its window ends.
        state.release(&marked(5, &[(0, 9), (1, 99)], 12_000), RULES, 22_000);
        assert_eq!(state.held().settled, usd("0.1"));
        state.release(&marked(6, &[], 12_001), RULES, 22_000);
        assert_eq!(state.held(), Held::default());
    }

    #[test]
    fn settled_spend_is_held_until_a_record_read_after_it_shows_it() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        state.open(usd("0.5"));
        assert!(state.fits(usd("0.5"), usd("1").into()));
        assert!(!state.fits(usd("0.500000000000000001"), usd("1").into()));
        state.settle(usd("0.5"), usd("0.2"), 10_000, &Landing::default());
        state.open(usd("0.3"));
        state.settle(usd("0.3"), usd("0.3"), 20_000, &Landing::default());
        assert_eq!(state.held(), Held { open: usd("0"), settled: usd("0.5") });
        // A record read before the margin passed shows neither.
        state.release(&at("1", 10_999), RULES, 20_000);
        assert_eq!(state.held().settled, usd("0.5"));
        // Read a margin after the first: the first goes, the second stays.
        state.release(&at("1", 11_000), RULES, 20_000);
        assert_eq!(state.held().settled, usd("0.3"));
        // Long held, and the record was read after it: it goes without the margin.
        state.release(&at("1", 20_000), RULES, 49_999);
        assert_eq!(state.held().settled, usd("0.3"));
        state.release(&at("1", 20_000), RULES, 50_000);
        assert_eq!(state.held(), Held::default());
    }

    #[test]
    fn a_stalled_pipeline_keeps_everything_held_and_a_new_window_releases_it() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        state.settle(usd("0"), usd("0.4"), 5_000, &Landing::default());
        // No record computed after the settlement: held however long it takes.
        state.release(&at("1", 4_999), RULES, i64::MAX / 2);
        assert_eq!(state.held().settled, usd("0.4"));
        state.release(
            &Position { remaining: usd("1"), window_start_us: 5_001, ..Position::default() },
            RULES,
            6_000,
        );
        assert_eq!(state.held().settled, usd("0"));
        // Nothing billed, nothing held; a settle never takes open below zero.
        state.settle(usd("0.1"), usd("0"), 7_000, &Landing::default());
        assert_eq!(state.held(), Held::default());
    }

    #[test]
    fn a_share_by_demand_counts_only_what_settled_after_its_report() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        state.settle(usd("0"), usd("0.3"), 1_000, &Landing::default());
        state.open(usd("0.2"));
        state.settle(usd("0"), usd("0.1"), 3_000, &Landing::default());
        // Reported at 2,000: the $0.3 before it was set aside apart from the share.
        let share = Share { amount: usd("0.5"), settled_after_us: Some(2_000) };
        assert_eq!(state.counted(share), usd("0.3"));
        assert!(state.fits(usd("0.2"), share));
        assert!(!state.fits(usd("0.200000000000000001"), share));
        // A static share counts everything.
        assert_eq!(state.counted(usd("0.5").into()), usd("0.6"));
    }

    #[test]
    fn a_position_older_than_one_the_book_was_released_against_is_outdated() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        let landing = Landing::default();
        landing.set(0, 3);
        state.settle(usd("0"), usd("0.4"), 1_000, &landing);
        assert!(!state.outdated(&marked(4, &[], 0)));
        // Record 5 shows the cost: it leaves the book. Record 4's remaining did not include it,
        // so counting against record 4 now would count the cost by nobody.
        state.release(&marked(5, &[(0, 4)], 0), RULES, 2_000);
        assert_eq!(state.held().settled, usd("0"));
        assert!(state.outdated(&marked(4, &[], 0)));
        assert!(!state.outdated(&marked(5, &[], 0)));
        assert!(!state.outdated(&marked(6, &[], 0)));
    }

    #[test]
    fn one_overdraft_at_a_time_and_only_on_a_likely_cost_that_fits() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        state.open(usd("0.9"));
        assert!(!state.fits(usd("0.2"), usd("1").into()));
        assert!(state.overdraft_fits(usd("0.1"), usd("1").into()));
        assert!(!state.overdraft_fits(usd("0.100000000000000001"), usd("1").into()));
        state.open(usd("0.2"));
        state.set_overdraft(true);
        assert!(!state.overdraft_fits(usd("0"), usd("10").into()), "one at a time");
        state.set_overdraft(false);
        assert!(!state.overdraft_fits(usd("0.1"), usd("1").into()), "the full reservation is held");
    }
}

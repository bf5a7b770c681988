//! One budget's book on this replica: what the replica holds against the budget's published
//! headroom. Two amounts are held:
//!
//! - **open**: the reservations of requests in flight (their estimated maximum cost);
//! - **settled**: what requests that finished here actually cost, from their settlement until
//!   the headroom this replica holds shows it (see [`ReleaseRules`]).
//!
//! Contract: a request fits when `open + settled + its reservation <= share`, the share being
//! the budget's published remaining divided by `ingress.reservation.replicas`; the check and
//! the addition happen under the book's lock, so two requests never take the same headroom.
//! One request at a time may instead be admitted on its *likely* cost (the **overdraft**: its
//! reservation, added in full, no longer fits, its likely cost does): near the end of a share
//! the last request that probably fits is served rather than refused, and the overshoot this
//! allows is at most one request per budget and replica.
//! Settled amounts leave the book in settlement order once a headroom record shows them (the
//! record's `spend_revision`, the processor's read time, is at least `settle_margin` past the
//! settlement), or once `settle_hold_max` has passed and the record was computed after the
//! settlement, or once they fall before the record's window start (a new window). Until then
//! the replica counts them twice (the record may already include them): it errs toward a
//! refusal, never toward overspend. The lock is per budget: only requests of one budget meet.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use faregate_core::money::Usd;

/// When a settled amount leaves the book (microseconds; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseRules {
    pub margin_us: i64,
    pub hold_max_us: i64,
}

/// The published position of a budget a request is admitted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The budget's remaining in its window, as published.
    pub remaining: Usd,
    /// The highest spend revision (processor read time, µs since the epoch) the record reflects.
    pub spend_revision: i64,
    /// The record's window start, µs since the epoch.
    pub window_start_us: i64,
}

#[derive(Debug, Default)]
pub struct Book {
    /// The budget's name, for refusals.
    pub name: String,
    state: Mutex<BookState>,
}

#[derive(Debug, Default)]
pub(crate) struct BookState {
    open: Usd,
    /// (settled at, µs since the epoch; cost), in settlement order.
    settled: VecDeque<(i64, Usd)>,
    settled_sum: Usd,
    /// A request admitted on its likely cost is in flight.
    overdraft: bool,
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
        Book { name, state: Mutex::default() }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the book holds against `position` at `now_us` (after releasing what it shows).
    pub fn held(&self, position: Position, rules: ReleaseRules, now_us: i64) -> Held {
        let mut state = self.lock();
        state.release(position, rules, now_us);
        state.held()
    }
}

impl BookState {
    pub(crate) fn held(&self) -> Held {
        Held { open: self.open, settled: self.settled_sum }
    }

    /// Drop the settled amounts `position` shows (oldest first; see the module docs).
    pub(crate) fn release(&mut self, position: Position, rules: ReleaseRules, now_us: i64) {
        while let Some(&(at, cost)) = self.settled.front() {
            let shown = position.spend_revision >= at.saturating_add(rules.margin_us);
            let held_long = now_us >= at.saturating_add(rules.hold_max_us) && position.spend_revision >= at;
            let old_window = at < position.window_start_us;
            if !(shown || held_long || old_window) {
                break;
            }
            self.settled.pop_front();
            self.settled_sum = Usd(self.settled_sum.0 - cost.0);
        }
        if self.settled.is_empty() {
            self.settled_sum = Usd::ZERO;
        }
    }

    /// Whether `amount` more fits in `share`.
    pub(crate) fn fits(&self, amount: Usd, share: Usd) -> bool {
        self.open.0 + self.settled_sum.0 + amount.0 <= share.0
    }

    pub(crate) fn open(&mut self, amount: Usd) {
        self.open = Usd(self.open.0 + amount.0);
    }

    /// Whether a request whose reservation does not fit may go on its `likely` cost: no other
    /// overdraft is in flight and the likely cost fits.
    pub(crate) fn overdraft_fits(&self, likely: Usd, share: Usd) -> bool {
        !self.overdraft && self.fits(likely, share)
    }

    pub(crate) fn set_overdraft(&mut self, open: bool) {
        self.overdraft = open;
    }

    /// A reservation of `reserved` ends at `now_us`, having cost `cost`.
    pub(crate) fn settle(&mut self, reserved: Usd, cost: Usd, now_us: i64) {
        self.open = Usd((self.open.0 - reserved.0).max(rust_decimal::Decimal::ZERO));
        if cost.0 > rust_decimal::Decimal::ZERO {
            // Settlement times only grow on one replica, but the clock may step back: keep order.
            let at = self.settled.back().map_or(now_us, |&(last, _)| now_us.max(last));
            self.settled.push_back((at, cost));
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
        Position { remaining: usd(remaining), spend_revision, window_start_us: 0 }
    }

    #[test]
    fn settled_spend_is_held_until_a_record_read_after_it_shows_it() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        state.open(usd("0.5"));
        assert!(state.fits(usd("0.5"), usd("1")));
        assert!(!state.fits(usd("0.500000000000000001"), usd("1")));
        state.settle(usd("0.5"), usd("0.2"), 10_000);
        state.open(usd("0.3"));
        state.settle(usd("0.3"), usd("0.3"), 20_000);
        assert_eq!(state.held(), Held { open: usd("0"), settled: usd("0.5") });
        // A record read before the margin passed shows neither.
        state.release(at("1", 10_999), RULES, 20_000);
        assert_eq!(state.held().settled, usd("0.5"));
        // Read a margin after the first: the first goes, the second stays.
        state.release(at("1", 11_000), RULES, 20_000);
        assert_eq!(state.held().settled, usd("0.3"));
        // Long held, and the record was read after it: it goes without the margin.
        state.release(at("1", 20_000), RULES, 49_999);
        assert_eq!(state.held().settled, usd("0.3"));
        state.release(at("1", 20_000), RULES, 50_000);
        assert_eq!(state.held(), Held::default());
    }

    #[test]
    fn a_stalled_pipeline_keeps_everything_held_and_a_new_window_releases_it() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        state.settle(usd("0"), usd("0.4"), 5_000);
        // No record computed after the settlement: held however long it takes.
        state.release(at("1", 4_999), RULES, i64::MAX / 2);
        assert_eq!(state.held().settled, usd("0.4"));
        state.release(
            Position { remaining: usd("1"), spend_revision: 0, window_start_us: 5_001 },
            RULES,
            6_000,
        );
        assert_eq!(state.held().settled, usd("0"));
        // Nothing billed, nothing held; a settle never takes open below zero.
        state.settle(usd("0.1"), usd("0"), 7_000);
        assert_eq!(state.held(), Held::default());
    }

    #[test]
    fn one_overdraft_at_a_time_and_only_on_a_likely_cost_that_fits() {
        let book = Book::new("b".into());
        let mut state = book.lock();
        state.open(usd("0.9"));
        assert!(!state.fits(usd("0.2"), usd("1")));
        assert!(state.overdraft_fits(usd("0.1"), usd("1")));
        assert!(!state.overdraft_fits(usd("0.100000000000000001"), usd("1")));
        state.open(usd("0.2"));
        state.set_overdraft(true);
        assert!(!state.overdraft_fits(usd("0"), usd("10")), "one at a time");
        state.set_overdraft(false);
        assert!(!state.overdraft_fits(usd("0.1"), usd("1")), "the full reservation is held");
    }
}

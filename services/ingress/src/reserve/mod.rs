//! Admission by reservation: before a request is forwarded, its estimated maximum cost
//! ([`estimate`]) is reserved against the book ([`book`]) of every budget covering it on this
//! replica, and it is admitted only if it fits each budget's share of its published headroom
//! less what the replica already holds there. The returned [`Reservation`] is an RAII guard:
//! [`Reservation::settle`] turns it into the request's actual priced cost (what the provider
//! reported; zero for a failed request), and dropping it unsettled settles the whole reserved
//! amount (a request whose cost is unknown is assumed to have cost its maximum). The meter owns
//! the guard and settles it when it emits the request's event, so every path that meters a
//! request (completion, upstream error, a cut stream, a client gone) also settles it, once.
//!
//! Budgets without a headroom record yet, and models the catalog cannot price, are admitted
//! without a reservation (and counted: `faregate_ingress_reservation_skipped_total`). Stale
//! enforcement changes nothing here: the last known headroom keeps applying (`fail_mode =
//! closed` refuses before this is asked). The argument and its failure cases are in
//! docs/ARCHITECTURE.md ("Admission by reservation").

pub mod book;
pub mod estimate;

use std::sync::Arc;

use chrono::Utc;
use faregate_core::event::UsageEvent;
use faregate_core::money::Usd;
use faregate_pricing::PriceCatalog;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::config::ReservationConfig;
pub use book::{Book, Held, Landing, Position, ReleaseRules, Report, Share};
pub use estimate::{Estimate, History, OutputFrom};

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("cannot load the price catalog for reservations: {0}")]
    Catalog(String),
}

/// A budget covering a request, as the headroom cache holds it.
#[derive(Debug, Clone)]
pub struct Covering {
    pub position: Position,
    pub book: Arc<Book>,
}

/// Why a request does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub budget: String,
    /// This replica's share of the budget's remaining.
    pub share: Usd,
    /// What the replica holds there already.
    pub held: Usd,
    pub reservation: Usd,
    /// Room may still come: the replica holds something there (requests in flight, costs not
    /// yet shown) and the request's likely cost fits the share once that is gone.
    pub may_fit_later: bool,
}

/// Reservations of one replica.
#[derive(Debug)]
pub struct Reserver {
    config: ReservationConfig,
    rules: ReleaseRules,
    catalog: Arc<PriceCatalog>,
    pub history: History,
    /// This replica's name in the headroom's shares and on the demand topic.
    replica: String,
    /// Wakes the demand publisher at once: a request waits for a share this replica lacks.
    pub(crate) urgent: tokio::sync::Notify,
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

impl Reserver {
    /// A reserver of replica `replica` pricing from `config.prices_dir` (the compiled-in
    /// catalog when empty).
    pub fn new(config: &ReservationConfig, replica: &str) -> Result<Reserver, ReserveError> {
        let catalog = if config.prices_dir.is_empty() {
            PriceCatalog::embedded()
        } else {
            PriceCatalog::load_dir(std::path::Path::new(&config.prices_dir))
        }
        .map_err(|e| ReserveError::Catalog(e.to_string()))?;
        Ok(Reserver {
            rules: ReleaseRules {
                margin_us: i64::try_from(config.settle_margin_ms).unwrap_or(i64::MAX / 2_000) * 1000,
                hold_max_us: i64::try_from(config.settle_hold_max_ms).unwrap_or(i64::MAX / 2_000) * 1000,
            },
            config: config.clone(),
            catalog: Arc::new(catalog),
            history: History::default(),
            replica: replica.to_string(),
            urgent: tokio::sync::Notify::new(),
        })
    }

    /// This replica's name in the headroom's shares and on the demand topic.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn config(&self) -> &ReservationConfig {
        &self.config
    }

    /// Learn from a finished request whose body was `body_bytes`: a completed, billed
    /// response's output and input ratio ([`estimate::input_ratio`]) teach the history of its
    /// key and (requested) model, reserved or not.
    pub fn learn(&self, event: &UsageEvent, body_bytes: usize) {
        if event.outcome == faregate_core::event::Outcome::Ok && event.http_status < 400 {
            let output = event.tokens.output.saturating_add(event.tokens.reasoning);
            self.history.record(event.key_id.as_deref(), &event.requested_model, output);
            if let Some(ratio) = estimate::input_ratio(&self.catalog, &self.config, event, body_bytes) {
                self.history.record_input(event.key_id.as_deref(), &event.requested_model, ratio);
            }
        }
    }

    pub fn rules(&self) -> ReleaseRules {
        self.rules
    }

    /// The request's estimated maximum cost, or `None` when it cannot be priced.
    pub fn estimate(&self, event: &UsageEvent, body_bytes: usize, limit: Option<i64>) -> Option<Estimate> {
        match estimate::estimate(&self.catalog, &self.config, &self.history, event, body_bytes, limit) {
            Ok(estimate) => Some(estimate),
            Err(reason) => {
                metrics::counter!("faregate_ingress_reservation_skipped_total", "why" => reason.kind())
                    .increment(1);
                None
            }
        }
    }

    /// This replica's share of the budget at `position`: what the record's demand shares give
    /// it (nothing when it is not named, or when nobody reported demand yet), else, from a
    /// budget service without demand shares, `remaining / replicas` rounded down to 10^-18
    /// dollars.
    pub fn share(&self, position: &Position) -> Share {
        if let Some(shares) = &position.shares {
            return shares.iter().find(|s| s.replica == self.replica).map_or(Usd::ZERO.into(), |s| Share {
                amount: s.share_usd,
                settled_after_us: Some(s.report_at.timestamp_micros()),
            });
        }
        // A budget service that shares by demand (its records carry usage watermarks) but has
        // no report of this budget yet: no share until one names this replica. Static shares
        // of a shrinking remaining are not sound (a replica whose costs the headroom shows
        // gets room the others' unshown costs already took), so they are only for a budget
        // service that cannot share (`headroom.v1`).
        if position.watermarks.is_some() {
            return Usd::ZERO.into();
        }
        if self.config.replicas <= 1 {
            return position.remaining.into();
        }
        let share = position.remaining.0 / Decimal::from(self.config.replicas);
        Usd(share.round_dp_with_strategy(18, RoundingStrategy::ToNegativeInfinity)).into()
    }

    /// [`admit`](Self::admit), and while the refusal may turn into room
    /// ([`Refusal::may_fit_later`]) wait for it, up to `ingress.reservation.max_wait_ms`: each
    /// settlement, release or new headroom record of a covering budget tries again, with the
    /// covering budgets asked anew from `refresh` (the newest positions). Returns how long it
    /// waited, if it did.
    pub async fn admit_within(
        self: &Arc<Self>,
        covering: Vec<Covering>,
        refresh: impl Fn() -> Vec<Covering>,
        estimate: &Estimate,
    ) -> Result<(Reservation, Option<std::time::Duration>), Refusal> {
        let started = tokio::time::Instant::now();
        let deadline = started + std::time::Duration::from_millis(self.config.max_wait_ms);
        let mut first = Some(covering);
        let (mut waited, mut looked) = (false, false);
        // Counted as demand while it waits, however the wait ends (the client may leave).
        let mut _waiting: Option<Waiting> = None;
        loop {
            let now_covering = first.take().unwrap_or_else(&refresh);
            let books: Vec<Arc<Book>> = now_covering.iter().map(|c| c.book.clone()).collect();
            // Listening before the look: a change between the look and the wait is not missed.
            let mut changes: Vec<_> = books.iter().map(|b| Box::pin(b.changed.notified())).collect();
            changes.iter_mut().for_each(|c| {
                c.as_mut().enable();
            });
            let result = self.look(now_covering, estimate, !looked);
            // The first look that gets past the positions is the one counted as demand.
            looked |= !matches!(result, Err(Looked::Outdated));
            match result {
                Ok(reservation) => return Ok((reservation, waited.then(|| started.elapsed()))),
                // A newer record came since the positions were taken: look again with it.
                Err(Looked::Outdated) => continue,
                Err(Looked::Refused(refusal))
                    if refusal.may_fit_later && tokio::time::Instant::now() < deadline =>
                {
                    if !waited {
                        tracing::debug!(budget = %refusal.budget, share = %refusal.share, held = %refusal.held,
                            "request waits for room");
                        waited = true;
                        _waiting = Some(Waiting::start(&books, estimate));
                        // The budget service hears of this replica's demand now, not at the
                        // next report: a share may be what it waits for.
                        self.urgent.notify_one();
                    }
                    let any = futures::future::select_all(changes);
                    if tokio::time::timeout_at(deadline, any).await.is_err() {
                        return Err(refusal);
                    }
                }
                Err(Looked::Refused(refusal)) => return Err(refusal),
            }
        }
    }

    /// Reserve `estimate.amount` against every budget in `covering` (on a budget where it no
    /// longer fits, as that budget's one overdraft if `estimate.likely` fits: see [`book`]), or
    /// refuse naming the first budget it does not fit, or say that a position is older than one
    /// its book was already released against (the covering budgets must be taken again). With
    /// `ask`, the request's first look, counted as demand.
    fn look(
        self: &Arc<Self>,
        mut covering: Vec<Covering>,
        estimate: &Estimate,
        ask: bool,
    ) -> Result<Reservation, Looked> {
        let amount = estimate.amount;
        // One lock order for every request: by the book's address.
        covering.sort_by_key(|c| Arc::as_ptr(&c.book) as usize);
        covering.dedup_by_key(|c| Arc::as_ptr(&c.book) as usize);
        let now = now_us();
        let mut locked: Vec<_> = covering.iter().map(|c| (c, c.book.lock(), false)).collect();
        let mut refusal = None;
        let mut released = Vec::new();
        if locked.iter().any(|(c, state, _)| state.outdated(&c.position)) {
            return Err(Looked::Outdated);
        }
        for (c, state, overdraft) in &mut locked {
            if state.release(&c.position, self.rules, now) {
                released.push(c.book.clone());
            }
            if ask {
                state.ask(now, amount, estimate.likely);
            }
            let share = self.share(&c.position);
            tracing::trace!(replica = %self.replica, book = &**state as *const book::BookState as usize,
                revision = c.position.revision, remaining = %c.position.remaining, share = %share.amount,
                since = ?share.settled_after_us, counted = %state.counted(share), %amount, fits = state.fits(amount, share),
                "look");
            if state.fits(amount, share) {
                continue;
            }
            if estimate.likely < amount && state.overdraft_fits(estimate.likely, share) {
                *overdraft = true;
                continue;
            }
            let held = state.counted(share);
            // Room may come from this replica's own holds settling, or (shares by demand) from
            // the budget service giving it more of a remaining that has room for it.
            let own = held.0 > Decimal::ZERO && estimate.likely.0 <= share.amount.0;
            // (A record with usage watermarks comes from a budget service that shares by
            // demand: a replica without a share gets one once its demand is heard.)
            let by_demand = c.position.shares.is_some() || c.position.watermarks.is_some();
            let shared = by_demand && estimate.likely.0 <= c.position.remaining.0;
            refusal = Some(Refusal {
                budget: c.book.name.clone(),
                share: share.amount,
                held,
                reservation: amount,
                may_fit_later: own || shared,
            });
            break;
        }
        if let Some(refusal) = refusal {
            drop(locked);
            // What this look released may be the room another request waits for.
            released.iter().for_each(|book| book.wake());
            return Err(Looked::Refused(refusal));
        }
        let mut overdrafts = Vec::with_capacity(locked.len());
        for (_, state, overdraft) in &mut locked {
            state.open(amount);
            if *overdraft {
                state.set_overdraft(true);
                metrics::counter!("faregate_ingress_reservation_overdraft_total").increment(1);
            }
            overdrafts.push(*overdraft);
        }
        drop(locked);
        released.iter().for_each(|book| book.wake());
        Ok(Reservation {
            reserver: self.clone(),
            books: covering.into_iter().map(|c| c.book).zip(overdrafts).collect(),
            amount,
            settled: false,
        })
    }
}

/// Why a look admitted nothing.
enum Looked {
    Refused(Refusal),
    /// A covering position is older than a record its book was released against.
    Outdated,
}

/// A request waiting for room: counted in its budgets' demand until dropped.
struct Waiting {
    books: Vec<Arc<Book>>,
    amount: Usd,
    likely: Usd,
}

impl Waiting {
    fn start(books: &[Arc<Book>], estimate: &Estimate) -> Waiting {
        for book in books {
            book.lock().waiting(estimate.amount, estimate.likely, true);
        }
        Waiting { books: books.to_vec(), amount: estimate.amount, likely: estimate.likely }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        for book in &self.books {
            book.lock().waiting(self.amount, self.likely, false);
        }
    }
}

/// Reserved headroom of one request; see the module docs.
#[derive(Debug)]
pub struct Reservation {
    reserver: Arc<Reserver>,
    /// Each budget's book, and whether this request is its overdraft.
    books: Vec<(Arc<Book>, bool)>,
    amount: Usd,
    settled: bool,
}

impl Reservation {
    pub fn amount(&self) -> Usd {
        self.amount
    }

    /// Settle to the priced cost of `event` (its final tokens); an event the catalog cannot
    /// price settles to the reserved amount. The books hold the cost until a headroom record
    /// shows the event: the returned landing is where the emitter says it landed.
    pub fn settle(mut self, event: &UsageEvent) -> Landing {
        let cost = match self.reserver.catalog.price(event) {
            faregate_core::clickhouse::ledger::Pricing::Priced { cost, .. } => cost.total(),
            faregate_core::clickhouse::ledger::Pricing::Unpriced { .. } => self.amount,
        };
        let landing = Landing::default();
        self.close(cost, &landing);
        landing
    }

    /// Settle at `cost`; without an event (`landing` never set) the cost is held until its
    /// window ends.
    fn close(&mut self, cost: Usd, landing: &Landing) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        for (book, overdraft) in &self.books {
            let mut state = book.lock();
            // Stamped under the lock: a report reads the book under it too, so a settlement
            // stamped before a report's time is in that report (set aside by the budget
            // service), and one stamped after counts against the share computed from it.
            // Stamped before the lock, one could be neither (a report taken between the stamp
            // and the lock), and its cost held by nobody.
            state.settle(self.amount, cost, now_us(), landing);
            if *overdraft {
                state.set_overdraft(false);
            }
            drop(state);
            book.wake();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let amount = self.amount;
        self.close(amount, &Landing::default());
    }
}

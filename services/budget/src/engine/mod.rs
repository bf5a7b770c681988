//! The budget engine: a pure state machine from budgets and spend aggregates to decisions and
//! alerts. No I/O and no clock of its own: the service feeds it records and the time.
//!
//! Contract:
//! - [`Engine::apply`] takes a spend aggregate (an absolute hourly total); a newer revision of a
//!   (subject, hour) replaces the older one, so replays never double-count. Each budget keeps the
//!   spend of the subjects its scope matches per hour; window spend is their sum over the window.
//! - Decisions are per scope key ([`BudgetScope::key`]): when several budgets share a scope the
//!   strictest wins (block and downgrade over warn over allow; then the one closest to its
//!   limit). A decision is emitted only when the scope's state, deciding budget, window or reset
//!   time changes, never for spend moving within a state.
//! - [`Engine::take_headroom`] reports each budget's limit, spent and remaining when they
//!   changed (see [`headroom`]), with the org's usage watermarks ([`watermark`]) and the
//!   gateway replicas' shares of it ([`shares`], from [`Engine::apply_demand`]).
//! - [`Engine::tick`] moves windows: a calendar reset emits `allow` on time with no traffic.
//! - Threshold alerts fire once per window and budget (only the highest threshold crossed at
//!   once); rolling windows re-arm a threshold once spend falls below it. Restored decisions and
//!   alerts ([`Engine::restore_decision`], [`Engine::restore_alert`]) make a restart emit
//!   nothing already published.
//! - Until [`Engine::set_warm`] (the service calls it once it has read every topic to its end)
//!   nothing is emitted, so a partly replayed state never decides or alerts.
//! - [`Ownership`]: an instance decides and alerts only for the orgs it owns (all of them, or
//!   those whose spend partition its consumer group assigned it); budgets of other orgs are
//!   held but never decided. [`Engine::without_spend`] drops every spend-derived state (for a
//!   new assignment) and keeps the budgets.

pub mod anomaly;
mod evaluate;
pub mod headroom;
mod shares;
pub mod store;
mod watermark;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;

use faregate_core::event::{Alert, BucketWidth, Budget, BudgetScope, Decision, SpendAggregate};
use faregate_core::kafka::partition_for;

use crate::window::{Span, Window};
use anomaly::{Anomalies, AnomalySettings};
pub use headroom::HeadroomOutput;
use store::{Dims, SpendStore, Sym, hour_index};

/// Hour buckets older than this are forgotten (longer than any window: a quarter is at most 92 days).
pub const RETENTION: TimeDelta = TimeDelta::days(93);

/// Which orgs an instance decides for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Ownership {
    /// Every org (a single instance, tests, benchmarks).
    #[default]
    All,
    /// The orgs whose spend partition ([`partition_for`] over `count` partitions) is assigned.
    Partitions { count: i32, assigned: BTreeSet<i32> },
}

impl Ownership {
    pub fn owns(&self, org: &str) -> bool {
        match self {
            Ownership::All => true,
            Ownership::Partitions { count, assigned } => assigned.contains(&partition_for(org, *count)),
        }
    }
}

/// What the engine wants published.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    pub decisions: Vec<Decision>,
    pub alerts: Vec<Alert>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty() && self.alerts.is_empty()
    }
}

#[derive(Debug)]
pub(crate) struct BudgetState {
    pub(crate) budget: Budget,
    pub(crate) window: Window,
    /// 0 = any, per dimension.
    pub(crate) scope: Dims,
    pub(crate) scope_key: String,
    /// Spend of the matching subjects per UTC hour index.
    pub(crate) hourly: BTreeMap<i32, Decimal>,
    /// The span last evaluated, to notice window moves.
    pub(crate) span: Option<Span>,
}

impl BudgetState {
    fn matches(&self, dims: &Dims) -> bool {
        self.scope.iter().zip(dims).all(|(want, got)| *want == 0 || want == got)
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Engine {
    pub(crate) settings: AnomalySettings,
    pub(crate) store: SpendStore,
    pub(crate) budgets: HashMap<String, BudgetState>,
    by_org: HashMap<Sym, BTreeSet<String>>,
    pub(crate) by_scope: HashMap<String, BTreeSet<String>>,
    pub(crate) published: HashMap<String, Decision>,
    pub(crate) alerted: HashMap<String, DateTime<Utc>>,
    dirty: HashSet<String>,
    pub(crate) pending_alerts: Vec<Alert>,
    anomalies: Anomalies,
    pub(crate) ownership: Ownership,
    warm: bool,
    last_revision: i64,
    /// The highest spend aggregate revision applied.
    spend_revision: i64,
    /// Budgets whose headroom may have changed since it was last taken.
    headroom_dirty: HashSet<String>,
    /// Per budget, the window its headroom was last taken in.
    headroom_spans: HashMap<String, Span>,
    /// Per budget, what was last reported.
    headroom_reported: HashMap<String, headroom::Reported>,
    /// Keys of reported budgets removed since.
    headroom_removed: Vec<String>,
    /// How far the spend holds each org's usage events ([`watermark`]).
    usage_marks: watermark::UsageMarks,
    /// The gateway replicas' demand on each budget ([`shares`]).
    demands: shares::Demands,
    last_prune: i32,
    last_forecast: i64,
}

impl Engine {
    pub fn new(settings: AnomalySettings) -> Engine {
        Engine { settings, ..Engine::default() }
    }

    /// Start emitting (once every topic was read to its end) and re-evaluate every scope.
    pub fn set_warm(&mut self) {
        self.warm = true;
        self.dirty.extend(self.by_scope.keys().cloned());
        self.dirty.extend(self.published.keys().cloned());
        self.headroom_dirty.extend(self.budgets.keys().cloned());
    }

    pub fn is_warm(&self) -> bool {
        self.warm
    }

    /// Decide and alert only for the orgs `ownership` names from now on.
    pub fn set_ownership(&mut self, ownership: Ownership) {
        self.ownership = ownership;
    }

    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// A cold engine with the same settings, budgets, ownership and revision clock, and no
    /// spend, published decisions or alerts: what a new partition assignment rebuilds from.
    pub fn without_spend(&self) -> Engine {
        let mut fresh = Engine::new(self.settings.clone());
        for state in self.budgets.values() {
            // Every held budget passed validation once; it passes again.
            let _ = fresh.set_budget(state.budget.clone());
        }
        fresh.ownership = self.ownership.clone();
        fresh.last_revision = self.last_revision;
        // Read from the whole demand topic whatever the assignment; the leases go (another
        // instance may have published these budgets' records meanwhile).
        fresh.demands = self.demands.without_leases();
        fresh.dirty.clear();
        fresh
    }

    /// Add or replace a budget (already validated).
    pub fn set_budget(&mut self, budget: Budget) -> Result<(), crate::spec::SpecError> {
        crate::spec::validate(&budget)?;
        let window = Window::compile(&budget.window).map_err(|e| crate::spec::SpecError {
            field: format!("window.{}", e.field),
            message: e.message,
        })?;
        self.remove_budget(&budget.id);
        let s = &budget.scope;
        let i = &mut self.store.interner;
        let scope: Dims = [
            i.intern(Some(&s.org)),
            i.intern(s.team.as_deref()),
            i.intern(s.user.as_deref()),
            i.intern(s.key_id.as_deref()),
            i.intern(s.project.as_deref()),
            i.intern(s.model.as_deref()),
            i.intern(s.tool.as_deref()),
        ];
        let scope_key = s.key();
        let mut state = BudgetState {
            budget,
            window,
            scope,
            scope_key: scope_key.clone(),
            hourly: BTreeMap::new(),
            span: None,
        };
        let mut hourly = BTreeMap::new();
        self.store.scan_org(
            scope[0],
            |dims| state.matches(dims),
            |hour, cost| {
                *hourly.entry(hour).or_insert(Decimal::ZERO) += cost;
            },
        );
        state.hourly = hourly;
        let id = state.budget.id.clone();
        self.by_org.entry(scope[0]).or_default().insert(id.clone());
        self.by_scope.entry(scope_key.clone()).or_default().insert(id.clone());
        self.headroom_dirty.insert(id.clone());
        self.budgets.insert(id, state);
        self.dirty.insert(scope_key);
        Ok(())
    }

    /// Remove a budget; its scope is re-decided (allow if no budget covers it any more).
    pub fn remove_budget(&mut self, id: &str) -> bool {
        let Some(state) = self.budgets.remove(id) else {
            return false;
        };
        self.headroom_budget_removed(id);
        if let Some(ids) = self.by_org.get_mut(&state.scope[0]) {
            ids.remove(id);
        }
        if let Some(ids) = self.by_scope.get_mut(&state.scope_key) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_scope.remove(&state.scope_key);
            }
        }
        self.dirty.insert(state.scope_key);
        true
    }

    pub fn budget(&self, id: &str) -> Option<&Budget> {
        self.budgets.get(id).map(|s| &s.budget)
    }

    pub fn budgets(&self) -> impl Iterator<Item = &Budget> {
        self.budgets.values().map(|s| &s.budget)
    }

    /// The last decision published per scope.
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.published.values()
    }

    /// A decision read back from the decisions topic at start; one of an org this instance
    /// does not own is not held.
    pub fn restore_decision(&mut self, decision: Decision) {
        self.last_revision = self.last_revision.max(decision.revision);
        if self.ownership != Ownership::All
            && !BudgetScope::parse_key(&decision.subject).is_ok_and(|s| self.ownership.owns(&s.org))
        {
            return;
        }
        self.published.insert(decision.subject.clone(), decision);
    }

    /// A scope's decision was deleted from the decisions topic (a tombstone).
    pub fn forget_decision(&mut self, scope_key: &str) {
        self.published.remove(scope_key);
    }

    /// An alert read back from the alerts topic at start.
    pub fn restore_alert(&mut self, alert: &Alert) {
        self.last_revision = self.last_revision.max(alert.revision);
        self.alerted.insert(alert.alert_key.clone(), alert.period_start);
    }

    pub(crate) fn next_revision(&mut self, now: DateTime<Utc>) -> i64 {
        self.last_revision = now.timestamp_micros().max(self.last_revision + 1);
        self.last_revision
    }

    /// Take one demand-topic record (`None`: a tombstone of `key`); the budget's headroom is
    /// reported again if its shares changed.
    /// `now` is when it arrived (this service's clock judges whether a report is live).
    pub fn apply_demand(
        &mut self,
        key: &str,
        record: Option<faregate_core::event::Demand>,
        now: DateTime<Utc>,
    ) {
        if let Some(id) = self.demands.apply(key, record, now)
            && self.budgets.contains_key(&id)
        {
            self.headroom_dirty.insert(id);
        }
    }

    /// Take one spend aggregate.
    pub fn apply(&mut self, aggregate: &SpendAggregate) {
        if aggregate.session_id.is_some() || aggregate.bucket_width == BucketWidth::Minute {
            let dims = self.store.dims_of(aggregate);
            if aggregate.bucket_width == BucketWidth::Minute
                && let Some(t) = self.anomalies.observe_session(dims, aggregate, &self.settings, self.warm)
            {
                self.trip(t, aggregate.computed_at);
            }
            return;
        }
        if aggregate.bucket_width != BucketWidth::Hour {
            return;
        }
        let positioned = !aggregate.usage_positions.is_empty();
        let Some(change) = self.store.upsert(aggregate) else {
            if positioned {
                self.usage_marks_applied(aggregate, &[]);
            }
            return;
        };
        self.spend_revision = self.spend_revision.max(aggregate.revision);
        let mut changed = Vec::new();
        if let Some(ids) = self.by_org.get(&change.dims[0]) {
            for id in ids {
                let Some(state) = self.budgets.get_mut(id) else { continue };
                if state.matches(&change.dims) {
                    if positioned {
                        changed.push(id.clone());
                    }
                    let total = state.hourly.entry(change.hour).or_insert(Decimal::ZERO);
                    *total += change.cost_delta;
                    if total.is_zero() {
                        state.hourly.remove(&change.hour);
                    }
                    if !self.dirty.contains(&state.scope_key) {
                        self.dirty.insert(state.scope_key.clone());
                    }
                    if !self.headroom_dirty.contains(id) {
                        self.headroom_dirty.insert(id.clone());
                    }
                }
            }
        }
        if positioned {
            self.usage_marks_applied(aggregate, &changed);
        }
        for t in self.anomalies.observe(&change, &self.settings, self.warm) {
            self.trip(t, aggregate.computed_at);
        }
    }

    /// Count `aggregate` toward its usage groups; a group completed reports the budgets it
    /// changed again, with the watermark it moved.
    fn usage_marks_applied(&mut self, aggregate: &SpendAggregate, changed: &[String]) {
        for id in self.usage_marks.applied(aggregate, changed) {
            self.headroom_dirty.insert(id);
        }
    }

    /// Decide every scope whose spend or budgets changed.
    pub fn evaluate(&mut self, now: DateTime<Utc>) -> Output {
        if !self.warm {
            self.pending_alerts.clear();
            return Output::default();
        }
        let mut out = Output::default();
        let dirty: Vec<String> = self.dirty.drain().collect();
        for scope in dirty {
            if self.ownership != Ownership::All
                && !BudgetScope::parse_key(&scope).is_ok_and(|s| self.ownership.owns(&s.org))
            {
                continue;
            }
            if let Some(decision) = self.decide_scope(&scope, now) {
                out.decisions.push(decision);
            }
        }
        out.alerts.append(&mut self.pending_alerts);
        out
    }

    /// Move windows to `now`: scopes whose window reset or rolled are re-decided, forecasts are
    /// checked, and old buckets are forgotten.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Output {
        for state in self.budgets.values() {
            let span = state.window.span_at(now);
            if state.span != Some(span) && !self.dirty.contains(&state.scope_key) {
                self.dirty.insert(state.scope_key.clone());
            }
        }
        let hour = hour_index(now);
        if hour != self.last_prune {
            self.last_prune = hour;
            let cutoff = hour_index(now - RETENTION);
            self.store.prune(cutoff);
            for state in self.budgets.values_mut() {
                state.hourly = state.hourly.split_off(&cutoff);
            }
            self.anomalies.prune_sessions(now - TimeDelta::hours(2));
        }
        // Forecasts move slowly: once a minute is plenty.
        let minute = now.timestamp().div_euclid(60);
        if self.warm && minute != self.last_forecast {
            self.last_forecast = minute;
            self.forecasts(now);
        }
        self.evaluate(now)
    }

    /// Subjects held, and approximate heap bytes (for the memory benchmark and a gauge).
    pub fn footprint(&self) -> (usize, usize) {
        let budgets: usize = self.budgets.values().map(|b| b.hourly.len() * 48 + 256).sum();
        (self.store.subjects(), self.store.heap_bytes() + self.anomalies.heap_bytes() + budgets)
    }
}

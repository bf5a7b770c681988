//! Deciding a scope and raising budget alerts: window spend, state, strictest-wins, threshold
//! and forecast alerts, and turning tripped anomalies into alerts that name an owner.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use faregate_core::event::{
    Alert, AlertKind, AlertSeverity, Budget, BudgetAction, Decision, DecisionState, WindowPeriod,
};
use faregate_core::money::Usd;

use super::anomaly::{Tripped, Who};
use super::store::{hour_index, hour_start};
use super::{BudgetState, Engine};
use crate::window::Span;

/// A budget's position in its window at one instant.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub state: DecisionState,
    pub spent: Decimal,
    /// spent / limit, in percent.
    pub pct: Decimal,
    pub span: Span,
    pub resets_at: Option<DateTime<Utc>>,
}

fn rank(state: DecisionState) -> u8 {
    match state {
        DecisionState::Allow => 0,
        DecisionState::Warn => 1,
        DecisionState::Downgrade | DecisionState::Block => 2,
    }
}

fn period_name(b: &Budget) -> String {
    let w = &b.window;
    let what = match w.period {
        WindowPeriod::Hour => "hour".to_string(),
        WindowPeriod::Day => "day".to_string(),
        WindowPeriod::Week => "week".to_string(),
        WindowPeriod::Month => "month".to_string(),
        WindowPeriod::Quarter => "quarter".to_string(),
        WindowPeriod::Days => format!("{}-day", w.days.unwrap_or(1)),
    };
    if w.rolling { format!("rolling {what}") } else { format!("{what} ({})", w.time_zone) }
}

fn money(d: Decimal) -> String {
    format!("${}", d.round_dp(2).normalize())
}

pub(crate) fn status(state: &BudgetState, now: DateTime<Utc>) -> Status {
    let span = state.window.span_at(now);
    let from = hour_index(span.first_bucket());
    let to = hour_index(span.end);
    let spent: Decimal = state.hourly.range(from..to).map(|(_, c)| *c).sum();
    let limit = state.budget.limit_usd.0;
    let pct = spent * Decimal::ONE_HUNDRED / limit;
    let over = spent >= limit;
    let warn_at = state.budget.thresholds_pct.iter().filter(|t| **t < 100).min().copied();
    let decision = if over {
        match state.budget.action {
            BudgetAction::Block => DecisionState::Block,
            BudgetAction::Downgrade => DecisionState::Downgrade,
            BudgetAction::AlertOnly => DecisionState::Warn,
        }
    } else if warn_at.is_some_and(|t| pct >= Decimal::from(t)) {
        DecisionState::Warn
    } else {
        DecisionState::Allow
    };
    let resets_at = if !state.window.rolling {
        Some(span.end)
    } else if over {
        // The hour at which enough old spend has rolled out to be under the limit again.
        let length = state.window.rolling_length();
        let mut remaining = spent;
        let mut at = None;
        for (hour, cost) in state.hourly.range(from..to) {
            remaining -= *cost;
            if remaining < limit {
                at = Some(hour_start(*hour) + length);
                break;
            }
        }
        at
    } else {
        None
    };
    Status { state: decision, spent, pct, span, resets_at }
}

impl Engine {
    /// Decide one scope; `Some` if the published decision must change.
    pub(crate) fn decide_scope(&mut self, scope_key: &str, now: DateTime<Utc>) -> Option<Decision> {
        let ids: Vec<String> = self.by_scope.get(scope_key).into_iter().flatten().cloned().collect();
        let mut best: Option<(String, Status)> = None;
        for id in ids {
            let Some(state) = self.budgets.get(&id) else { continue };
            let s = status(state, now);
            self.threshold_alerts(&id, &s, now);
            if let Some(state) = self.budgets.get_mut(&id) {
                state.span = Some(s.span);
            }
            let better = match &best {
                None => true,
                Some((_, b)) => (rank(s.state), s.pct) > (rank(b.state), b.pct),
            };
            if better {
                best = Some((id, s));
            }
        }
        let decision = match best {
            None => {
                let previous = self.published.get(scope_key)?;
                if previous.state == DecisionState::Allow && previous.budget_id.is_none() {
                    return None;
                }
                Decision {
                    subject: scope_key.to_string(),
                    state: DecisionState::Allow,
                    reason: "no budget covers this scope any more".into(),
                    budget_id: None,
                    budget_name: None,
                    spent_usd: Usd::ZERO,
                    limit_usd: None,
                    window_start: None,
                    resets_at: None,
                    downgrade_to: None,
                    decided_at: now,
                    revision: 0,
                }
            }
            Some((id, s)) => {
                let b = &self.budgets[&id].budget;
                Decision {
                    subject: scope_key.to_string(),
                    state: s.state,
                    reason: reason(b, &s),
                    budget_id: Some(b.id.clone()),
                    budget_name: Some(b.name.clone()),
                    spent_usd: Usd(s.spent),
                    limit_usd: Some(b.limit_usd),
                    window_start: Some(s.span.start),
                    resets_at: s.resets_at,
                    downgrade_to: (s.state == DecisionState::Downgrade)
                        .then(|| b.downgrade_to.clone())
                        .flatten(),
                    decided_at: now,
                    revision: 0,
                }
            }
        };
        if let Some(previous) = self.published.get(scope_key) {
            let same = previous.state == decision.state
                && previous.budget_id == decision.budget_id
                && previous.limit_usd == decision.limit_usd
                && previous.window_start == decision.window_start
                && previous.resets_at == decision.resets_at
                && previous.downgrade_to == decision.downgrade_to;
            if same {
                return None;
            }
        } else if decision.state == DecisionState::Allow {
            // Nothing was ever published for this scope and it is allowed, which is what a
            // gateway assumes of a scope without a decision: stay silent.
            return None;
        }
        let decision = Decision { revision: self.next_revision(now), ..decision };
        self.published.insert(scope_key.to_string(), decision.clone());
        Some(decision)
    }

    fn threshold_alerts(&mut self, id: &str, s: &Status, now: DateTime<Utc>) {
        let b = &self.budgets[id].budget;
        let rolling = self.budgets[id].window.rolling;
        let mut thresholds = b.thresholds_pct.clone();
        thresholds.sort_unstable();
        thresholds.dedup();
        let key = |t: i32| format!("budget/{id}/threshold/{t}");
        let is_done =
            |alerted: &std::collections::HashMap<String, DateTime<Utc>>, t: i32| match alerted.get(&key(t)) {
                Some(period) => rolling || *period == s.span.start,
                None => false,
            };
        // An alert at a higher threshold covers the lower ones (only it was published).
        let done_up_to = thresholds.iter().copied().filter(|t| is_done(&self.alerted, *t)).max().unwrap_or(0);
        let mut fire = None;
        for t in &thresholds {
            let k = key(*t);
            let crossed = s.pct >= Decimal::from(*t);
            let done = *t <= done_up_to;
            if crossed && !done {
                fire = Some(*t);
            }
            if rolling && !crossed {
                self.alerted.remove(&k);
            }
        }
        let Some(t) = fire else { return };
        // Only the highest threshold crossed alerts; the lower ones count as alerted too.
        for lower in thresholds.iter().filter(|x| **x <= t) {
            self.alerted.insert(key(*lower), s.span.start);
        }
        let severity = match t {
            100.. => AlertSeverity::Critical,
            80..=99 => AlertSeverity::Warning,
            _ => AlertSeverity::Info,
        };
        let b = &self.budgets[id].budget;
        let action = match b.action {
            BudgetAction::Block => "requests are blocked".to_string(),
            BudgetAction::Downgrade => {
                format!("requests are downgraded to {}", b.downgrade_to.as_deref().unwrap_or("?"))
            }
            BudgetAction::AlertOnly => "alert only, requests still pass".to_string(),
        };
        let message = format!(
            "Budget {:?} ({}, {}) has used {}% of its limit: {} of {}. At 100%: {action}.{} Look at spend by user, key and model under {} (ClickHouse view top_spenders_today).",
            b.name,
            b.scope.key(),
            period_name(b),
            s.pct.round_dp(0),
            money(s.spent),
            money(b.limit_usd.0),
            s.resets_at
                .map(|r| format!(" The window resets at {}.", r.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default(),
            b.scope.key(),
        );
        let alert = Alert {
            alert_key: key(t),
            kind: AlertKind::Threshold,
            severity,
            subject: b.scope.key(),
            budget_id: Some(b.id.clone()),
            budget_name: Some(b.name.clone()),
            threshold_pct: Some(t),
            spent_usd: Usd(s.spent),
            limit_usd: Some(b.limit_usd),
            period_start: s.span.start,
            resets_at: s.resets_at,
            owner: b.owner.clone(),
            notify: b.notify.clone(),
            title: format!("{:?} budget at {}%", b.name, s.pct.round_dp(0)),
            message,
            raised_at: now,
            revision: 0,
        };
        self.push_alert(alert, now);
    }

    pub(crate) fn push_alert(&mut self, alert: Alert, now: DateTime<Utc>) {
        if !self.is_warm() {
            return;
        }
        let revision = self.next_revision(now);
        self.pending_alerts.push(Alert { revision, ..alert });
    }

    /// Forecast alerts: a calendar window of a week or more whose spend, projected linearly to
    /// the window's end, reaches the limit (e.g. 60% of a quarter spent by week 6).
    pub(crate) fn forecasts(&mut self, now: DateTime<Utc>) {
        let mut raised = Vec::new();
        for (id, state) in &self.budgets {
            let w = &state.window;
            if !self.ownership.owns(&state.budget.scope.org) {
                continue;
            }
            if w.rolling || matches!(w.period, WindowPeriod::Hour | WindowPeriod::Day) {
                continue;
            }
            if w.period == WindowPeriod::Days && w.days < 7 {
                continue;
            }
            let s = status(state, now);
            let key = format!("budget/{id}/forecast");
            if self.alerted.get(&key) == Some(&s.span.start) || s.pct >= Decimal::ONE_HUNDRED {
                continue;
            }
            let length = (s.span.end - s.span.start).num_seconds();
            let elapsed = (now - s.span.start).num_seconds();
            // Not before a tenth of the window: early projections are noise.
            if length <= 0 || elapsed * 10 < length {
                continue;
            }
            let projected = s.spent * Decimal::from(length) / Decimal::from(elapsed);
            let b = &state.budget;
            if projected < b.limit_usd.0 {
                continue;
            }
            let message = format!(
                "Budget {:?} ({}, {}) has spent {} ({}% of {}) with {}% of the window gone; at this pace it reaches {} by {}. Look at what grew: spend by team, user and model under {}.",
                b.name,
                b.scope.key(),
                period_name(b),
                money(s.spent),
                s.pct.round_dp(0),
                money(b.limit_usd.0),
                elapsed * 100 / length,
                money(projected),
                s.span.end.format("%Y-%m-%d"),
                b.scope.key(),
            );
            raised.push(Alert {
                alert_key: key,
                kind: AlertKind::Forecast,
                severity: AlertSeverity::Warning,
                subject: b.scope.key(),
                budget_id: Some(b.id.clone()),
                budget_name: Some(b.name.clone()),
                threshold_pct: None,
                spent_usd: Usd(s.spent),
                limit_usd: Some(b.limit_usd),
                period_start: s.span.start,
                resets_at: Some(s.span.end),
                owner: b.owner.clone(),
                notify: b.notify.clone(),
                title: format!("{:?} budget is on course to overspend", b.name),
                message,
                raised_at: now,
                revision: 0,
            });
        }
        for alert in raised {
            self.alerted.insert(alert.alert_key.clone(), alert.period_start);
            self.push_alert(alert, now);
        }
    }

    /// Turn a tripped anomaly into an alert, once per subject and period.
    pub(crate) fn trip(&mut self, t: Tripped, now: DateTime<Utc>) {
        let i = &self.store.interner;
        let org = i.name(t.org).to_string();
        if !self.ownership.owns(&org) {
            return;
        }
        let (dimension, value) = match &t.who {
            Who::Key(k) => ("key", i.name(*k).to_string()),
            Who::User(u) => ("user", i.name(*u).to_string()),
            Who::Session { id, .. } => ("session", id.clone()),
        };
        let kind = match t.kind {
            AlertKind::SpendSpike => "spend_spike",
            AlertKind::BurnRate => "burn_rate",
            AlertKind::RunawaySession => "runaway_session",
            AlertKind::ModelMixDrift => "model_mix_drift",
            _ => "other",
        };
        let escape = |v: &str| v.replace('%', "%25").replace('/', "%2F").replace('=', "%3D");
        // Keyed by org and session only, so an alert is once per session whatever it carries.
        let alert_key = format!("anomaly/{kind}/org={}/{dimension}={}", escape(&org), escape(&value));
        let subject = match &t.who {
            Who::Session { dims, .. } => {
                let name = |d: usize| Some(i.name(dims[d]).to_string()).filter(|v| !v.is_empty());
                let scope = faregate_core::event::BudgetScope {
                    org: org.clone(),
                    team: name(1),
                    user: name(super::store::USER),
                    key_id: name(super::store::KEY),
                    ..Default::default()
                };
                format!("{}/session={}", scope.key(), escape(&value))
            }
            _ => format!("org={org}/{dimension}={value}"),
        };
        if self.alerted.get(&alert_key) == Some(&t.period_start) {
            return;
        }
        self.alerted.insert(alert_key.clone(), t.period_start);
        let model = t.model.map(|m| i.name(m).to_string());
        // The owner of the most specific budget covering the subject, if any.
        let owner_budget = self
            .budgets
            .values()
            .filter(|b| b.budget.scope.org == org)
            .filter(|b| match &t.who {
                Who::Key(k) => b.scope[3] == 0 || b.scope[3] == *k,
                Who::User(u) => b.scope[2] == 0 || b.scope[2] == *u,
                Who::Session { dims, .. } => b.matches(dims),
            })
            .filter(|b| b.budget.owner.is_some())
            .max_by_key(|b| b.scope.iter().filter(|d| **d != 0).count());
        let (owner, notify) =
            owner_budget.map(|b| (b.budget.owner.clone(), b.budget.notify.clone())).unwrap_or_default();
        let what = match t.kind {
            AlertKind::SpendSpike => "Spend spike",
            AlertKind::BurnRate => "Burn rate",
            AlertKind::RunawaySession => "Runaway session",
            _ => "Model-mix drift",
        };
        let look = match (&t.who, &model) {
            (Who::Session { id, .. }, _) => {
                format!("Look at session {id}: it may be an agent in a loop; revoke its key if so.")
            }
            (_, Some(m)) => {
                format!("Look at requests of {subject} to model {m}; a downgrade budget can cap it.")
            }
            _ => format!(
                "Look at requests of {subject} by model and session; revoke the key if it is a runaway."
            ),
        };
        let alert = Alert {
            alert_key,
            kind: t.kind,
            severity: if t.kind == AlertKind::ModelMixDrift {
                AlertSeverity::Warning
            } else {
                AlertSeverity::Critical
            },
            subject: subject.clone(),
            budget_id: None,
            budget_name: None,
            threshold_pct: None,
            spent_usd: t.spent,
            limit_usd: t.threshold,
            period_start: t.period_start,
            resets_at: None,
            owner,
            notify,
            title: format!("{what}: {subject}"),
            message: format!("{subject} {}. {look}", t.detail),
            raised_at: now,
            revision: 0,
        };
        self.push_alert(alert, now);
    }
}

/// The decision's reason, shown to a client that is blocked.
fn reason(b: &Budget, s: &Status) -> String {
    let resets =
        s.resets_at.map(|r| format!("; resets at {}", r.format("%Y-%m-%dT%H:%M:%SZ"))).unwrap_or_default();
    let used =
        format!("{} of {} spent in the {} window", money(s.spent), money(b.limit_usd.0), period_name(b));
    match s.state {
        DecisionState::Allow => format!("budget {:?}: {used}", b.name),
        DecisionState::Warn if s.spent >= b.limit_usd.0 => {
            format!("budget {:?} is exhausted (alert only): {used}{resets}", b.name)
        }
        DecisionState::Warn => format!("budget {:?} is at {}%: {used}", b.name, s.pct.round_dp(0)),
        DecisionState::Block => format!("budget {:?} is exhausted: {used}{resets}", b.name),
        DecisionState::Downgrade => format!(
            "budget {:?} is exhausted: {used}; requests go to {}{resets}",
            b.name,
            b.downgrade_to.as_deref().unwrap_or("a cheaper model")
        ),
    }
}

//! Headroom: each budget's limit, spent and remaining in its current window, as absolute values
//! as of the highest spend revision applied. Pure like the rest of the engine: the service asks
//! [`Engine::take_headroom`] on its own ticker (`budget.headroom_interval_ms`), which is what
//! coalesces a busy budget to at most one record per interval.
//!
//! Contract: a budget is reported when its spend, its definition or its window changed since it
//! was last reported, and only if the values differ from what was last reported (so a tick that
//! changes nothing publishes nothing); only for owned orgs, and nothing before the engine is
//! warm. A removed budget that was reported is reported as removed (its key, for a tombstone).

use chrono::{DateTime, Utc};

use faregate_core::event::{Budget, Headroom, WindowPeriod};
use faregate_core::money::Usd;

use super::evaluate::status;
use super::{BudgetState, Engine, Ownership};

/// What [`Engine::take_headroom`] wants published.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeadroomOutput {
    pub records: Vec<Headroom>,
    /// Keys ([`Headroom::key`]) of removed budgets: tombstones.
    pub removed: Vec<String>,
}

impl HeadroomOutput {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.removed.is_empty()
    }
}

/// The values of a record that make it worth publishing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reported {
    key: String,
    name: String,
    limit: Usd,
    spent: Usd,
    window_start: DateTime<Utc>,
    resets_at: Option<DateTime<Utc>>,
    /// The org's usage watermark version ([`super::watermark`]).
    marks_version: u64,
    shares: Option<Vec<faregate_core::event::ReplicaShare>>,
}

pub(crate) fn period_text(period: WindowPeriod) -> &'static str {
    match period {
        WindowPeriod::Hour => "hour",
        WindowPeriod::Day => "day",
        WindowPeriod::Week => "week",
        WindowPeriod::Month => "month",
        WindowPeriod::Quarter => "quarter",
        WindowPeriod::Days => "days",
    }
}

/// A budget's headroom at `now` (revision and publication time filled in by the caller).
pub(crate) fn headroom_of(state: &BudgetState, now: DateTime<Utc>, spend_revision: i64) -> Headroom {
    let s = status(state, now);
    let b: &Budget = &state.budget;
    let limit = b.limit_usd;
    Headroom {
        scope_key: state.scope_key.clone(),
        budget_id: b.id.clone(),
        budget_name: b.name.clone(),
        period: period_text(b.window.period).to_string(),
        days: b.window.days,
        rolling: b.window.rolling,
        time_zone: b.window.time_zone.clone(),
        limit_usd: limit,
        spent_usd: Usd(s.spent),
        remaining_usd: Usd(limit.0 - s.spent),
        window_start: s.span.start,
        window_end: s.span.end,
        resets_at: s.resets_at,
        spend_revision,
        usage_watermarks: None,
        shares: None,
        published_at: now,
        revision: 0,
    }
}

impl Engine {
    /// The headroom of every budget whose spend, definition or window changed since it was last
    /// taken and whose values differ from what was last taken; see the module docs.
    pub fn take_headroom(&mut self, now: DateTime<Utc>) -> HeadroomOutput {
        if !self.warm {
            return HeadroomOutput::default();
        }
        // Windows that moved since the last look (a reset with no traffic).
        for (id, state) in &self.budgets {
            if self.headroom_spans.get(id) != Some(&state.window.span_at(now)) {
                self.headroom_dirty.insert(id.clone());
            }
        }
        // Shares move as demand records expire.
        for id in self.demands.budgets() {
            if self.budgets.contains_key(id) && !self.headroom_dirty.contains(id) {
                self.headroom_dirty.insert(id.clone());
            }
        }
        let mut out =
            HeadroomOutput { records: Vec::new(), removed: std::mem::take(&mut self.headroom_removed) };
        let mut dirty: Vec<String> = self.headroom_dirty.drain().collect();
        dirty.sort();
        for id in dirty {
            let Some(state) = self.budgets.get(&id) else { continue };
            if self.ownership != Ownership::All && !self.ownership.owns(&state.budget.scope.org) {
                continue;
            }
            let mut record = headroom_of(state, now, self.spend_revision);
            self.demands.prune(&id, record.window_start, now);
            let (marks, marks_version) = self.usage_marks.of(&state.budget.scope.org);
            record.usage_watermarks = Some(marks);
            record.shares = self.demands.shares(&id, record.remaining_usd, record.window_start, now);
            self.headroom_spans.insert(id.clone(), state.window.span_at(now));
            let reported = Reported {
                key: record.key(),
                name: record.budget_name.clone(),
                limit: record.limit_usd,
                spent: record.spent_usd,
                window_start: record.window_start,
                resets_at: record.resets_at,
                marks_version,
                shares: record.shares.clone(),
            };
            if self.headroom_reported.get(&id) == Some(&reported) {
                continue;
            }
            if let Some(old) = self.headroom_reported.get(&id)
                && old.key != reported.key
            {
                // The budget moved to another scope: its old record goes.
                out.removed.push(old.key.clone());
            }
            record.revision = self.next_revision(now);
            self.demands.published(&id, record.revision, record.shares.as_deref());
            self.headroom_reported.insert(id, reported);
            out.records.push(record);
        }
        // A budget replaced under the same scope is re-reported, not deleted.
        out.removed.retain(|key| !out.records.iter().any(|r| r.key() == *key));
        out
    }

    /// Forget what was reported (a new assignment reports everything again).
    pub(crate) fn headroom_budget_removed(&mut self, id: &str) {
        self.headroom_dirty.remove(id);
        self.headroom_spans.remove(id);
        if let Some(old) = self.headroom_reported.remove(id) {
            self.headroom_removed.push(old.key);
        }
    }

    /// The highest spend revision applied (the `spend_revision` of headroom records).
    pub fn spend_revision(&self) -> i64 {
        self.spend_revision
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::TimeZone;
    use rust_decimal::Decimal;

    use faregate_core::event::{
        BucketWidth, Budget, BudgetAction, BudgetScope, BudgetWindow, SpendAggregate,
    };

    use super::*;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    fn usd(s: &str) -> Usd {
        Usd(Decimal::from_str(s).unwrap())
    }

    fn budget(id: &str, team: Option<&str>, period: WindowPeriod, limit: &str) -> Budget {
        Budget {
            id: id.into(),
            name: format!("{id} budget"),
            scope: BudgetScope { org: "acme".into(), team: team.map(Into::into), ..BudgetScope::default() },
            window: BudgetWindow { period, days: None, rolling: false, time_zone: "UTC".into() },
            limit_usd: usd(limit),
            action: BudgetAction::Block,
            downgrade_to: None,
            thresholds_pct: vec![50, 80, 100],
            owner: None,
            notify: vec![],
        }
    }

    fn spend(team: &str, hour: DateTime<Utc>, cost: &str, revision: i64) -> SpendAggregate {
        SpendAggregate {
            subject: format!("org=acme/team={team}/user=ana/model=m"),
            org: "acme".into(),
            team: Some(team.into()),
            user: Some("ana".into()),
            key_id: Some("k-ana".into()),
            project: None,
            model: Some("m".into()),
            tool: None,
            session_id: None,
            bucket_start: hour,
            bucket_width: BucketWidth::Hour,
            cost_usd: usd(cost),
            requests: 1,
            unpriced_requests: 0,
            tokens_total: 0,
            revision,
            computed_at: hour,
            usage_positions: Vec::new(),
        }
    }

    fn warm_engine() -> Engine {
        let mut engine = Engine::default();
        engine.set_budget(budget("infra-day", Some("infra"), WindowPeriod::Day, "10")).unwrap();
        engine.set_budget(budget("acme-month", None, WindowPeriod::Month, "100.5")).unwrap();
        engine.set_warm();
        engine
    }

    #[test]
    fn remaining_is_limit_minus_window_spend_exactly_and_may_go_negative() {
        let mut engine = warm_engine();
        let first = engine.take_headroom(at(23, 9, 0));
        assert_eq!(first.records.len(), 2, "every budget is reported once warm");
        let day = first.records.iter().find(|r| r.budget_id == "infra-day").unwrap();
        assert_eq!((day.spent_usd, day.remaining_usd), (usd("0"), usd("10")));
        assert_eq!((day.window_start, day.resets_at), (at(23, 0, 0), Some(at(24, 0, 0))));
        assert_eq!(day.key(), "org=acme/team=infra#budget=infra-day");
        assert_eq!(day.budget_name, "infra-day budget");

        engine.apply(&spend("infra", at(23, 8, 0), "3.000000000000000001", 7));
        engine.apply(&spend("infra", at(22, 8, 0), "50", 8)); // yesterday: the month only
        let out = engine.take_headroom(at(23, 9, 0));
        let day = out.records.iter().find(|r| r.budget_id == "infra-day").unwrap();
        assert_eq!(day.spent_usd, usd("3.000000000000000001"));
        assert_eq!(day.remaining_usd, usd("6.999999999999999999"));
        assert_eq!(day.spend_revision, 8);
        let month = out.records.iter().find(|r| r.budget_id == "acme-month").unwrap();
        assert_eq!(month.remaining_usd, usd("47.499999999999999999"));
        assert_eq!(
            (month.window_start, month.resets_at),
            (at(1, 0, 0), Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()))
        );

        // A newer revision of the same hour replaces, never adds; overspend goes negative.
        engine.apply(&spend("infra", at(23, 8, 0), "12.25", 9));
        let out = engine.take_headroom(at(23, 9, 1));
        let day = out.records.iter().find(|r| r.budget_id == "infra-day").unwrap();
        assert_eq!((day.spent_usd, day.remaining_usd), (usd("12.25"), usd("-2.25")));
    }

    #[test]
    fn nothing_changed_reports_nothing_and_a_reset_reports_on_time() {
        let mut engine = warm_engine();
        engine.take_headroom(at(23, 9, 0));
        engine.apply(&spend("infra", at(23, 8, 0), "4", 1));
        let records = engine.take_headroom(at(23, 9, 0)).records;
        assert_eq!(records.len(), 2);
        assert_ne!(records[0].revision, records[1].revision);
        // The same total again (a replay) and a quiet tick: nothing.
        engine.apply(&spend("infra", at(23, 8, 0), "4", 1));
        assert!(engine.take_headroom(at(23, 10, 0)).is_empty());
        // Midnight: the day resets with no traffic; the month does not move.
        let out = engine.take_headroom(at(24, 0, 0));
        assert_eq!(out.records.len(), 1, "{out:?}");
        assert_eq!(out.records[0].budget_id, "infra-day");
        assert_eq!((out.records[0].spent_usd, out.records[0].remaining_usd), (usd("0"), usd("10")));
    }

    #[test]
    fn cold_or_foreign_budgets_report_nothing_and_removal_reports_a_tombstone() {
        let mut engine = Engine::default();
        engine.set_budget(budget("infra-day", Some("infra"), WindowPeriod::Day, "10")).unwrap();
        assert!(engine.take_headroom(at(23, 9, 0)).is_empty(), "cold");
        engine.set_ownership(Ownership::Partitions { count: 2, assigned: Default::default() });
        engine.set_warm();
        assert!(engine.take_headroom(at(23, 9, 0)).is_empty(), "not owned");
        engine.set_ownership(Ownership::All);
        engine.set_budget(budget("infra-day", Some("infra"), WindowPeriod::Day, "10")).unwrap();
        assert_eq!(engine.take_headroom(at(23, 9, 0)).records.len(), 1);
        assert!(engine.remove_budget("infra-day"));
        let out = engine.take_headroom(at(23, 9, 0));
        assert_eq!(out.removed, vec!["org=acme/team=infra#budget=infra-day".to_string()]);
        assert!(out.records.is_empty());
    }

    #[test]
    fn a_record_carries_the_org_watermark_and_a_group_completed_later_reports_again() {
        use faregate_core::event::{UsageGroup, UsageWatermark};
        let mut engine = warm_engine();
        engine.take_headroom(at(23, 9, 0));
        let grouped = |team: &str, cost: &str| {
            let mut s = spend(team, at(23, 8, 0), cost, 20);
            s.subject = format!("org=acme/team={team}");
            s.usage_positions = vec![UsageGroup { partition: 2, next_offset: 31, group_size: 2 }];
            s
        };
        // Half the group applied when the tick comes: the spend shows, the watermark does not.
        engine.apply(&grouped("infra", "1"));
        let out = engine.take_headroom(at(23, 9, 1));
        assert_eq!(out.records.len(), 2);
        assert!(out.records.iter().all(|r| r.usage_watermarks == Some(vec![])), "{out:?}");
        // The rest of the group: the budgets its records changed are reported again, with the
        // same spend and the watermark, though nothing else moved.
        engine.apply(&grouped("web", "2"));
        let out = engine.take_headroom(at(23, 9, 2));
        let mark = Some(vec![UsageWatermark { partition: 2, next_offset: 31 }]);
        let day = out.records.iter().find(|r| r.budget_id == "infra-day").unwrap();
        assert_eq!((day.spent_usd, &day.usage_watermarks), (usd("1"), &mark));
        let month = out.records.iter().find(|r| r.budget_id == "acme-month").unwrap();
        assert_eq!((month.spent_usd, &month.usage_watermarks), (usd("3"), &mark));
        assert!(engine.take_headroom(at(23, 9, 3)).is_empty(), "then nothing until something moves");
    }

    #[test]
    fn a_record_carries_the_replicas_shares_and_a_demand_change_reports_again() {
        use faregate_core::event::{Demand, ReplicaShare};
        let mut engine = warm_engine();
        engine.take_headroom(at(23, 9, 0));
        let demand = |replica: &str, asked: &str, published_at| Demand {
            replica: replica.into(),
            scope_key: "org=acme/team=infra".into(),
            budget_id: "infra-day".into(),
            open_usd: usd("0"),
            settled_usd: usd("0"),
            demand_usd: usd(asked),
            unit_usd: usd("0.01"),
            interval_ms: 250,
            published_at,
            record_revision: None,
            used_usd: None,
        };
        let put = |engine: &mut Engine, d: Demand| {
            let received = d.published_at;
            engine.apply_demand(&d.key(), Some(d), received)
        };
        put(&mut engine, demand("gw-1", "3", at(23, 9, 0)));
        put(&mut engine, demand("gw-2", "1", at(23, 9, 0)));
        let shared = at(23, 9, 0);
        let out = engine.take_headroom(shared);
        assert_eq!(out.records.len(), 1, "only the budget with demand: {out:?}");
        let share = |replica: &str, dollars: &str| ReplicaShare {
            replica: replica.into(),
            share_usd: usd(dollars),
            report_at: at(23, 9, 0),
        };
        assert_eq!(out.records[0].shares, Some(vec![share("gw-1", "7.5"), share("gw-2", "2.5")]));
        assert!(engine.take_headroom(shared).is_empty(), "the same shares: nothing new");
        // Both expire (three intervals and the read slack on), holding nothing: forgotten, and
        // the record says so (no shares: the gateways report again when asked).
        let later = at(23, 9, 0) + chrono::TimeDelta::seconds(3);
        let out = engine.take_headroom(later);
        assert_eq!(out.records[0].shares, None);
    }
}

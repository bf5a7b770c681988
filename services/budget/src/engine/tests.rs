//! The engine as a state machine: roll-up through the hierarchy, strictest-wins, window resets
//! without traffic, threshold alerts exactly once, replays, restarts and the tripwires.

use std::str::FromStr;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use faregate_core::event::{AlertKind, BudgetAction, BudgetScope, BudgetWindow, DecisionState, WindowPeriod};
use faregate_core::money::Usd;

fn usd(s: &str) -> Usd {
    Usd(Decimal::from_str(s).unwrap())
}

fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
}

fn scope(org: &str, team: Option<&str>, user: Option<&str>) -> BudgetScope {
    BudgetScope {
        org: org.into(),
        team: team.map(Into::into),
        user: user.map(Into::into),
        ..BudgetScope::default()
    }
}

fn budget(id: &str, scope: BudgetScope, period: WindowPeriod, limit: &str) -> Budget {
    Budget {
        id: id.into(),
        name: id.into(),
        scope,
        window: BudgetWindow { period, days: None, rolling: false, time_zone: "UTC".into() },
        limit_usd: usd(limit),
        action: BudgetAction::Block,
        downgrade_to: None,
        thresholds_pct: vec![50, 80, 100],
        owner: Some("ana@acme.example".into()),
        notify: vec![],
    }
}

/// A spend aggregate of user `user` in team `team` of acme, for the hour containing `hour`.
fn spend(
    team: &str,
    user: &str,
    model: &str,
    hour: DateTime<Utc>,
    cost: &str,
    revision: i64,
) -> SpendAggregate {
    SpendAggregate {
        subject: format!("org=acme/team={team}/user={user}/model={model}"),
        org: "acme".into(),
        team: Some(team.into()),
        user: Some(user.into()),
        key_id: Some(format!("k-{user}")),
        project: None,
        model: Some(model.into()),
        tool: Some("claude-code".into()),
        session_id: None,
        bucket_start: crate::window::hour_of(hour),
        bucket_width: BucketWidth::Hour,
        cost_usd: usd(cost),
        requests: 1,
        unpriced_requests: 0,
        tokens_total: 1,
        revision,
        computed_at: hour,
        usage_positions: Vec::new(),
    }
}

fn warm_engine(budgets: Vec<Budget>) -> Engine {
    let mut engine = Engine::new(AnomalySettings::default());
    for b in budgets {
        engine.set_budget(b).unwrap();
    }
    engine.set_warm();
    engine
}

fn states(out: &Output) -> Vec<(String, DecisionState)> {
    let mut v: Vec<_> = out.decisions.iter().map(|d| (d.subject.clone(), d.state)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn spend_rolls_up_to_user_team_and_org() {
    let mut e = warm_engine(vec![
        budget("org", scope("acme", None, None), WindowPeriod::Day, "100"),
        budget("team", scope("acme", Some("infra"), None), WindowPeriod::Day, "50"),
        budget("ana", scope("acme", Some("infra"), Some("ana")), WindowPeriod::Day, "30"),
    ]);
    let now = at(10, 12, 0);
    e.apply(&spend("infra", "ana", "m", now, "31", 1));
    e.apply(&spend("infra", "bo", "m", now, "20", 1));
    e.apply(&spend("web", "cy", "m", now, "10", 1));
    let out = e.evaluate(now);
    assert_eq!(
        states(&out),
        vec![
            ("org=acme".into(), DecisionState::Warn),
            ("org=acme/team=infra".into(), DecisionState::Block),
            ("org=acme/team=infra/user=ana".into(), DecisionState::Block),
        ]
    );
    let team = out.decisions.iter().find(|d| d.subject == "org=acme/team=infra").unwrap();
    assert_eq!(team.spent_usd, usd("51"));
    assert_eq!(team.limit_usd, Some(usd("50")));
    assert_eq!(team.resets_at, Some(at(11, 0, 0)));
    assert!(team.reason.contains("exhausted"), "{}", team.reason);
}

#[test]
fn replays_and_older_revisions_do_not_double_count() {
    let mut e =
        warm_engine(vec![budget("team", scope("acme", Some("infra"), None), WindowPeriod::Day, "50")]);
    let now = at(10, 12, 0);
    e.apply(&spend("infra", "ana", "m", now, "20", 2));
    e.apply(&spend("infra", "ana", "m", now, "20", 2));
    e.apply(&spend("infra", "ana", "m", now, "45", 1));
    // 40% of the limit: allow, which is never published first.
    assert!(e.evaluate(now).decisions.is_empty());
    // A newer total replaces the old one.
    e.apply(&spend("infra", "ana", "m", now, "30", 3));
    let out = e.evaluate(now);
    assert_eq!(out.decisions[0].spent_usd, usd("30"));
    assert_eq!(out.decisions[0].state, DecisionState::Warn);
}

#[test]
fn strictest_budget_of_a_scope_wins_and_daily_and_monthly_stack() {
    let scope = scope("acme", Some("infra"), None);
    let mut monthly = budget("monthly", scope.clone(), WindowPeriod::Month, "100");
    monthly.action = BudgetAction::Downgrade;
    monthly.downgrade_to = Some("small".into());
    let daily = budget("daily", scope.clone(), WindowPeriod::Day, "40");
    let mut e = warm_engine(vec![monthly, daily]);
    // 70 spent earlier this month, 30 today: monthly at 100% (downgrade) beats daily at 75% (warn).
    e.apply(&spend("infra", "ana", "m", at(3, 9, 0), "70", 1));
    e.apply(&spend("infra", "ana", "m", at(10, 9, 0), "30", 1));
    let out = e.evaluate(at(10, 12, 0));
    let d = &out.decisions[0];
    assert_eq!(
        (d.state, d.budget_id.as_deref(), d.downgrade_to.as_deref()),
        (DecisionState::Downgrade, Some("monthly"), Some("small"))
    );
    assert_eq!(d.resets_at, Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()));
}

#[test]
fn a_window_reset_allows_again_without_traffic() {
    let mut b = budget("daily", scope("acme", Some("infra"), None), WindowPeriod::Day, "10");
    b.window.time_zone = "America/New_York".into();
    let mut e = warm_engine(vec![b]);
    let now = at(10, 15, 0);
    e.apply(&spend("infra", "ana", "m", now, "12", 1));
    let out = e.evaluate(now);
    assert_eq!(out.decisions[0].state, DecisionState::Block);
    // Midnight in New York is 05:00 UTC in November.
    let reset = out.decisions[0].resets_at.unwrap();
    assert_eq!(reset, at(11, 5, 0));
    assert!(e.tick(reset - TimeDelta::seconds(1)).decisions.is_empty());
    let out = e.tick(reset);
    assert_eq!(states(&out), vec![("org=acme/team=infra".into(), DecisionState::Allow)]);
    assert_eq!(out.decisions[0].window_start, Some(reset));
    assert!(e.tick(reset + TimeDelta::minutes(5)).is_empty());
}

#[test]
fn rolling_windows_unblock_as_old_spend_rolls_out() {
    let mut b = budget("rolling", scope("acme", None, None), WindowPeriod::Day, "10");
    b.window.rolling = true;
    let mut e = warm_engine(vec![b]);
    e.apply(&spend("infra", "ana", "m", at(10, 8, 0), "6", 1));
    e.apply(&spend("infra", "ana", "m", at(10, 9, 0), "6", 1));
    let out = e.evaluate(at(10, 9, 30));
    assert_eq!(out.decisions[0].state, DecisionState::Block);
    // The 08:00 bucket leaves the 24-hour window at 08:00 tomorrow.
    assert_eq!(out.decisions[0].resets_at, Some(at(11, 8, 0)));
    assert!(e.tick(at(11, 7, 59)).decisions.iter().all(|d| d.state == DecisionState::Block));
    let out = e.tick(at(11, 8, 0));
    assert_eq!(out.decisions[0].state, DecisionState::Warn);
}

#[test]
fn thresholds_alert_exactly_once_per_window() {
    let mut e =
        warm_engine(vec![budget("team", scope("acme", Some("infra"), None), WindowPeriod::Day, "100")]);
    let mut alerts = Vec::new();
    let mut cost = Decimal::ZERO;
    // Spend creeps up in many small steps well past the limit.
    for step in 1..=60i64 {
        cost += Decimal::from(3);
        let now = at(10, 10, 0) + TimeDelta::minutes(step);
        e.apply(&spend("infra", "ana", "m", at(10, 10, 0), &cost.to_string(), step));
        alerts.extend(e.evaluate(now).alerts);
        alerts.extend(e.tick(now).alerts);
    }
    let fired: Vec<Option<i32>> = alerts.iter().map(|a| a.threshold_pct).collect();
    assert_eq!(fired, vec![Some(50), Some(80), Some(100)]);
    assert!(alerts.iter().all(|a| a.owner.as_deref() == Some("ana@acme.example")));
    assert!(alerts[2].message.contains("requests are blocked"), "{}", alerts[2].message);
    // The next day is a new window: the thresholds fire again once.
    e.apply(&spend("infra", "ana", "m", at(11, 10, 0), "150", 100));
    let next = e.evaluate(at(11, 10, 5));
    let thresholds: Vec<_> = next.alerts.iter().filter(|a| a.kind == AlertKind::Threshold).collect();
    assert_eq!(thresholds.iter().map(|a| a.threshold_pct).collect::<Vec<_>>(), vec![Some(100)]);
    assert!(e.tick(at(11, 11, 0)).alerts.is_empty());
}

#[test]
fn a_restart_rebuilds_without_repeating_decisions_or_alerts() {
    let budgets = vec![budget("team", scope("acme", Some("infra"), None), WindowPeriod::Day, "10")];
    let records = vec![
        spend("infra", "ana", "m", at(10, 9, 0), "6", 1),
        spend("infra", "bo", "m", at(10, 10, 0), "6", 1),
    ];
    let mut first = warm_engine(budgets.clone());
    let mut published = Output::default();
    for r in &records {
        first.apply(r);
        let out = first.evaluate(at(10, 10, 30));
        published.decisions.extend(out.decisions);
        published.alerts.extend(out.alerts);
    }
    assert_eq!(published.alerts.len(), 2);
    assert_eq!(published.decisions.last().unwrap().state, DecisionState::Block);
    // A new instance reads the topics back: budgets, then decisions and alerts, then spend.
    let mut second = Engine::new(AnomalySettings::default());
    for b in budgets {
        second.set_budget(b).unwrap();
    }
    for d in &published.decisions {
        second.restore_decision(d.clone());
    }
    for a in &published.alerts {
        second.restore_alert(a);
    }
    for r in records.iter().rev() {
        second.apply(r);
        assert!(second.evaluate(at(10, 11, 0)).is_empty(), "nothing before warm");
    }
    second.set_warm();
    let out = second.tick(at(10, 11, 0));
    assert!(out.is_empty(), "{out:?}");
    // And it goes on from there: the reset still publishes allow.
    assert_eq!(second.tick(at(11, 0, 0)).decisions[0].state, DecisionState::Allow);
}

#[test]
fn removing_a_budget_allows_its_scope() {
    let mut e =
        warm_engine(vec![budget("team", scope("acme", Some("infra"), None), WindowPeriod::Day, "10")]);
    e.apply(&spend("infra", "ana", "m", at(10, 9, 0), "20", 1));
    assert_eq!(e.evaluate(at(10, 9, 5)).decisions[0].state, DecisionState::Block);
    assert!(e.remove_budget("team"));
    let out = e.evaluate(at(10, 9, 6));
    assert_eq!(out.decisions[0].state, DecisionState::Allow);
    assert_eq!(out.decisions[0].budget_id, None);
    assert!(e.evaluate(at(10, 9, 7)).is_empty());
}

#[test]
fn a_budget_set_later_sees_the_spend_already_held() {
    let mut e = warm_engine(vec![]);
    e.apply(&spend("infra", "ana", "opus", at(10, 9, 0), "20", 1));
    e.apply(&spend("infra", "ana", "haiku", at(10, 9, 0), "1", 1));
    let mut b = budget("opus", scope("acme", Some("infra"), None), WindowPeriod::Day, "15");
    b.scope.model = Some("opus".into());
    e.set_budget(b).unwrap();
    let out = e.evaluate(at(10, 9, 5));
    assert_eq!(out.decisions[0].subject, "org=acme/team=infra/model=opus");
    assert_eq!(out.decisions[0].spent_usd, usd("20"));
}

#[test]
fn forecast_alerts_a_quarter_on_course_to_overspend() {
    let mut e = warm_engine(vec![budget("q", scope("acme", None, None), WindowPeriod::Quarter, "1000")]);
    // 60% of the quarter by week 6 (Q4 2026 starts 2026-10-01).
    e.apply(&spend("infra", "ana", "m", at(1, 9, 0), "600", 1));
    let week6 = Utc.with_ymd_and_hms(2026, 11, 9, 0, 0, 0).unwrap();
    let out = e.tick(week6);
    let forecast: Vec<_> = out.alerts.iter().filter(|a| a.kind == AlertKind::Forecast).collect();
    assert_eq!(forecast.len(), 1, "{:?}", out.alerts);
    assert!(forecast[0].message.contains("at this pace"), "{}", forecast[0].message);
    assert!(e.tick(week6 + TimeDelta::days(1)).alerts.iter().all(|a| a.kind != AlertKind::Forecast));
}

#[test]
fn a_spend_spike_alerts_once_a_day() {
    let mut e = warm_engine(vec![]);
    for day in 2..=8 {
        e.apply(&spend("infra", "ana", "m", at(day, 9, 0), "5", 1));
    }
    assert!(e.evaluate(at(8, 10, 0)).alerts.is_empty());
    e.apply(&spend("infra", "ana", "m", at(9, 9, 0), "16", 1));
    let alerts = e.evaluate(at(9, 10, 0)).alerts;
    assert_eq!(alerts.iter().map(|a| a.kind).collect::<Vec<_>>(), vec![AlertKind::SpendSpike]);
    assert_eq!(alerts[0].subject, "org=acme/key=k-ana");
    e.apply(&spend("infra", "ana", "m", at(9, 10, 0), "30", 1));
    assert!(e.evaluate(at(9, 11, 0)).alerts.is_empty());
}

#[test]
fn burn_rate_and_model_mix_tripwires() {
    let settings =
        AnomalySettings { burn_rate_usd_per_hour: Some(Decimal::from(50)), ..AnomalySettings::default() };
    let mut e = Engine::new(settings);
    e.set_warm();
    // A week of cheap requests on haiku.
    for day in 2..=8 {
        let mut r = spend("infra", "ana", "haiku", at(day, 9, 0), "1", 1);
        r.requests = 100;
        e.apply(&r);
    }
    // Today most requests go to opus at 20x the cost per request.
    let mut r = spend("infra", "ana", "opus", at(9, 9, 0), "20", 1);
    r.requests = 100;
    e.apply(&r);
    let kinds: Vec<AlertKind> = e.evaluate(at(9, 9, 30)).alerts.iter().map(|a| a.kind).collect();
    assert!(kinds.contains(&AlertKind::ModelMixDrift), "{kinds:?}");
    // $60 in one hour trips the burn rate.
    let mut r = spend("infra", "ana", "opus", at(9, 10, 0), "60", 1);
    r.requests = 10;
    e.apply(&r);
    let alerts = e.evaluate(at(9, 10, 30)).alerts;
    let burn: Vec<_> = alerts.iter().filter(|a| a.kind == AlertKind::BurnRate).collect();
    assert_eq!(burn.len(), 1, "{alerts:?}");
    assert!(burn[0].message.contains("revoke the key"), "{}", burn[0].message);
}

#[test]
fn a_runaway_session_trips_from_minute_aggregates() {
    let settings = AnomalySettings {
        session_usd: Some(Decimal::from(5)),
        session_minutes: 10,
        ..AnomalySettings::default()
    };
    let mut org_budget = budget("org", scope("acme", None, None), WindowPeriod::Month, "1000");
    org_budget.owner = Some("finance@acme.example".into());
    let mut e = warm_engine(vec![
        org_budget,
        budget("ana", scope("acme", Some("infra"), Some("ana")), WindowPeriod::Day, "1000"),
        budget("bo", scope("acme", Some("infra"), Some("bo")), WindowPeriod::Day, "1000"),
    ]);
    e.settings = settings;
    let mut alerts = Vec::new();
    for minute in 0..8 {
        let mut r = spend("infra", "ana", "m", at(10, 2, 0), "1", 1);
        r.model = None;
        r.session_id = Some("s-1".into());
        r.bucket_width = BucketWidth::Minute;
        r.bucket_start = at(10, 2, minute);
        e.apply(&r);
        // A republished minute (same revision) changes nothing.
        e.apply(&r);
        alerts.extend(e.evaluate(at(10, 2, minute)).alerts);
    }
    // $1 a minute: over $5 at the sixth minute, and only once for the session.
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.kind, AlertKind::RunawaySession);
    assert_eq!(alert.subject, "org=acme/team=infra/user=ana/key=k-ana/session=s-1");
    assert_eq!(alert.alert_key, "anomaly/runaway_session/org=acme/session=s-1");
    assert_eq!(alert.spent_usd, usd("6"));
    // The owner of the most specific budget covering the session's user, not the org's or bo's.
    assert_eq!(alert.owner.as_deref(), Some("ana@acme.example"));
    // Session minutes never count in budgets.
    assert_eq!(e.store.subjects(), 0);
}

#[test]
fn an_instance_decides_only_for_the_orgs_it_owns() {
    use faregate_core::kafka::partition_for;
    let orgs: Vec<String> = (0..16).map(|i| format!("org{i}")).collect();
    let budgets = orgs.iter().map(|o| budget(o, scope(o, None, None), WindowPeriod::Day, "1")).collect();
    let mut e = warm_engine(budgets);
    let assigned: BTreeSet<i32> = [0, 2].into();
    e.set_ownership(Ownership::Partitions { count: 4, assigned: assigned.clone() });
    for o in &orgs {
        let mut r = spend("infra", "ana", "m", at(10, 9, 0), "2", 1);
        r.org = o.clone();
        e.apply(&r);
    }
    let decided: Vec<String> = e.evaluate(at(10, 9, 30)).decisions.into_iter().map(|d| d.subject).collect();
    let owned: Vec<String> =
        orgs.iter().filter(|o| assigned.contains(&partition_for(o, 4))).map(|o| format!("org={o}")).collect();
    assert!(!owned.is_empty() && owned.len() < orgs.len(), "the sample spans owned and foreign orgs");
    let mut decided_sorted = decided.clone();
    decided_sorted.sort();
    let mut owned_sorted = owned.clone();
    owned_sorted.sort();
    assert_eq!(decided_sorted, owned_sorted);

    // A new assignment starts cold from the budgets alone, then owns everything.
    let mut fresh = e.without_spend();
    assert!(!fresh.is_warm() && fresh.store.subjects() == 0 && fresh.decisions().count() == 0);
    assert_eq!(fresh.budgets().count(), 16);
    fresh.set_ownership(Ownership::All);
    for o in &orgs {
        let mut r = spend("infra", "ana", "m", at(10, 9, 0), "2", 1);
        r.org = o.clone();
        fresh.apply(&r);
    }
    fresh.set_warm();
    assert_eq!(fresh.evaluate(at(10, 9, 30)).decisions.len(), 16);
}

proptest! {
    /// Whatever order and duplication the spend topic delivers, the window spend is the sum of
    /// the newest record of each (subject, hour) in the window.
    #[test]
    fn window_spend_is_the_sum_of_the_latest_totals(
        records in proptest::collection::vec((0usize..3, 0u32..30, 0u32..1000, 1i64..5), 1..60),
    ) {
        let users = ["ana", "bo", "cy"];
        let now = at(10, 23, 0);
        let mut e = warm_engine(vec![budget("team", scope("acme", Some("infra"), None), WindowPeriod::Day, "1000000")]);
        let mut latest: HashMap<(usize, u32), (i64, u32)> = HashMap::new();
        for (user, hour, cents, revision) in &records {
            let hour_at = at(10, 0, 0) + TimeDelta::hours(i64::from(*hour)) - TimeDelta::hours(6);
            let cost = Decimal::new(i64::from(*cents), 2).to_string();
            e.apply(&spend("infra", users[*user], "m", hour_at, &cost, *revision));
            let held = latest.entry((*user, *hour)).or_insert((0, 0));
            if *revision > held.0 {
                *held = (*revision, *cents);
            }
        }
        let expected: i64 = latest
            .iter()
            .filter(|((_, hour), _)| *hour >= 6)
            .map(|(_, (_, cents))| i64::from(*cents))
            .sum();
        let state = &e.budgets["team"];
        prop_assert_eq!(evaluate::status(state, now).spent, Decimal::new(expected, 2));
    }
}

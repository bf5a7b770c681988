//! The budget engine's hot path, one spend aggregate in to the decisions it causes
//! (`Engine::apply` + `Engine::evaluate`), against a baseline measured in the same run: inserting
//! the same record into a plain `HashMap` keyed by its topic key (the floor of remembering a
//! record at all). The state is realistic: 200 orgs with 7 budgets each (org, five teams, a
//! team + model), 100,000 subjects already held. `benches/src/bin/budget_load.rs` measures the
//! p99 latency and the memory of 1M subjects.

use std::collections::HashMap;
use std::hint::black_box;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use faregate_budget::Engine;
use faregate_budget::engine::anomaly::AnomalySettings;
use faregate_core::event::{
    BucketWidth, Budget, BudgetAction, BudgetScope, BudgetWindow, SpendAggregate, WindowPeriod,
};
use faregate_core::money::Usd;
use rust_decimal::Decimal;

const ORGS: usize = 200;
const TEAMS: usize = 5;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 10, 12, 30, 0).unwrap()
}

fn budget(id: String, scope: BudgetScope, period: WindowPeriod, limit: i64) -> Budget {
    Budget {
        id,
        name: "bench".into(),
        scope,
        window: BudgetWindow { period, days: None, rolling: false, time_zone: "Europe/Berlin".into() },
        limit_usd: Usd(Decimal::from(limit)),
        action: BudgetAction::Block,
        downgrade_to: None,
        thresholds_pct: vec![50, 80, 100],
        owner: Some("owner@example.com".into()),
        notify: vec![],
    }
}

fn budgets() -> Vec<Budget> {
    let mut all = Vec::new();
    for o in 0..ORGS {
        let org = format!("org{o}");
        let scope = |team: Option<String>, model: Option<&str>| BudgetScope {
            org: org.clone(),
            team,
            model: model.map(Into::into),
            ..BudgetScope::default()
        };
        all.push(budget(format!("{org}-month"), scope(None, None), WindowPeriod::Month, 1_000_000));
        for t in 0..TEAMS {
            all.push(budget(
                format!("{org}-t{t}-day"),
                scope(Some(format!("team{t}")), None),
                WindowPeriod::Day,
                50_000,
            ));
        }
        all.push(budget(
            format!("{org}-opus"),
            scope(Some("team0".into()), Some("opus")),
            WindowPeriod::Week,
            100_000,
        ));
    }
    all
}

/// The aggregate of subject `i` for the current hour, with `revision`.
fn aggregate(i: usize, revision: i64, cents: i64) -> SpendAggregate {
    let org = format!("org{}", i % ORGS);
    let team = format!("team{}", (i / ORGS) % TEAMS);
    let user = format!("user{i}");
    let model = ["opus", "sonnet", "haiku"][i % 3];
    let hour = Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap();
    SpendAggregate {
        subject: format!("org={org}/team={team}/user={user}/model={model}"),
        org,
        team: Some(team),
        user: Some(user.clone()),
        key_id: Some(format!("k-{user}")),
        project: None,
        model: Some(model.into()),
        tool: Some("claude-code".into()),
        session_id: None,
        bucket_start: hour,
        bucket_width: BucketWidth::Hour,
        cost_usd: Usd(Decimal::new(cents, 2)),
        requests: cents,
        unpriced_requests: 0,
        tokens_total: cents * 100,
        revision,
        computed_at: hour,
        usage_positions: Vec::new(),
    }
}

/// A warm engine holding `subjects` subjects.
pub fn loaded_engine(subjects: usize) -> Engine {
    let mut engine = Engine::new(AnomalySettings::default());
    for b in budgets() {
        engine.set_budget(b).unwrap();
    }
    for i in 0..subjects {
        engine.apply(&aggregate(i, 1, 1 + (i as i64 % 500)));
    }
    engine.set_warm();
    engine.tick(now());
    engine
}

fn apply_and_decide(c: &mut Criterion) {
    let subjects = 100_000;
    let updates: Vec<SpendAggregate> =
        (0..10_000).map(|n| aggregate((n * 7919) % subjects, 2 + n as i64, 600 + n as i64)).collect();
    let mut group = c.benchmark_group("budget");
    group.bench_function("baseline_hashmap_insert", |b| {
        let mut map: HashMap<String, SpendAggregate> = HashMap::new();
        let mut n = 0;
        b.iter(|| {
            let a = &updates[n % updates.len()];
            n += 1;
            black_box(map.insert(format!("{}@{}", a.subject, a.bucket_start.timestamp()), a.clone()));
        })
    });
    group.bench_function("apply_and_decide", |b| {
        let mut engine = loaded_engine(subjects);
        let mut n = 0usize;
        let now = now();
        b.iter(|| {
            let mut a = updates[n % updates.len()].clone();
            // A new revision with a new total every time, so every call changes the state.
            a.revision = 1_000_000 + n as i64;
            a.cost_usd =
                Usd(a.cost_usd.0 + Decimal::from_str("0.01").unwrap() * Decimal::from(n as i64 % 7 + 1));
            n += 1;
            engine.apply(&a);
            black_box(engine.evaluate(now));
        })
    });
    group.finish();
}

criterion_group!(benches, apply_and_decide);
criterion_main!(benches);

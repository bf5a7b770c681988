//! The budget engine at scale: memory for N subjects (default 1,000,000) and the latency of one
//! spend aggregate to its decisions (p50 / p99 / max over 100,000 updates), each printed with a
//! baseline measured in the same run and their ratio:
//! - memory: the same records held in a `HashMap<String, SpendAggregate>` keyed by topic key
//!   (what keeping the spend topic in memory naively costs);
//! - latency: inserting the same record into that map.
//!
//! `cargo run --release -p faregate-benches --bin budget-load [-- SUBJECTS]`. Memory is resident
//! set size from /proc/self/statm (Linux), so it includes allocator overhead.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use faregate_budget::Engine;
use faregate_budget::engine::anomaly::AnomalySettings;
use faregate_core::event::{
    BucketWidth, Budget, BudgetAction, BudgetScope, BudgetWindow, SpendAggregate, WindowPeriod,
};
use faregate_core::money::Usd;
use rust_decimal::Decimal;

const ORGS: usize = 200;
const TEAMS: usize = 5;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn budgets() -> Vec<Budget> {
    let mut all = Vec::new();
    for o in 0..ORGS {
        let org = format!("org{o}");
        let make = |id: String, team: Option<String>, model: Option<&str>, period, limit: i64| Budget {
            id,
            name: "load".into(),
            scope: BudgetScope {
                org: org.clone(),
                team,
                model: model.map(Into::into),
                ..BudgetScope::default()
            },
            window: BudgetWindow { period, days: None, rolling: false, time_zone: "Europe/Berlin".into() },
            limit_usd: Usd(Decimal::from(limit)),
            action: BudgetAction::Block,
            downgrade_to: None,
            thresholds_pct: vec![50, 80, 100],
            owner: Some("owner@example.com".into()),
            notify: vec![],
        };
        all.push(make(format!("{org}-month"), None, None, WindowPeriod::Month, 10_000_000));
        for t in 0..TEAMS {
            all.push(make(format!("{org}-t{t}"), Some(format!("team{t}")), None, WindowPeriod::Day, 2_600));
        }
        all.push(make(
            format!("{org}-opus"),
            Some("team0".into()),
            Some("opus"),
            WindowPeriod::Week,
            1_000_000,
        ));
    }
    all
}

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
    }
}

fn percentiles(mut ns: Vec<u128>) -> (u128, u128, u128) {
    ns.sort_unstable();
    let at = |q: usize| ns[(ns.len() * q / 1000).min(ns.len() - 1)];
    (at(500), at(990), *ns.last().unwrap_or(&0))
}

fn main() {
    let subjects: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let now = Utc.with_ymd_and_hms(2026, 11, 10, 12, 30, 0).unwrap();

    let before = rss_bytes();
    let mut engine = Engine::new(AnomalySettings::default());
    for b in budgets() {
        engine.set_budget(b).unwrap();
    }
    for i in 0..subjects {
        engine.apply(&aggregate(i, 1, 1 + (i as i64 % 500)));
    }
    engine.set_warm();
    engine.tick(now);
    let engine_bytes = rss_bytes().saturating_sub(before);

    let before = rss_bytes();
    let mut map: HashMap<String, SpendAggregate> = HashMap::new();
    for i in 0..subjects {
        let a = aggregate(i, 1, 1 + (i as i64 % 500));
        map.insert(format!("{}@{}", a.subject, a.bucket_start.timestamp()), a);
    }
    let map_bytes = rss_bytes().saturating_sub(before);

    let updates = 100_000usize;
    let mut engine_ns = Vec::with_capacity(updates);
    let mut map_ns = Vec::with_capacity(updates);
    let mut decisions = 0usize;
    for n in 0..updates {
        let a = aggregate((n * 7919) % subjects, 2 + n as i64, 700 + n as i64);
        let start = Instant::now();
        engine.apply(&a);
        decisions += engine.evaluate(now).decisions.len();
        engine_ns.push(start.elapsed().as_nanos());
        let start = Instant::now();
        map.insert(format!("{}@{}", a.subject, a.bucket_start.timestamp()), a.clone());
        map_ns.push(start.elapsed().as_nanos());
    }
    let (e50, e99, emax) = percentiles(engine_ns);
    let (m50, m99, mmax) = percentiles(map_ns);
    let (held, estimate) = engine.footprint();
    let ratio = |a: u128, b: u128| match (a * 100).checked_div(b) {
        Some(hundredths) => format!("{}.{:02}x", hundredths / 100, hundredths % 100),
        None => "n/a".to_string(),
    };
    println!("subjects: {held} (engine's own estimate {} bytes)", estimate);
    println!(
        "memory: engine {} MiB ({} B/subject) vs HashMap<String, SpendAggregate> {} MiB ({} B/subject): ratio {}",
        engine_bytes >> 20,
        engine_bytes / subjects as u64,
        map_bytes >> 20,
        map_bytes / subjects as u64,
        ratio(u128::from(engine_bytes), u128::from(map_bytes))
    );
    println!(
        "aggregate -> decision: p50 {} ns, p99 {} ns, max {} ns ({decisions} decisions over {updates} updates)",
        e50, e99, emax
    );
    println!("baseline HashMap insert: p50 {m50} ns, p99 {m99} ns, max {mmax} ns");
    println!("ratio engine/baseline: p50 {}, p99 {}", ratio(e50, m50), ratio(e99, m99));
}

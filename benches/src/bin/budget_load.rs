//! The budget engine at scale, and the budget service on a real broker.
//!
//! `budget-load [SUBJECTS]`: memory for N subjects (default 1,000,000) and the latency of one
//! spend aggregate to its decisions (p50 / p99 / max over 100,000 updates), each printed with a
//! baseline measured in the same run and their ratio:
//! - memory: the same records held in a `HashMap<String, SpendAggregate>` keyed by topic key
//!   (what keeping the spend topic in memory naively costs);
//! - latency: inserting the same record into that map.
//!
//! `budget-load kafka [SAMPLES]`: the time from producing a spend aggregate to its decision
//! arriving on the decisions topic, through the running budget service on the broker in
//! `FAREGATE_TEST_KAFKA_BROKERS` (default 500 samples, one in flight), against a baseline taken
//! in the same run, interleaved sample by sample: producing a value of the same size to a plain
//! topic and consuming it (one hop; the service path is two hops plus the engine).
//!
//! `cargo run --release -p faregate-benches --bin budget-load [-- SUBJECTS | kafka SAMPLES]`.
//! Memory is resident set size from /proc/self/statm (Linux), so it includes allocator overhead.

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
        usage_positions: Vec::new(),
    }
}

fn ratio(a: u128, b: u128) -> String {
    match (a * 100).checked_div(b) {
        Some(hundredths) => format!("{}.{:02}x", hundredths / 100, hundredths % 100),
        None => "n/a".to_string(),
    }
}

fn percentiles(mut ns: Vec<u128>) -> (u128, u128, u128) {
    ns.sort_unstable();
    let at = |q: usize| ns[(ns.len() * q / 1000).min(ns.len() - 1)];
    (at(500), at(990), *ns.last().unwrap_or(&0))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("kafka") {
        let samples: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(500);
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        runtime.block_on(kafka::latency(samples));
        return;
    }
    let subjects: usize = first.and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
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

/// Aggregate -> decision through Kafka, against a same-size produce -> consume round trip.
mod kafka {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use chrono::{DurationRound, TimeDelta, Utc};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rust_decimal::Decimal;
    use tokio_util::sync::CancellationToken;

    use faregate_budget::{BudgetConfig, ManualClock};
    use faregate_core::avro::{AvroCodec, SchemaFamily};
    use faregate_core::event::{
        BucketWidth, Budget, BudgetAction, BudgetScope, BudgetWindow, ConfigEntity, ConfigRecord, Decision,
        DecisionState, SpendAggregate, WindowPeriod,
    };
    use faregate_core::kafka::RecordProducer;
    use faregate_core::money::Usd;

    use super::{percentiles, ratio};

    const WARMUP: usize = 20;

    pub async fn latency(samples: usize) {
        let brokers = std::env::var("FAREGATE_TEST_KAFKA_BROKERS")
            .expect("FAREGATE_TEST_KAFKA_BROKERS names the broker (as deploy/local/test sets it)");
        // The longest a fetch waits for data, for every consumer here (the service's and the
        // bench's alike): tansu answers a fetch only when it times out or data is already there.
        let fetch_wait: u32 =
            std::env::var("FAREGATE_BENCH_FETCH_WAIT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
        let (kafka, echo) = faregate_benches::fresh_topics(&brokers, "bench", fetch_wait).await;
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let t = kafka.topics.clone();

        let budget = Budget {
            id: "bench".into(),
            name: "bench".into(),
            scope: BudgetScope { org: "bench".into(), ..BudgetScope::default() },
            window: BudgetWindow {
                period: WindowPeriod::Day,
                days: None,
                rolling: false,
                time_zone: "UTC".into(),
            },
            limit_usd: Usd(Decimal::from(10)),
            action: BudgetAction::Block,
            downgrade_to: None,
            thresholds_pct: vec![100],
            owner: None,
            notify: vec![],
        };
        let record =
            ConfigRecord { updated_at: Utc::now(), updated_by: None, entity: ConfigEntity::Budget(budget) };
        let config: RecordProducer<ConfigRecord> =
            RecordProducer::new(&kafka, "bench", SchemaFamily::ConfigRecord, &t.config)
                .await
                .expect("producer");
        config.send(&record.topic_key(), &record).await.expect("budget written");

        let now = Utc::now();
        let hour = now.duration_trunc(TimeDelta::hours(1)).expect("an hour");
        let ready = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let service = tokio::spawn(faregate_budget::run_with_clock(
            BudgetConfig { group_id: format!("bench-budget-{suffix}"), ..BudgetConfig::default() },
            kafka.clone(),
            Arc::new(ManualClock::new(now)),
            ready.clone(),
            stop.clone(),
        ));
        while !ready.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let spend: RecordProducer<SpendAggregate> =
            RecordProducer::new(&kafka, "bench", SchemaFamily::SpendAggregate, &t.spend)
                .await
                .expect("producer");
        let decisions = faregate_benches::consumer_at_start(&kafka, &t.decisions);
        let decision_codec: AvroCodec<Decision> =
            AvroCodec::new(SchemaFamily::Decision, &t.decisions, kafka.schema_registry.registry())
                .await
                .expect("codec");
        let plain: FutureProducer = kafka.producer_config("bench-echo").create().expect("producer");
        let echoes = faregate_benches::consumer_at_start(&kafka, &echo);
        let spend_codec = spend.codec();

        let mut service_ns = Vec::with_capacity(samples);
        let mut baseline_ns = Vec::with_capacity(samples);
        let mut payload_bytes = 0;
        for i in 0..samples + WARMUP {
            // Alternating over and under the $10 limit: every aggregate flips the decision.
            let over = i % 2 == 0;
            let aggregate = SpendAggregate {
                subject: "org=bench/user=u".into(),
                org: "bench".into(),
                team: None,
                user: Some("u".into()),
                key_id: None,
                project: None,
                model: Some("claude-sonnet-4-5".into()),
                tool: Some("claude-code".into()),
                session_id: None,
                bucket_start: hour,
                bucket_width: BucketWidth::Hour,
                cost_usd: Usd(Decimal::from(if over { 12 } else { 5 })),
                requests: 1 + i as i64,
                unpriced_requests: 0,
                tokens_total: 1000,
                revision: 1 + i as i64,
                computed_at: hour,
                usage_positions: Vec::new(),
            };
            let expected = if over { DecisionState::Block } else { DecisionState::Allow };
            let bytes = spend_codec.encode(&aggregate).expect("encoded");
            payload_bytes = bytes.len();

            let start = Instant::now();
            plain
                .send(FutureRecord::to(&echo).key("echo").payload(&bytes), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("echo produced");
            let echoed = echoes.recv().await.expect("echo consumed");
            assert_eq!(echoed.payload().map(<[u8]>::len), Some(bytes.len()));
            let baseline = start.elapsed();

            let start = Instant::now();
            spend.send("org=bench/user=u@bench", &aggregate).await.expect("aggregate produced");
            let decision = loop {
                let message = decisions.recv().await.expect("a decision");
                let decision =
                    decision_codec.decode(message.payload().expect("a value")).await.expect("decoded");
                if decision.subject == "org=bench" {
                    break decision;
                }
            };
            let through = start.elapsed();
            assert_eq!(decision.state, expected, "sample {i}");
            if i >= WARMUP {
                baseline_ns.push(baseline.as_nanos());
                service_ns.push(through.as_nanos());
            }
        }
        stop.cancel();
        let _ = service.await;

        let ms = |ns: u128| format!("{}.{} ms", ns / 1_000_000, (ns / 100_000) % 10);
        let (s50, s99, smax) = percentiles(service_ns);
        let (b50, b99, bmax) = percentiles(baseline_ns);
        println!(
            "{samples} samples, one in flight, {payload_bytes}-byte values, broker {}, fetch.wait.max.ms {fetch_wait}",
            kafka.brokers
        );
        println!(
            "aggregate -> decision on the decisions topic: p50 {}, p99 {}, max {}",
            ms(s50),
            ms(s99),
            ms(smax)
        );
        println!(
            "baseline produce -> consume of the same bytes: p50 {}, p99 {}, max {}",
            ms(b50),
            ms(b99),
            ms(bmax)
        );
        println!("ratio service/baseline: p50 {}, p99 {}", ratio(s50, b50), ratio(s99, b99));
        println!("target p99 <= 100 ms: {}", if s99 <= 100_000_000 { "met" } else { "NOT met" });
    }
}

//! Caps that hold: overspend and wrongful rejections of 32 concurrent loops against one user's
//! budget, admission by reservation against the binary decision (the same-run baseline), with
//! 1 and 3 ingress replicas, a fast fake provider and one with 2 s of latency, limits $2 and
//! $0.50. Every loop sends what Claude Code sends (`max_tokens` 32,000; a body of about 4 KB)
//! and the fake bills 1,000 input and 400 output tokens: $0.009 under the chain's catalog.
//!
//! - Before the loops, each replica serves 8 requests of another key on the same model (the
//!   model's history on the replica, which a live gateway has): without it the first 32
//!   requests would each reserve the 32,000 tokens asked for ($0.48).
//! - A loop stops at its first refusal, as Claude Code and the SDKs do with a final 402
//!   (a decision block, or a reservation refusal: `x-faregate-reservation: refused`), or at the
//!   run's deadline.
//! - Overspend: the ledger's exact spend minus the limit, in dollars, requests and percent.
//! - Wrongful rejection (issue 16): a refusal while the spend of the requests completed before
//!   it plus the reservations of the requests then in flight (their `x-faregate-reserved`) was
//!   below the limit minus that request's cost. "strict" counts requests in flight at their
//!   actual cost instead (a rejection caused by a reservation's overestimate is wrongful too).
//!   Each is split at 90 % of the limit (by the completed spend at the time).

// Times are measurements printed for people; money is Decimal throughout.
#![allow(clippy::float_arithmetic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faregate_core::clickhouse::ClickHouseConfig;
use faregate_fake_upstream::FakeConfig;
use faregate_tests::chain::{Chain, ChainSetup, KeySpec};
use faregate_tests::{kafka_config_for, unique};
use rust_decimal::Decimal;

const LOOPS: usize = 32;
const USAGE: &str = "input=1000,output=400";
/// 1,000 x $3 + 400 x $15 per million.
const COST: &str = "0.009";
const RUN_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
enum Answer {
    Served { reserved: Decimal },
    Refused,
    Blocked,
}

#[derive(Debug, Clone)]
struct Call {
    start: Instant,
    end: Instant,
    answer: Answer,
    /// The refusal's message.
    message: Option<String>,
}

fn body() -> serde_json::Value {
    serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 32000,
        "messages": [{"role": "user", "content": "x".repeat(4000)}]})
}

async fn call(chain: &Chain, url: &str, key: &KeySpec) -> Call {
    let start = Instant::now();
    let response = chain
        .http
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", &key.secret)
        .header("anthropic-version", "2023-06-01")
        .header("x-fake-usage", USAGE)
        .json(&body())
        .send()
        .await
        .expect("the ingress answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("the whole body");
    let answer = match status.as_u16() {
        200 => Answer::Served {
            reserved: headers
                .get("x-faregate-reserved")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(Decimal::ZERO),
        },
        402 if headers.contains_key("x-faregate-reservation") => Answer::Refused,
        402 => Answer::Blocked,
        other => panic!("unexpected status {other}"),
    };
    let message = (status.as_u16() != 200).then(|| {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    });
    Call { start, end: Instant::now(), answer, message }
}

pub struct Case {
    pub brokers: String,
    pub clickhouse_url: String,
    pub replicas: usize,
    pub latency: Duration,
    pub limit: Decimal,
    pub reservations: bool,
}

pub struct Outcome {
    pub served: u64,
    pub seconds: f64,
    pub ledger: Decimal,
    pub refused: usize,
    /// (below 90 % of the limit, above it), by the definition and strictly.
    pub wrongful: (usize, usize),
    pub strict: (usize, usize),
    /// The first refusal's message, and the completed spend then.
    pub first_refusal: Option<(Decimal, String)>,
}

pub async fn run(case: &Case) -> Outcome {
    let looper = KeySpec::new("caps", "agents", "runaway");
    let warm = KeySpec::new("caps", "agents", "warm");
    let mut setup = ChainSetup::new(
        kafka_config_for(&case.brokers),
        ClickHouseConfig {
            url: case.clickhouse_url.clone(),
            database: unique("caps"),
            ..ClickHouseConfig::default()
        },
    );
    setup.replicas = case.replicas;
    setup.budgets = vec![faregate_tests::chain::rolling_day_budget(
        "caps",
        "runaway",
        "runaway-day",
        "runaway day",
        &case.limit.to_string(),
    )];
    setup.keys = vec![looper.clone(), warm.clone()];
    setup.reservation.enabled = case.reservations;
    if let Ok(ms) = std::env::var("FAREGATE_OVERSPEND_SETTLE_MARGIN_MS") {
        setup.reservation.settle_margin_ms = ms.parse().expect("milliseconds");
    }
    if let Ok(ms) = std::env::var("FAREGATE_OVERSPEND_SETTLE_HOLD_MAX_MS") {
        setup.reservation.settle_hold_max_ms = ms.parse().expect("milliseconds");
    }
    if let Ok(factor) = std::env::var("FAREGATE_OVERSPEND_HISTORY_FACTOR") {
        setup.reservation.history_factor = factor.parse().expect("a whole factor");
    }
    setup.fake = FakeConfig { latency: case.latency, ..FakeConfig::default() };
    let chain = Arc::new(Chain::start(setup).await);
    // The budget's headroom reaches every replica before the loops start.
    let urls: Vec<String> = chain.ingresses.iter().map(|i| i.url.clone()).collect();
    for url in &urls {
        faregate_tests::chain::eventually("the budget's headroom at every replica", || async {
            let me = chain.me(url, &looper.secret).await?;
            (!me["budgets"].as_array()?.is_empty()).then_some(())
        })
        .await;
        let warmups: Vec<_> = (0..8).map(|_| call(&chain, url, &warm)).collect();
        for warmup in futures::future::join_all(warmups).await {
            assert!(matches!(warmup.answer, Answer::Served { .. }), "{warmup:?}");
        }
    }

    let calls = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    // What the first replica holds, sampled, to explain the first refusal.
    let samples = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let sampler = {
        let (chain, looper, samples, url) = (chain.clone(), looper.clone(), samples.clone(), urls[0].clone());
        tokio::spawn(async move {
            while started.elapsed() < RUN_DEADLINE {
                let me =
                    chain.http.get(format!("{url}/v1/me")).header("x-api-key", &looper.secret).send().await;
                if let Ok(me) = me
                    && let Ok(me) = me.json::<serde_json::Value>().await
                {
                    let b = &me["budgets"][0];
                    let line = format!(
                        "remaining {} reserved {} settled-unreflected {} share {}",
                        b["remaining_usd"], b["reserved_usd"], b["settled_unreflected_usd"], b["share_usd"]
                    );
                    samples.lock().unwrap().push((Instant::now(), line));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let loops: Vec<_> = (0..LOOPS)
        .map(|i| {
            let (chain, looper, calls, url) =
                (chain.clone(), looper.clone(), calls.clone(), urls[i % urls.len()].clone());
            tokio::spawn(async move {
                while started.elapsed() < RUN_DEADLINE {
                    let c = call(&chain, &url, &looper).await;
                    let served = matches!(c.answer, Answer::Served { .. });
                    calls.lock().unwrap().push(c);
                    if !served {
                        return;
                    }
                }
            })
        })
        .collect();
    for handle in loops {
        handle.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    sampler.abort();
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let calls = std::mem::take(&mut *calls.lock().unwrap());
    let served = calls.iter().filter(|c| matches!(c.answer, Answer::Served { .. })).count() as u64;
    let ledger = chain.ledger_settles("user = 'runaway' AND outcome = 'ok'", served).await;
    let cost: Decimal = COST.parse().unwrap();
    assert_eq!(ledger, Decimal::from(served) * cost, "ledger = served x price");

    let (mut wrongful, mut strict, mut refused) = ((0, 0), (0, 0), 0);
    let mut first_refusal: Option<(Instant, Decimal, String)> = None;
    for refusal in calls.iter().filter(|c| !matches!(c.answer, Answer::Served { .. })) {
        refused += 1;
        let t = refusal.end;
        let (mut done, mut reserved, mut in_flight) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        for c in &calls {
            let Answer::Served { reserved: r } = c.answer else { continue };
            if c.end <= t {
                done += cost;
            } else if c.start <= t {
                reserved += r;
                in_flight += cost;
            }
        }
        if first_refusal.as_ref().is_none_or(|(at, _, _)| t < *at) {
            first_refusal = Some((t, done, refusal.message.clone().unwrap_or_default()));
        }
        let high = done >= case.limit * Decimal::new(9, 1);
        let bump = |counts: &mut (usize, usize)| if high { counts.1 += 1 } else { counts.0 += 1 };
        if done + reserved < case.limit - cost {
            bump(&mut wrongful);
        }
        if done + in_flight < case.limit - cost {
            bump(&mut strict);
        }
    }
    if std::env::var("FAREGATE_OVERSPEND_TRACE").is_ok()
        && let Some((at, _, _)) = &first_refusal
    {
        let all = std::env::var("FAREGATE_OVERSPEND_TRACE").is_ok_and(|v| v == "all");
        let window = if all { Duration::from_secs(3600) } else { Duration::from_millis(300) };
        for (t, line) in
            samples.iter().filter(|(t, _)| *t <= *at + window).rev().take(if all { usize::MAX } else { 12 })
        {
            let done: Decimal = calls
                .iter()
                .filter(|c| matches!(c.answer, Answer::Served { .. }) && c.end <= *t)
                .map(|_| cost)
                .sum();
            let (ms, sign) =
                if *t <= *at { ((*at - *t).as_millis(), "-") } else { ((*t - *at).as_millis(), "+") };
            println!("    {sign}{ms} ms: completed ${done}; replica 0: {line}");
        }
    }
    let first_refusal = first_refusal.map(|(_, done, message)| (done, message));
    Outcome { served, seconds, ledger, refused, wrongful, strict, first_refusal }
}

pub fn report(case: &Case, outcome: &Outcome) {
    let cost: Decimal = COST.parse().unwrap();
    let over = outcome.ledger - case.limit;
    let mode = if case.reservations { "reservation" } else { "binary (baseline)" };
    println!(
        "{} replica(s), latency {:>4} ms, limit ${:<4} {mode:<17}: {:>5} served in {:5.1} s, ledger ${}, \
         overspend ${} = {} requests = {}%; refused {}, wrongful {} below 90% / {} above ({:.1}% of requests), \
         strict {} / {}",
        case.replicas,
        case.latency.as_millis(),
        case.limit,
        outcome.served,
        outcome.seconds,
        outcome.ledger,
        over,
        (over / cost).round_dp(1),
        (over * Decimal::from(100) / case.limit).round_dp(1),
        outcome.refused,
        outcome.wrongful.0,
        outcome.wrongful.1,
        outcome.wrongful.1 as f64 * 100.0 / (outcome.served as f64 + outcome.refused as f64).max(1.0),
        outcome.strict.0,
        outcome.strict.1,
    );
    if let Some((done, message)) = &outcome.first_refusal {
        println!("    first refusal at ${done} completed: {message}");
    }
}

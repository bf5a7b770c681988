//! Overspend benchmark: how fast a budget crossing blocks, and how much a runaway loop spends
//! past its limit, through the real chain (fake provider <- ingress replicas -> tansu ->
//! processor -> chDB front -> budget service -> decisions topic -> ingress), with 1 and with 3
//! ingress replicas. The chain runs in this process (tests/src/chain.rs), as `faregate up` does.
//!
//! For each replica count, with librdkafka's default `fetch.wait.max.ms` (500) and with 10 ms
//! (tansu answers a fetch only when that wait is over, so it sets the latency of every hop),
//! in the same run:
//! - baseline: the plain Kafka produce -> consume latency of one small message on the same broker
//!   (the project's producer settings, a consumer assigned to the partition), one at a time;
//! - event-to-decision: a request whose spend alone crosses its user's budget; from the moment
//!   its response is complete until the ingress holds the block (its decisions stream), for the
//!   first replica and for the last one to hold it; idle, and again **loaded**: while
//!   `LOOPS` loops of a user without a budget send as fast as they can through every replica
//!   (the load a runaway puts on the processor, the ledger and the budget service);
//! - runaway: 3 loops of one user (spread over the replicas) sending requests as fast as they can
//!   until blocked; overspend = the ledger's exact spend - the limit, in USD and in % of the
//!   limit, next to what the loops spent in one baseline Kafka hop and in one event-to-decision
//!   p50 (the overspend the measured latency predicts).
//!
//! - caps (caps.rs): admission by reservation against the binary decision, 32 loops, 1 and 3
//!   replicas, a fast and a 2 s provider, limits $2 and $0.50: overspend and wrongful rejections.
//!
//!   FAREGATE_TEST_KAFKA_BROKERS=... FAREGATE_TEST_CLICKHOUSE_URL=... target/release/overspend
//!   # FAREGATE_OVERSPEND_TRIALS (20 crossings per series), FAREGATE_OVERSPEND_LIMIT (USD, 2),
//!   # FAREGATE_OVERSPEND_PARTS (`latency,caps`: which parts run), _FETCH_WAITS_MS (500,10),
//!   # _LOAD_RPS (300: the load under which the loaded crossings are measured),
//!   # _SAMPLES=1 (print each crossing's time, in order),
//!   # _BATCH_WAIT_MS and _TOTALS_CACHE_MS (the processor's batch_max_wait_ms and
//!   # totals_cache_ms; their defaults);
//!   # for caps,
//!   # FAREGATE_OVERSPEND_REPLICAS (1,3: for both parts), _LATENCIES_MS (0,2000), _LIMITS (2,0.5); experiments:
//!   # _SETTLE_MARGIN_MS, _SETTLE_HOLD_MAX_MS and _HISTORY_FACTOR (the ingress's reservation settings), _TRACE=1
//!   # (what the first replica held before the first refusal, sampled from /v1/me);
//!   # RUST_LOG (the chain's logs as JSON lines, e.g. faregate_processor::pipeline=debug; for
//!   # every admission, settlement and release of the gateways' books with the records and
//!   # demand reports around them: faregate_ingress::reserve=trace,faregate_ingress::headroom=debug,
//!   # faregate_budget::service=debug)

// Latencies and ratios are measurements printed for people; money is Decimal throughout.
#![allow(clippy::float_arithmetic)]

mod caps;

use faregate_benches::{blocked_everywhere, env_or, follow_decisions, kafka_baseline, pct, sorted};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::event::Budget;
use faregate_processor::ProcessorConfig;
use faregate_tests::chain::{COLLECTOR_TOKEN, Chain, ChainSetup, KeySpec};
use faregate_tests::{kafka_config_for, unique};
use rust_decimal::Decimal;

const LOOPS: usize = 3;
/// A loop's request: about 1,000 input tokens at $3 per million (the chain's test catalog).
fn loop_request() -> (serde_json::Value, String, Decimal) {
    faregate_tests::chain::sized_request(1_000, 0)
}

/// A crossing request: about 10,000 input tokens and one output token, about $0.03, which is
/// its budget's whole limit: the gateway reserves exactly its cost, so it fits, and the spend
/// it leaves reaches the limit (a budget blocks at spent >= limit). With admission by
/// reservation a request cannot cross a budget by more than its estimate allows; one sized to
/// its usage crosses it exactly.
fn crossing_request() -> (serde_json::Value, String, Decimal) {
    faregate_tests::chain::sized_request(10_000, 1)
}
const MAX_LOOP_CALLS: u64 = 200_000;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (see the header of this file)"))
}

fn budget(user: &str, limit: &str) -> Budget {
    faregate_tests::chain::rolling_day_budget(
        "bench",
        user,
        &format!("{user}-day"),
        &format!("{user} day"),
        limit,
    )
}

async fn post(
    chain: &Chain,
    url: &str,
    key: &KeySpec,
    (body, usage, _): &(serde_json::Value, String, Decimal),
) -> reqwest::StatusCode {
    let response = chain
        .http
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", &key.secret)
        .header("anthropic-version", "2023-06-01")
        .header("x-fake-usage", usage)
        .json(body)
        .send()
        .await
        .expect("the ingress answers");
    let status = response.status();
    response.bytes().await.expect("the whole body");
    status
}

struct Runaway {
    calls: u64,
    seconds: f64,
    spent: Decimal,
}

async fn runaway(chain: &Arc<Chain>, key: &KeySpec) -> Runaway {
    let served = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let loops: Vec<_> = (0..LOOPS)
        .map(|i| {
            let (chain, key, served) = (chain.clone(), key.clone(), served.clone());
            tokio::spawn(async move {
                let url = chain.ingresses[i % chain.ingresses.len()].url.clone();
                let request = loop_request();
                while served.load(Ordering::Relaxed) < MAX_LOOP_CALLS {
                    match post(&chain, &url, &key, &request).await {
                        reqwest::StatusCode::OK => served.fetch_add(1, Ordering::Relaxed),
                        reqwest::StatusCode::PAYMENT_REQUIRED => return,
                        other => panic!("unexpected status {other}"),
                    };
                }
            })
        })
        .collect();
    for handle in loops {
        handle.await.unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    let calls = served.load(Ordering::SeqCst);
    let filter = format!("user = '{}' AND outcome = 'ok'", key.user.as_deref().unwrap());
    let spent = chain.ledger_settles(&filter, calls).await;
    assert_eq!(spent, Decimal::from(calls) * loop_request().2, "ledger = served x price");
    Runaway { calls, seconds, spent }
}

/// One crossing per key, one at a time, spread over the replicas: the times from each response
/// to the first replica and to every replica holding the block, sorted.
async fn crossings(
    chain: &Chain,
    keys: &[KeySpec],
    decisions: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, faregate_core::event::Decision, Instant)>,
) -> (Vec<std::time::Duration>, Vec<std::time::Duration>) {
    let replicas = chain.ingresses.len();
    let (mut first, mut last) = (Vec::new(), Vec::new());
    for (i, key) in keys.iter().enumerate() {
        let status = post(chain, &chain.ingresses[i % replicas].url, key, &crossing_request()).await;
        let done = Instant::now();
        assert_eq!(status, 200);
        let subject = format!("org=bench/user={}", key.user.as_deref().unwrap());
        let (at_first, at_last) = blocked_everywhere(decisions, &subject, replicas).await;
        first.push(at_first - done);
        last.push(at_last - done);
    }
    if std::env::var_os("FAREGATE_OVERSPEND_SAMPLES").is_some() {
        let ms: Vec<u128> = last.iter().map(|d| d.as_millis()).collect();
        println!("crossings in order, every replica (ms): {ms:?}");
    }
    (sorted(first), sorted(last))
}

struct Series<'a> {
    brokers: &'a str,
    clickhouse_url: &'a str,
    replicas: usize,
    trials: usize,
    limit: &'a str,
    /// `kafka.fetch_wait_max_ms` for every Kafka client of the chain and the baseline.
    fetch_wait_ms: u32,
    /// Requests per second of the load under which the loaded crossings are measured.
    load_rps: u32,
}

async fn series(
    Series { brokers, clickhouse_url, replicas, trials, limit, fetch_wait_ms, load_rps }: Series<'_>,
) {
    let crossing: Vec<KeySpec> =
        (0..trials).map(|i| KeySpec::new("bench", "agents", &format!("t{i}"))).collect();
    let loaded: Vec<KeySpec> =
        (0..trials).map(|i| KeySpec::new("bench", "agents", &format!("l{i}"))).collect();
    let looper = KeySpec::new("bench", "agents", "runaway");
    let mut kafka = kafka_config_for(brokers);
    kafka.fetch_wait_max_ms = fetch_wait_ms;
    kafka.background_fetch_wait_max_ms = kafka.background_fetch_wait_max_ms.max(fetch_wait_ms);
    let mut setup = ChainSetup::new(
        kafka,
        ClickHouseConfig {
            url: clickhouse_url.into(),
            database: unique("overspend"),
            ..ClickHouseConfig::default()
        },
    );
    setup.replicas = replicas;
    setup.processor.batch_max_wait_ms =
        env_or("FAREGATE_OVERSPEND_BATCH_WAIT_MS", ProcessorConfig::default().batch_max_wait_ms);
    setup.processor.totals_cache_ms =
        env_or("FAREGATE_OVERSPEND_TOTALS_CACHE_MS", ProcessorConfig::default().totals_cache_ms);
    setup.budgets = crossing
        .iter()
        .chain(&loaded)
        .map(|k| budget(k.user.as_deref().unwrap(), &crossing_request().2.to_string()))
        .collect();
    setup.budgets.push(budget("runaway", limit));
    setup.keys = crossing.iter().chain(&loaded).cloned().collect();
    setup.keys.push(looper.clone());
    setup.keys.push(KeySpec::new("bench", "agents", "load"));
    let setup_processor = setup.processor.clone();
    let chain = Arc::new(Chain::start(setup).await);
    // A crossing sent before the processor's group join completes waits for it (seconds on
    // tansu): that is start-up, not the path measured.
    chain.processor_owns_its_partitions().await;
    let urls: Vec<String> = chain.ingresses.iter().map(|i| i.url.clone()).collect();
    let mut decisions = follow_decisions(&chain.http, &urls, COLLECTOR_TOKEN);

    let baseline = kafka_baseline(&chain.kafka, 200).await;
    let (first, last) = crossings(&chain, &crossing, &mut decisions).await;

    // The same crossings again, under load: loops of a user no budget covers (nothing stops
    // them) through every replica, at `load_rps` in all (an open loop above what the processor
    // can write would make every latency grow without bound), until the crossings are measured.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaded_calls = Arc::new(AtomicU64::new(0));
    let per_loop = std::time::Duration::from_secs_f64(LOOPS as f64 / load_rps as f64);
    let load: Vec<_> = (0..LOOPS)
        .map(|i| {
            let (chain, stop, calls) = (chain.clone(), stop.clone(), loaded_calls.clone());
            tokio::spawn(async move {
                let url = chain.ingresses[i % chain.ingresses.len()].url.clone();
                let key = KeySpec::new("bench", "agents", "load");
                let mut pace = tokio::time::interval(per_loop);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    assert_eq!(post(&chain, &url, &key, &loop_request()).await, 200);
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let load_started = Instant::now();
    let (loaded_first, loaded_last) = crossings(&chain, &loaded, &mut decisions).await;
    stop.store(true, Ordering::Relaxed);
    for handle in load {
        handle.await.unwrap();
    }
    let load_rate = loaded_calls.load(Ordering::SeqCst) as f64 / load_started.elapsed().as_secs_f64();
    let run = runaway(&chain, &looper).await;

    let limit: Decimal = limit.parse().unwrap();
    let overspend = run.spent - limit;
    let rate = run.calls as f64 / run.seconds;
    let per_call: f64 = loop_request().2.to_string().parse().unwrap();
    let fetch_wait = if fetch_wait_ms == 500 {
        "500 (librdkafka's default)".to_string()
    } else {
        fetch_wait_ms.to_string()
    };
    println!(
        "\n== {replicas} ingress replica(s), fetch.wait.max.ms {fetch_wait}, {trials} crossings, {LOOPS} runaway loops, \
         processor batch wait {} ms, totals cache {} ms ==",
        setup_processor.batch_max_wait_ms, setup_processor.totals_cache_ms
    );
    println!(
        "baseline Kafka produce->consume, 1 message: p50 {:.2} ms, p99 {:.2} ms",
        pct(&baseline, 50),
        pct(&baseline, 99)
    );
    println!(
        "load while the loaded crossings ran: {load_rate:.0} requests/s ({LOOPS} loops paced to {load_rps}/s, no budget)"
    );
    for (what, samples) in [
        ("first replica", &first),
        ("every replica", &last),
        ("loaded, first replica", &loaded_first),
        ("loaded, every replica", &loaded_last),
    ] {
        println!(
            "event-to-decision ({what}): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({:.0} x / {:.0} x the Kafka p50 / p99)",
            pct(samples, 50),
            pct(samples, 99),
            pct(samples, 100),
            pct(samples, 50) / pct(&baseline, 50),
            pct(samples, 99) / pct(&baseline, 99),
        );
    }
    println!(
        "runaway: {} calls in {:.2} s ({rate:.0}/s, ${:.2}/s); ledger ${} against a ${limit} limit: \
         overspend ${overspend} = {}% of the limit",
        run.calls,
        run.seconds,
        rate * per_call,
        run.spent,
        (overspend * Decimal::from(100) / limit).round_dp(1),
    );
    println!(
        "  what the loops spend in one Kafka hop (baseline p50): ${:.4}; in one event-to-decision p50: ${:.2}",
        rate * per_call * pct(&baseline, 50) / 1000.0,
        rate * per_call * pct(&last, 50) / 1000.0,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The chain's own logs, as JSON lines among the results, when RUST_LOG asks for them (e.g.
    // `faregate_processor::pipeline=debug`: each batch's duplicate check, insert, totals read
    // and publish times, to see where the time of an event-to-decision goes).
    let _logs = std::env::var_os("RUST_LOG").map(|_| {
        let config = faregate_core::telemetry::TelemetryConfig {
            log_format: faregate_core::telemetry::LogFormat::Json,
            ..Default::default()
        };
        faregate_core::telemetry::init(&config, "overspend").expect("the log subscriber installs")
    });
    let brokers = env("FAREGATE_TEST_KAFKA_BROKERS");
    let clickhouse = env("FAREGATE_TEST_CLICKHOUSE_URL");
    let trials = env_or("FAREGATE_OVERSPEND_TRIALS", 20usize);
    let limit = env_or("FAREGATE_OVERSPEND_LIMIT", "2".to_string());
    let parts = env_or("FAREGATE_OVERSPEND_PARTS", "latency,caps".to_string());
    let list = |name: &str, default: &str| -> Vec<String> {
        env_or(name, default.to_string()).split(',').map(|s| s.trim().to_string()).collect()
    };
    if parts.contains("caps") {
        println!("\n== caps: {} loops, reservation vs binary decision (same run) ==", 32);
        for replicas in list("FAREGATE_OVERSPEND_REPLICAS", "1,3") {
            for latency_ms in list("FAREGATE_OVERSPEND_LATENCIES_MS", "0,2000") {
                for limit in list("FAREGATE_OVERSPEND_LIMITS", "2,0.5") {
                    for reservations in [false, true] {
                        let case = caps::Case {
                            brokers: brokers.clone(),
                            clickhouse_url: clickhouse.clone(),
                            replicas: replicas.parse().expect("a replica count"),
                            latency: std::time::Duration::from_millis(
                                latency_ms.parse().expect("milliseconds"),
                            ),
                            limit: limit.parse().expect("a decimal limit"),
                            reservations,
                        };
                        let outcome = caps::run(&case).await;
                        caps::report(&case, &outcome);
                    }
                }
            }
        }
    }
    if !parts.contains("latency") {
        return;
    }
    let load_rps = env_or("FAREGATE_OVERSPEND_LOAD_RPS", 300u32);
    let fetch_waits: Vec<u32> = env_or("FAREGATE_OVERSPEND_FETCH_WAITS_MS", "500,10".to_string())
        .split(',')
        .map(|s| s.trim().parse().expect("milliseconds"))
        .collect();
    for fetch_wait_ms in fetch_waits {
        for replicas in list("FAREGATE_OVERSPEND_REPLICAS", "1,3") {
            let replicas = replicas.parse().expect("a replica count");
            let (brokers, clickhouse_url, limit) = (&brokers, &clickhouse, &limit);
            series(Series { brokers, clickhouse_url, replicas, trials, limit, fetch_wait_ms, load_rps })
                .await;
        }
    }
}

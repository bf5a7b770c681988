//! Load harness: the collector's throughput (`POST /v1/usage`), in records acknowledged a
//! second, with one client and with many in the same run.
//!
//! A `202` means durable (every record of the batch appended to the spool and the spool synced),
//! and batches that arrive together share one sync (group commit), so many clients should
//! acknowledge far more records a second than one client alone, whose every batch waits for a
//! sync of its own. The ingress runs in this process (the library's `run_on` on a listener bound
//! to port 0) against a tansu of the run's own storing in memory (the broker's speed is not what
//! is measured: the acknowledgement does not wait for it). Series, each
//! FAREGATE_COLLECTOR_SECONDS (default 5) long, batches of FAREGATE_COLLECTOR_BATCH records
//! (default 500):
//! - one client (the same-run baseline);
//! - FAREGATE_COLLECTOR_CLIENTS clients at once (default 8).
//!
//! Prints records/s and batch latency p50/p99 for each, and the ratio of the two rates. Uses
//! only the public API and HTTP, so the same file builds against an older ingress for a
//! before/after comparison (binaries alternated).
//!
//!   cargo run --release -p faregate-benches --bin collector-load

// Rates and milliseconds are measurements printed for people; no money is computed here.
#![allow(clippy::float_arithmetic)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use faregate_benches::{env_or, fresh_topics};
use faregate_core::config::Secret;
use faregate_ingress::config::IngressConfig;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn batch(records: usize) -> Value {
    let now = chrono::Utc::now();
    let records: Vec<Value> = (0..records)
        .map(|i| {
            json!({"event_id": uuid::Uuid::now_v7(), "occurred_at": now, "org": "acme", "team": "infra",
                   "user": format!("user-{}", i % 50), "provider": "anthropic", "model": "claude-sonnet-4-5",
                   "tool": "CURSOR", "tokens": {"input": 1200 + i, "output": 300, "cache_read": 4000}})
        })
        .collect();
    json!({ "records": records })
}

/// One series: `clients` posting batches for `length`; returns (records acknowledged, batch
/// latencies in microseconds).
async fn series(url: &str, clients: usize, records: usize, length: Duration) -> (u64, Vec<u64>) {
    // Bodies are made before the clock starts: the client's JSON work is not measured.
    let per_client = 64;
    let bodies: Vec<Vec<u8>> =
        (0..clients * per_client).map(|_| serde_json::to_vec(&batch(records)).expect("json")).collect();
    let bodies = Arc::new(bodies);
    let deadline = Instant::now() + length;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (url, bodies) = (url.to_string(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut acknowledged, mut latencies) = (0u64, Vec::new());
            let mut n = 0;
            while Instant::now() < deadline {
                let body = bodies[c * per_client + n % per_client].clone();
                n += 1;
                let started = Instant::now();
                let response = client
                    .post(format!("{url}/v1/usage"))
                    .bearer_auth("bench-token")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("the collector answers");
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                assert_eq!(status, 202, "the collector refused a batch: {text}");
                latencies.push(started.elapsed().as_micros() as u64);
                acknowledged += records as u64;
            }
            (acknowledged, latencies)
        }));
    }
    let (mut total, mut latencies) = (0, Vec::new());
    for task in tasks {
        let (acknowledged, mut l) = task.await.expect("a client task");
        total += acknowledged;
        latencies.append(&mut l);
    }
    latencies.sort_unstable();
    (total, latencies)
}

fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = env_or("FAREGATE_COLLECTOR_SECONDS", 5);
    let records: usize = env_or("FAREGATE_COLLECTOR_BATCH", 500);
    let clients: usize = env_or("FAREGATE_COLLECTOR_CLIENTS", 8);
    assert!(seconds > 0 && records > 0 && clients > 0, "seconds, batch and clients must be above 0");
    let length = Duration::from_secs(seconds);

    let broker = faregate_tests::PrivateBroker::start_in_memory();
    let (kafka, _) = fresh_topics(&broker.brokers(), "collector", 100).await;
    let spool = tempfile::tempdir().expect("a spool directory");
    let config = IngressConfig {
        collector_token: Secret::new("bench-token"),
        spool_dir: spool.path().to_path_buf(),
        spool_max_bytes: 8 << 30,
        ..IngressConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let ingress =
        tokio::spawn(faregate_ingress::run_on(listener, config, kafka, ready.clone(), shutdown.clone()));
    let started = Instant::now();
    while !ready.load(std::sync::atomic::Ordering::Relaxed) {
        assert!(started.elapsed() < Duration::from_secs(60), "the ingress was not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    println!(
        "collector-load: batches of {records} records, {seconds} s a series, spool on {}",
        spool.path().display()
    );
    let mut rates = Vec::new();
    for n in [1, clients] {
        let (acknowledged, latencies) = series(&url, n, records, length).await;
        let rate = acknowledged as f64 / length.as_secs_f64();
        println!(
            "  {n:>3} client(s): {rate:>10.0} records/s acknowledged, batch p50 {:.2} ms, p99 {:.2} ms ({} batches)",
            quantile_ms(&latencies, 0.50),
            quantile_ms(&latencies, 0.99),
            latencies.len()
        );
        rates.push(rate);
    }
    println!("  {clients} clients / 1 client: {:.2}x", rates[1] / rates[0]);
    shutdown.cancel();
    ingress.await.expect("the ingress task").expect("the ingress stops cleanly");
}

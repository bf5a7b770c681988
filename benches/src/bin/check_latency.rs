//! Forward-auth latency: what `GET /v1/check` (docs/integrations.md) adds over the cheapest
//! answer the same listener gives, in one run.
//!
//! The gateway runs in this process on a runtime and thread of its own (one worker, as
//! `faregate ingress` runs per core), with a virtual key, `FAREGATE_CHECK_DECISIONS` decisions
//! of other subjects in its cache (10,000) and one of the key's own team (a warning, so the check
//! walks the covering scopes and answers with the decision's headers). A client on another
//! thread sends requests one at a time over one keep-alive connection (hyper's HTTP/1 client),
//! alternating in rounds between:
//! - **baseline**: `GET /v1/nothing`, the listener's fallback (a small JSON 404: routing,
//!   one allocation of a body, no lookup);
//! - **check**: `GET /v1/check` with the key and `x-original-uri: /v1/messages` (allowed).
//!
//! It prints p50/p99/p999 of each, the check's added latency (check minus baseline at the
//! same percentile) and the target, p99 added at most 0.2 ms (issue 17).
//!
//!   cargo run --release -p faregate-benches --bin check-latency
//!   # FAREGATE_CHECK_REQUESTS (per series, 20,000), FAREGATE_CHECK_DECISIONS (10,000)

// Latencies and ratios are measurements printed for people.
#![allow(clippy::float_arithmetic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use faregate_benches::{env_or, sorted};
use faregate_core::config::Secret;
use faregate_core::event::{ConfigEntity, DecisionState};
use faregate_ingress::Gateway;
use faregate_ingress::config::IngressConfig;
use faregate_ingress::decisions::DecisionCache;
use faregate_ingress::emitter::MemorySink;
use faregate_ingress::keys::KeyStore;
use faregate_ingress::table::Freshness;
use faregate_tests::{budget_block, config_record, virtual_key};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "fgk_bench_check_secret";

fn gateway(decisions: usize) -> Arc<Gateway> {
    let config = IngressConfig {
        listen: "127.0.0.1:0".into(),
        collector_token: Secret::new("bench-collector-token"),
        enforcement_stale_after_secs: 0,
        ..IngressConfig::default()
    };
    let keys = Arc::new(KeyStore::default());
    let key = virtual_key("k-bench", SECRET, "acme", Some("infra"), Some("ana"));
    keys.apply("key/k-bench", Some(&config_record(ConfigEntity::VirtualKey(key))));
    let cache = Arc::new(DecisionCache::default());
    for i in 0..decisions {
        let subject = format!("org=acme/team=t{i}");
        cache.apply(&subject, Some(budget_block(&subject)));
    }
    let mut warn = budget_block("org=acme/team=infra");
    warn.state = DecisionState::Warn;
    cache.apply("org=acme/team=infra", Some(warn));
    let freshness = Arc::new(Freshness::default());
    freshness.set_caught_up();
    Arc::new(Gateway {
        reserver: None,
        client: faregate_ingress::gateway::upstream_client(&config).expect("an upstream client"),
        enforcement: Arc::new(faregate_ingress::enforcement::Enforcement::new(0)),
        config: Arc::new(config),
        keys,
        decisions: cache,
        decisions_freshness: freshness,
        headroom: Arc::default(),
        limiter: Arc::default(),
        sink: Arc::new(MemorySink::default()),
    })
}

/// One request's latency on `sender`, checking the status.
async fn timed(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    request: hyper::Request<Empty<Bytes>>,
    want: u16,
) -> Duration {
    let started = Instant::now();
    let response = sender.send_request(request).await.expect("the gateway answers");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("the whole body");
    let took = started.elapsed();
    assert_eq!(status, want, "unexpected status");
    took
}

fn main() {
    let requests: usize = env_or("FAREGATE_CHECK_REQUESTS", 20_000);
    let decisions: usize = env_or("FAREGATE_CHECK_DECISIONS", 10_000);
    let gw = gateway(decisions);
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    std_listener.set_nonblocking(true).expect("non-blocking");
    let addr = std_listener.local_addr().expect("its address");
    let stop = CancellationToken::new();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("a tokio listener");
                faregate_ingress::serve(gw, listener, stop).await
            })
        })
    };
    let client = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let (baseline, check) = client.block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("a connection");
        stream.set_nodelay(true).expect("nodelay");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP/1");
        tokio::spawn(connection);
        let baseline_request = || {
            hyper::Request::get("/v1/nothing").header("host", "bench").body(Empty::new()).expect("a request")
        };
        let check_request = || {
            hyper::Request::get("/v1/check")
                .header("host", "bench")
                .header("x-api-key", SECRET)
                .header("x-original-uri", "/v1/messages")
                .body(Empty::new())
                .expect("a request")
        };
        // Warm up both paths.
        for _ in 0..1_000 {
            timed(&mut sender, baseline_request(), 404).await;
            timed(&mut sender, check_request(), 200).await;
        }
        let (mut baseline, mut check) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
        let round = 500;
        while baseline.len() < requests {
            for _ in 0..round {
                baseline.push(timed(&mut sender, baseline_request(), 404).await);
            }
            for _ in 0..round {
                check.push(timed(&mut sender, check_request(), 200).await);
            }
        }
        (sorted(baseline), sorted(check))
    });
    stop.cancel();
    server.join().expect("the server thread").expect("the server stops cleanly");
    // Microseconds at a rank in thousandths (500: the median).
    let us = |samples: &[Duration], per_mille: usize| {
        let rank = (samples.len() * per_mille).div_ceil(1000).max(1);
        samples[rank - 1].as_secs_f64() * 1e6
    };
    println!(
        "\n== /v1/check against the listener's fallback, {} requests each, {decisions} decisions cached ==",
        baseline.len()
    );
    for (name, samples) in [("baseline (404 fallback)", &baseline), ("check (allowed, warn)", &check)] {
        println!(
            "{name:<24} p50 {:>6.1} µs  p99 {:>6.1} µs  p999 {:>6.1} µs",
            us(samples, 500),
            us(samples, 990),
            us(samples, 999)
        );
    }
    let added99 = us(&check, 990) - us(&baseline, 990);
    println!(
        "added by the check: p50 {:.1} µs, p99 {:.1} µs ({:.2} x the baseline p99); target p99 <= 200 µs: {}",
        us(&check, 500) - us(&baseline, 500),
        added99,
        us(&check, 990) / us(&baseline, 990),
        if added99 <= 200.0 { "met" } else { "NOT met" }
    );
}

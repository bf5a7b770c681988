//! The ops endpoint every service serves: `/ready` is 503 naming what it waits for until every
//! component is ready, `/health` answers, `/metrics` renders Prometheus text.

use std::sync::atomic::Ordering;

use faregate_core::telemetry::{Readiness, ops_router, serve};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn readiness_waits_for_every_component() {
    let readiness = Readiness::default();
    let processor = readiness.component("processor");
    let decisions = readiness.component("decision-cache");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, ops_router(readiness), shutdown.clone()));
    let http = reqwest::Client::new();

    let response = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.text().await.unwrap(), "waiting for: processor, decision-cache\n");

    processor.store(true, Ordering::Release);
    let response = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "waiting for: decision-cache\n");

    decisions.store(true, Ordering::Release);
    assert_eq!(http.get(format!("{base}/ready")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}/health")).send().await.unwrap().status(), 200);

    metrics::counter!("faregate_test_events_total", "kind" => "ops").increment(3);
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("faregate_test_events_total{kind=\"ops\"} 3"), "{metrics}");

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

//! `faregate status` answers in bounded time, whatever is down, and names each dead part once
//! (needs no stack): a broker, a ClickHouse and two ingresses that accept connections and never
//! answer (a listener of the test's own that never accepts, like a SIGSTOPped process), and
//! ones that refuse them. The hung pair once made status wait for ever; a refused broker took 15 s and
//! named three problems.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `faregate status --format json` with only the broker and ClickHouse addresses configured:
/// (exit code, report, how long it took). Fails the test past `deadline`.
async fn status(
    brokers: &str,
    clickhouse: &str,
    ingress: &[String],
    deadline: Duration,
) -> (i32, Value, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("faregate.toml");
    std::fs::write(
        &config,
        format!("[kafka]\nbrokers = \"{brokers}\"\n[clickhouse]\nurl = \"{clickhouse}\"\n"),
    )
    .unwrap();
    let start = Instant::now();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_faregate"))
        .arg("--config")
        .arg(&config)
        .args(["status", "--format", "json"])
        .args(ingress.iter().flat_map(|url| ["--ingress", url.as_str()]))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(deadline, output)
        .await
        .unwrap_or_else(|_| panic!("faregate status did not answer within {deadline:?}"))
        .expect("faregate status runs");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code().expect("an exit code"), report, start.elapsed())
}

fn causes(report: &Value) -> Vec<&str> {
    report["causes"].as_array().expect("causes").iter().map(|c| c.as_str().unwrap()).collect()
}

/// An address nothing listens on: a listener's port, closed.
fn refused() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_hung_broker_clickhouse_and_ingresses_are_named_within_the_probes_bounds() {
    // Connections complete in the kernel's backlog; nothing ever answers.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hung.local_addr().unwrap();
    let ingresses = [format!("http://{addr}"), format!("http://{addr}/metrics")];
    let (code, report, took) =
        status(&addr.to_string(), &format!("http://{addr}"), &ingresses, Duration::from_secs(40)).await;
    assert_eq!(code, 2, "{report}");
    assert_eq!(
        causes(&report),
        ["broker_unreachable", "ledger_unreachable", "ingress_unreachable", "ingress_unreachable"],
        "{report}"
    );
    assert_eq!(report["ingress"][0]["url"], ingresses[0].as_str(), "in the order given: {report}");
    assert!(took < Duration::from_secs(15), "status took {took:?}");
    assert_eq!(report["broker"]["reachable"], false, "{report}");
    assert!(report["groups"][0]["error"].as_str().unwrap().starts_with("not asked"), "{report}");
    assert!(report["problems"][1].as_str().unwrap().contains("no answer within 10s"), "{report}");
    drop(hung);
}

#[tokio::test]
async fn a_refused_broker_is_one_problem_at_once() {
    let (code, report, took) =
        status(&refused(), &format!("http://{}", refused()), &[], Duration::from_secs(30)).await;
    assert_eq!(code, 2, "{report}");
    assert_eq!(causes(&report), ["broker_unreachable", "ledger_unreachable"], "{report}");
    assert!(took < Duration::from_secs(3), "status took {took:?}");
    let problems = report["problems"].as_array().unwrap();
    assert!(problems[0].as_str().unwrap().contains("no broker accepts a connection"), "{report}");
}

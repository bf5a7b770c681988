//! `faregate up --demo` as a user runs it, against the shared test stack with topics and a
//! database of its own: the simulated traffic reaches the ledger from every tool, the runaway
//! agent's daily budget stops it at the gateway (the ledger holds the refused request, and the
//! live view shows the refusal with the gateway's message, and the block if one was decided),
//! and SIGTERM drains and stops everything cleanly.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use faregate_tests::{clickhouse_config, kafka_config, unique};
use rust_decimal::Decimal;

const DEADLINE: Duration = Duration::from_secs(240);

#[test]
fn the_demo_meters_every_tool_and_blocks_the_runaway_agent() {
    let kafka = kafka_config();
    let clickhouse = clickhouse_config();
    let spool = tempfile::tempdir().unwrap();
    let t = &kafka.topics;
    let mut command = Command::new(env!("CARGO_BIN_EXE_faregate"));
    command.args(["up", "--demo"]).env_remove("FAREGATE_CONFIG").env_remove("RUST_LOG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FAREGATE__")) {
        command.env_remove(key);
    }
    let mut child = command
        .env("FAREGATE__KAFKA__BROKERS", &kafka.brokers)
        .env("FAREGATE__KAFKA__TOPICS__USAGE", &t.usage)
        .env("FAREGATE__KAFKA__TOPICS__SPEND", &t.spend)
        .env("FAREGATE__KAFKA__TOPICS__DECISIONS", &t.decisions)
        .env("FAREGATE__KAFKA__TOPICS__CONFIG", &t.config)
        .env("FAREGATE__KAFKA__TOPICS__DLQ", &t.dlq)
        .env("FAREGATE__KAFKA__TOPICS__ALERTS", &t.alerts)
        .env("FAREGATE__KAFKA__TOPICS__HEARTBEATS", &t.heartbeats)
        .env("FAREGATE__KAFKA__TOPICS__HEADROOM", &t.headroom)
        .env("FAREGATE__KAFKA__TOPICS__PARTITIONS", "1")
        .env("FAREGATE__CLICKHOUSE__URL", &clickhouse.url)
        .env("FAREGATE__CLICKHOUSE__DATABASE", &clickhouse.database)
        .env("FAREGATE__INGRESS__LISTEN", "127.0.0.1:0")
        .env("FAREGATE__INGRESS__SPOOL_DIR", spool.path())
        .env("FAREGATE__TELEMETRY__METRICS_LISTEN", "127.0.0.1:0")
        .env("FAREGATE__PROCESSOR__GROUP_ID", unique("processor"))
        .env("FAREGATE__PROCESSOR__INSTANCE_ID", "processor-0")
        .env("FAREGATE__BUDGET__GROUP_ID", unique("budget"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("faregate up --demo starts");

    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let start = Instant::now();
    // The gateway stops the runaway agent: by reservation before its spend crosses $5 (a refused
    // request, outcome blocked, in the ledger), or by the budget's BLOCK decision if its last
    // requests cost more than reserved (the live view then shows the block).
    let client = clickhouse.client();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let query = |sql: &'static str| runtime.block_on(client.query(sql).fetch_one::<u64>()).unwrap_or(0);
    let mut output = Vec::new();
    loop {
        let refused =
            query("SELECT count() FROM usage_ledger WHERE user = 'ci-bot' AND outcome = 'blocked'") > 0;
        if refused {
            break;
        }
        let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
        if left.is_zero() {
            let _ = child.kill();
            panic!("the runaway agent was not refused within {DEADLINE:?}; output:\n{}", output.join("\n"));
        }
        // Wait for the next frame (a second), keeping what the view printed for a failure.
        match received.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                if line.trim_start().starts_with("BLOCK org=acme/user=ci-bot") {
                    assert!(line.contains("(ci-bot-daily)") && line.contains("of $5.00"), "{line}");
                }
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("faregate up --demo stopped:\n{}", output.join("\n"))
            }
        }
    }

    // The live view says so: the refusal in its log (the cast saw the gateway's 402) and in its
    // refusals' section, whether or not a block decision was ever published.
    let shown = |output: &[String]| {
        output.iter().any(|line| line.contains("REFUSED acme/ci-bot: "))
            && output.iter().any(|line| {
                line.trim_start().starts_with("acme/ci-bot: ") && line.contains(" refused; the latest: ")
            })
    };
    while !shown(&output) {
        let left = (DEADLINE + Duration::from_secs(30)).checked_sub(start.elapsed()).unwrap_or_default();
        match received.recv_timeout(left) {
            Ok(line) => output.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the live view did not show the runaway's refusal; output:\n{}", output.join("\n"))
            }
        }
    }

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE + Duration::from_secs(60), "faregate did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    assert!(exit.success(), "faregate up --demo exited with {exit}");

    let spent: String = runtime
        .block_on(
            client
                .query("SELECT toString(sum(ifNull(cost_total, 0))) FROM usage_ledger WHERE user = 'ci-bot'")
                .fetch_one(),
        )
        .unwrap();
    // Stopped near its $5: below it by less than a few reservations, above it by less than one
    // request (one runaway request costs under $1 at Opus prices).
    let spent: Decimal = spent.parse().unwrap();
    assert!(spent >= Decimal::from(3) && spent < Decimal::from(6), "the agent spent about its $5: {spent}");
    let tools: Vec<String> = runtime
        .block_on(client.query("SELECT DISTINCT tool FROM usage_ledger ORDER BY tool").fetch_all())
        .unwrap();
    assert_eq!(tools, ["claude-code", "codex", "sdk"]);
    assert!(query("SELECT uniqExact(user) FROM usage_ledger") >= 5, "several simulated developers");
    assert_eq!(query("SELECT count() FROM usage_ledger WHERE pricing_status = 'unpriced'"), 0);
}

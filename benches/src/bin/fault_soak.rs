//! The fault soak (issue 15): `faregate ingress`, `faregate processor` and `faregate budget` as
//! separate processes on a private tansu (sqlite) and ClickHouse front, a steady load through the
//! gateway (fake provider) and the collector with random token counts, and rounds of faults
//! cycling through SIGKILL of each service, SIGKILL of the broker, the ClickHouse front frozen
//! (SIGSTOP) then thawed, the front killed, and quick double restarts. After every round and at
//! the end it checks the ledger (every acknowledged record exactly once in the raw rows, every
//! cost equal to a hand-priced oracle, every rollup equal to the ledger), that every partition
//! is owned again and that a crossed budget blocks at the gateway; it prints a table per round
//! and exits 1 on any lost or doubled record, wrong cost or recovery over the limit. The engine
//! is `faregate_tests::soak`; the CI test `services/faregate/tests/soak.rs` runs it shorter.
//!
//!   cargo build --release -p faregate -p faregate-benches --bin faregate --bin fault-soak
//!   source deploy/local/lib.sh
//!   FAREGATE_TEST_TANSU=$TANSU_BIN FAREGATE_TEST_CHFRONT_PYTHON=$(chfront_venv)/bin/python \
//!     FAREGATE_TEST_CHFRONT_DIR=$CHFRONT_DIR target/release/fault-soak
//!
//! Settings: FAREGATE_SOAK_ROUNDS (10), FAREGATE_SOAK_FREEZE_SECS (30: how long the front stays
//! frozen), FAREGATE_SOAK_ACKS (2000 acknowledgements between faults), FAREGATE_SOAK_FAULTS
//! (cycle through these faults only, comma-separated as the table names them, e.g.
//! `kill -9 clickhouse,kill -9 processor`), FAREGATE_BIN (the `faregate` binary; default:
//! beside this one).

use std::time::Duration;

use faregate_benches::{env_or, faregate_bin};
use faregate_tests::soak::{Fault, SoakSettings, run};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_or("FAREGATE_SOAK_ROUNDS", 10usize);
    let faults = match std::env::var("FAREGATE_SOAK_FAULTS") {
        Err(_) => Fault::rounds(rounds),
        Ok(names) => {
            let chosen: Vec<Fault> = names
                .split(',')
                .map(|name| {
                    let name = name.trim();
                    Fault::CYCLE.into_iter().find(|f| f.to_string() == name).unwrap_or_else(|| {
                        let known: Vec<String> = Fault::CYCLE.iter().map(Fault::to_string).collect();
                        eprintln!(
                            "FAREGATE_SOAK_FAULTS: no fault is named {name:?}; the faults: {}",
                            known.join(", ")
                        );
                        std::process::exit(2)
                    })
                })
                .collect();
            chosen.into_iter().cycle().take(rounds).collect()
        }
    };
    let mut settings = SoakSettings::new(faregate_bin(), faults);
    settings.freeze = Duration::from_secs(env_or("FAREGATE_SOAK_FREEZE_SECS", 30u64));
    settings.acks_per_round = env_or("FAREGATE_SOAK_ACKS", settings.acks_per_round);
    let limit = settings.recovery_limit;
    let report = run(settings).await;
    report.print();
    let failures = report.failures(limit);
    if !failures.is_empty() {
        eprintln!("\nFAILED:");
        for failure in &failures {
            eprintln!("- {failure}");
        }
        std::process::exit(1);
    }
    println!("passed: nothing lost, nothing doubled, every recovery and block within {limit:?}");
}

//! The fault soak, short (CI): the engine of `faregate-benches`' `fault-soak`
//! (`faregate_tests::soak`) with one round per state `faregate status` must tell apart, a 5 s
//! freeze and fewer acknowledgements between faults. The services run as `faregate` processes
//! (this package's binary); see docs/benchmarks.md for the long run and what each check
//! asserts. The rounds: SIGKILL of the ingress (a collector 202 waits for the spool's sync), of
//! the processor, of the budget service and of the broker, the ClickHouse front frozen and
//! killed (in the middle of an insert it can keep the ledger's rows without a rollup view's: the
//! processor rebuilds the rollups of a write it retried, and the round checks every rollup
//! against the ledger), and the processor's double restart; in each, status must name the fault
//! while it holds and say live after the recovery.

use std::time::Duration;

use faregate_tests::soak::stack::Role;
use faregate_tests::soak::{Fault, SoakSettings, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_usage_is_metered_once_across_rounds_of_faults() {
    let faults = vec![
        Fault::Kill(Role::Ingress),
        Fault::Kill(Role::Processor),
        Fault::Kill(Role::Budget),
        Fault::KillBroker,
        Fault::FreezeClickHouse,
        Fault::KillClickHouse,
        Fault::DoubleRestart(Role::Processor),
    ];
    let mut settings = SoakSettings::new(env!("CARGO_BIN_EXE_faregate").into(), faults);
    settings.freeze = Duration::from_secs(5);
    settings.acks_per_round = 600;
    let limit = settings.recovery_limit;
    let report = run(settings).await;
    report.print();
    let failures = report.failures(limit);
    assert!(failures.is_empty(), "the soak failed (logs kept):\n{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&report.logs);
}

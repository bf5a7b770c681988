//! Faults through the whole chain while the official SDKs send traffic: the processor is
//! aborted mid-run twice (no drain, no commit), the broker (a private tansu) is killed and
//! restarted, and the ClickHouse front (a private one) is stopped for a while and started
//! again. Afterwards the ledger holds every request the fake provider served exactly once, and
//! its exact cost sum equals the served usage priced by hand; the spend the budget service
//! publishes for the user (a rolling day's `spent`, from the processor's spend totals, most of
//! them advanced in memory: `processor.totals_cache_ms`) equals that sum exactly; every service
//! is still running.
//!
//! Faults are triggered by progress (SDK calls made, ledger rows), never by timers.
//! services/faregate/tests/faults.rs proves the same for the processor alone (as a process,
//! killed with SIGKILL) with events produced directly; this test adds the ingress, its spool
//! and the budget service, and real clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use faregate_core::clickhouse::ClickHouseConfig;
use faregate_tests::chain::{
    Chain, ChainSetup, KeySpec, eventually, rolling_day_budget, sdk_clients, served_tokens,
};
use faregate_tests::{PrivateBroker, PrivateClickHouse, hand_priced, kafka_config_for, unique};
use rust_decimal::Decimal;
use tokio::io::AsyncBufReadExt;

/// Rounds of four SDK calls (two Anthropic, two OpenAI).
const ROUNDS: usize = 500;
const CALLS: u64 = 4 * ROUNDS as u64;

async fn until_rows(chain: &Chain, rows: u64) {
    eventually(&format!("{rows} ledger rows"), || async {
        chain.ledger("").await.filter(|(n, _)| *n >= rows).map(|_| ())
    })
    .await;
}

/// Faults are meant to land while the SDK still sends: say how far it was.
fn progress(fault: &str, calls: &AtomicUsize) {
    eprintln!("{fault} after {} of {CALLS} SDK calls", calls.load(Ordering::SeqCst));
}

async fn until_calls(calls: &AtomicUsize, at_least: usize) {
    eventually(&format!("{at_least} SDK calls"), || async {
        (calls.load(Ordering::SeqCst) >= at_least).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_lost_or_doubled_across_processor_kills_broker_and_clickhouse_restarts() {
    let mut broker = PrivateBroker::start();
    let mut front = PrivateClickHouse::start();
    let ana = KeySpec::new("acme", "infra", "ana");
    let clickhouse =
        ClickHouseConfig { url: front.url(), database: unique("e2e"), ..ClickHouseConfig::default() };
    let mut setup = ChainSetup::new(kafka_config_for(&broker.brokers()), clickhouse);
    setup.keys = vec![ana.clone()];
    // Far above what the run spends: it only makes the budget service publish ana's spend.
    setup.budgets = vec![rolling_day_budget("acme", "ana", "ana-day", "Ana daily", "1000000")];
    let mut chain = Chain::start(setup).await;

    let mut sdk = sdk_clients(&[chain.url()], &ana.secret, "mixed");
    sdk.env("COUNT", ROUNDS.to_string()).stdout(std::process::Stdio::piped());
    let mut sdk = sdk.spawn().expect("python runs");
    let calls = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stdout, calls) = (sdk.stdout.take().unwrap(), calls.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(_)) = lines.next_line().await {
                calls.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    until_calls(&calls, 300).await;
    until_rows(&chain, 20).await;
    progress("processor killed", &calls);
    chain.kill_processor().await;
    chain.start_processor();

    until_calls(&calls, 700).await;
    progress("broker restarted", &calls);
    broker.restart();

    until_calls(&calls, 1_100).await;
    progress("clickhouse stopped", &calls);
    front.stop();
    // The outage lasts 150 SDK calls (or to the end of the run, if it is that close).
    until_calls(&calls, (calls.load(Ordering::SeqCst) + 150).min(CALLS as usize)).await;
    front.resume();

    until_calls(&calls, 1_700).await;
    progress("processor killed", &calls);
    chain.kill_processor().await;
    chain.start_processor();

    let status = sdk.wait().await.unwrap();
    reader.await.unwrap();
    assert!(status.success(), "the SDK run failed");
    assert_eq!(calls.load(Ordering::SeqCst), CALLS as usize, "every SDK call succeeded");

    let served = chain.fake.requests();
    let oracle: Decimal = served.iter().map(|r| hand_priced(&served_tokens(r))).sum();
    let served = u64::try_from(served.len()).unwrap();
    assert!(served >= CALLS, "the provider served every call (SDK retries included)");
    let sum = chain.ledger_settles("", served).await;
    let (rows, distinct): (u64, u64) = chain
        .clickhouse
        .client()
        .query("SELECT count(), uniqExact(event_id) FROM usage_ledger")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(distinct, served, "every served request is in the ledger");
    assert_eq!(rows, served, "none twice");
    assert_eq!(sum, oracle, "the exact cost sum equals the served usage priced by hand");
    // What budgets act on: the spend totals published across the kills and outages.
    let spent = eventually("the budget's published spend to equal the ledger's", || async {
        let me = chain.me(chain.url(), &ana.secret).await?;
        let spent: Decimal = me["budgets"][0]["spent_usd"].as_str()?.parse().ok()?;
        (spent == sum).then_some(spent)
    })
    .await;
    assert_eq!(spent, oracle);
    chain.assert_running();
}

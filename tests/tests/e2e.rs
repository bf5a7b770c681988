//! End to end through the whole chain, driven by the official anthropic and openai SDKs: the
//! ingress (real HTTP, the fake provider upstream), the shared tansu broker, the processor, the
//! chDB ClickHouse front, the budget service, and decisions back to the ingress.
//!
//! - Every request the provider served is in the ledger once, priced to the last decimal as the
//!   provider's reported usage priced by hand.
//! - A budget crossing blocks the SDK client: one attempt, the budget's message.
//! - A runaway loop is blocked, its overspend is measured and printed, and the client is served
//!   again once the budget's window resets (the budget service runs on a manual clock).
//!
//! The oracle is always what the fake provider recorded serving, never what the chain reports.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use faregate_budget::{ManualClock, SystemClock};
use faregate_core::event::{Budget, DecisionState, TokenCounts};
use faregate_tests::chain::{self, Chain, ChainSetup, KeySpec, run_sdk_clients, sdk_clients, served_tokens};
use faregate_tests::{clickhouse_config, hand_priced, kafka_config};
use rust_decimal::Decimal;

async fn chain(keys: Vec<KeySpec>, budgets: Vec<Budget>, clock: Arc<dyn faregate_budget::Clock>) -> Chain {
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    (setup.keys, setup.budgets, setup.budget_clock) = (keys, budgets, clock);
    Chain::start(setup).await
}

fn sum_tokens(all: impl Iterator<Item = TokenCounts>) -> [i64; 6] {
    all.fold([0; 6], |mut sum, t| {
        for (slot, n) in sum.iter_mut().zip([
            t.input,
            t.output,
            t.cache_read,
            t.cache_write_5m,
            t.cache_write_1h,
            t.reasoning,
        ]) {
            *slot += n;
        }
        sum
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_traffic_is_in_the_ledger_priced_by_hand_to_the_last_decimal() {
    let ana = KeySpec::new("acme", "infra", "ana");
    let chain = chain(vec![ana.clone()], vec![], Arc::new(SystemClock)).await;
    let mut sdk = sdk_clients(&[chain.url()], &ana.secret, "mixed");
    sdk.env("COUNT", "10");
    let calls = run_sdk_clients(sdk).await;
    assert_eq!(calls.len(), 40, "{calls:?}");

    let served = chain.fake.requests();
    assert_eq!(served.len(), 40, "each SDK call reached the provider once");
    let oracle: Decimal = served.iter().map(|r| hand_priced(&served_tokens(r))).sum();
    let ledger = chain.ledger_settles("outcome = 'ok'", 40).await;
    assert_eq!(ledger, oracle, "the ledger's exact total is the served usage priced by hand");
    assert_eq!(chain.ledger("").await.unwrap().0, 40, "nothing else, nothing twice");

    let (input, output, cache_read, w5, w1h, reasoning): (u64, u64, u64, u64, u64, u64) = chain
        .clickhouse
        .client()
        .query(
            "SELECT sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_5m_tokens), \
             sum(cache_write_1h_tokens), sum(reasoning_tokens) FROM usage_ledger",
        )
        .fetch_one()
        .await
        .unwrap();
    let [e_input, e_output, e_read, e_w5, e_w1h, e_reasoning] =
        sum_tokens(served.iter().map(served_tokens)).map(|n| u64::try_from(n).unwrap());
    assert_eq!((input, cache_read, w5, w1h), (e_input, e_read, e_w5, e_w1h), "class by class");
    // Anthropic bills thinking as output (no separate count): only the sum is the provider's.
    assert_eq!(output + reasoning, e_output + e_reasoning);
    let unpriced: u64 = chain
        .clickhouse
        .client()
        .query("SELECT count() FROM usage_ledger WHERE pricing_status = 'unpriced'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(unpriced, 0);
    chain.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_crossing_blocks_the_sdk_after_one_attempt_with_the_budget_message() {
    let bo = KeySpec::new("acme", "infra", "bo");
    let budget = chain::rolling_day_budget("acme", "bo", "bo-daily", "Bo daily", "0.05");
    // The decision's block, alone: with admission by reservation the gateway would refuse the
    // second call itself while the first one's cost is not yet in the headroom it holds
    // (docs/ARCHITECTURE.md, "Admission by reservation"; tested in ingress.rs and measured by
    // the overspend bench).
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    (setup.keys, setup.budgets) = (vec![bo.clone()], vec![budget.clone()]);
    setup.reservation.enabled = false;
    let chain = Chain::start(setup).await;
    // $0.03 a call (10,000 input tokens at $3 per million): the second call crosses $0.05.
    for _ in 0..2 {
        let mut sdk = sdk_clients(&[chain.url()], &bo.secret, "one");
        sdk.env("FAKE_USAGE", "input=10000,output=0");
        assert_eq!(run_sdk_clients(sdk).await.len(), 1);
    }
    let decision = chain.decision_everywhere(&budget.scope.key(), DecisionState::Block).await;
    assert_eq!(decision.spent_usd.0, "0.06".parse::<Decimal>().unwrap(), "{decision:?}");

    let calls = run_sdk_clients(sdk_clients(&[chain.url()], &bo.secret, "blocked")).await;
    assert_eq!(
        (calls[0]["raised"].as_str(), calls[0]["status"].as_i64()),
        (Some("PaymentRequiredError"), Some(402))
    );
    assert_eq!(
        (calls[1]["raised"].as_str(), calls[1]["status"].as_i64()),
        (Some("RateLimitError"), Some(429))
    );
    for call in &calls {
        let message = call["message"].as_str().unwrap();
        assert!(message.contains("Bo daily") && message.contains("$0.06 spent of $0.05"), "{message}");
    }
    assert_eq!(chain.fake.requests().len(), 2, "no blocked call reached the provider");
    // One attempt each: exactly two blocked rows (no SDK retry reached the gateway).
    chain.ledger_settles("user = 'bo'", 4).await;
    let blocked = chain.ledger("user = 'bo' AND outcome = 'blocked'").await.unwrap();
    assert_eq!(blocked, (2, Decimal::ZERO));
    chain.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_sdk_loop_is_blocked_then_served_again_when_the_window_resets() {
    let loop_key = KeySpec::new("acme", "agents", "runaway");
    let limit: Decimal = "0.50".parse().unwrap();
    let budget = chain::rolling_day_budget("acme", "runaway", "runaway-daily", "Runaway daily", "0.50");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let chain = chain(vec![loop_key.clone()], vec![budget.clone()], clock.clone()).await;
    // $0.003 a call (1,000 input tokens): the limit is reached after 167 calls.
    let per_call: Decimal = "0.003".parse().unwrap();
    let mut sdk = sdk_clients(&[chain.url()], &loop_key.secret, "until_blocked");
    sdk.env("FAKE_USAGE", "input=1000,output=0").env("MAX_CALLS", "5000");
    let outcome = run_sdk_clients(sdk).await.remove(0);
    assert_eq!(outcome["status"], 402, "{outcome}");
    assert!(outcome["message"].as_str().unwrap().contains("Runaway daily"), "{outcome}");
    let served = u64::try_from(chain.fake.requests().len()).unwrap();
    assert_eq!(outcome["ok"].as_u64(), Some(served));
    // Refused by reservation (the gateway's own count) or by the decision, whichever comes
    // first; refusals before the limit are the overspend bench's to measure, not this test's.

    let spent = chain.ledger_settles("user = 'runaway' AND outcome = 'ok'", served).await;
    assert_eq!(spent, Decimal::from(served) * per_call, "the ledger holds exactly what was served");
    let overspend = spent - limit;
    // The SDK's body is far smaller than the 1,000 tokens the fake bills, so each reservation
    // is below the cost: the one request in flight at the crossing may overshoot, no more.
    assert!(overspend <= per_call, "overspend at most one request: ${overspend}");
    println!(
        "runaway SDK loop: {served} calls in {:.2} s, ledger ${spent} against a ${limit} limit: \
         overspend ${overspend} ({}% of the limit)",
        outcome["seconds"].as_f64().unwrap_or_default(),
        (overspend * Decimal::from(100) / limit).round_dp(1),
    );

    // Spend that reached the limit is blocked by the budget service too, whatever refused the
    // loop first; it must be decided before the clock moves, or the window it crossed in is
    // gone before anyone looked at it (then there is no decision at all, and nothing to lift).
    let crossed = spent >= limit;
    if crossed {
        chain.decision_everywhere(&budget.scope.key(), DecisionState::Block).await;
    }
    // A rolling day ends with the current UTC hour: 25 hours on, the spend has rolled out.
    clock.advance(TimeDelta::hours(25));
    if crossed {
        chain.decision_everywhere(&budget.scope.key(), DecisionState::Allow).await;
    }
    // The new window's headroom too (the reservation is made against it).
    chain::eventually("the new window's headroom at the gateway", || async {
        let me = chain.me(chain.url(), &loop_key.secret).await?;
        (me["budgets"][0]["remaining_usd"].as_str()? == "0.5").then_some(())
    })
    .await;
    let mut sdk = sdk_clients(&[chain.url()], &loop_key.secret, "one");
    sdk.env("FAKE_USAGE", "input=1000,output=0");
    assert_eq!(run_sdk_clients(sdk).await[0]["input"], 1000, "served again after the reset");
    chain.assert_running();
}

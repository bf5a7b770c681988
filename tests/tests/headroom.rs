//! Every developer sees their own budget, through the whole chain (fake provider, ingress,
//! broker, processor, ClickHouse front, budget service): the headroom the budget service
//! publishes reaches the gateway, whose responses carry `x-faregate-budget-remaining` and
//! `x-faregate-budget-resets`; `GET /v1/me` lists the covering budgets; and the Claude Code
//! status line script prints the day's budget from a live gateway.
//!
//! The oracle is arithmetic on what the fake provider was told to report: $3 per million input
//! tokens, so 10,000 input tokens are $0.03.

use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use faregate_core::event::{Budget, BudgetAction, BudgetScope, BudgetWindow, WindowPeriod};
use faregate_core::money::Usd;
use faregate_fake_upstream::USAGE_HEADER;
use faregate_tests::chain::{Chain, ChainSetup, KeySpec};
use faregate_tests::{clickhouse_config, eventually_within, kafka_config};

const WITHIN: Duration = Duration::from_secs(60);

fn budget(id: &str, scope: BudgetScope, period: WindowPeriod, limit: &str) -> Budget {
    Budget {
        id: id.into(),
        name: id.into(),
        scope,
        window: BudgetWindow { period, days: None, rolling: false, time_zone: "UTC".into() },
        limit_usd: Usd(limit.parse().unwrap()),
        action: BudgetAction::Block,
        downgrade_to: None,
        thresholds_pct: vec![50, 80, 100],
        owner: None,
        notify: vec![],
    }
}

/// One Anthropic call reporting `input` input tokens: (status, remaining, resets).
async fn call(chain: &Chain, key: &KeySpec, input: u32) -> (u16, Option<String>, Option<String>) {
    let response = chain
        .http
        .post(format!("{}/v1/messages", chain.url()))
        .header("x-api-key", &key.secret)
        .header("anthropic-version", "2023-06-01")
        .header(USAGE_HEADER, format!("input={input},output=0"))
        .json(&serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), header("x-faregate-budget-remaining"), header("x-faregate-budget-resets"))
}

/// Free calls until the remaining header reads `want`.
async fn remaining_becomes(chain: &Chain, key: &KeySpec, want: &str) -> (u16, Option<String>) {
    eventually_within(&format!("x-faregate-budget-remaining: {want}"), WITHIN, || async {
        let (status, remaining, resets) = call(chain, key, 0).await;
        (remaining.as_deref() == Some(want)).then_some((status, resets))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_headers_me_and_the_status_line_follow_spend() {
    let ana = KeySpec::new("acme", "infra", "ana");
    let user = BudgetScope { org: "acme".into(), user: Some("ana".into()), ..BudgetScope::default() };
    let team = BudgetScope { org: "acme".into(), team: Some("infra".into()), ..BudgetScope::default() };
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    setup.keys = vec![ana.clone()];
    setup.budgets = vec![
        budget("ana-month", user, WindowPeriod::Month, "1"),
        budget("infra-day", team, WindowPeriod::Day, "10"),
    ];
    let chain = Chain::start(setup).await;

    // Before any spend: the tightest is the month's $1, resetting at the next month.
    let (_, resets) = remaining_becomes(&chain, &ana, "1.00").await;
    let now = Utc::now();
    let next_month = if now.month() == 12 {
        Utc.with_ymd_and_hms(now.year() + 1, 1, 1, 0, 0, 0).unwrap()
    } else {
        Utc.with_ymd_and_hms(now.year(), now.month() + 1, 1, 0, 0, 0).unwrap()
    };
    assert_eq!(
        resets.as_deref(),
        Some(next_month.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).as_str())
    );

    // $0.03 of spend shows within the deadline; then a call crossing the limit ($1.20) turns
    // it negative, and the block that follows carries the headers too.
    assert_eq!(call(&chain, &ana, 10_000).await.0, 200);
    remaining_becomes(&chain, &ana, "0.97").await;
    assert_eq!(call(&chain, &ana, 400_000).await.0, 200);
    let (status, _) = remaining_becomes(&chain, &ana, "-0.23").await;
    assert!(status == 200 || status == 402, "{status}");
    eventually_within("the block", WITHIN, || async {
        let (status, remaining, _) = call(&chain, &ana, 0).await;
        (status == 402).then(|| assert_eq!(remaining.as_deref(), Some("-0.23")))
    })
    .await;

    // GET /v1/me: who the key is, both budgets, today's and this month's spend.
    let me: serde_json::Value = chain
        .http
        .get(format!("{}/v1/me", chain.url()))
        .bearer_auth(&ana.secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["key"]["user"], "ana", "{me}");
    assert_eq!((me["key"]["team"].as_str(), me["key"]["key_id"].as_str()), (Some("infra"), Some("k-ana")));
    let ids: Vec<&str> =
        me["budgets"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ana-month", "infra-day"], "tightest first: {me}");
    assert_eq!(me["budgets"][0]["spent_usd"], "1.23", "{me}");
    assert_eq!(me["budgets"][0]["remaining_usd"], "-0.23", "{me}");
    assert_eq!(me["budgets"][1]["limit_usd"], "10", "{me}");
    assert_eq!(me["today"]["spent_usd"], "1.23", "{me}");
    assert_eq!(me["today"]["scope"], "org=acme/team=infra", "{me}");
    assert_eq!(me["this_month"]["budget_id"], "ana-month", "{me}");
    assert_eq!(me["tightest"]["remaining_usd"], "-0.23", "{me}");
    let refused =
        chain.http.get(format!("{}/v1/me", chain.url())).bearer_auth("fgk_wrong").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    // The status line script, as Claude Code runs it: session JSON on stdin, first line out.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/integrations/claude-code/statusline.sh");
    let mut child = tokio::process::Command::new("sh")
        .arg(script)
        .env("ANTHROPIC_BASE_URL", chain.url())
        .env("ANTHROPIC_API_KEY", &ana.secret)
        .env_remove("FAREGATE_KEY")
        .env_remove("FAREGATE_GATEWAY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh runs the status line script");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(br#"{"session_id":"s","model":{"display_name":"Sonnet"}}"#).await.unwrap();
    }
    let output = tokio::time::timeout(WITHIN, child.wait_with_output()).await.unwrap().unwrap();
    let line = String::from_utf8_lossy(&output.stdout);
    assert_eq!(line.lines().next(), Some("$1.23 of $10.00 today"), "{line}");
    chain.assert_running();
}

/// A cost the gateway settled stays counted against the budget until a headroom record shows
/// its event, and exactly then leaves: the time fallback is set to an hour here, so only the
/// usage watermark (emitter acknowledgement -> processor groups -> budget service -> headroom)
/// can release it within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_cost_leaves_the_book_when_the_headroom_shows_its_event() {
    let ana = KeySpec::new("acme", "infra", "ana");
    let user = BudgetScope { org: "acme".into(), user: Some("ana".into()), ..BudgetScope::default() };
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    setup.keys = vec![ana.clone()];
    setup.budgets = vec![budget("ana-month", user, WindowPeriod::Month, "1")];
    setup.reservation.settle_margin_ms = 3_600_000;
    setup.reservation.settle_hold_max_ms = 3_600_000;
    let chain = Chain::start(setup).await;
    remaining_becomes(&chain, &ana, "1.00").await;

    let response = chain
        .http
        .post(format!("{}/v1/messages", chain.url()))
        .header("x-api-key", &ana.secret)
        .header("anthropic-version", "2023-06-01")
        .header(USAGE_HEADER, "input=10000,output=0")
        .json(&serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().contains_key("x-faregate-reserved"), "the call held a reservation");
    let budget = eventually_within("the headroom shows the call and the book let it go", WITHIN, || async {
        let me = chain.me(chain.url(), &ana.secret).await?;
        let budget = me["budgets"].as_array()?.iter().find(|b| b["id"] == "ana-month")?.clone();
        (budget["spent_usd"] == "0.03" && budget["settled_unreflected_usd"] == "0").then_some(budget)
    })
    .await;
    assert_eq!(budget["reserved_usd"], "0", "{budget}");
    chain.assert_running();
}

/// Shares follow demand: with three replicas, a budget's remaining is not cut in static thirds.
/// All of Ana's traffic goes to one replica, whose request reserves 45 % of the budget (more
/// than a third: static thirds would refuse it): the budget service gives it the share its
/// demand asks for, and it is served. A request at a second replica waits for its own share
/// and is served too; a replica that asked for nothing gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_follow_demand_so_one_busy_replica_can_use_more_than_a_third() {
    let ana = KeySpec::new("acme", "infra", "ana");
    let user = BudgetScope { org: "acme".into(), user: Some("ana".into()), ..BudgetScope::default() };
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    setup.keys = vec![ana.clone()];
    setup.budgets = vec![budget("ana-day", user, WindowPeriod::Day, "1")];
    setup.replicas = 3;
    let chain = Chain::start(setup).await;
    remaining_becomes(&chain, &ana, "1.00").await;
    // 30,000 output tokens at $15 per million: $0.45 reserved (and some input), 45 % of $1.
    let big = |url: &str| {
        chain
            .http
            .post(format!("{url}/v1/messages"))
            .header("x-api-key", &ana.secret)
            .header("anthropic-version", "2023-06-01")
            .header(USAGE_HEADER, "input=1000,output=100")
            .json(&serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 30000, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    for replica in [0, 1] {
        let response = big(&chain.ingresses[replica].url).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "replica {replica}: {:?}", response.headers());
        let reserved: rust_decimal::Decimal =
            response.headers()["x-faregate-reserved"].to_str().unwrap().parse().unwrap();
        assert!(reserved > rust_decimal::Decimal::new(34, 2), "more than a third: {reserved}");
        // Replica 0 was asked (free calls) before, so its share may already be there; replica 1
        // never was: its request waited for one.
        if replica == 1 {
            assert!(
                response.headers().contains_key("x-faregate-reservation-waited-ms"),
                "replica 1 waited for its share: {:?}",
                response.headers()
            );
        }
    }
    let me = chain.me(&chain.ingresses[2].url, &ana.secret).await.unwrap();
    let budget = me["budgets"].as_array().unwrap().iter().find(|b| b["id"] == "ana-day").unwrap().clone();
    assert_eq!(budget["share_usd"], "0", "a replica that asked nothing has no share: {budget}");
    chain.assert_running();
}

/// Three loops, one per replica, send $0.003 requests as fast as they can until refused: the
/// replicas take their whole shares under one headroom record while the next is computed from
/// reports read before that (the demand topic is read up to a second late). Without leases
/// (`demand.v2`) the next shares were computed as if nothing was held and the ledger passed the
/// limit (+1.1 % to +8.8 % in the overspend bench); with them it stays within it, exactly, as
/// every request costs what it reserves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_in_a_runaway_stay_within_the_limit() {
    let ana = KeySpec::new("acme", "infra", &format!("ana-{}", uuid::Uuid::now_v7().simple()));
    let user = ana.user.clone().unwrap();
    let limit: rust_decimal::Decimal = "0.9".parse().unwrap();
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    setup.keys = vec![ana.clone()];
    setup.budgets =
        vec![faregate_tests::chain::rolling_day_budget("acme", &user, "run-day", "run day", "0.9")];
    setup.replicas = 3;
    let chain = std::sync::Arc::new(Chain::start(setup).await);
    let (body, usage, cost) = faregate_tests::chain::sized_request(1_000, 0);
    let loops: Vec<_> = (0..3)
        .map(|replica| {
            let (chain, ana, body, usage) = (chain.clone(), ana.clone(), body.clone(), usage.clone());
            tokio::spawn(async move {
                let url = format!("{}/v1/messages", chain.ingresses[replica].url);
                let mut served = 0u64;
                // Each call is refused, served or waits at most `max_wait_ms`: 2,000 calls end.
                for _ in 0..2_000 {
                    let response = chain
                        .http
                        .post(&url)
                        .header("x-api-key", &ana.secret)
                        .header("anthropic-version", "2023-06-01")
                        .header(USAGE_HEADER, &usage)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => served += 1,
                        402 => return served,
                        other => panic!("replica {replica}: unexpected {other}: {:?}", response.text().await),
                    }
                }
                panic!("replica {replica} was never refused in 2,000 calls")
            })
        })
        .collect();
    let mut served = 0;
    for handle in loops {
        served += handle.await.unwrap();
    }
    let spent = chain.ledger_settles(&format!("user = '{user}' AND outcome = 'ok'"), served).await;
    assert_eq!(spent, rust_decimal::Decimal::from(served) * cost, "ledger = served x price");
    assert!(spent <= limit, "{served} requests of ${cost} spent ${spent}, over the ${limit} limit");
    assert!(spent > limit * rust_decimal::Decimal::new(9, 1), "refused early: ${spent} of ${limit}");
    chain.assert_running();
}

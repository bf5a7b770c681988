//! The Anthropic usage importer through the real chain: the fake Admin API -> `import_usage` ->
//! the usage topic (tansu) -> the processor (priced by the real catalog) -> the ledger
//! (ClickHouse via the chDB front). Every bucket of every page lands exactly once, a 429 is
//! retried no sooner than its `Retry-After` and a 5xx is retried, the rows say `import` with the
//! report's token classes and an exact price, a re-import changes nothing, and a malformed page
//! puts nothing of itself in the ledger.

mod import_support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::config::Secret;
use faregate_core::event::TokenCounts;
use faregate_core::kafka::KafkaConfig;
use faregate_fake_upstream::admin::{
    AdminScript, FakeAnthropicAdmin, ReportTokens, usage_bucket, usage_result,
};
use faregate_import::anthropic::{AnthropicImportConfig, SOURCE, import_usage};
use faregate_import::{ImportError, KafkaSink};
use faregate_tests::{eventually_within, hand_priced, unique};
use import_support::{self as support, Stack, day, later};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN_KEY: &str = "sk-ant-admin01-live-test";
const MODELS: [&str; 2] = ["claude-sonnet-4-5", "claude-haiku-4-5"];

fn tokens(hour: i64, k: i64) -> ReportTokens {
    ReportTokens {
        uncached_input: 1_000 * k + hour,
        cache_read: 2_000 * k,
        cache_write_5m: 300 * k + hour,
        cache_write_1h: 40 * k,
        output: 500 * k + 7 * hour,
        web_searches: 0,
    }
}

/// Hours `0..hours`: three results each (two keys, one in the default workspace, and keyless
/// Workbench usage), except hour 4, which is empty.
fn buckets(hours: i64) -> Vec<Value> {
    (0..hours)
        .map(|h| {
            let results = if h == 4 {
                vec![]
            } else {
                vec![
                    usage_result(Some("apikey_a"), Some("wrkspc_1"), MODELS[0], tokens(h, 1)),
                    usage_result(Some("apikey_b"), None, MODELS[0], tokens(h, 2)),
                    usage_result(None, None, MODELS[1], tokens(h, 3)),
                ]
            };
            usage_bucket(day() + TimeDelta::hours(h), TimeDelta::hours(1), results)
        })
        .collect()
}

/// The token classes and hand-worked cost of hours `0..hours` (the oracle).
fn oracle(hours: std::ops::Range<i64>) -> (TokenCounts, Decimal, u64) {
    let mut sum = TokenCounts::default();
    let (mut cost, mut rows) = (Decimal::ZERO, 0);
    for h in hours.filter(|h| *h != 4) {
        for k in 1..=3 {
            let t = tokens(h, k);
            let counts = TokenCounts {
                input: t.uncached_input,
                output: t.output,
                cache_read: t.cache_read,
                cache_write_5m: t.cache_write_5m,
                cache_write_1h: t.cache_write_1h,
                reasoning: 0,
            };
            cost += hand_priced(&counts);
            sum.input += counts.input;
            sum.output += counts.output;
            sum.cache_read += counts.cache_read;
            sum.cache_write_5m += counts.cache_write_5m;
            sum.cache_write_1h += counts.cache_write_1h;
            rows += 1;
        }
    }
    (sum, cost, rows)
}

/// Topics, schema and a processor pricing with the test catalog (both models, the standard
/// tier and the global region at list price).
async fn stack() -> Stack {
    support::stack(
        "anthropic.toml",
        "[service_tiers]\nstandard = { multiplier = \"1\" }\n\n[regions]\nglobal = { multiplier = \"1\" }",
        &MODELS,
    )
    .await
}

async fn fake(hours: i64) -> FakeAnthropicAdmin {
    support::fake(ADMIN_KEY, buckets(hours)).await
}

fn settings(fake: &FakeAnthropicAdmin, org: &str) -> AnthropicImportConfig {
    AnthropicImportConfig {
        admin_key: Secret::new(ADMIN_KEY),
        org: org.into(),
        base_url: fake.url(),
        retry_initial_ms: 20,
        ..AnthropicImportConfig::default()
    }
}

async fn sink(kafka: &KafkaConfig) -> KafkaSink {
    support::sink(kafka, SOURCE).await
}

/// The ledger's rows of `org`: count, token sums per class, exact cost, rows priced, rows with
/// source kind import.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, clickhouse::Row)]
struct Totals {
    rows: u64,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write_5m: u64,
    cache_write_1h: u64,
    cost: String,
    priced: u64,
    imported: u64,
    distinct_ids: u64,
}

async fn totals(clickhouse: &ClickHouseConfig, org: &str) -> Totals {
    clickhouse
        .client()
        .query(
            "SELECT count() AS rows, sum(input_tokens) AS input, sum(output_tokens) AS output, \
             sum(cache_read_tokens) AS cache_read, sum(cache_write_5m_tokens) AS cache_write_5m, \
             sum(cache_write_1h_tokens) AS cache_write_1h, toString(sum(assumeNotNull(cost_total))) AS cost, \
             countIf(pricing_status = 'priced') AS priced, countIf(source_kind = 'import') AS imported, \
             uniqExact(event_id) AS distinct_ids FROM usage_ledger WHERE org = {org:String}",
        )
        .param("org", org)
        .fetch_one()
        .await
        .unwrap()
}

async fn rows_settle(clickhouse: &ClickHouseConfig, org: &str, rows: u64) -> Totals {
    eventually_within(&format!("{rows} ledger rows of {org}"), Duration::from_secs(120), || async {
        let totals = totals(clickhouse, org).await;
        (totals.rows >= rows).then_some(totals)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_usage_is_priced_once_through_retries_and_a_reimport() {
    let stack = stack().await;
    let fake = fake(10).await;
    let org = unique("org");
    let sink = sink(&stack.kafka).await;
    // The first request is rate limited (retry after 1 s), the retry meets a 500, then the
    // pages come through.
    fake.push_script(AdminScript::Status {
        status: 429,
        error_type: "rate_limit_error".into(),
        headers: vec![("retry-after".into(), "1".into())],
    });
    fake.push_script(AdminScript::Status { status: 500, error_type: "api_error".into(), headers: vec![] });
    let (from, to) = (day(), day() + TimeDelta::hours(10));
    let summary = import_usage(&settings(&fake, &org), from, to, later(), &sink).await.unwrap();
    assert_eq!((summary.requests, summary.pages, summary.buckets, summary.events), (6, 4, 10, 27));
    let requests = fake.requests();
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 500, 200, 200, 200, 200]);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "retried {waited:?} after a 429 with Retry-After: 1");

    let (tokens, cost, rows) = oracle(0..10);
    let first = rows_settle(&stack.clickhouse, &org, rows).await;
    let expected = Totals {
        rows,
        input: tokens.input as u64,
        output: tokens.output as u64,
        cache_read: tokens.cache_read as u64,
        cache_write_5m: tokens.cache_write_5m as u64,
        cache_write_1h: tokens.cache_write_1h as u64,
        cost: first.cost.clone(),
        priced: rows,
        imported: rows,
        distinct_ids: rows,
    };
    assert_eq!(first, expected, "one priced import row per non-empty result, the report's token classes");
    assert_eq!(first.cost.parse::<Decimal>().unwrap(), cost, "priced exactly as by hand");

    // The provider's identities are on the rows, keyless Workbench usage included.
    let keys: Vec<(String, String, String)> = stack
        .clickhouse
        .client()
        .query(
            "SELECT DISTINCT key_id, tags['anthropic.workspace_id'], source_name FROM usage_ledger \
             WHERE org = {org:String} ORDER BY key_id",
        )
        .param("org", &org)
        .fetch_all()
        .await
        .unwrap();
    let anthropic = "anthropic-admin-api".to_string();
    assert_eq!(
        keys,
        [
            (String::new(), String::new(), anthropic.clone()),
            ("apikey_a".into(), "wrkspc_1".into(), anthropic.clone()),
            ("apikey_b".into(), String::new(), anthropic),
        ]
    );

    // A re-import of the same window, and of one more hour: the first ten hours change
    // nothing, the new hour adds its three rows. (The new hour's rows come after the re-sent
    // ones on the one partition, so once they are in, so is everything re-sent.)
    fake.set_buckets(buckets(12));
    let summary = import_usage(&settings(&fake, &org), from, day() + TimeDelta::hours(11), later(), &sink)
        .await
        .unwrap();
    assert_eq!(summary.events, 30);
    let after = rows_settle(&stack.clickhouse, &org, rows + 3).await;
    let (_, cost_11, rows_11) = oracle(0..11);
    assert_eq!((after.rows, after.distinct_ids, after.imported), (rows_11, rows_11, rows_11));
    assert_eq!(after.cost.parse::<Decimal>().unwrap(), cost_11);
    let old_hours: Totals = {
        let client = stack.clickhouse.client();
        client
            .query(
                "SELECT count() AS rows, sum(input_tokens) AS input, sum(output_tokens) AS output, \
                 sum(cache_read_tokens) AS cache_read, sum(cache_write_5m_tokens) AS cache_write_5m, \
                 sum(cache_write_1h_tokens) AS cache_write_1h, toString(sum(assumeNotNull(cost_total))) AS cost, \
                 countIf(pricing_status = 'priced') AS priced, countIf(source_kind = 'import') AS imported, \
                 uniqExact(event_id) AS distinct_ids FROM usage_ledger \
                 WHERE org = {org:String} AND occurred_at < {end:String}",
            )
            .param("org", &org)
            .param("end", "2026-11-30 10:00:00")
            .fetch_one()
            .await
            .unwrap()
    };
    assert_eq!(old_hours, first, "the re-imported hours are exactly as they were");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_puts_nothing_of_itself_in_the_ledger() {
    let stack = stack().await;
    let fake = fake(10).await;
    let org = unique("org");
    let sink = sink(&stack.kafka).await;
    fake.push_script(AdminScript::Pass);
    fake.push_script(AdminScript::Edit {
        pointer: "/data/2/results/1/cache_creation".into(),
        value: json!({"ephemeral_5m_input_tokens": 1.5}),
    });
    let (from, to) = (day(), day() + TimeDelta::hours(10));
    let error = import_usage(&settings(&fake, &org), from, to, later(), &sink).await.unwrap_err();
    let shown = error.to_string();
    assert!(matches!(error, ImportError::Malformed { .. }), "{shown}");
    assert!(shown.starts_with("anthropic: GET /v1/organizations/usage_report/messages?"), "{shown}");
    assert!(shown.contains("page=page_3"), "names the page's request: {shown}");
    assert!(shown.contains("data[2].results[1].cache_creation.ephemeral_5m_input_tokens"), "{shown}");
    assert!(shown.contains("data[2].results[1].cache_creation.ephemeral_1h_input_tokens"), "{shown}");

    // A later hour, imported after the failure, is the marker: once its rows are in, anything
    // the failed run had written before it would be too. Only the first page (hours 0-2) is.
    fake.set_buckets(vec![usage_bucket(
        day() + TimeDelta::hours(20),
        TimeDelta::hours(1),
        vec![usage_result(Some("apikey_z"), None, MODELS[0], tokens(20, 1))],
    )]);
    let marker = (day() + TimeDelta::hours(20), day() + TimeDelta::hours(21));
    import_usage(&settings(&fake, &org), marker.0, marker.1, later(), &sink).await.unwrap();
    let totals = rows_settle(&stack.clickhouse, &org, 10).await;
    let (_, cost_first_page, rows_first_page) = oracle(0..3);
    assert_eq!(totals.rows, rows_first_page + 1);
    let first_page_cost: String = stack
        .clickhouse
        .client()
        .query(
            "SELECT toString(sum(assumeNotNull(cost_total))) FROM usage_ledger \
             WHERE org = {org:String} AND occurred_at < {end:String}",
        )
        .param("org", &org)
        .param("end", "2026-11-30 03:00:00")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(first_page_cost.parse::<Decimal>().unwrap(), cost_first_page);
}

/// The scheduled loop imports from where the ledger's imported buckets end: after a restart its
/// first request starts at the end of the last bucket imported, and only the new hours add rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduled_import_resumes_from_the_ledger() {
    let stack = stack().await;
    let fake = fake(10).await;
    let org = unique("org");
    // Far enough back to reach the fixtures' day from now; one run per hour, so each loop
    // below makes exactly its first run while the test looks.
    let settings = AnthropicImportConfig {
        interval_secs: 3600,
        lookback_hours: u64::try_from((Utc::now() - day()).num_hours()).unwrap() + 24,
        ..settings(&fake, &org)
    };
    let cursor = faregate_import::cursor::LedgerCursor::new(stack.clickhouse.client());
    let start_loop = |settings: AnthropicImportConfig| {
        let (kafka, cursor, stop) = (stack.kafka.clone(), cursor.clone(), CancellationToken::new());
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let sink = sink(&kafka).await;
            let topic = kafka.topics.usage.clone();
            faregate_import::schedule::run_anthropic(settings, &sink, cursor, &topic, token).await;
        });
        (stop, handle)
    };
    let (stop, handle) = start_loop(settings.clone());
    let (_, _, rows) = oracle(0..10);
    rows_settle(&stack.clickhouse, &org, rows).await;
    stop.cancel();
    handle.await.unwrap();
    let first_run = fake.requests();
    let lookback_start = first_run[0].param("starting_at").unwrap().to_string();
    assert!(lookback_start.as_str() < "2026-11-30T00:00:00Z", "the first run looks back: {lookback_start}");

    // Two more hours at the provider; a new loop (a restart) resumes at 10:00, the end of the
    // last bucket in the ledger, and adds exactly their rows.
    fake.set_buckets(buckets(12));
    let (stop, handle) = start_loop(settings);
    let (_, cost, rows_12) = oracle(0..12);
    let totals = rows_settle(&stack.clickhouse, &org, rows_12).await;
    stop.cancel();
    handle.await.unwrap();
    let resumed = &fake.requests()[first_run.len()];
    assert_eq!(resumed.param("starting_at"), Some("2026-11-30T10:00:00Z"));
    assert_eq!((totals.rows, totals.distinct_ids), (rows_12, rows_12));
    assert_eq!(totals.cost.parse::<Decimal>().unwrap(), cost);
}

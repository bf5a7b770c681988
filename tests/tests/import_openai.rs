//! The OpenAI usage importer through the real chain: the fake usage API -> `import_usage` -> the
//! usage topic (tansu) -> the processor (priced by a catalog with the batch tier) -> the ledger
//! (ClickHouse via the chDB front). Every bucket of every page lands exactly once, a 429 is
//! retried no sooner than its `Retry-After` and a 5xx is retried, the rows say `import` with
//! cached input at the cached price and batch at the batch tier, audio stays unpriced, a
//! re-import changes nothing, a malformed page puts nothing of itself in the ledger, and a
//! restarted scheduled import resumes from the ledger.

mod import_support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::config::Secret;
use faregate_core::event::TokenCounts;
use faregate_core::kafka::KafkaConfig;
use faregate_fake_upstream::admin::AdminScript;
use faregate_fake_upstream::openai_admin::{
    CompletionsGroup, CompletionsTokens, FakeOpenAiAdmin, completions_bucket, completions_result,
};
use faregate_import::openai::{OpenAiImportConfig, SOURCE, import_usage};
use faregate_import::{ImportError, KafkaSink};
use faregate_tests::{eventually_within, hand_priced, unique};
use import_support::{self as support, Stack, day, later};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN_KEY: &str = "sk-admin-openai-live-test";
const MODELS: [&str; 2] = ["gpt-5-mini", "gpt-5"];

/// The usage API's counts of result `k` in hour `h`: `input` includes `input_cached`.
fn tokens(hour: i64, k: i64) -> CompletionsTokens {
    CompletionsTokens {
        input: 3_000 * k + hour,
        input_cached: 1_024 * k,
        output: 500 * k + 7 * hour,
        requests: k,
        ..CompletionsTokens::default()
    }
}

fn group(key: Option<&'static str>, model: &'static str, batch: bool) -> CompletionsGroup<'static> {
    CompletionsGroup {
        project_id: Some("proj_x"),
        user_id: None,
        api_key_id: key,
        model,
        batch,
        service_tier: Some("default"),
    }
}

/// Hours `0..hours`: three results each (a key, the same key's batch jobs, and keyless
/// playground usage), except hour 4, which is empty.
fn buckets(hours: i64) -> Vec<Value> {
    (0..hours)
        .map(|h| {
            let results = if h == 4 {
                vec![]
            } else {
                vec![
                    completions_result(group(Some("key_a"), MODELS[0], false), tokens(h, 1)),
                    completions_result(group(Some("key_a"), MODELS[0], true), tokens(h, 2)),
                    completions_result(group(None, MODELS[1], false), tokens(h, 3)),
                ]
            };
            completions_bucket(day() + TimeDelta::hours(h), TimeDelta::hours(1), results)
        })
        .collect()
}

/// The hand-worked cost of hours `0..hours` (the oracle): OpenAI's input minus its cached part
/// at the input price, the cached part at the cache-read price, output at the output price; the
/// batch result at half of that (the catalog's batch tier).
fn oracle(hours: std::ops::Range<i64>) -> (TokenCounts, Decimal, u64) {
    let mut sum = TokenCounts::default();
    let (mut cost, mut rows) = (Decimal::ZERO, 0);
    for h in hours.filter(|h| *h != 4) {
        for k in 1..=3 {
            let t = tokens(h, k);
            let counts = TokenCounts {
                input: t.input - t.input_cached,
                output: t.output,
                cache_read: t.input_cached,
                ..TokenCounts::default()
            };
            let full = hand_priced(&counts);
            cost += if k == 2 { full / Decimal::from(2) } else { full };
            sum.input += counts.input;
            sum.output += counts.output;
            sum.cache_read += counts.cache_read;
            rows += 1;
        }
    }
    (sum, cost, rows)
}

/// Topics, schema and a processor pricing with the test catalog for OpenAI (both models, the
/// default tier at list price and batch at half).
async fn stack() -> Stack {
    support::stack(
        "openai.toml",
        "[service_tiers]\ndefault = { multiplier = \"1\" }\nbatch = { multiplier = \"0.5\" }",
        &MODELS,
    )
    .await
}

async fn fake(hours: i64) -> FakeOpenAiAdmin {
    support::fake(ADMIN_KEY, buckets(hours)).await
}

fn settings(fake: &FakeOpenAiAdmin, org: &str) -> OpenAiImportConfig {
    OpenAiImportConfig {
        admin_key: Secret::new(ADMIN_KEY),
        org: org.into(),
        base_url: fake.url(),
        retry_initial_ms: 20,
        ..OpenAiImportConfig::default()
    }
}

async fn sink(kafka: &KafkaConfig) -> KafkaSink {
    support::sink(kafka, SOURCE).await
}

/// The ledger's rows of `org` before `end`: count, token sums per class, exact cost, rows
/// priced, rows with source kind import, distinct ids.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, clickhouse::Row)]
struct Totals {
    rows: u64,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    cost: String,
    priced: u64,
    imported: u64,
    distinct_ids: u64,
}

async fn totals_before(clickhouse: &ClickHouseConfig, org: &str, end: &str) -> Totals {
    clickhouse
        .client()
        .query(
            "SELECT count() AS rows, sum(input_tokens) AS input, sum(output_tokens) AS output, \
             sum(cache_read_tokens) AS cache_read, sum(cache_write_5m_tokens + cache_write_1h_tokens) AS cache_write, \
             toString(sum(assumeNotNull(cost_total))) AS cost, countIf(pricing_status = 'priced') AS priced, \
             countIf(source_kind = 'import') AS imported, uniqExact(event_id) AS distinct_ids \
             FROM usage_ledger WHERE org = {org:String} AND occurred_at < {end:String}",
        )
        .param("org", org)
        .param("end", end)
        .fetch_one()
        .await
        .unwrap()
}

async fn totals(clickhouse: &ClickHouseConfig, org: &str) -> Totals {
    totals_before(clickhouse, org, "2100-01-01 00:00:00").await
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
        error_type: "rate_limit_exceeded".into(),
        headers: vec![("retry-after".into(), "1".into())],
    });
    fake.push_script(AdminScript::Status { status: 500, error_type: "server_error".into(), headers: vec![] });
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
        cache_write: 0,
        cost: first.cost.clone(),
        priced: rows,
        imported: rows,
        distinct_ids: rows,
    };
    assert_eq!(first, expected, "one priced import row per non-empty result, cached input apart");
    assert_eq!(first.cost.parse::<Decimal>().unwrap(), cost, "priced exactly as by hand");

    // The provider's identities are on the rows, keyless usage included; batch in its tier.
    let keys: Vec<(String, String, String, String, String)> = stack
        .clickhouse
        .client()
        .query(
            "SELECT DISTINCT key_id, tags['openai.project_id'], tags['openai.batch'], service_tier, source_name \
             FROM usage_ledger WHERE org = {org:String} ORDER BY key_id, service_tier",
        )
        .param("org", &org)
        .fetch_all()
        .await
        .unwrap();
    let name = "openai-usage-api".to_string();
    let row = |key: &str, batch: &str, tier: &str| {
        (key.to_string(), "proj_x".to_string(), batch.to_string(), tier.to_string(), name.clone())
    };
    assert_eq!(
        keys,
        [row("", "false", "default"), row("key_a", "true", "batch"), row("key_a", "false", "default")]
    );

    // A re-import of the same window, and of one more hour: the first ten hours change
    // nothing, the new hour adds its three rows.
    fake.set_buckets(buckets(12));
    let summary = import_usage(&settings(&fake, &org), from, day() + TimeDelta::hours(11), later(), &sink)
        .await
        .unwrap();
    assert_eq!(summary.events, 30);
    let after = rows_settle(&stack.clickhouse, &org, rows + 3).await;
    let (_, cost_11, rows_11) = oracle(0..11);
    assert_eq!((after.rows, after.distinct_ids, after.imported), (rows_11, rows_11, rows_11));
    assert_eq!(after.cost.parse::<Decimal>().unwrap(), cost_11);
    let old_hours = totals_before(&stack.clickhouse, &org, "2026-11-30 10:00:00").await;
    assert_eq!(old_hours, first, "the re-imported hours are exactly as they were");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_is_left_unpriced_with_its_reason_rather_than_priced_as_text() {
    let stack = stack().await;
    let audio = CompletionsTokens {
        input: 900,
        input_audio: 400,
        output: 50,
        output_audio: 20,
        requests: 1,
        ..CompletionsTokens::default()
    };
    let buckets = vec![completions_bucket(
        day(),
        TimeDelta::hours(1),
        vec![completions_result(group(Some("key_v"), MODELS[1], false), audio)],
    )];
    let fake: FakeOpenAiAdmin = support::fake(ADMIN_KEY, buckets).await;
    let org = unique("org");
    let sink = sink(&stack.kafka).await;
    import_usage(&settings(&fake, &org), day(), day() + TimeDelta::hours(1), later(), &sink).await.unwrap();
    rows_settle(&stack.clickhouse, &org, 1).await;
    let (status, reason, audio_in): (String, String, String) = stack
        .clickhouse
        .client()
        .query(
            "SELECT toString(pricing_status), unpriced_reason, tags['openai.input_audio_tokens'] \
             FROM usage_ledger WHERE org = {org:String}",
        )
        .param("org", &org)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((status.as_str(), audio_in.as_str()), ("unpriced", "400"));
    assert!(reason.contains("unknown service tier \"audio\""), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_puts_nothing_of_itself_in_the_ledger() {
    let stack = stack().await;
    let fake = fake(10).await;
    let org = unique("org");
    let sink = sink(&stack.kafka).await;
    fake.push_script(AdminScript::Pass);
    fake.push_script(AdminScript::Edit {
        pointer: "/data/2/results/1".into(),
        value: json!({"model": "gpt-5", "input_tokens": 1.5, "output_tokens": null, "num_model_requests": 1}),
    });
    let (from, to) = (day(), day() + TimeDelta::hours(10));
    let error = import_usage(&settings(&fake, &org), from, to, later(), &sink).await.unwrap_err();
    let shown = error.to_string();
    assert!(matches!(error, ImportError::Malformed { .. }), "{shown}");
    assert!(shown.starts_with("openai: GET /v1/organization/usage/completions?"), "{shown}");
    assert!(shown.contains("page=page_3"), "names the page's request: {shown}");
    assert!(shown.contains("data[2].results[1].input_tokens"), "{shown}");
    assert!(shown.contains("data[2].results[1].output_tokens"), "{shown}");

    // A later hour, imported after the failure, is the marker: once its rows are in, anything
    // the failed run had written before it would be too. Only the first page (hours 0-2) is.
    fake.set_buckets(vec![completions_bucket(
        day() + TimeDelta::hours(20),
        TimeDelta::hours(1),
        vec![completions_result(group(Some("key_z"), MODELS[0], false), tokens(20, 1))],
    )]);
    let marker = (day() + TimeDelta::hours(20), day() + TimeDelta::hours(21));
    import_usage(&settings(&fake, &org), marker.0, marker.1, later(), &sink).await.unwrap();
    let (_, cost_first_page, rows_first_page) = oracle(0..3);
    let totals = rows_settle(&stack.clickhouse, &org, rows_first_page + 1).await;
    assert_eq!(totals.rows, rows_first_page + 1);
    let first_page = totals_before(&stack.clickhouse, &org, "2026-11-30 03:00:00").await;
    assert_eq!(first_page.cost.parse::<Decimal>().unwrap(), cost_first_page);
}

/// The scheduled loop imports from where the ledger's imported buckets end: after a restart its
/// first request starts at the end of the last bucket imported, and only the new hours add rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduled_import_resumes_from_the_ledger() {
    let stack = stack().await;
    let fake = fake(10).await;
    let org = unique("org");
    let settings = OpenAiImportConfig {
        interval_secs: 3600,
        lookback_hours: u64::try_from((Utc::now() - day()).num_hours()).unwrap() + 24,
        ..settings(&fake, &org)
    };
    let cursor = faregate_import::cursor::LedgerCursor::new(stack.clickhouse.client());
    let start_loop = |settings: OpenAiImportConfig| {
        let (kafka, cursor, stop) = (stack.kafka.clone(), cursor.clone(), CancellationToken::new());
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let sink = sink(&kafka).await;
            let topic = kafka.topics.usage.clone();
            faregate_import::schedule::run_openai(settings, &sink, cursor, &topic, token).await;
        });
        (stop, handle)
    };
    let (stop, handle) = start_loop(settings.clone());
    let (_, _, rows) = oracle(0..10);
    rows_settle(&stack.clickhouse, &org, rows).await;
    stop.cancel();
    handle.await.unwrap();
    let first_run = fake.requests();
    let lookback_start: i64 = first_run[0].param("start_time").unwrap().parse().unwrap();
    assert!(lookback_start < day().timestamp(), "the first run looks back: {lookback_start}");

    fake.set_buckets(buckets(12));
    let (stop, handle) = start_loop(settings);
    let (_, cost, rows_12) = oracle(0..12);
    let totals = rows_settle(&stack.clickhouse, &org, rows_12).await;
    stop.cancel();
    handle.await.unwrap();
    let resumed = &fake.requests()[first_run.len()];
    let ten = (day() + TimeDelta::hours(10)).timestamp().to_string();
    assert_eq!(resumed.param("start_time"), Some(ten.as_str()));
    assert_eq!((totals.rows, totals.distinct_ids), (rows_12, rows_12));
    assert_eq!(totals.cost.parse::<Decimal>().unwrap(), cost);
}

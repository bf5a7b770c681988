//! The Anthropic importer against the fake Admin API, into an in-memory sink: pagination,
//! `Retry-After`, 5xx, a malformed page, the settle lag and errors that name what failed.
//! (The same through Kafka, the processor and ClickHouse: tests/tests/import_anthropic.rs.)

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::TimeDelta;
use faregate_core::FaregateError;
use faregate_core::config::Secret;
use faregate_fake_upstream::admin::{
    AdminScript, FakeAnthropicAdmin, ReportTokens, usage_bucket, usage_result,
};
use faregate_import::anthropic::{AnthropicImportConfig, import_usage};
use faregate_import::{ImportError, MemorySink};
use serde_json::{Value, json};
use support::{ids_and_tokens, later, start_of_day};

const KEY: &str = "sk-ant-admin01-test-key-never-shown";

/// Ten hourly buckets from midnight; bucket `h` has two keys (one in the default workspace)
/// and a keyless Workbench result; bucket 4 is empty.
fn buckets() -> Vec<Value> {
    (0..10)
        .map(|h| {
            let tokens = |k: i64| ReportTokens {
                uncached_input: 1000 * k + h,
                cache_read: 100 * k,
                cache_write_5m: 10 * k,
                cache_write_1h: k,
                output: 500 + h,
                web_searches: 0,
            };
            let results = if h == 4 {
                vec![]
            } else {
                vec![
                    usage_result(Some("apikey_a"), Some("wrkspc_1"), "claude-sonnet-4-5", tokens(1)),
                    usage_result(Some("apikey_b"), None, "claude-sonnet-4-5", tokens(2)),
                    usage_result(None, None, "claude-haiku-4-5", tokens(3)),
                ]
            };
            usage_bucket(start_of_day() + TimeDelta::hours(h), TimeDelta::hours(1), results)
        })
        .collect()
}

async fn fake(page_size: usize) -> FakeAnthropicAdmin {
    support::fake(KEY, page_size, buckets()).await
}

fn config(fake: &FakeAnthropicAdmin) -> AnthropicImportConfig {
    AnthropicImportConfig {
        admin_key: Secret::new(KEY),
        org: "acme".into(),
        base_url: fake.url(),
        retry_initial_ms: 10,
        ..AnthropicImportConfig::default()
    }
}

#[tokio::test]
async fn every_bucket_of_every_page_is_imported_exactly_once() {
    let fake = fake(3).await;
    let sink = MemorySink::default();
    let (from, to) = (start_of_day(), start_of_day() + TimeDelta::hours(10));
    let summary = import_usage(&config(&fake), from, to, later(), &sink).await.unwrap();
    assert_eq!((summary.pages, summary.requests, summary.buckets), (4, 4, 10));
    assert_eq!(summary.events, 27, "nine buckets of three results");
    assert_eq!(summary.imported, Some((from, to)));
    assert_eq!(summary.left_for_later, None);
    let events = sink.events.lock().unwrap().clone();
    let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 27, "no event twice");
    let hours: HashSet<_> = events.iter().map(|e| e.occurred_at).collect();
    assert_eq!(hours.len(), 9);
    // The pages were asked for in order, each with the previous page's token, grouped by every
    // dimension, with the admin key and version.
    let requests = fake.requests();
    let pages: Vec<Option<&str>> = requests.iter().map(|r| r.param("page")).collect();
    assert_eq!(pages, [None, Some("page_3"), Some("page_6"), Some("page_9")]);
    assert!(requests.iter().all(|r| r.authorized));
    let group_by: Vec<&str> =
        requests[0].query.iter().filter(|(k, _)| k == "group_by[]").map(|(_, v)| v.as_str()).collect();
    assert_eq!(group_by, faregate_import::anthropic::report::GROUP_BY);
    // A second run gives the same events, ids included.
    let again = MemorySink::default();
    import_usage(&config(&fake), from, to, later(), &again).await.unwrap();
    assert_eq!(ids_and_tokens(&sink), ids_and_tokens(&again));
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let fake = fake(24).await;
    fake.push_script(AdminScript::Status {
        status: 429,
        error_type: "rate_limit_error".into(),
        headers: vec![("retry-after".into(), "1".into())],
    });
    let sink = MemorySink::default();
    let to = start_of_day() + TimeDelta::hours(10);
    let summary = import_usage(&config(&fake), start_of_day(), to, later(), &sink).await.unwrap();
    assert_eq!((summary.requests, summary.events), (2, 27));
    let requests = fake.requests();
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, before the 1 s Retry-After");
}

#[tokio::test]
async fn server_errors_are_retried_and_a_client_error_is_not() {
    let fake = fake(24).await;
    for status in [500, 529] {
        fake.push_script(AdminScript::Status { status, error_type: "api_error".into(), headers: vec![] });
    }
    let sink = MemorySink::default();
    let to = start_of_day() + TimeDelta::hours(10);
    let summary = import_usage(&config(&fake), start_of_day(), to, later(), &sink).await.unwrap();
    assert_eq!((summary.requests, summary.events), (3, 27));

    fake.push_script(AdminScript::Status {
        status: 403,
        error_type: "permission_error".into(),
        headers: vec![],
    });
    let error = import_usage(&config(&fake), start_of_day(), to, later(), &sink).await.unwrap_err();
    assert!(matches!(error, ImportError::Status { status: 403, attempts: 1, .. }), "{error}");
    assert!(!error.retryable());
    let shown = error.to_string();
    assert!(
        shown.starts_with("anthropic: GET /v1/organizations/usage_report/messages?starting_at="),
        "{shown}"
    );
    assert!(shown.contains("HTTP 403") && shown.contains("retrying will not help"), "{shown}");
    assert!(!shown.contains(KEY), "the key never shows: {shown}");
}

#[tokio::test]
async fn errors_that_persist_end_the_run_after_the_policy_attempts() {
    let fake = fake(24).await;
    for _ in 0..3 {
        fake.push_script(AdminScript::Status {
            status: 503,
            error_type: "api_error".into(),
            headers: vec![],
        });
    }
    let config = AnthropicImportConfig { max_attempts: 3, ..config(&fake) };
    let to = start_of_day() + TimeDelta::hours(10);
    let error = import_usage(&config, start_of_day(), to, later(), &MemorySink::default()).await.unwrap_err();
    assert!(matches!(error, ImportError::Status { status: 503, attempts: 3, .. }), "{error}");
    assert!(error.retryable() && error.to_string().contains("retrying later may help"), "{error}");
    assert!(error.to_string().contains("gave up after 3 attempts"), "{error}");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn a_malformed_page_imports_nothing_of_it_and_names_every_problem() {
    let fake = fake(3).await;
    fake.push_script(AdminScript::Pass);
    fake.push_script(AdminScript::Edit {
        pointer: "/data/2/results/0/output_tokens".into(),
        value: json!("many"),
    });
    // The edit applies to the second page only; a second script would go to the third request.
    let sink = MemorySink::default();
    let to = start_of_day() + TimeDelta::hours(10);
    let error = import_usage(&config(&fake), start_of_day(), to, later(), &sink).await.unwrap_err();
    let ImportError::Malformed { ref request, ref problems, .. } = error else { panic!("{error}") };
    assert!(request.target.contains("page=page_3"), "{request}");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "data[2].results[0].output_tokens");
    let shown = error.to_string();
    assert!(
        shown.contains("malformed page, nothing of it was imported") && shown.contains("\"many\""),
        "{shown}"
    );
    // The first page (hours 0-2) was written; nothing of the second (hours 3-5).
    let events = sink.events.lock().unwrap().clone();
    assert_eq!(events.len(), 9);
    assert!(events.iter().all(|e| e.occurred_at < start_of_day() + TimeDelta::hours(3)));

    // Several problems in one page are all named.
    fake.push_script(AdminScript::Edit { pointer: "/data/0/results/1".into(), value: json!({"model": 7}) });
    let error =
        import_usage(&config(&fake), start_of_day(), to, later(), &MemorySink::default()).await.unwrap_err();
    let ImportError::Malformed { problems, .. } = error else { panic!("{error}") };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "data[0].results[1].model",
            "data[0].results[1].uncached_input_tokens",
            "data[0].results[1].cache_read_input_tokens",
            "data[0].results[1].output_tokens",
            "data[0].results[1].cache_creation",
        ]
    );
}

#[tokio::test]
async fn buckets_that_have_not_settled_are_left_for_later() {
    let fake = fake(24).await;
    // Now is 07:20 with a one-hour settle lag: buckets ending by 06:20 are final, so 00-06.
    let now = start_of_day() + TimeDelta::minutes(7 * 60 + 20);
    let to = start_of_day() + TimeDelta::hours(10);
    let sink = MemorySink::default();
    let summary = import_usage(&config(&fake), start_of_day(), to, now, &sink).await.unwrap();
    let six = start_of_day() + TimeDelta::hours(6);
    assert_eq!(summary.imported, Some((start_of_day(), six)));
    assert_eq!(summary.left_for_later, Some((six, to)));
    assert_eq!(summary.buckets, 6);
    let said = summary.describe("faregate.usage.v1", 3600);
    assert!(
        said.contains(
            "left for later: buckets from 2026-11-30T06:00:00Z to 2026-11-30T10:00:00Z had not settled"
        ),
        "{said}"
    );
    assert_eq!(fake.requests()[0].param("ending_at"), Some("2026-11-30T06:00:00Z"));
    assert!(sink.events.lock().unwrap().iter().all(|e| e.occurred_at < six));

    // A window that has not settled at all asks nothing.
    let summary = import_usage(&config(&fake), six, to, now, &sink).await.unwrap();
    assert_eq!((summary.requests, summary.imported), (0, None));
    assert_eq!(summary.left_for_later, Some((six, to)));
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_the_status_and_without_the_key() {
    let fake = fake(24).await;
    let config = AnthropicImportConfig { admin_key: Secret::new("sk-ant-admin01-wrong"), ..config(&fake) };
    let to = start_of_day() + TimeDelta::hours(10);
    let error = import_usage(&config, start_of_day(), to, later(), &MemorySink::default()).await.unwrap_err();
    assert!(matches!(error, ImportError::Status { status: 401, .. }), "{error}");
    assert!(!error.to_string().contains("wrong"), "{error}");
}

#[tokio::test]
async fn the_gateways_own_keys_and_workspaces_are_not_imported_twice() {
    let fake = fake(24).await;
    let config = AnthropicImportConfig {
        skip_api_key_ids: vec!["apikey_b".into()],
        skip_workspace_ids: vec!["wrkspc_1".into()],
        ..config(&fake)
    };
    let sink = MemorySink::default();
    let to = start_of_day() + TimeDelta::hours(10);
    let summary = import_usage(&config, start_of_day(), to, later(), &sink).await.unwrap();
    assert_eq!((summary.events, summary.skipped_results), (9, 18));
    let events = sink.events.lock().unwrap();
    assert!(events.iter().all(|e| e.key_id.is_none()), "only the keyless results are left");
    assert!(summary.describe("usage", 3600).contains("skipped 18 results of the gateway's own keys"));
}

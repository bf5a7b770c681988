//! The OpenAI importer against the fake usage API, into an in-memory sink: pagination,
//! `Retry-After`, 5xx, a malformed page, the settle lag, the gateway's own keys and projects,
//! and errors that name what failed without the key. (The same through Kafka, the processor and
//! ClickHouse: tests/tests/import_openai.rs.)

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use faregate_core::FaregateError;
use faregate_core::config::Secret;
use faregate_core::event::TokenCounts;
use faregate_fake_upstream::admin::AdminScript;
use faregate_fake_upstream::openai_admin::{
    CompletionsGroup, CompletionsTokens, FakeOpenAiAdmin, completions_bucket, completions_result,
};
use faregate_import::openai::{OpenAiImportConfig, import_usage};
use faregate_import::{ImportError, MemorySink};
use serde_json::{Value, json};
use support::{ids_and_tokens, later, start_of_day};

const KEY: &str = "sk-admin-openai-test-key-never-shown";

fn group<'a>(project: &'a str, key: Option<&'a str>, model: &'a str, batch: bool) -> CompletionsGroup<'a> {
    CompletionsGroup {
        project_id: Some(project),
        user_id: Some("user-abc"),
        api_key_id: key,
        model,
        batch,
        service_tier: Some("default"),
    }
}

/// Ten hourly buckets from midnight; bucket `h` has two keys in two projects, a batch result and
/// a keyless result (usage from the playground); bucket 4 is empty.
fn buckets() -> Vec<Value> {
    (0..10)
        .map(|h| {
            let tokens = |k: i64| CompletionsTokens {
                input: 1000 * k + h,
                input_cached: 100 * k,
                output: 500 + h,
                requests: k,
                ..CompletionsTokens::default()
            };
            let results = if h == 4 {
                vec![]
            } else {
                vec![
                    completions_result(group("proj_a", Some("key_a"), "gpt-5-mini", false), tokens(1)),
                    completions_result(group("proj_b", Some("key_b"), "gpt-5", false), tokens(2)),
                    completions_result(group("proj_b", Some("key_b"), "gpt-5", true), tokens(3)),
                    completions_result(group("proj_a", None, "gpt-5-mini", false), tokens(4)),
                ]
            };
            completions_bucket(start_of_day() + TimeDelta::hours(h), TimeDelta::hours(1), results)
        })
        .collect()
}

async fn fake(page_size: usize) -> FakeOpenAiAdmin {
    support::fake(KEY, page_size, buckets()).await
}

fn config(fake: &FakeOpenAiAdmin) -> OpenAiImportConfig {
    OpenAiImportConfig {
        admin_key: Secret::new(KEY),
        org: "acme".into(),
        base_url: fake.url(),
        retry_initial_ms: 10,
        ..OpenAiImportConfig::default()
    }
}

fn ten_hours() -> (DateTime<Utc>, DateTime<Utc>) {
    (start_of_day(), start_of_day() + TimeDelta::hours(10))
}

#[tokio::test]
async fn every_bucket_of_every_page_is_imported_exactly_once() {
    let fake = fake(3).await;
    let sink = MemorySink::default();
    let (from, to) = ten_hours();
    let summary = import_usage(&config(&fake), from, to, later(), &sink).await.unwrap();
    assert_eq!((summary.pages, summary.requests, summary.buckets), (4, 4, 10));
    assert_eq!(summary.events, 36, "nine buckets of four results");
    assert_eq!(summary.imported, Some((from, to)));
    let events = sink.events.lock().unwrap().clone();
    let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 36, "no event twice (batch and not are two results)");
    // The pages were asked for in order, each with the previous answer's next_page, grouped by
    // every dimension, in Unix seconds, with the admin key as a bearer token.
    let requests = fake.requests();
    let pages: Vec<Option<&str>> = requests.iter().map(|r| r.param("page")).collect();
    assert_eq!(pages, [None, Some("page_3"), Some("page_6"), Some("page_9")]);
    assert!(requests.iter().all(|r| r.authorized));
    assert_eq!(requests[0].param("start_time"), Some(from.timestamp().to_string().as_str()));
    assert_eq!(requests[0].param("end_time"), Some(to.timestamp().to_string().as_str()));
    let group_by: Vec<&str> =
        requests[0].query.iter().filter(|(k, _)| k == "group_by").map(|(_, v)| v.as_str()).collect();
    assert_eq!(group_by, faregate_import::openai::usage::GROUP_BY);
    // Input without the cached part, the cached part as cache reads; batch in the batch tier.
    let hour_one = events.iter().find(|e| {
        e.occurred_at == start_of_day() + TimeDelta::hours(1)
            && e.tags.get("openai.batch").map(String::as_str) == Some("true")
    });
    let batch = hour_one.expect("the batch result of hour 1");
    assert_eq!(
        batch.tokens,
        TokenCounts { input: 3001 - 300, cache_read: 300, output: 501, ..TokenCounts::default() }
    );
    assert_eq!((batch.service_tier.as_deref(), batch.key_id.as_deref()), (Some("batch"), Some("key_b")));
    assert_eq!(batch.tags.get("openai.project_id").map(String::as_str), Some("proj_b"));
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
        error_type: "rate_limit_exceeded".into(),
        headers: vec![("retry-after".into(), "1".into())],
    });
    let sink = MemorySink::default();
    let (from, to) = ten_hours();
    let summary = import_usage(&config(&fake), from, to, later(), &sink).await.unwrap();
    assert_eq!((summary.requests, summary.events), (2, 36));
    let requests = fake.requests();
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, before the 1 s Retry-After");
}

#[tokio::test]
async fn server_errors_are_retried_and_a_client_error_is_not() {
    let fake = fake(24).await;
    for status in [500, 503] {
        fake.push_script(AdminScript::Status { status, error_type: "server_error".into(), headers: vec![] });
    }
    let sink = MemorySink::default();
    let (from, to) = ten_hours();
    let summary = import_usage(&config(&fake), from, to, later(), &sink).await.unwrap();
    assert_eq!((summary.requests, summary.events), (3, 36));

    fake.push_script(AdminScript::Status {
        status: 403,
        error_type: "invalid_request_error".into(),
        headers: vec![],
    });
    let error = import_usage(&config(&fake), from, to, later(), &sink).await.unwrap_err();
    assert!(matches!(error, ImportError::Status { status: 403, attempts: 1, .. }), "{error}");
    assert!(!error.retryable());
    let shown = error.to_string();
    assert!(shown.starts_with("openai: GET /v1/organization/usage/completions?start_time="), "{shown}");
    assert!(shown.contains("HTTP 403") && shown.contains("scripted by the test"), "{shown}");
    assert!(!shown.contains(KEY), "the key never shows: {shown}");
}

#[tokio::test]
async fn errors_that_persist_end_the_run_after_the_policy_attempts() {
    let fake = fake(24).await;
    for _ in 0..3 {
        fake.push_script(AdminScript::Status {
            status: 502,
            error_type: "server_error".into(),
            headers: vec![],
        });
    }
    let config = OpenAiImportConfig { max_attempts: 3, ..config(&fake) };
    let (from, to) = ten_hours();
    let error = import_usage(&config, from, to, later(), &MemorySink::default()).await.unwrap_err();
    assert!(matches!(error, ImportError::Status { status: 502, attempts: 3, .. }), "{error}");
    assert!(error.retryable() && error.to_string().contains("gave up after 3 attempts"), "{error}");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn a_malformed_page_imports_nothing_of_it_and_names_every_problem() {
    let fake = fake(3).await;
    fake.push_script(AdminScript::Pass);
    fake.push_script(AdminScript::Edit {
        pointer: "/data/2/results/0/input_tokens".into(),
        value: json!("many"),
    });
    let sink = MemorySink::default();
    let (from, to) = ten_hours();
    let error = import_usage(&config(&fake), from, to, later(), &sink).await.unwrap_err();
    let ImportError::Malformed { ref request, ref problems, .. } = error else { panic!("{error}") };
    assert!(request.target.contains("page=page_3"), "{request}");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["data[2].results[0].input_tokens"], "{problems:?}");
    let shown = error.to_string();
    assert!(
        shown.contains("malformed page, nothing of it was imported") && shown.contains("\"many\""),
        "{shown}"
    );
    // The first page (hours 0-2) was written; nothing of the second (hours 3-5).
    let events = sink.events.lock().unwrap().clone();
    assert_eq!(events.len(), 12);
    assert!(events.iter().all(|e| e.occurred_at < start_of_day() + TimeDelta::hours(3)));

    // Several problems in one page are all named, each with its path.
    fake.push_script(AdminScript::Edit {
        pointer: "/data/0/results/1".into(),
        value: json!({"object": "organization.usage.completions.result", "model": 7, "batch": "yes",
                      "input_tokens": 10, "input_cached_tokens": 11, "output_tokens": -1}),
    });
    let error = import_usage(&config(&fake), from, to, later(), &MemorySink::default()).await.unwrap_err();
    let ImportError::Malformed { problems, .. } = error else { panic!("{error}") };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "data[0].results[1].model",
            "data[0].results[1].batch",
            "data[0].results[1].output_tokens",
            "data[0].results[1].num_model_requests",
            "data[0].results[1].input_cached_tokens",
        ]
    );
    // A bucket of another width is refused too.
    fake.push_script(AdminScript::Edit {
        pointer: "/data/1/end_time".into(),
        value: json!(start_of_day().timestamp() + 7200 + 60),
    });
    let error = import_usage(&config(&fake), from, to, later(), &MemorySink::default()).await.unwrap_err();
    assert!(
        error.to_string().contains("data[1]: bucket 2026-11-30T01:00:00Z to 2026-11-30T02:01:00Z"),
        "{error}"
    );
}

#[tokio::test]
async fn buckets_that_have_not_settled_are_left_for_later() {
    let fake = fake(24).await;
    let now = start_of_day() + TimeDelta::minutes(7 * 60 + 20);
    let (from, to) = ten_hours();
    let sink = MemorySink::default();
    let summary = import_usage(&config(&fake), from, to, now, &sink).await.unwrap();
    let six = start_of_day() + TimeDelta::hours(6);
    assert_eq!((summary.imported, summary.left_for_later), (Some((from, six)), Some((six, to))));
    let said = summary.describe("faregate.usage.v1", 3600);
    assert!(
        said.contains(
            "left for later: buckets from 2026-11-30T06:00:00Z to 2026-11-30T10:00:00Z had not settled"
        ) && said.contains("import.openai.settle_lag_secs"),
        "{said}"
    );
    assert_eq!(fake.requests()[0].param("end_time"), Some(six.timestamp().to_string().as_str()));
    assert!(sink.events.lock().unwrap().iter().all(|e| e.occurred_at < six));
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_the_status_and_without_the_key() {
    let fake = fake(24).await;
    let config = OpenAiImportConfig { admin_key: Secret::new("sk-admin-wrong"), ..config(&fake) };
    let (from, to) = ten_hours();
    let error = import_usage(&config, from, to, later(), &MemorySink::default()).await.unwrap_err();
    assert!(matches!(error, ImportError::Status { status: 401, .. }), "{error}");
    assert!(!error.to_string().contains("wrong"), "{error}");
    // A project key is refused before any request.
    let config = OpenAiImportConfig { admin_key: Secret::new("sk-proj-abc"), ..config };
    let error = import_usage(&config, from, to, later(), &MemorySink::default()).await.unwrap_err();
    assert!(error.to_string().contains("import.openai.admin_key"), "{error}");
    assert!(!error.to_string().contains("sk-proj-abc"), "{error}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn the_gateways_own_keys_and_projects_are_not_imported_twice() {
    let fake = fake(24).await;
    let config = OpenAiImportConfig {
        skip_api_key_ids: vec!["key_a".into()],
        skip_project_ids: vec!["proj_b".into()],
        ..config(&fake)
    };
    let sink = MemorySink::default();
    let (from, to) = ten_hours();
    let summary = import_usage(&config, from, to, later(), &sink).await.unwrap();
    assert_eq!((summary.events, summary.skipped_results), (9, 27));
    let events = sink.events.lock().unwrap();
    assert!(events.iter().all(|e| e.key_id.is_none()), "only the keyless results are left");
    assert!(
        summary.describe("usage", 3600).contains("skipped 27 results of the gateway's own keys or projects")
    );
}

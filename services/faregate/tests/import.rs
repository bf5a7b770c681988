//! `faregate import anthropic` and `faregate import openai` as an operator runs them, against
//! the fake admin APIs and the local stack's broker: what they imported, what they left for
//! later and why, and errors that name the request and status without the key.

use chrono::{DurationRound, TimeDelta, Utc};
use faregate_core::kafka::ensure_topics;
use faregate_fake_upstream::admin::{
    FakeAdminConfig, FakeAnthropicAdmin, ReportTokens, usage_bucket, usage_result,
};
use faregate_fake_upstream::openai_admin::{
    CompletionsGroup, CompletionsTokens, FakeOpenAiAdmin, FakeOpenAiAdminConfig, completions_bucket,
    completions_result,
};

const KEY: &str = "sk-ant-admin01-cli-test-secret";

async fn faregate(args: &[&str], env: Vec<(String, String)>) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_faregate"));
    command.args(args).env_remove("FAREGATE_CONFIG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FAREGATE__")) {
        command.env_remove(key);
    }
    command.envs(env);
    command.output().await.expect("the faregate binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_import_says_what_it_imported_and_what_it_left_for_later() {
    let kafka = faregate_tests::kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    // Four hours up to the current one: with a one-hour settle lag, the last has not settled.
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let first = hour - TimeDelta::hours(4);
    let tokens = ReportTokens { uncached_input: 10, output: 5, ..ReportTokens::default() };
    let buckets = (0..4)
        .map(|h| {
            let result = usage_result(Some("apikey_a"), None, "claude-sonnet-4-5", tokens);
            usage_bucket(first + TimeDelta::hours(h), TimeDelta::hours(1), vec![result])
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = FakeAdminConfig { admin_key: KEY.into(), bucket_width: "1h".into(), page_size: 2, buckets };
    let fake = FakeAnthropicAdmin::start(listener, config).unwrap();
    let env = |key: &str| {
        vec![
            ("FAREGATE__KAFKA__BROKERS".to_string(), kafka.brokers.clone()),
            ("FAREGATE__KAFKA__TOPICS__USAGE".to_string(), kafka.topics.usage.clone()),
            ("FAREGATE__IMPORT__ANTHROPIC__ADMIN_KEY".to_string(), key.to_string()),
            ("FAREGATE__IMPORT__ANTHROPIC__BASE_URL".to_string(), fake.url()),
            ("FAREGATE__IMPORT__ANTHROPIC__ORG".to_string(), "acme".to_string()),
        ]
    };
    let (from, to) = (first.to_rfc3339(), hour.to_rfc3339());
    let output = faregate(&["import", "anthropic", "--from", &from, "--to", &to], env(KEY)).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let z = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let settled = Utc::now() - TimeDelta::hours(1);
    // Normally three hours have settled; just after the hour turns, the third may not have.
    let end = settled.duration_trunc(TimeDelta::hours(1)).unwrap().min(hour);
    let hours = (end - first).num_hours();
    assert!(
        stdout.contains(&format!("imported {hours} usage events ({hours} buckets")),
        "{hours} hours settled: {stdout}"
    );
    assert!(
        stdout.contains(&format!("left for later: buckets from {} to {} had not settled", z(end), z(hour))),
        "{stdout}"
    );
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "the key never shows");

    let output =
        faregate(&["import", "anthropic", "--from", &from, "--to", &to], env("sk-ant-admin01-wrong")).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    assert!(
        stderr.contains("anthropic: GET /v1/organizations/usage_report/messages?starting_at=")
            && stderr.contains("HTTP 401"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong"), "{stderr}");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_openai_import_says_what_it_imported_and_skipped() {
    const KEY: &str = "sk-admin-openai-cli-test-secret";
    let kafka = faregate_tests::kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    // Four hours up to the current one: with a one-hour settle lag, the last has not settled.
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let first = hour - TimeDelta::hours(4);
    let tokens =
        CompletionsTokens { input: 10, input_cached: 4, output: 5, requests: 1, ..Default::default() };
    let group = |key: &'static str| CompletionsGroup {
        project_id: Some("proj_1"),
        api_key_id: Some(key),
        model: "gpt-5-mini",
        ..CompletionsGroup::default()
    };
    let buckets = (0..4)
        .map(|h| {
            let results = vec![
                completions_result(group("key_direct"), tokens),
                completions_result(group("key_gateway"), tokens),
            ];
            completions_bucket(first + TimeDelta::hours(h), TimeDelta::hours(1), results)
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config =
        FakeOpenAiAdminConfig { admin_key: KEY.into(), bucket_width: "1h".into(), page_size: 2, buckets };
    let fake = FakeOpenAiAdmin::start(listener, config).unwrap();
    let env = |key: &str| {
        vec![
            ("FAREGATE__KAFKA__BROKERS".to_string(), kafka.brokers.clone()),
            ("FAREGATE__KAFKA__TOPICS__USAGE".to_string(), kafka.topics.usage.clone()),
            ("FAREGATE__IMPORT__OPENAI__ADMIN_KEY".to_string(), key.to_string()),
            ("FAREGATE__IMPORT__OPENAI__BASE_URL".to_string(), fake.url()),
            ("FAREGATE__IMPORT__OPENAI__ORG".to_string(), "acme".to_string()),
            ("FAREGATE__IMPORT__OPENAI__SKIP_API_KEY_IDS".to_string(), "[\"key_gateway\"]".to_string()),
        ]
    };
    let (from, to) = (first.to_rfc3339(), hour.to_rfc3339());
    let output = faregate(&["import", "openai", "--from", &from, "--to", &to], env(KEY)).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let z = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let settled = Utc::now() - TimeDelta::hours(1);
    let end = settled.duration_trunc(TimeDelta::hours(1)).unwrap().min(hour);
    let hours = (end - first).num_hours();
    assert!(
        stdout.contains(&format!("imported {hours} usage events ({hours} buckets")),
        "{hours} hours settled: {stdout}"
    );
    assert!(
        stdout.contains(&format!("skipped {hours} results of the gateway's own keys or projects")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("left for later: buckets from {} to {} had not settled", z(end), z(hour)))
            && stdout.contains("import.openai.settle_lag_secs"),
        "{stdout}"
    );
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "the key never shows");

    let output =
        faregate(&["import", "openai", "--from", &from, "--to", &to], env("sk-admin-wrong-one")).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    assert!(
        stderr.contains("openai: GET /v1/organization/usage/completions?start_time=")
            && stderr.contains("HTTP 401"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-one"), "{stderr}");
    fake.shutdown().await;
}

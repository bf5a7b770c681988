//! `faregate import anthropic` and `faregate import openai` as an operator runs them, against
//! the fake admin APIs and the local stack's broker: what they imported, what they left for
//! later and why, and errors that name the request and status without the key.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use faregate_core::kafka::{KafkaConfig, ensure_topics};
use faregate_fake_upstream::admin::{
    AdminDialect, FakeAdmin, FakeAdminConfig, FakeAnthropicAdmin, ReportTokens, usage_bucket, usage_result,
};
use faregate_fake_upstream::openai_admin::{
    CompletionsGroup, CompletionsTokens, FakeOpenAiAdmin, completions_bucket, completions_result,
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

/// `faregate args` with `env`: its output, stdout and stderr.
async fn faregate_said(args: &[&str], env: Vec<(String, String)>) -> (std::process::Output, String, String) {
    let output = faregate(args, env).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// A broker with the topics, and four hours up to the current one (`first`, the current hour):
/// with a one-hour settle lag, the last has not settled.
async fn broker_and_hours() -> (KafkaConfig, DateTime<Utc>, DateTime<Utc>) {
    let kafka = faregate_tests::kafka_config();
    ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    (kafka, hour - TimeDelta::hours(4), hour)
}

/// Checks that a run over `first..hour` said it imported the hours settled by now, one event
/// each, and left the rest for later; how many hours that is.
fn said_settled_hours(stdout: &str, first: DateTime<Utc>, hour: DateTime<Utc>) -> i64 {
    let z = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
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
    hours
}

/// A fake admin API of hourly `buckets`, two a page.
async fn fake<D: AdminDialect>(key: &str, buckets: Vec<serde_json::Value>) -> FakeAdmin<D> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = FakeAdminConfig { admin_key: key.into(), bucket_width: "1h".into(), page_size: 2, buckets };
    FakeAdmin::start(listener, config).unwrap()
}

/// The environment of `source`'s import into `kafka`'s usage topic from `url`, as org `acme`,
/// with the admin key `key`.
fn import_env(kafka: &KafkaConfig, source: &str, url: String, key: &str) -> Vec<(String, String)> {
    let section = format!("FAREGATE__IMPORT__{}", source.to_uppercase());
    vec![
        ("FAREGATE__KAFKA__BROKERS".to_string(), kafka.brokers.clone()),
        ("FAREGATE__KAFKA__TOPICS__USAGE".to_string(), kafka.topics.usage.clone()),
        (format!("{section}__ADMIN_KEY"), key.to_string()),
        (format!("{section}__BASE_URL"), url),
        (format!("{section}__ORG"), "acme".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_import_says_what_it_imported_and_what_it_left_for_later() {
    let (kafka, first, hour) = broker_and_hours().await;
    let tokens = ReportTokens { uncached_input: 10, output: 5, ..ReportTokens::default() };
    let buckets = (0..4)
        .map(|h| {
            let result = usage_result(Some("apikey_a"), None, "claude-sonnet-4-5", tokens);
            usage_bucket(first + TimeDelta::hours(h), TimeDelta::hours(1), vec![result])
        })
        .collect();
    let fake: FakeAnthropicAdmin = fake(KEY, buckets).await;
    let env = |key: &str| import_env(&kafka, "anthropic", fake.url(), key);
    let (from, to) = (first.to_rfc3339(), hour.to_rfc3339());
    let (output, stdout, stderr) =
        faregate_said(&["import", "anthropic", "--from", &from, "--to", &to], env(KEY)).await;
    assert!(output.status.success(), "{stdout}\n{stderr}");
    said_settled_hours(&stdout, first, hour);
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "the key never shows");

    let (output, _, stderr) =
        faregate_said(&["import", "anthropic", "--from", &from, "--to", &to], env("sk-ant-admin01-wrong"))
            .await;
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
    let (kafka, first, hour) = broker_and_hours().await;
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
    let fake: FakeOpenAiAdmin = fake(KEY, buckets).await;
    let env = |key: &str| {
        let mut env = import_env(&kafka, "openai", fake.url(), key);
        env.push(("FAREGATE__IMPORT__OPENAI__SKIP_API_KEY_IDS".to_string(), "[\"key_gateway\"]".to_string()));
        env
    };
    let (from, to) = (first.to_rfc3339(), hour.to_rfc3339());
    let (output, stdout, stderr) =
        faregate_said(&["import", "openai", "--from", &from, "--to", &to], env(KEY)).await;
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let hours = said_settled_hours(&stdout, first, hour);
    assert!(
        stdout.contains(&format!("skipped {hours} results of the gateway's own keys or projects")),
        "{stdout}"
    );
    assert!(stdout.contains("import.openai.settle_lag_secs"), "{stdout}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "the key never shows");

    let (output, _, stderr) =
        faregate_said(&["import", "openai", "--from", &from, "--to", &to], env("sk-admin-wrong-one")).await;
    assert!(!output.status.success());
    assert!(
        stderr.contains("openai: GET /v1/organization/usage/completions?start_time=")
            && stderr.contains("HTTP 401"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-one"), "{stderr}");
    fake.shutdown().await;
}

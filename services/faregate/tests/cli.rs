//! The `faregate` binary as an operator uses it: configuration errors name the field, secrets
//! never print, and `schema apply` is idempotent against the real ClickHouse front (needs the
//! local stack that deploy/local/test starts).

use std::process::{Command, Output};

fn faregate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_faregate"));
    command.args(args).env_remove("FAREGATE_CONFIG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FAREGATE__")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command.output().expect("the faregate binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_show_redacts_secrets() {
    let output = faregate(
        &["config", "show"],
        &[("FAREGATE__CLICKHOUSE__PASSWORD", "pa55word"), ("FAREGATE__KAFKA__SASL_PASSWORD", "kafka-secret")],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = text(&output.stdout);
    assert!(shown.contains("[clickhouse]") && shown.contains("*****"), "{shown}");
    assert!(!shown.contains("pa55word") && !shown.contains("kafka-secret"), "{shown}");
}

#[test]
fn a_bad_setting_fails_with_the_field_named() {
    let output = faregate(&["config", "check"], &[("FAREGATE__KAFKA__TOPICS__PARTITIONS", "0")]);
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(error.contains("kafka.topics.partitions") && error.contains("at least 1"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faregate.toml");
    std::fs::write(&file, "[clickhouse]\nurll = \"http://x\"\n").unwrap();
    let output = faregate(&["--config", file.to_str().unwrap(), "config", "check"], &[]);
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(error.contains("urll"), "{error}");
}

#[test]
fn avro_ids_follow_the_documented_rule() {
    let output = faregate(&["avro", "ids"], &[]);
    assert!(output.status.success());
    let listing = text(&output.stdout);
    for line in [
        "101\tusage_event.v1.avsc",
        "201\tspend_aggregate.v1.avsc",
        "301\tdecision.v1.avsc",
        "401\tconfig_record.v1.avsc",
        "501\talert.v1.avsc",
    ] {
        assert!(listing.contains(line), "{line} missing from {listing}");
    }
}

#[test]
fn schema_render_gives_the_cluster_variant() {
    let output = faregate(&["schema", "render", "--cluster", "prod"], &[]);
    assert!(output.status.success());
    let ddl = text(&output.stdout);
    assert!(ddl.contains("CREATE TABLE IF NOT EXISTS usage_ledger_local ON CLUSTER prod"), "{ddl}");
    assert!(ddl.contains("ReplicatedReplacingMergeTree("), "{ddl}");
    assert!(ddl.contains("ENGINE = Distributed(prod, currentDatabase(), usage_ledger_local"), "{ddl}");
}

#[test]
fn schema_apply_is_idempotent() {
    let url = std::env::var("FAREGATE_TEST_CLICKHOUSE_URL")
        .expect("FAREGATE_TEST_CLICKHOUSE_URL is not set: run the tests with deploy/local/test");
    let database = format!("cli_{}", uuid_like());
    let env =
        [("FAREGATE__CLICKHOUSE__URL", url.as_str()), ("FAREGATE__CLICKHOUSE__DATABASE", database.as_str())];
    let first = faregate(&["schema", "apply"], &env);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first = text(&first.stdout);
    assert!(first.contains("applied [1, 2") && first.contains("already applied []"), "{first}");
    let second = faregate(&["schema", "apply"], &env);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let second = text(&second.stdout);
    assert!(second.contains("applied [], already applied [1, 2"), "{second}");
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos:x}{:x}", std::process::id())
}

#[test]
fn prices_check_validates_and_names_the_bad_field() {
    let output = faregate(&["prices", "check"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listing = text(&output.stdout);
    assert!(
        listing.contains("anthropic:") && listing.contains("the compiled-in catalog is valid"),
        "{listing}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("anthropic.toml"),
        "[models.m]\n[[models.m.prices]]\neffective_from = 2025-01-01\ninput = \"3\"\noutput = \"15\"\n",
    )
    .unwrap();
    let output = faregate(&["prices", "check", "--dir", dir.path().to_str().unwrap()], &[]);
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(error.contains("anthropic.toml") && error.contains("\"m\"") && error.contains("unit"), "{error}");
}

#[test]
fn prices_import_writes_a_catalog_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("prices.json");
    std::fs::write(
        &json,
        r#"{"sample_spec": {"litellm_provider": "x"},
            "claude-test-1": {"litellm_provider": "anthropic", "mode": "chat",
              "input_cost_per_token": 3e-06, "output_cost_per_token": 0.000015,
              "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06}}"#,
    )
    .unwrap();
    let out = dir.path().join("catalog");
    let args = [
        "prices",
        "import",
        "--litellm",
        json.to_str().unwrap(),
        "--effective-from",
        "2026-01-01",
        "--out",
        out.to_str().unwrap(),
    ];
    let output = faregate(&args, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("imported 1 models"), "{}", text(&output.stdout));
    let check = faregate(&["prices", "check", "--dir", out.to_str().unwrap()], &[]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("claude-test-1"), "{}", text(&check.stdout));
    // A second import does not overwrite without --force.
    let again = faregate(&args, &[]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("--force"), "{}", text(&again.stderr));
}

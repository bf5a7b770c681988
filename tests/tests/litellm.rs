//! A real LiteLLM proxy enforces Faregate's budgets and feeds its ledger with the callback
//! `deploy/integrations/litellm/faregate_callback.py`, as it is: the proxy (PyPI's `litellm`,
//! pinned in tests/litellm/requirements.txt) runs tests/litellm/config.yaml in front of the
//! chain's fake provider, with test identities from tests/litellm/custom_auth.py in place of
//! LiteLLM's key database. It listens on a Unix socket in the test's own directory (uvicorn's
//! `--uds`: no port).
//!
//! What it must show: an allowed user's calls reach the provider (with the provider's key only)
//! and each lands in the ledger once, from the collector, with the provider's exact token
//! classes (cache reads, 5-minute and 1-hour cache writes, reasoning), its cost, the model and
//! the attribution; a provider error lands as an upstream error with no tokens; a user whose
//! budget is blocked gets Faregate's refusal (429 on OpenAI's route, 402 on Anthropic's, the
//! budget's message) and neither the provider nor the ledger sees the call. The callback's
//! fail modes and its retry of a batch are shown by tests/litellm/test_faregate_callback.py.
//!
//! The Python: `FAREGATE_TEST_LITELLM_PYTHON` (deploy/local/test sets it; deploy/local/install
//! makes the venv).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use faregate_fake_upstream::Script;
use faregate_tests::chain::{COLLECTOR_TOKEN, Chain, served_tokens};
use faregate_tests::forward_auth::{Answer, GatewayProcess, PROVIDER_KEY, chain_with_a_blocked_key, send};
use faregate_tests::{eventually_within, hand_priced};
use serde_json::{Value, json};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn python() -> String {
    std::env::var("FAREGATE_TEST_LITELLM_PYTHON").unwrap_or_else(|_| {
        panic!("FAREGATE_TEST_LITELLM_PYTHON is not set: run the tests with deploy/local/test (it installs LiteLLM)")
    })
}

/// The LiteLLM proxy on a Unix socket, with Faregate's callback pointed at `faregate`, once it
/// answers its liveness probe. `keys`: each LiteLLM key and its identity.
async fn start_litellm(chain: &Chain, keys: Value) -> GatewayProcess {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("litellm.sock");
    let log = std::fs::File::create(dir.path().join("litellm.log")).unwrap();
    let fake = chain.fake.url();
    let child = std::process::Command::new(python())
        .args(["-m", "uvicorn", "litellm.proxy.proxy_server:app", "--log-level", "warning", "--uds"])
        .arg(&socket)
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("CONFIG_FILE_PATH", format!("{ROOT}/tests/litellm/config.yaml"))
        .env("PYTHONPATH", format!("{ROOT}/deploy/integrations/litellm:{ROOT}/tests/litellm"))
        // The model prices LiteLLM ships, not a download (there is no network here).
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_MASTER_KEY", format!("sk-master-{}", uuid::Uuid::now_v7().simple()))
        .env("FAREGATE_URL", chain.url())
        .env("FAREGATE_COLLECTOR_TOKEN", COLLECTOR_TOKEN)
        .env("FAREGATE_FLUSH_SECS", "0.2")
        .env("FAKE_PROVIDER_URL", &fake)
        .env("FAKE_PROVIDER_OPENAI_URL", format!("{fake}/v1"))
        .env("PROVIDER_KEY", PROVIDER_KEY)
        .env("FAREGATE_TEST_LITELLM_KEYS", keys.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start LiteLLM ({e}); deploy/local/install makes its venv"));
    let mut litellm = GatewayProcess { child, socket, dir };
    // Its start loads the whole proxy (tens of seconds on 2 busy cores); the socket exists once
    // the application has started.
    eventually_within("the LiteLLM proxy answers on its socket", Duration::from_secs(240), || {
        let exited = litellm.child.try_wait().unwrap();
        assert!(exited.is_none(), "LiteLLM exited ({exited:?}):\n{}", log_of(&litellm));
        let socket = litellm.socket.clone();
        async move { live(&socket).await.then_some(()) }
    })
    .await;
    litellm
}

async fn live(socket: &Path) -> bool {
    let Ok(stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(connection);
    let request = hyper::Request::get("/health/liveliness")
        .header("host", "litellm.test")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    matches!(sender.send_request(request).await, Ok(response) if response.status() == 200)
}

fn log_of(litellm: &GatewayProcess) -> String {
    std::fs::read_to_string(litellm.dir.path().join("litellm.log")).unwrap_or_default()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
}

/// One ledger row, as the test reads it.
#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct Row {
    org: String,
    team: String,
    user: String,
    key_id: String,
    provider: String,
    requested_model: String,
    endpoint: String,
    request_id: String,
    source_kind: String,
    http_status: u16,
    outcome: String,
    tokens: (u64, u64, u64, u64, u64, u64),
    cost: Option<String>,
}

async fn ledger_rows(chain: &Chain, filter: &str) -> Vec<Row> {
    let sql = format!(
        "SELECT org, team, user, key_id, provider, requested_model, endpoint, request_id, \
         toString(source_kind) AS source_kind, http_status, toString(outcome) AS outcome, \
         (input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, \
         reasoning_tokens) AS tokens, toString(cost_total) AS cost \
         FROM usage_ledger WHERE {filter} ORDER BY occurred_at"
    );
    chain.clickhouse.client().query(&sql).fetch_all().await.unwrap_or_default()
}

/// Wait until the ledger holds `rows` rows matching `filter`.
async fn ledger_has(chain: &Chain, filter: &str, rows: usize) -> Vec<Row> {
    eventually_within(&format!("{rows} ledger rows where {filter}"), Duration::from_secs(120), || async {
        let found = ledger_rows(chain, filter).await;
        (found.len() >= rows).then_some(found)
    })
    .await
}

/// The calls the provider saw (LiteLLM also lists the OpenAI models with a GET of its own).
fn model_calls(chain: &Chain) -> Vec<faregate_fake_upstream::RecordedRequest> {
    chain.fake.requests().into_iter().filter(|request| request.method == "POST").collect()
}

fn call_id(answer: &Answer) -> String {
    answer.headers.get("x-litellm-call-id").expect("LiteLLM names the call").to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litellm_with_the_faregate_callback_enforces_budgets_and_meters_each_call_once() {
    let (chain, _, bo) = chain_with_a_blocked_key().await;
    let ana_key = format!("sk-litellm-ana-{}", uuid::Uuid::now_v7().simple());
    let bo_key = format!("sk-litellm-bo-{}", uuid::Uuid::now_v7().simple());
    let bo_user = bo.user.clone().unwrap();
    let keys = json!({
        ana_key.clone(): {"org": "acme", "team": "infra", "user": "ana"},
        bo_key.clone(): {"org": "acme", "team": "infra", "user": bo_user},
    });
    let litellm = start_litellm(&chain, keys).await;
    let bearer = |key: &str| format!("Bearer {key}");

    // Allowed: one call to each provider reaches it, with the provider's key only.
    let ana = bearer(&ana_key);
    let claude =
        send(&litellm.socket, "/v1/chat/completions", &[("authorization", &ana)], chat("claude-sonnet-4-5"))
            .await;
    assert_eq!(claude.status, 200, "{claude:?}\n{}", log_of(&litellm));
    let gpt = send(&litellm.socket, "/v1/chat/completions", &[("authorization", &ana)], chat("gpt-5")).await;
    assert_eq!(gpt.status, 200, "{gpt:?}\n{}", log_of(&litellm));
    let seen = model_calls(&chain);
    assert_eq!(
        seen.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/v1/messages", "/v1/chat/completions"]
    );
    assert_eq!(seen[0].header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(seen[1].header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    for request in &seen {
        assert!(
            request.headers.iter().all(|(_, v)| !v.contains(&ana_key)),
            "the LiteLLM key stays in LiteLLM"
        );
    }

    // Each call is in the ledger once, from the collector, with the provider's exact tokens.
    let rows = ledger_has(&chain, "user = 'ana'", 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, (request, answer, provider, model)) in rows
        .iter()
        .zip([(&seen[0], &claude, "anthropic", "claude-sonnet-4-5"), (&seen[1], &gpt, "openai", "gpt-5")])
    {
        let tokens = served_tokens(request);
        let count = |n: i64| u64::try_from(n).unwrap();
        let expected = (
            count(tokens.input),
            count(tokens.output),
            count(tokens.cache_read),
            count(tokens.cache_write_5m),
            count(tokens.cache_write_1h),
            count(tokens.reasoning),
        );
        assert_eq!(row.tokens, expected, "{row:?}");
        let cost: rust_decimal::Decimal = row.cost.as_deref().expect("priced").parse().unwrap();
        assert_eq!(cost, hand_priced(&tokens), "{row:?}");
        assert_eq!(
            (
                row.org.as_str(),
                row.team.as_str(),
                row.user.as_str(),
                row.provider.as_str(),
                row.requested_model.as_str()
            ),
            ("acme", "infra", "ana", provider, model),
        );
        assert_eq!(
            (row.source_kind.as_str(), row.outcome.as_str(), row.http_status),
            ("collector", "ok", 200)
        );
        assert_eq!(row.endpoint, "chat_completions", "{row:?}");
        assert_eq!(row.request_id, call_id(answer), "the record names LiteLLM's call");
        assert_eq!(row.key_id.len(), 64, "the LiteLLM key's hash, never the key: {row:?}");
    }
    assert!(rows[0].tokens.3 > 0 && rows[0].tokens.4 > 0 && rows[1].tokens.5 > 0, "every class is exercised");

    // Blocked: Faregate's refusal in each API's terms; the provider sees nothing.
    let bo_bearer = bearer(&bo_key);
    let refused =
        send(&litellm.socket, "/v1/chat/completions", &[("authorization", &bo_bearer)], chat("gpt-5")).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    let message = refused.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Bo daily") && message.contains("$0.06 spent of $0.05"), "{refused:?}");
    assert_eq!(refused.headers["x-should-retry"], "false");
    let anthropic =
        send(&litellm.socket, "/v1/messages", &[("x-api-key", &bo_key)], chat("claude-sonnet-4-5")).await;
    assert_eq!(anthropic.status, 402, "{anthropic:?}");
    assert!(anthropic.body.to_string().contains("Bo daily"), "{anthropic:?}");
    assert_eq!(model_calls(&chain).len(), 2, "no refused call reached the provider");

    // A provider error is metered as one with no tokens. Its record is queued after the refused
    // calls, so once it is in the ledger any record of theirs would be too.
    chain.fake.push_script(Script::Status { status: 400, body: Value::Null, headers: vec![] });
    let failed =
        send(&litellm.socket, "/v1/chat/completions", &[("authorization", &ana)], chat("claude-sonnet-4-5"))
            .await;
    assert_eq!(failed.status, 400, "{failed:?}");
    let failures = ledger_has(&chain, "user = 'ana' AND http_status = 400", 1).await;
    assert_eq!(
        (failures[0].outcome.as_str(), failures[0].tokens, failures[0].provider.as_str()),
        ("upstream_error", (0, 0, 0, 0, 0, 0), "anthropic"),
    );
    let from_collector =
        ledger_rows(&chain, &format!("user = '{bo_user}' AND source_kind = 'collector'")).await;
    assert!(from_collector.is_empty(), "a refused call is not metered: {from_collector:?}");
    assert_eq!(ledger_rows(&chain, "user = 'ana'").await.len(), 3, "each call once");

    let mut litellm = litellm;
    assert!(litellm.child.try_wait().unwrap().is_none(), "LiteLLM still runs");
    chain.assert_running();
}

/// The callback's own behaviour against a stand-in Faregate (tests/litellm/test_faregate_callback.py,
/// Python's unittest, in the LiteLLM venv): fail open and fail closed when Faregate cannot be
/// asked, Faregate's refusal passed on, and a batch the collector failed sent again, the same
/// records, within the attempt bound.
#[test]
fn the_callback_fails_open_or_closed_and_resends_a_failed_batch() {
    let tests: PathBuf = [ROOT, "tests", "litellm"].iter().collect();
    let output = std::process::Command::new(python())
        .args(["-m", "unittest", "-v", "test_faregate_callback"])
        .current_dir(&tests)
        .env("PYTHONPATH", format!("{ROOT}/deploy/integrations/litellm"))
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "test_faregate_callback.py failed:\n{report}");
    assert!(report.contains("\nOK"), "{report}");
}

//! A real nginx (Debian's) enforces Faregate's budgets by configuration: the example config
//! `deploy/integrations/nginx/faregate.conf.template`, rendered as its header says, puts nginx
//! in front of the (fake) provider with `auth_request` to the gateway's `/v1/check`. An allowed
//! key reaches the provider through nginx with the provider's key in place of the virtual one; a
//! key whose budget is blocked gets Faregate's block response through nginx (402 on Anthropic
//! paths, 429 on OpenAI paths, the budget's message), and the provider sees nothing of it; an
//! unknown key gets 401. nginx listens on a Unix socket in the test's own directory (no port).
//!
//! The binary: `FAREGATE_TEST_NGINX` (set by deploy/local/test), else `/usr/sbin/nginx`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use faregate_core::event::DecisionState;
use faregate_fake_upstream::USAGE_HEADER;
use faregate_tests::chain::{Chain, ChainSetup, KeySpec, rolling_day_budget};
use faregate_tests::{clickhouse_config, eventually_within, kafka_config};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

const TEMPLATE: &str = include_str!("../../deploy/integrations/nginx/faregate.conf.template");
const PROVIDER_KEY: &str = "sk-provider-only-nginx-knows";

/// nginx running on `dir`'s config; killed on drop.
struct Nginx {
    child: std::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The template with its variables set, as `envsubst` would.
fn render(socket: &Path, faregate: &str, upstream: &str) -> String {
    let mut config = TEMPLATE.to_string();
    for (name, value) in [
        ("LISTEN", format!("unix:{}", socket.display())),
        ("FAREGATE", faregate.to_string()),
        ("ANTHROPIC_UPSTREAM", upstream.to_string()),
        ("OPENAI_UPSTREAM", upstream.to_string()),
        ("ANTHROPIC_KEY", PROVIDER_KEY.to_string()),
        ("OPENAI_KEY", PROVIDER_KEY.to_string()),
    ] {
        config = config.replace(&format!("${{{name}}}"), &value);
    }
    assert!(!config.contains("${"), "every variable of the template is set: {config}");
    config
}

fn start_nginx(faregate: &str, upstream: &str) -> Nginx {
    let binary = std::env::var("FAREGATE_TEST_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let socket = dir.path().join("nginx.sock");
    let config = dir.path().join("nginx.conf");
    std::fs::write(&config, render(&socket, faregate, upstream)).unwrap();
    let test = std::process::Command::new(&binary)
        .args(["-t", "-q", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{binary} cannot run ({e}); deploy/local/install installs nginx"));
    assert!(test.status.success(), "nginx -t: {}", String::from_utf8_lossy(&test.stderr));
    let child = std::process::Command::new(&binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&config)
        // One process, so killing it leaves no worker behind.
        .args(["-g", "daemon off; master_process off;"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Nginx { child, socket, _dir: dir }
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: serde_json::Value,
}

/// One request to nginx on its socket, retried (within a deadline) only until nginx listens.
async fn send(nginx: &Nginx, path: &str, headers: &[(&str, &str)], body: serde_json::Value) -> Answer {
    // nginx creates its socket when it listens.
    let socket = nginx.socket.clone();
    let stream = eventually_within("nginx listens on its socket", Duration::from_secs(30), || {
        let socket = socket.clone();
        async move { tokio::net::UnixStream::connect(&socket).await.ok() }
    })
    .await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut request =
        hyper::Request::post(path).header("host", "gateway.test").header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .expect("nginx answers within 30 s")
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer { status: parts.status.as_u16(), headers: parts.headers, body }
}

fn anthropic(key: &str) -> Vec<(&str, &str)> {
    vec![("x-api-key", key), ("anthropic-version", "2023-06-01"), (USAGE_HEADER, "input=10000,output=0")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_the_example_config_enforces_faregate_decisions() {
    let ana = KeySpec::new("acme", "infra", "ana");
    let bo = KeySpec::new("acme", "infra", &format!("bo-{}", uuid::Uuid::now_v7().simple()));
    let bo_user = bo.user.clone().unwrap();
    let budget = rolling_day_budget("acme", &bo_user, "bo-day", "Bo daily", "0.05");
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    (setup.keys, setup.budgets) = (vec![ana.clone(), bo.clone()], vec![budget.clone()]);
    setup.reservation.enabled = false;
    let chain = Chain::start(setup).await;
    // Bo spends $0.06 of $0.05 through the gateway itself: the budget service blocks bo.
    for _ in 0..2 {
        let response = chain
            .http
            .post(format!("{}/v1/messages", chain.url()))
            .header("x-api-key", &bo.secret)
            .header("anthropic-version", "2023-06-01")
            .header(USAGE_HEADER, "input=10000,output=0")
            .json(&serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    chain.decision_everywhere(&budget.scope.key(), DecisionState::Block).await;
    chain.fake.clear_requests();

    let faregate = chain.url().trim_start_matches("http://").to_string();
    let mut nginx = start_nginx(&faregate, &chain.fake.url());
    let message = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});

    // Allowed: through nginx to the provider, with the provider's key, not the virtual one.
    let allowed = send(&nginx, "/v1/messages", &anthropic(&ana.secret), message.clone()).await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    assert_eq!(allowed.headers["x-faregate-decision"], "allow");
    let seen = chain.fake.requests();
    assert_eq!(seen.len(), 1);
    let keys: Vec<&str> =
        seen[0].headers.iter().filter(|(name, _)| name == "x-api-key").map(|(_, v)| v.as_str()).collect();
    assert_eq!(keys, vec![PROVIDER_KEY], "the provider's key in place of the virtual one");
    assert!(
        seen[0].headers.iter().all(|(_, value)| !value.contains(&ana.secret)),
        "the virtual key never reaches the provider: {:?}",
        seen[0].headers
    );

    // Blocked, on an Anthropic path: Faregate's 402 with the budget's message.
    let blocked = send(&nginx, "/v1/messages", &anthropic(&bo.secret), message.clone()).await;
    assert_eq!(blocked.status, 402, "{:?}", blocked.body);
    assert_eq!(blocked.body["error"]["type"], "billing_error", "{:?}", blocked.body);
    let text = blocked.body["error"]["message"].as_str().unwrap();
    assert!(text.contains("Bo daily") && text.contains("$0.06 spent of $0.05"), "{text}");
    assert_eq!(blocked.headers["x-should-retry"], "false");
    // On an OpenAI path: 429 insufficient_quota.
    let bearer = format!("Bearer {}", bo.secret);
    let chat = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let openai = send(&nginx, "/v1/chat/completions", &[("authorization", &bearer)], chat).await;
    assert_eq!(openai.status, 429, "{:?}", openai.body);
    assert_eq!(openai.body["error"]["code"], "insufficient_quota", "{:?}", openai.body);

    // An unknown key: 401, with the provider's error shape.
    let unknown = send(&nginx, "/v1/messages", &anthropic("fg-not-a-key"), message).await;
    assert_eq!(unknown.status, 401, "{:?}", unknown.body);
    assert_eq!(unknown.body["error"]["type"], "authentication_error", "{:?}", unknown.body);

    assert_eq!(chain.fake.requests().len(), 1, "no refused request reached the provider");
    assert!(nginx.child.try_wait().unwrap().is_none(), "nginx still runs");
    chain.assert_running();
}

//! What every gateway in front of Faregate's forward-auth (`/v1/check`) must show, whatever the
//! gateway (tests/tests/nginx.rs, tests/tests/caddy.rs): a chain with one key whose budget is
//! blocked and one that is free, and one request at a time to the gateway on the Unix socket
//! it listens on (a path of the test's own: no port).
//!
//! The example configs put the gateway in front of both providers (here the chain's fake),
//! replacing the client's virtual key with [`PROVIDER_KEY`].

use std::path::Path;
use std::time::Duration;

use faregate_core::event::DecisionState;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::chain::{Chain, ChainSetup, KeySpec, rolling_day_budget};
use crate::{clickhouse_config, eventually_within, kafka_config};

/// The provider key the example configs put in place of the client's virtual key.
pub const PROVIDER_KEY: &str = "sk-provider-only-the-gateway-knows";

/// A gateway process a test started, listening on `socket` in `dir` (the test's own
/// directory, removed with it); killed on drop.
#[derive(Debug)]
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub socket: std::path::PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: serde_json::Value,
}

/// The chain, `ana` (free) and `bo` (a $0.05 day budget, $0.06 spent through Faregate's own
/// routes: blocked everywhere). The fake has recorded nothing yet.
pub async fn chain_with_a_blocked_key() -> (Chain, KeySpec, KeySpec) {
    let ana = KeySpec::new("acme", "infra", "ana");
    let bo = KeySpec::new("acme", "infra", &format!("bo-{}", uuid::Uuid::now_v7().simple()));
    let budget = rolling_day_budget("acme", bo.user.as_deref().unwrap(), "bo-day", "Bo daily", "0.05");
    let mut setup = ChainSetup::new(kafka_config(), clickhouse_config());
    (setup.keys, setup.budgets) = (vec![ana.clone(), bo.clone()], vec![budget.clone()]);
    setup.reservation.enabled = false;
    let chain = Chain::start(setup).await;
    for _ in 0..2 {
        let response = chain
            .http
            .post(format!("{}/v1/messages", chain.url()))
            .header("x-api-key", &bo.secret)
            .header("anthropic-version", "2023-06-01")
            .header(faregate_fake_upstream::USAGE_HEADER, "input=10000,output=0")
            .json(&message())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    chain.decision_everywhere(&budget.scope.key(), DecisionState::Block).await;
    chain.fake.clear_requests();
    (chain, ana, bo)
}

/// An Anthropic Messages body.
pub fn message() -> serde_json::Value {
    serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
}

/// One POST to the gateway listening on `socket` (waiting, within 30 s, until it listens).
pub async fn send(socket: &Path, path: &str, headers: &[(&str, &str)], body: serde_json::Value) -> Answer {
    let stream = eventually_within("the gateway listens on its socket", Duration::from_secs(30), || async {
        tokio::net::UnixStream::connect(socket).await.ok()
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
        .expect("the gateway answers within 30 s")
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer { status: parts.status.as_u16(), headers: parts.headers, body }
}

fn anthropic(key: &str) -> Vec<(&str, &str)> {
    vec![
        ("x-api-key", key),
        ("anthropic-version", "2023-06-01"),
        (faregate_fake_upstream::USAGE_HEADER, "input=10000,output=0"),
    ]
}

/// Through the gateway on `socket`: `ana` reaches the provider with [`PROVIDER_KEY`] only; `bo`
/// gets Faregate's block response (402 with the budget's message on `/v1/messages`, 429
/// `insufficient_quota` on `/v1/chat/completions`); an unknown key gets 401 in Anthropic's
/// shape; the provider sees no refused request.
pub async fn assert_enforced(chain: &Chain, ana: &KeySpec, bo: &KeySpec, socket: &Path) {
    let allowed = send(socket, "/v1/messages", &anthropic(&ana.secret), message()).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
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

    let blocked = send(socket, "/v1/messages", &anthropic(&bo.secret), message()).await;
    assert_eq!(blocked.status, 402, "{blocked:?}");
    assert_eq!(blocked.body["error"]["type"], "billing_error", "{blocked:?}");
    let text = blocked.body["error"]["message"].as_str().unwrap();
    assert!(text.contains("Bo daily") && text.contains("$0.06 spent of $0.05"), "{text}");
    assert_eq!(blocked.headers["x-should-retry"], "false");
    let bearer = format!("Bearer {}", bo.secret);
    let chat = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let openai = send(socket, "/v1/chat/completions", &[("authorization", &bearer)], chat).await;
    assert_eq!(openai.status, 429, "{openai:?}");
    assert_eq!(openai.body["error"]["code"], "insufficient_quota", "{openai:?}");

    let unknown = send(socket, "/v1/messages", &anthropic("fg-not-a-key"), message()).await;
    assert_eq!(unknown.status, 401, "{unknown:?}");
    assert_eq!(unknown.body["error"]["type"], "authentication_error", "{unknown:?}");
    assert_eq!(chain.fake.requests().len(), 1, "no refused request reached the provider");
}

//! The gateway through real HTTP, against the project's fake provider: usage read token class
//! by token class (streaming and not), headers on the way up, refusals in each provider's
//! shape, one event per request whatever happens. The usage sink is in memory here; the
//! Kafka path is proven in ingress_kafka.rs.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use faregate_core::config::Secret;
use faregate_core::event::{
    ConfigEntity, ConfigRecord, DecisionState, Endpoint, Outcome, TokenCounts, Tool, UsageEvent, UsageSource,
};
use faregate_fake_upstream::{FakeConfig, FakeUpstream, Script};
use faregate_ingress::config::{AuthMode, IngressConfig, Provider, UpstreamConfig};
use faregate_ingress::decisions::DecisionCache;
use faregate_ingress::emitter::MemorySink;
use faregate_ingress::keys::{KeyStore, hash_secret};
use faregate_ingress::table::Freshness;
use faregate_ingress::{FailMode, Gateway};
use faregate_tests::chain::eventually;
use faregate_tests::{budget_block, config_record, virtual_key};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "fgk_test_secret_ana";
const UPSTREAM_KEY: &str = "sk-upstream-credential";

struct Rig {
    url: String,
    fake: FakeUpstream,
    sink: MemorySink,
    keys: Arc<KeyStore>,
    decisions: Arc<DecisionCache>,
    gateway: Arc<Gateway>,
    stop: CancellationToken,
    client: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn key_record(id: &str, secret: &str, allowed: &[&str]) -> ConfigRecord {
    let mut key = virtual_key(id, secret, "acme", Some("infra"), Some("ana"));
    key.allowed_models = allowed.iter().map(|m| m.to_string()).collect();
    config_record(ConfigEntity::VirtualKey(key))
}

async fn rig_with(config: impl FnOnce(&mut IngressConfig)) -> Rig {
    rig_full(config, true).await
}

async fn rig_full(config: impl FnOnce(&mut IngressConfig), decisions_fresh: bool) -> Rig {
    let fake = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let mut ingress = IngressConfig {
        listen: "127.0.0.1:0".into(),
        upstreams: vec![
            UpstreamConfig {
                name: "anthropic".into(),
                provider: Provider::Anthropic,
                base_url: fake.url(),
                api_key: Secret::new(UPSTREAM_KEY),
                models: vec![],
            },
            UpstreamConfig {
                name: "openai".into(),
                provider: Provider::Openai,
                base_url: fake.url(),
                api_key: Secret::new(UPSTREAM_KEY),
                models: vec![],
            },
        ],
        max_body_bytes: 64 << 10,
        collector_token: Secret::new("collector-token"),
        // No budget service here: enforcement liveness is off unless a test turns it on.
        enforcement_stale_after_secs: 0,
        ..IngressConfig::default()
    };
    config(&mut ingress);
    let keys = Arc::new(KeyStore::default());
    keys.apply("key/k-ana", Some(&key_record("k-ana", SECRET, &[])));
    let decisions = Arc::new(DecisionCache::default());
    let freshness = Arc::new(Freshness::default());
    if decisions_fresh {
        freshness.set_caught_up();
    }
    let sink = MemorySink::default();
    let enforcement =
        Arc::new(faregate_ingress::enforcement::Enforcement::new(ingress.enforcement_stale_after_secs));
    let gateway = Arc::new(Gateway {
        reserver: faregate_ingress::gateway::reserver(&ingress, "test-replica").unwrap(),
        client: faregate_ingress::gateway::upstream_client(&ingress).unwrap(),
        config: Arc::new(ingress),
        keys: keys.clone(),
        decisions: decisions.clone(),
        decisions_freshness: freshness,
        enforcement,
        headroom: Arc::default(),
        limiter: Arc::default(),
        sink: Arc::new(sink.clone()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(faregate_ingress::serve(gateway.clone(), listener, stop.clone()));
    Rig { url, fake, sink, keys, decisions, gateway, stop, client: reqwest::Client::new() }
}

async fn rig() -> Rig {
    rig_with(|_| {}).await
}

fn tokens(input: i64, output: i64, cache_read: i64, w5: i64, w1h: i64, reasoning: i64) -> TokenCounts {
    TokenCounts { input, output, cache_read, cache_write_5m: w5, cache_write_1h: w1h, reasoning }
}

const USAGE: &str = "input=120,output=30,cache_read=1000,cache_write_5m=50,cache_write_1h=70,reasoning=7";

impl Rig {
    fn anthropic(&self, body: Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/messages?beta=true", self.url))
            .header("x-api-key", SECRET)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14")
            .header("user-agent", "claude-cli/2.1.197 (external, sdk-cli)")
            .header("x-claude-code-session-id", "sess-1")
            .header("x-faregate-project", "billing")
            .header("x-fake-usage", USAGE)
            .json(&body)
    }

    fn openai(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(SECRET)
            .header("user-agent", "codex_exec/0.169.0")
            .header("x-fake-usage", USAGE)
            .json(&body)
    }

    async fn one_event(&self) -> UsageEvent {
        let events = tokio::time::timeout(Duration::from_secs(10), self.sink.wait_for(1)).await.unwrap();
        assert_eq!(events.len(), 1, "{events:#?}");
        events.into_iter().next().unwrap()
    }
}

fn messages(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64000, "stream": stream,
           "metadata": {"user_id": "{\"device_id\":\"d\",\"session_id\":\"sess-1\"}"},
           "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn anthropic_messages_are_metered_class_by_class_and_headers_are_right_upstream() {
    let rig = rig().await;
    let response = rig.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-faregate-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    let event = rig.one_event().await;
    // Anthropic has no separate reasoning count: thinking is part of output_tokens.
    assert_eq!(event.tokens, tokens(120, 37, 1000, 50, 70, 0), "{event:#?}");
    assert_eq!(event.usage_source, UsageSource::Reported);
    assert_eq!((event.outcome, event.http_status, event.endpoint), (Outcome::Ok, 200, Endpoint::Messages));
    assert_eq!(
        (event.org.as_str(), event.user.as_deref(), event.key_id.as_deref()),
        ("acme", Some("ana"), Some("k-ana"))
    );
    assert_eq!(
        (event.tool, event.session_id.as_deref(), event.project.as_deref()),
        (Tool::ClaudeCode, Some("sess-1"), Some("billing"))
    );
    assert!(event.upstream_request_id.is_some());

    let upstream = &rig.fake.requests()[0];
    assert_eq!(upstream.query.as_deref(), Some("beta=true"));
    assert_eq!(upstream.header("x-api-key"), Some(UPSTREAM_KEY), "virtual key replaced by the credential");
    assert_eq!(
        upstream.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31,interleaved-thinking-2025-05-14")
    );
    assert_eq!(upstream.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(upstream.header("x-faregate-project"), None, "faregate headers stay here");
    assert!(!upstream.headers.iter().any(|(_, v)| v.contains(SECRET)), "the virtual key never leaves");
    assert_eq!(upstream.body, messages(false), "the body passes unchanged");
}

#[tokio::test]
async fn anthropic_stream_passes_through_and_is_metered() {
    let rig = rig().await;
    let response = rig.anthropic(messages(true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    assert!(text.contains("event: message_start") && text.contains("event: message_stop"), "{text}");
    let event = rig.one_event().await;
    assert_eq!(event.tokens, tokens(120, 37, 1000, 50, 70, 0));
    assert!(event.streaming && event.ttfb_us.is_some());
    assert_eq!((event.outcome, event.usage_source), (Outcome::Ok, UsageSource::Reported));
}

#[tokio::test]
async fn openai_chat_stream_gets_usage_asked_for_and_counted() {
    let rig = rig().await;
    let body = json!({"model": "gpt-5", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let text = rig.openai("/v1/chat/completions", body).send().await.unwrap().text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let upstream = &rig.fake.requests()[0];
    assert_eq!(upstream.body["stream_options"]["include_usage"], true);
    assert_eq!(upstream.header("authorization"), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    let event = rig.one_event().await;
    // prompt_tokens include cached tokens and completion_tokens include reasoning: subtracted.
    assert_eq!(event.tokens, tokens(120, 30, 1000, 0, 0, 7), "{event:#?}");
    assert_eq!((event.tool, event.provider.as_str()), (Tool::Codex, "openai"));
}

#[tokio::test]
async fn openai_responses_and_embeddings() {
    let rig = rig().await;
    let body = json!({"model": "gpt-5-codex", "stream": true, "input": "hi"});
    let response = rig.openai("/v1/responses", body).header("session-id", "codex-s").send().await.unwrap();
    assert!(response.text().await.unwrap().contains("response.completed"));
    let event = rig.one_event().await;
    assert_eq!(event.tokens, tokens(120, 30, 1000, 0, 0, 7), "{event:#?}");
    assert_eq!((event.endpoint, event.session_id.as_deref()), (Endpoint::Responses, Some("codex-s")));

    let body = json!({"model": "text-embedding-3-small", "input": "hi"});
    let response = rig.openai("/v1/embeddings", body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let events = rig.sink.wait_for(2).await;
    assert_eq!(events[1].endpoint, Endpoint::Embeddings);
    assert_eq!(events[1].tokens.output + events[1].tokens.reasoning, 0);
}

#[tokio::test]
async fn bad_keys_bad_json_oversize_and_zstd() {
    let rig = rig().await;
    let response = rig
        .client
        .post(format!("{}/v1/messages", rig.url))
        .header("x-api-key", "fgk_wrong")
        .json(&messages(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");

    let response = rig
        .client
        .post(format!("{}/v1/chat/completions", rig.url))
        .bearer_auth("nope")
        .json(&json!({"model": "gpt-5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");

    let response = rig
        .client
        .post(format!("{}/v1/messages", rig.url))
        .header("x-api-key", SECRET)
        .header("content-type", "application/json")
        .body("{\"model\": \"claude\", oops")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let message = response.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("not valid JSON") && message.contains("column"), "{message}");

    let huge =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    let response = rig.anthropic(huge).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["type"], "request_too_large");

    let compressed = zstd::encode_all(serde_json::to_vec(&messages(false)).unwrap().as_slice(), 3).unwrap();
    let response = rig
        .client
        .post(format!("{}/v1/messages", rig.url))
        .header("x-api-key", SECRET)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .header("x-fake-usage", USAGE)
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        rig.fake.requests().last().unwrap().body,
        messages(false),
        "the upstream got the same request"
    );
    // Refused requests never reached a provider: only the zstd one is metered.
    assert_eq!(rig.one_event().await.tokens.input, 120);
    assert_eq!(rig.fake.requests().len(), 1);
}

#[tokio::test]
async fn a_block_answers_in_each_providers_shape_and_is_recorded() {
    let rig = rig().await;
    rig.decisions.apply("org=acme/team=infra", Some(budget_block("org=acme/team=infra")));
    let response = rig.anthropic(messages(true)).send().await.unwrap();
    assert_eq!(response.status(), 402);
    assert_eq!(response.headers()["x-should-retry"], "false");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "billing_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Infra daily") && message.contains("$12.50 spent of $10.00"), "{message}");

    let body = json!({"model": "gpt-5", "messages": []});
    let response = rig.openai("/v1/chat/completions", body).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-should-retry"], "false");
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "insufficient_quota");

    let events = rig.sink.wait_for(2).await;
    for event in &events {
        assert_eq!(
            (event.outcome, event.usage_source, event.tokens),
            (Outcome::Blocked, UsageSource::None, TokenCounts::default())
        );
    }
    assert!(rig.fake.requests().is_empty(), "nothing reached the provider");

    // Another team's scope does not cover ana; a downgrade swaps the model.
    rig.decisions.apply("org=acme/team=infra", None);
    let mut downgrade = budget_block("org=acme/model=claude-opus-4-1");
    downgrade.state = DecisionState::Downgrade;
    downgrade.downgrade_to = Some("claude-haiku-4-5".into());
    rig.decisions.apply(&downgrade.subject.clone(), Some(downgrade));
    let mut body = messages(false);
    body["model"] = json!("claude-opus-4-1");
    let response = rig.anthropic(body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-faregate-downgraded"], "claude-opus-4-1 -> claude-haiku-4-5");
    assert_eq!(rig.fake.requests()[0].body["model"], "claude-haiku-4-5");
}

#[tokio::test]
async fn a_key_may_be_limited_to_models() {
    let rig = rig().await;
    rig.keys.apply("key/k-ana", Some(&key_record("k-ana", SECRET, &["claude-haiku-4-5"])));
    let response = rig.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["type"], "permission_error");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_metered_once() {
    let fake_slow =
        FakeUpstream::start(FakeConfig { stream_delay: Duration::from_millis(200), ..FakeConfig::default() })
            .await
            .unwrap();
    let slow = rig_with(|c| {
        for upstream in &mut c.upstreams {
            upstream.base_url = fake_slow.url();
        }
    })
    .await;
    let response = slow.anthropic(messages(true)).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    let event = slow.one_event().await;
    assert_eq!(event.outcome, Outcome::ClientAborted);
    // message_start had already reported the input side.
    assert_eq!((event.tokens.input, event.tokens.cache_read), (120, 1000));
    assert_eq!(slow.sink.events().len(), 1);
}

#[tokio::test]
async fn upstream_errors_and_cut_streams_are_metered_once() {
    let rig = rig().await;
    rig.fake.push_script(Script::Status { status: 529, body: Value::Null, headers: vec![] });
    let response = rig.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 529, "upstream errors pass through");
    let event = rig.one_event().await;
    assert_eq!(
        (event.outcome, event.http_status, event.tokens),
        (Outcome::UpstreamError, 529, TokenCounts::default())
    );

    rig.fake.push_script(Script::CutStreamAfter { events: 2 });
    let response = rig.anthropic(messages(true)).send().await.unwrap();
    let _ = response.text().await;
    let events = rig.sink.wait_for(2).await;
    assert_eq!(events[1].outcome, Outcome::UpstreamError);
    assert_eq!(events[1].tokens.cache_read, 1000, "what the provider reported before the cut counts");
}

#[tokio::test]
async fn a_provider_out_of_funds_is_told_apart_from_a_budget_block() {
    let rig = rig().await;
    rig.fake.push_script(Script::OutOfFunds);
    let response = rig.anthropic(messages(true)).send().await.unwrap();
    assert_eq!(response.status(), 400, "the provider's status is kept");
    assert_eq!(response.headers()["x-faregate-provider-out-of-funds"], "true");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["error"]["type"].as_str()),
        (Some("error"), Some("invalid_request_error"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("anthropic provider account") && message.contains("out of funds"), "{message}");
    assert!(
        message.contains("not a Faregate budget block") && message.contains("credit balance is too low"),
        "{message}"
    );

    rig.fake.push_script(Script::OutOfFunds);
    let response =
        rig.openai("/v1/chat/completions", json!({"model": "gpt-5", "messages": []})).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("x-should-retry").is_none(), "not Faregate's final answer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["type"].as_str()),
        (Some("insufficient_quota"), Some("insufficient_quota"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("openai provider account") && message.contains("exceeded your current quota"),
        "{message}"
    );

    // Any other provider error passes through unchanged.
    rig.fake.push_script(Script::Status { status: 429, body: Value::Null, headers: vec![] });
    let response =
        rig.openai("/v1/chat/completions", json!({"model": "gpt-5", "messages": []})).send().await.unwrap();
    assert!(response.headers().get("x-faregate-provider-out-of-funds").is_none());
    let message = response.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(message, "scripted status 429");
    let events = rig.sink.wait_for(3).await;
    assert!(events.iter().all(|e| e.outcome == Outcome::UpstreamError), "{events:?}");
}

#[tokio::test]
async fn an_upstream_that_overruns_its_deadline_is_cut_and_metered_once() {
    // A head that does not come in time: 504 in the provider's shape, one upstream_error event.
    let rig = rig_with(|c| c.upstream_timeout_secs = 1).await;
    rig.fake.push_script(Script::Delay(Duration::from_secs(30)));
    let response = rig.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 504);
    let body = response.json::<Value>().await.unwrap();
    assert_eq!(body["error"]["type"], "timeout_error", "{body}");
    let event = rig.one_event().await;
    assert_eq!((event.outcome, event.http_status), (Outcome::UpstreamError, 504));

    // A stream still running at the deadline (7 events, 400 ms apart): the client's stream
    // ends in an error after what was sent, and what was reported before the cut counts.
    let fake_slow =
        FakeUpstream::start(FakeConfig { stream_delay: Duration::from_millis(400), ..FakeConfig::default() })
            .await
            .unwrap();
    let slow = rig_with(|c| {
        c.upstream_timeout_secs = 1;
        for upstream in &mut c.upstreams {
            upstream.base_url = fake_slow.url();
        }
    })
    .await;
    let response = slow.anthropic(messages(true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the cut stream must not look complete to the client");
    let received = String::from_utf8_lossy(&received);
    assert!(received.contains("message_start") && !received.contains("message_stop"), "{received}");
    let event = slow.one_event().await;
    assert_eq!(event.outcome, Outcome::UpstreamError);
    assert_eq!((event.tokens.input, event.tokens.cache_read), (120, 1000));
    assert_eq!(slow.sink.events().len(), 1);
}

#[tokio::test]
async fn collector_validates_every_record_with_its_path() {
    let rig = rig().await;
    let good = json!({"event_id": uuid::Uuid::now_v7(), "occurred_at": Utc::now(), "org": "acme", "provider": "anthropic",
                      "model": "claude-sonnet-4-5", "tokens": {"input": 10, "output": 5}, "tool": "CURSOR"});
    let mut bad = good.clone();
    bad["tokens"]["input"] = json!(-3);
    bad["provider"] = json!(7);
    bad["occurred_at"] = json!("yesterday");
    let mut unknown = good.clone();
    unknown["colour"] = json!("red");
    let post = |body: Value, token: &str| {
        rig.client.post(format!("{}/v1/usage", rig.url)).bearer_auth(token).json(&body).send()
    };
    let response = post(json!({"records": [good.clone(), bad, unknown]}), "collector-token").await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let paths: Vec<&str> =
        body["error"]["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    // Every bad field of every record, not only the first.
    assert_eq!(
        paths,
        vec!["records[1].occurred_at", "records[1].provider", "records[1].tokens.input", "records[2].colour"],
        "{body}"
    );
    assert!(rig.sink.events().is_empty(), "an invalid batch takes nothing");

    assert_eq!(post(json!({"records": [good.clone()]}), "wrong").await.unwrap().status(), 401);
    let response = post(json!({"records": [good]}), "collector-token").await.unwrap();
    assert_eq!(response.status(), 202);
    let event = rig.one_event().await;
    assert_eq!((event.tool, event.tokens.input, event.tokens.output), (Tool::Cursor, 10, 5));
    assert_eq!(event.source_kind, faregate_core::event::SourceKind::Collector);

    let response = rig
        .client
        .post(format!("{}/v1/usage", rig.url))
        .bearer_auth("collector-token")
        .body(vec![b' '; 9 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn decisions_api_serves_and_streams() {
    let rig = rig().await;
    rig.decisions.apply("org=acme/team=infra", Some(budget_block("org=acme/team=infra")));
    let get = |path: &str| rig.client.get(format!("{}{path}", rig.url)).bearer_auth("collector-token").send();
    let one: Value = get("/v1/decisions/org=acme/team=infra").await.unwrap().json().await.unwrap();
    assert_eq!(one["state"], "BLOCK");
    assert_eq!(get("/v1/decisions/org=nobody").await.unwrap().status(), 404);
    let response = get("/v1/decisions/stream").await.unwrap();
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        seen.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
    assert!(seen.contains("event: decision") && seen.contains("org=acme/team=infra"), "{seen}");
    let mut newer = budget_block("org=acme/user=bob");
    newer.state = DecisionState::Warn;
    rig.decisions.apply("org=acme/user=bob", Some(newer));
    while !seen.contains("org=acme/user=bob") {
        seen.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
}

#[tokio::test]
async fn decisions_api_amounts_are_exact_decimal_strings() {
    let rig = rig().await;
    let mut decision = budget_block("org=acme/team=infra");
    decision.spent_usd = faregate_core::money::Usd("12.500000000000000001".parse().unwrap());
    rig.decisions.apply("org=acme/team=infra", Some(decision));
    let get = |path: &str| rig.client.get(format!("{}{path}", rig.url)).bearer_auth("collector-token").send();
    let amounts = |d: &Value| (d["spent_usd"].clone(), d["limit_usd"].clone());
    let expected = (json!("12.500000000000000001"), json!("10"));

    let all: Value = get("/v1/decisions").await.unwrap().json().await.unwrap();
    assert_eq!(amounts(&all["decisions"][0]), expected, "{all}");
    let one: Value = get("/v1/decisions/org=acme/team=infra").await.unwrap().json().await.unwrap();
    assert_eq!(amounts(&one), expected, "{one}");
    let response = get("/v1/decisions/stream").await.unwrap();
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        seen.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
    let data = seen.lines().find_map(|l| l.strip_prefix("data:")).expect("an SSE data line");
    let streamed: Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(amounts(&streamed), expected, "{seen}");
}

#[tokio::test]
async fn stale_decisions_refuse_when_failing_closed_and_serve_when_failing_open() {
    let closed = rig_full(|c| c.fail_mode = FailMode::Closed, false).await;
    let response = closed.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let message = response.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("decisions are stale"), "{message}");
    assert!(closed.fake.requests().is_empty());

    let open = rig_full(|c| c.fail_mode = FailMode::Open, false).await;
    assert_eq!(open.anthropic(messages(false)).send().await.unwrap().status(), 200);
}

/// Run tests/clients/sdk_check.py with the official SDKs against the rig; one JSON value per call.
async fn run_sdks(rig: &Rig, mode: &str) -> Vec<Value> {
    let python = std::env::var("FAREGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| {
        panic!("FAREGATE_TEST_CLIENTS_PYTHON is not set: run the tests with deploy/local/test (it installs the SDKs)")
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/sdk_check.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("FAREGATE_URL", &rig.url)
        .env("FAREGATE_KEY", SECRET)
        .env("FAKE_USAGE", USAGE)
        .env("MODE", mode)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sdk_check.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn official_sdks_see_what_is_metered() {
    let rig = rig().await;
    let calls = run_sdks(&rig, "usage").await;
    assert_eq!(calls.len(), 5, "{calls:?}");
    let events = rig.sink.wait_for(5).await;
    assert_eq!(events.len(), 5);
    // What each SDK parsed equals the event, token class by token class.
    for (call, event) in calls.iter().zip(&events) {
        assert_eq!(event.outcome, Outcome::Ok, "{call}");
        assert_eq!(event.usage_source, UsageSource::Reported, "{call}");
        match call["call"].as_str().unwrap() {
            "anthropic" | "anthropic-stream" => {
                assert_eq!(call["input"], event.tokens.input);
                assert_eq!(call["output"], event.tokens.output);
                assert_eq!(call["cache_read"], event.tokens.cache_read);
                assert_eq!(event.tokens, tokens(120, 37, 1000, 50, 70, 0));
            }
            "anthropic-tools" => assert_eq!(call["stop_reason"], "tool_use"),
            "openai-chat-stream" => {
                let t = &event.tokens;
                assert_eq!(call["prompt"], t.input + t.cache_read);
                assert_eq!(call["completion"], t.output + t.reasoning);
            }
            "openai-responses" => {
                let t = &event.tokens;
                assert_eq!(call["input"], t.input + t.cache_read);
                assert_eq!(call["output"], t.output + t.reasoning);
            }
            other => panic!("unexpected call {other}"),
        }
    }
    assert_eq!(events[0].tool, Tool::Sdk);
}

#[tokio::test]
async fn a_blocked_sdk_raises_after_one_attempt_with_the_budget_message() {
    let rig = rig().await;
    rig.decisions.apply("org=acme/user=ana", Some(budget_block("org=acme/user=ana")));
    let calls = run_sdks(&rig, "blocked").await;
    assert_eq!(calls[0]["raised"], "PaymentRequiredError", "{calls:?}");
    assert_eq!(calls[0]["status"], 402);
    assert_eq!(calls[1]["raised"], "RateLimitError", "{calls:?}");
    assert_eq!(calls[1]["status"], 429);
    for call in &calls {
        let message = call["message"].as_str().unwrap();
        assert!(message.contains("Infra daily") && message.contains("$12.50 spent of $10.00"), "{message}");
    }
    // One attempt each: no SDK retry reached the gateway.
    let events = rig.sink.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events.iter().all(|e| e.outcome == Outcome::Blocked));
}

#[tokio::test]
async fn passthrough_forwards_the_clients_own_key_and_attributes_by_its_hash() {
    let rig = rig_with(|c| {
        c.auth = AuthMode::Passthrough;
        c.passthrough_org = "acme-pt".into();
        for upstream in &mut c.upstreams {
            upstream.api_key = Secret::new("");
        }
    })
    .await;
    let own = |key: &str, user: &str| {
        rig.client
            .post(format!("{}/v1/messages", rig.url))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("x-faregate-user", user)
            .header("x-faregate-team", "web")
            .header("x-fake-usage", "input=10,output=5")
            .json(&messages(false))
    };
    for (key, user) in [("sk-ant-own-bob", "bob"), ("sk-ant-own-bob", "bob"), ("sk-ant-own-eve", "eve")] {
        assert_eq!(own(key, user).send().await.unwrap().status(), 200);
    }
    let response = rig
        .client
        .post(format!("{}/v1/chat/completions", rig.url))
        .bearer_auth("sk-openai-own-carol")
        .header("x-fake-usage", "input=3,output=2")
        .json(&json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let refused = rig
        .client
        .post(format!("{}/v1/messages", rig.url))
        .header("anthropic-version", "2023-06-01")
        .json(&messages(false))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "no key at all is refused in passthrough mode too");

    let events = tokio::time::timeout(Duration::from_secs(10), rig.sink.wait_for(4)).await.unwrap();
    assert_eq!(events.len(), 4, "{events:#?}");
    let key_ids: Vec<&str> = events.iter().map(|e| e.key_id.as_deref().unwrap()).collect();
    assert_eq!(key_ids[0], key_ids[1], "the same client key is the same identity");
    assert_ne!(key_ids[0], key_ids[2], "another client key is another identity");
    assert_eq!(key_ids[0], format!("pt-{}", &hash_secret("sk-ant-own-bob")[..16]));
    assert_eq!(
        (events[0].org.as_str(), events[0].team.as_deref(), events[0].user.as_deref()),
        ("acme-pt", Some("web"), Some("bob"))
    );
    assert_eq!(events[2].user.as_deref(), Some("eve"));
    assert_eq!(events[3].tokens, tokens(3, 2, 0, 0, 0, 0));
    for event in &events {
        let text = format!("{event:?}");
        assert!(
            !text.contains("sk-ant-own") && !text.contains("sk-openai-own"),
            "a client key in an event: {text}"
        );
    }

    let upstream = rig.fake.requests();
    assert_eq!(upstream.len(), 4, "the refused request never left");
    assert_eq!(upstream[0].header("x-api-key"), Some("sk-ant-own-bob"), "the client's own key is forwarded");
    assert_eq!(upstream[2].header("x-api-key"), Some("sk-ant-own-eve"));
    assert_eq!(upstream[3].header("authorization"), Some("Bearer sk-openai-own-carol"));
    assert_eq!(upstream[0].header("x-faregate-user"), None, "attribution headers stay here");
}

/// Ana's day budget with `remaining` of $10 left, as the budget service publishes it.
fn ana_headroom(remaining: &str) -> faregate_core::event::Headroom {
    let usd = |v: &str| faregate_core::money::Usd(v.parse().unwrap());
    faregate_tests::day_headroom("org=acme/user=ana", "ana-day", "Ana daily", usd("10"), usd(remaining))
}

impl Rig {
    /// What this gateway holds against Ana's budget.
    fn held(&self) -> faregate_ingress::reserve::Held {
        let (position, book) = self.gateway.headroom.book_of("org=acme/user=ana#budget=ana-day").unwrap();
        book.held(&position, self.gateway.reserver.as_ref().unwrap().rules(), Utc::now().timestamp_micros())
    }
}

fn priced(event: &UsageEvent) -> faregate_core::money::Usd {
    match faregate_pricing::PriceCatalog::embedded().unwrap().price(event) {
        faregate_core::clickhouse::ledger::Pricing::Priced { cost, .. } => cost.total(),
        other => panic!("unpriced: {other:?}"),
    }
}

#[tokio::test]
async fn a_reservation_settles_to_what_the_provider_reported_however_the_request_ends() {
    use faregate_core::money::Usd;
    let fake_slow =
        FakeUpstream::start(FakeConfig { stream_delay: Duration::from_millis(200), ..FakeConfig::default() })
            .await
            .unwrap();
    let rig = rig_with(|c| {
        for upstream in &mut c.upstreams {
            upstream.base_url = fake_slow.url();
        }
    })
    .await;
    let record = ana_headroom("10");
    rig.gateway.headroom.apply(&record.key(), Some(record));
    let mut expected = Usd::ZERO;
    let add = |a: Usd, b: Usd| Usd(a.0 + b.0);

    // Completed: the reservation (64,000 output tokens asked, no history yet) becomes the cost.
    let response = rig.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let reserved: rust_decimal::Decimal =
        response.headers()["x-faregate-reserved"].to_str().unwrap().parse().unwrap();
    assert!(
        reserved > rust_decimal::Decimal::new(96, 2),
        "64,000 output tokens at $15 per million: {reserved}"
    );
    response.bytes().await.unwrap();
    let events = rig.sink.wait_for(1).await;
    expected = add(expected, priced(&events[0]));
    assert_eq!(rig.held(), faregate_ingress::reserve::Held { open: Usd::ZERO, settled: expected });

    // An upstream error: nothing billed, nothing held.
    fake_slow.push_script(Script::Status { status: 529, body: Value::Null, headers: vec![] });
    let response = rig.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 529);
    let events = rig.sink.wait_for(2).await;
    assert_eq!(priced(&events[1]), Usd::ZERO);
    assert_eq!(rig.held(), faregate_ingress::reserve::Held { open: Usd::ZERO, settled: expected });

    // A stream the provider cut mid-way: what it reported before the cut.
    fake_slow.push_script(Script::CutStreamAfter { events: 2 });
    let response = rig.anthropic(messages(true)).send().await.unwrap();
    let _ = response.text().await;
    let events = rig.sink.wait_for(3).await;
    assert_eq!(events[2].outcome, Outcome::UpstreamError);
    assert!(priced(&events[2]) > Usd::ZERO);
    expected = add(expected, priced(&events[2]));
    assert_eq!(rig.held(), faregate_ingress::reserve::Held { open: Usd::ZERO, settled: expected });

    // A client that leaves mid-stream: what was reported (or estimated) when it left.
    let response = rig.anthropic(messages(true)).send().await.unwrap();
    let mut stream = response.bytes_stream();
    assert!(!stream.next().await.unwrap().unwrap().is_empty());
    assert!(rig.held().open > Usd::ZERO, "held while in flight");
    drop(stream);
    let events = tokio::time::timeout(Duration::from_secs(10), rig.sink.wait_for(4)).await.unwrap();
    assert_eq!(events[3].outcome, Outcome::ClientAborted);
    expected = add(expected, priced(&events[3]));
    assert_eq!(rig.held(), faregate_ingress::reserve::Held { open: Usd::ZERO, settled: expected });
}

#[tokio::test]
async fn a_request_that_does_not_fit_the_headroom_is_refused_and_holds_nothing() {
    let rig = rig().await;
    let record = ana_headroom("0.05");
    rig.gateway.headroom.apply(&record.key(), Some(record));
    let response = rig.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 402);
    assert_eq!(response.headers()["x-faregate-reservation"], "refused");
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"Ana daily\" has too little headroom"), "{message}");
    assert_eq!(rig.one_event().await.outcome, Outcome::Blocked);
    assert_eq!(rig.held(), faregate_ingress::reserve::Held::default());
    // A request asking for little output fits.
    let small = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let response = rig.anthropic(small).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Near the end of a budget a request that does not fit waits for the replica's requests in
/// flight to settle (their reservations are above their cost) instead of being refused; one
/// whose likely cost could not fit even then is refused at once; a client that leaves while
/// waiting is billed nothing (the request never left).
#[tokio::test]
async fn a_request_that_may_fit_waits_for_the_ones_in_flight_and_a_hopeless_one_does_not() {
    let fake = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let rig = rig_with(|c| {
        for upstream in &mut c.upstreams {
            upstream.base_url = fake.url();
        }
    })
    .await;
    let record = ana_headroom("0.025");
    rig.gateway.headroom.apply(&record.key(), Some(record));
    // $0.015 of output each, reserved literally (no history yet): one fits, two do not.
    let small = json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]});
    fake.push_script(Script::Delay(Duration::from_secs(3)));
    let first = tokio::spawn(rig.anthropic(small.clone()).send());
    eventually("the first request in flight", || async {
        (rig.held().open > faregate_core::money::Usd::ZERO).then_some(())
    })
    .await;

    // A client that gives up while waiting: nothing went upstream, nothing is billed.
    let gone = rig.anthropic(small.clone()).timeout(Duration::from_millis(300)).send().await;
    assert!(gone.is_err(), "the client left while its request waited: {gone:?}");
    let left = tokio::time::timeout(Duration::from_secs(10), rig.sink.wait_for(1)).await.unwrap().remove(0);
    assert_eq!((left.outcome, left.usage_source), (Outcome::ClientAborted, UsageSource::None));
    assert_eq!(left.tokens, TokenCounts::default());

    // One that stays is admitted once the first settles.
    let second = rig.anthropic(small.clone()).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert!(second.headers().contains_key("x-faregate-reservation-waited-ms"), "{:?}", second.headers());
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(fake.requests().len(), 2, "the request whose client left never reached the provider");

    // Too little left for even its likely cost: refused without waiting, though one is in flight.
    let record = faregate_tests::day_headroom(
        "org=acme/user=ana",
        "ana-day",
        "Ana daily",
        faregate_core::money::Usd(rust_decimal::Decimal::TEN),
        faregate_core::money::Usd("0.01".parse().unwrap()),
    );
    let record = faregate_core::event::Headroom { revision: 2, ..record };
    rig.gateway.headroom.apply(&record.key(), Some(record));
    fake.push_script(Script::Delay(Duration::from_secs(3)));
    let tiny = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let in_flight = tokio::spawn(rig.anthropic(tiny).send());
    eventually("a request in flight", || async {
        (rig.held().open > faregate_core::money::Usd::ZERO).then_some(())
    })
    .await;
    let refused = rig.anthropic(small).send().await.unwrap();
    assert_eq!(refused.status(), 402);
    assert!(!in_flight.is_finished(), "refused while the other was still in flight");
    assert_eq!(in_flight.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn stale_enforcement_keeps_reserving_against_the_last_headroom_and_failing_closed_refuses() {
    // No heartbeat ever: enforcement is stale from the start.
    let open = rig_with(|c| c.enforcement_stale_after_secs = 10).await;
    let record = ana_headroom("0.05");
    open.gateway.headroom.apply(&record.key(), Some(record));
    let response = open.anthropic(messages(false)).send().await.unwrap();
    assert_eq!(response.status(), 402, "the last known headroom still applies");
    assert_eq!(response.headers()["x-faregate-reservation"], "refused");
    let small = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let response = open.anthropic(small.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-faregate-enforcement"], "stale");
    assert!(open.held().settled > faregate_core::money::Usd::ZERO, "served stale, still counted");

    let closed = rig_with(|c| {
        c.enforcement_stale_after_secs = 10;
        c.fail_mode = FailMode::Closed;
    })
    .await;
    let record = ana_headroom("10");
    closed.gateway.headroom.apply(&record.key(), Some(record));
    let response = closed.anthropic(small).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(closed.held(), faregate_ingress::reserve::Held::default());
}

#[tokio::test]
async fn forward_auth_checks_answer_like_the_gateway_routes_and_meter_nothing() {
    let rig = rig().await;
    rig.keys.apply("key/k-opus", Some(&key_record("k-opus", "fgk_opus_only", &["claude-opus-4-1"])));
    let check = |path: &str| rig.client.get(format!("{}{path}", rig.url));
    // Allowed, with the key's attribution for the gateway to log.
    let response = check("/v1/check")
        .header("x-api-key", SECRET)
        .header("x-original-uri", "/v1/messages")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header =
        |r: &reqwest::Response, name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header(&response, "x-faregate-decision").as_deref(), Some("allow"));
    assert_eq!(
        ["x-faregate-org", "x-faregate-team", "x-faregate-user", "x-faregate-key"]
            .map(|h| header(&response, h)),
        [Some("acme".into()), Some("infra".into()), Some("ana".into()), Some("k-ana".into())]
    );

    // A block, in each provider's shape by the original path (Envoy's prefix form too).
    rig.decisions.apply("org=acme/team=infra", Some(budget_block("org=acme/team=infra")));
    let response = check("/v1/check/v1/messages").header("x-api-key", SECRET).send().await.unwrap();
    assert_eq!(response.status(), 402);
    assert_eq!(response.headers()["x-should-retry"], "false");
    let message = response.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("Infra daily") && message.contains("$12.50 spent of $10.00"), "{message}");
    let response = check("/v1/check")
        .header("authorization", format!("Bearer {SECRET}"))
        .header("x-forwarded-uri", "/v1/chat/completions")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "insufficient_quota");
    // nginx's form: 403, the real status named.
    let response = check("/v1/check")
        .header("x-api-key", SECRET)
        .header("x-original-uri", "/v1/messages")
        .header("x-faregate-auth-request", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (response.status().as_u16(), header(&response, "x-faregate-status")),
        (403, Some("402".into()))
    );

    // A gateway that authenticated its user itself: the collector token and attribution.
    let trusted = |token: &str, team: &str| {
        check("/v1/check")
            .header("x-faregate-collector-token", token)
            .header("x-faregate-org", "acme")
            .header("x-faregate-team", team)
            .header("x-faregate-user", "cy")
            .header("x-original-uri", "/v1/messages")
    };
    assert_eq!(
        trusted("collector-token", "infra").send().await.unwrap().status(),
        402,
        "the team's block applies"
    );
    let response = trusted("collector-token", "web").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-faregate-user").as_deref(), Some("cy"));
    let response = trusted("not-the-token", "web").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response =
        check("/v1/check").header("x-faregate-collector-token", "collector-token").send().await.unwrap();
    assert_eq!(response.status(), 400, "x-faregate-org is required");

    // A downgrade is said, not done (a check cannot rewrite the body); the model from a header
    // or a JSON body decides it and the key's allowlist.
    rig.decisions.apply("org=acme/team=infra", None);
    let mut downgrade = budget_block("org=acme/model=claude-opus-4-1");
    downgrade.state = DecisionState::Downgrade;
    downgrade.downgrade_to = Some("claude-haiku-4-5".into());
    rig.decisions.apply(&downgrade.subject.clone(), Some(downgrade));
    let response = check("/v1/check")
        .header("x-api-key", SECRET)
        .header("x-faregate-model", "claude-opus-4-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-faregate-decision").as_deref(), Some("downgrade"));
    assert_eq!(header(&response, "x-faregate-downgrade-to").as_deref(), Some("claude-haiku-4-5"));
    let response = rig
        .client
        .post(format!("{}/v1/check", rig.url))
        .header("x-api-key", "fgk_opus_only")
        .json(&json!({"model": "gpt-5", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "the key may not use gpt-5");
    assert!(rig.fake.requests().is_empty(), "a check forwards nothing");
    assert!(rig.sink.events().is_empty(), "a check meters nothing");
}

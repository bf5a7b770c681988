//! The fake upstream over real HTTP: every route, streaming and not, reports exactly the usage
//! of `x-fake-usage`; tool calls; scripts; encoded and malformed bodies.

use std::io::Write as _;
use std::time::{Duration, Instant};

use faregate_fake_upstream::{FakeConfig, FakeUpstream, Script};
use serde_json::{Value, json};

const USAGE: &str = "input=120,output=30,cache_read=1000,cache_write_5m=50,cache_write_1h=8,reasoning=7";

async fn start() -> FakeUpstream {
    FakeUpstream::start(FakeConfig::default()).await.unwrap()
}

async fn post(fake: &FakeUpstream, path: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(format!("{}{path}", fake.url())).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// `(event name, data)` of every frame of an SSE body.
fn frames(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut event = None;
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_string());
                } else if let Some(text) = line.strip_prefix("data: ") {
                    data.push_str(text);
                }
            }
            (event, data)
        })
        .collect()
}

fn json_frames(body: &str) -> Vec<(Option<String>, Value)> {
    frames(body)
        .into_iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(event, data)| (event, serde_json::from_str(&data).unwrap()))
        .collect()
}

fn anthropic_body(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64000, "stream": stream,
           "messages": [{"role": "user", "content": "hello"}]})
}

fn weather_tool_anthropic() -> Value {
    json!([{"name": "get_weather", "description": "weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}])
}

fn weather_tool_openai(nested: bool) -> Value {
    let function = json!({"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    if nested {
        json!([{"type": "function", "function": function}])
    } else {
        let mut tool = function;
        tool["type"] = json!("function");
        json!([tool])
    }
}

fn assert_anthropic_usage(usage: &Value, output_tokens: u64) {
    assert_eq!(usage["input_tokens"], 120);
    assert_eq!(usage["cache_read_input_tokens"], 1000);
    assert_eq!(usage["cache_creation_input_tokens"], 58);
    assert_eq!(usage["output_tokens"], output_tokens);
    if usage.get("cache_creation").is_some() {
        assert_eq!(
            usage["cache_creation"],
            json!({"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 8})
        );
    }
}

#[tokio::test]
async fn anthropic_message_reports_the_usage_asked_for() {
    let fake = start().await;
    let response = post(
        &fake,
        "/v1/messages?beta=true",
        &anthropic_body(false),
        &[("x-fake-usage", USAGE), ("x-team", "a")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["request-id"].to_str().unwrap().starts_with("req_"));
    let message: Value = response.json().await.unwrap();
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!((message["type"].as_str(), message["role"].as_str()), (Some("message"), Some("assistant")));
    assert_eq!(message["model"], "claude-sonnet-4-5");
    assert_eq!(message["content"][0]["type"], "text");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["service_tier"], "standard");
    // Reasoning is part of Anthropic's output_tokens.
    assert_anthropic_usage(&message["usage"], 37);

    let recorded = fake.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!((recorded[0].method.as_str(), recorded[0].path.as_str()), ("POST", "/v1/messages"));
    assert_eq!(recorded[0].query.as_deref(), Some("beta=true"));
    assert_eq!(recorded[0].header("x-team"), Some("a"));
    assert_eq!(recorded[0].body, anthropic_body(false));
    fake.shutdown().await;
}

#[tokio::test]
async fn anthropic_stream_reports_input_at_start_and_cumulative_output_at_the_end() {
    let fake = start().await;
    let response = post(
        &fake,
        "/v1/messages",
        &anthropic_body(true),
        &[("x-fake-usage", USAGE), ("x-fake-model", "served")],
    )
    .await;
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = json_frames(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_deref().unwrap()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    assert!(names.iter().filter(|name| **name == "content_block_delta").count() >= 2);
    for (name, data) in &events {
        assert_eq!(data["type"].as_str(), name.as_deref());
    }
    let start = &events[0].1["message"];
    assert_eq!(start["model"], "served");
    assert_anthropic_usage(&start["usage"], 1);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_anthropic_usage(&delta["usage"], 37);
    fake.shutdown().await;
}

#[tokio::test]
async fn anthropic_tool_use_streamed_and_not() {
    let fake = start().await;
    let mut body = anthropic_body(false);
    body["tools"] = weather_tool_anthropic();
    let message: Value = post(&fake, "/v1/messages", &body, &[]).await.json().await.unwrap();
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["type"], "tool_use");
    assert_eq!(message["content"][0]["name"], "get_weather");
    assert_eq!(message["content"][0]["input"], json!({"city": "fake", "days": 1}));
    // Default usage: "user" + "hello" = 9 characters -> 2 tokens; output min(64000, 20).
    assert_eq!(message["usage"]["input_tokens"], 2);
    assert_eq!(message["usage"]["output_tokens"], 20);

    body["stream"] = json!(true);
    let events = json_frames(&post(&fake, "/v1/messages", &body, &[]).await.text().await.unwrap());
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    let partial: String = events
        .iter()
        .filter(|(_, data)| data["delta"]["type"] == "input_json_delta")
        .map(|(_, data)| data["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), json!({"city": "fake", "days": 1}));
    assert_eq!(events[events.len() - 2].1["delta"]["stop_reason"], "tool_use");

    // Once the tool has answered, the reply is text.
    body["stream"] = json!(false);
    body["messages"] = json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny"}]}]);
    let message: Value = post(&fake, "/v1/messages", &body, &[]).await.json().await.unwrap();
    assert_eq!(message["content"][0]["type"], "text");
    fake.shutdown().await;
}

#[tokio::test]
async fn count_tokens_counts_all_input() {
    let fake = start().await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(396)}]});
    let counted: Value = post(&fake, "/v1/messages/count_tokens", &body, &[]).await.json().await.unwrap();
    assert_eq!(counted, json!({"input_tokens": 100}));
    let counted: Value = post(&fake, "/v1/messages/count_tokens", &body, &[("x-fake-usage", USAGE)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(counted, json!({"input_tokens": 1178}));
    fake.shutdown().await;
}

fn assert_chat_usage(usage: &Value) {
    assert_eq!(usage["prompt_tokens"], 1120);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1000);
    assert_eq!(usage["completion_tokens"], 37);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 7);
    assert_eq!(usage["total_tokens"], 1157);
}

#[tokio::test]
async fn chat_completions_usage_streamed_only_when_asked() {
    let fake = start().await;
    let mut body = json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]});
    let response = post(&fake, "/v1/chat/completions", &body, &[("x-fake-usage", USAGE)]).await;
    assert!(response.headers().contains_key("x-request-id"));
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_chat_usage(&completion["usage"]);

    body["stream"] = json!(true);
    let text =
        post(&fake, "/v1/chat/completions", &body, &[("x-fake-usage", USAGE)]).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let chunks = json_frames(&text);
    assert!(chunks.iter().all(|(name, chunk)| name.is_none() && chunk.get("usage").is_none()));
    assert_eq!(chunks.last().unwrap().1["choices"][0]["finish_reason"], "stop");

    body["stream_options"] = json!({"include_usage": true});
    let text =
        post(&fake, "/v1/chat/completions", &body, &[("x-fake-usage", USAGE)]).await.text().await.unwrap();
    let chunks = json_frames(&text);
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last.1["choices"], json!([]));
    assert_chat_usage(&last.1["usage"]);
    assert!(rest.iter().all(|(_, chunk)| chunk["usage"].is_null()));
    fake.shutdown().await;
}

#[tokio::test]
async fn chat_completions_tool_calls() {
    let fake = start().await;
    let mut body = json!({"model": "gpt-5", "messages": [{"role": "user", "content": "weather?"}], "tools": weather_tool_openai(true)});
    let completion: Value = post(&fake, "/v1/chat/completions", &body, &[]).await.json().await.unwrap();
    let call = &completion["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "fake"})
    );

    body["stream"] = json!(true);
    let chunks = json_frames(&post(&fake, "/v1/chat/completions", &body, &[]).await.text().await.unwrap());
    let arguments: String = chunks
        .iter()
        .filter_map(|(_, chunk)| {
            chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "fake"}));
    fake.shutdown().await;
}

fn assert_responses_usage(usage: &Value) {
    assert_eq!(usage["input_tokens"], 1120);
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 1000);
    assert_eq!(usage["output_tokens"], 37);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 7);
    assert_eq!(usage["total_tokens"], 1157);
}

#[tokio::test]
async fn responses_usage_streamed_and_not() {
    let fake = start().await;
    let mut body = json!({"model": "gpt-5", "input": "hello", "instructions": "be brief"});
    let response: Value =
        post(&fake, "/v1/responses", &body, &[("x-fake-usage", USAGE)]).await.json().await.unwrap();
    assert_eq!(
        (response["object"].as_str(), response["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    assert_eq!(response["output"][0]["content"][0]["type"], "output_text");
    assert_responses_usage(&response["usage"]);

    body["stream"] = json!(true);
    let events = json_frames(
        &post(&fake, "/v1/responses", &body, &[("x-fake-usage", USAGE)]).await.text().await.unwrap(),
    );
    for (index, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"].as_str(), name.as_deref());
        assert_eq!(data["sequence_number"], index);
    }
    assert_eq!(events[0].0.as_deref(), Some("response.created"));
    assert!(events.iter().any(|(name, _)| name.as_deref() == Some("response.output_text.delta")));
    let (name, completed) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("response.completed"));
    assert_responses_usage(&completed["response"]["usage"]);

    // Tools: a function call, then text once its output is in the input.
    body["tools"] = weather_tool_openai(false);
    body["stream"] = json!(false);
    let response: Value = post(&fake, "/v1/responses", &body, &[]).await.json().await.unwrap();
    assert_eq!(response["output"][0]["type"], "function_call");
    assert_eq!(response["output"][0]["name"], "get_weather");
    body["input"] = json!([{"type": "function_call_output", "call_id": "c", "output": "sunny"}]);
    let response: Value = post(&fake, "/v1/responses", &body, &[]).await.json().await.unwrap();
    assert_eq!(response["output"][0]["type"], "message");
    fake.shutdown().await;
}

#[tokio::test]
async fn embeddings_and_models() {
    let fake = start().await;
    let body = json!({"model": "text-embedding-3-small", "input": ["a", "b"]});
    let embeddings: Value =
        post(&fake, "/v1/embeddings", &body, &[("x-fake-usage", "input=9")]).await.json().await.unwrap();
    assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
    assert_eq!(embeddings["usage"], json!({"prompt_tokens": 9, "total_tokens": 9}));
    let models: Value =
        reqwest::get(format!("{}/v1/models", fake.url())).await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert!(!models["data"].as_array().unwrap().is_empty());
    fake.shutdown().await;
}

#[tokio::test]
async fn scripted_status_uses_the_provider_shape_then_returns_to_normal() {
    let fake = start().await;
    fake.push_script(Script::Status {
        status: 402,
        body: Value::Null,
        headers: vec![("x-should-retry".into(), "false".into())],
    });
    fake.push_script(Script::Status { status: 429, body: Value::Null, headers: vec![] });
    fake.push_script(Script::Status { status: 503, body: json!({"custom": true}), headers: vec![] });

    let response = post(&fake, "/v1/messages", &anthropic_body(false), &[]).await;
    assert_eq!(response.status(), 402);
    assert_eq!(response.headers()["x-should-retry"], "false");
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        (error["type"].as_str(), error["error"]["type"].as_str()),
        (Some("error"), Some("billing_error"))
    );

    let response = post(&fake, "/v1/chat/completions", &json!({"model": "m", "messages": []}), &[]).await;
    assert_eq!(response.status(), 429);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].is_string());
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");

    let response = post(&fake, "/v1/responses", &json!({"model": "m", "input": "x"}), &[]).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"custom": true}));

    assert_eq!(post(&fake, "/v1/responses", &json!({"model": "m", "input": "x"}), &[]).await.status(), 200);
    assert_eq!(fake.requests().len(), 4);
    fake.shutdown().await;
}

#[tokio::test]
async fn scripted_delay_waits_before_answering() {
    let fake = start().await;
    fake.push_script(Script::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(post(&fake, "/v1/messages", &anthropic_body(false), &[]).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    fake.shutdown().await;
}

#[tokio::test]
async fn scripted_cut_drops_the_stream_after_n_events() {
    let fake = start().await;
    fake.push_script(Script::CutStreamAfter { events: 3 });
    let mut response = post(&fake, "/v1/messages", &anthropic_body(true), &[]).await;
    let mut received = String::new();
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.push_str(std::str::from_utf8(&chunk).unwrap()),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert!(outcome.is_err(), "the stream ended cleanly");
    let names: Vec<_> = frames(&received).into_iter().map(|(name, _)| name.unwrap()).collect();
    assert_eq!(names, ["message_start", "content_block_start", "ping"]);

    // A non-streaming request under the script gets no answer at all.
    fake.push_script(Script::CutStreamAfter { events: 0 });
    let result = reqwest::Client::new()
        .post(format!("{}/v1/messages", fake.url()))
        .json(&anthropic_body(false))
        .send()
        .await;
    assert!(result.is_err() || result.unwrap().bytes().await.is_err());
    fake.shutdown().await;
}

#[tokio::test]
async fn stream_delay_paces_events() {
    let fake =
        FakeUpstream::start(FakeConfig { stream_delay: Duration::from_millis(20), ..FakeConfig::default() })
            .await
            .unwrap();
    let started = Instant::now();
    let text = post(&fake, "/v1/messages", &anthropic_body(true), &[]).await.text().await.unwrap();
    let events = frames(&text).len();
    assert!(started.elapsed() >= Duration::from_millis(20) * (events as u32 - 1));
    fake.shutdown().await;
}

async fn post_encoded(fake: &FakeUpstream, encoding: &str, encoded: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/responses", fake.url()))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .header("x-fake-usage", "input=5")
        .body(encoded)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn gzip_and_zstd_bodies_are_decoded() {
    let fake = start().await;
    let body = json!({"model": "gpt-5", "input": "compressed", "stream": false});
    let text = serde_json::to_vec(&body).unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&text).unwrap();
    let response = post_encoded(&fake, "gzip", gzip.finish().unwrap()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["usage"]["input_tokens"], 5);
    let response = post_encoded(&fake, "zstd", zstd::encode_all(&text[..], 3).unwrap()).await;
    assert_eq!(response.status(), 200);
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|request| request.body == body));
    assert_eq!(post_encoded(&fake, "zstd", b"not zstd".to_vec()).await.status(), 400);
    fake.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_a_400_in_the_provider_shape() {
    let fake = start().await;
    let send = |path: &'static str| {
        reqwest::Client::new().post(format!("{}{path}", fake.url())).body("{not json").send()
    };
    let response = send("/v1/messages").await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["type"], "error");
    let response = send("/v1/chat/completions").await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error.get("type").is_none());
    assert_eq!(fake.requests()[0].body, json!("{not json"));
    let bad_usage =
        post(&fake, "/v1/messages", &anthropic_body(false), &[("x-fake-usage", "input=lots")]).await;
    assert_eq!(bad_usage.status(), 400);
    fake.shutdown().await;
}

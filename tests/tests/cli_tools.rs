//! The real Claude Code and Codex CLIs (pinned in tests/clients/package.json, installed by
//! deploy/local/install, found through `FAREGATE_TEST_CLAUDE_BIN` / `FAREGATE_TEST_CODEX_BIN`)
//! through the ingress, offline, against the project's fake provider; usage events read back
//! from the usage topic on the shared test broker. Each CLI gets a HOME / CODEX_HOME and a
//! working directory of its own in a temp dir and an environment with nothing but what is set
//! here, and talks to the ingress through a [`Tap`] that notes every request it sends. What is
//! proven: every request a CLI makes is metered exactly once with its tool and session, the
//! summed usage equals what the CLI itself reports, the virtual key never reaches the provider,
//! and a budget block stops each CLI after one attempt (Claude Code shows the budget's message;
//! Codex shows its own "Quota exceeded" text for `insufficient_quota`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::config::Secret;
use faregate_core::event::{
    ConfigEntity, ConfigRecord, Decision, Endpoint, Outcome, Tool, UsageEvent, UsageSource,
};
use faregate_core::kafka::{KafkaConfig, RecordProducer, ensure_topics};
use faregate_fake_upstream::{FakeConfig, FakeUpstream, RecordedRequest};
use faregate_ingress::config::{IngressConfig, Provider, UpstreamConfig};
use faregate_tests::{budget_block, config_record, kafka_config, unique, virtual_key, wait_for};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "fgk_cli_test_secret_ana";
const UPSTREAM_KEY: &str = "sk-upstream-credential";
/// How long one CLI run may take (a run takes about a second; the first start of a CLI on a
/// loaded machine takes longer).
const CLI_DEADLINE: Duration = Duration::from_secs(120);

fn cli(var: &str) -> PathBuf {
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests with deploy/local/test (deploy/local/install installs the CLIs)"
        )
    });
    assert!(Path::new(&path).exists(), "{var}={path} does not exist: run deploy/local/install");
    PathBuf::from(path)
}

/// An ingress on its own topics of the shared broker, with both providers on one fake.
struct Stack {
    fake: FakeUpstream,
    url: String,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    events: EventReader,
    _spool: tempfile::TempDir,
}

impl Stack {
    /// Start with ana's key on the config topic and, when `blocked`, a block on her.
    async fn start(blocked: bool) -> Stack {
        let kafka = kafka_config();
        ensure_topics(&kafka, &kafka.topic_specs()).await.unwrap();
        let config: RecordProducer<ConfigRecord> =
            RecordProducer::new(&kafka, "test", SchemaFamily::ConfigRecord, &kafka.topics.config)
                .await
                .unwrap();
        let key = key_record();
        config.send(&key.topic_key(), &key).await.unwrap();
        if blocked {
            let decisions: RecordProducer<Decision> =
                RecordProducer::new(&kafka, "test", SchemaFamily::Decision, &kafka.topics.decisions)
                    .await
                    .unwrap();
            let decision = budget_block("org=acme/user=ana");
            decisions.send(&decision.subject, &decision).await.unwrap();
        }
        let fake = FakeUpstream::start(FakeConfig::default()).await.unwrap();
        let spool = tempfile::tempdir().unwrap();
        let upstream = |name: &str, provider| UpstreamConfig {
            name: name.into(),
            provider,
            base_url: fake.url(),
            api_key: Secret::new(UPSTREAM_KEY),
            models: vec![],
        };
        let ingress = IngressConfig {
            upstreams: vec![upstream("anthropic", Provider::Anthropic), upstream("openai", Provider::Openai)],
            spool_dir: spool.path().to_path_buf(),
            ..IngressConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let ready = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let handle = tokio::spawn({
            let (ready, stop, kafka) = (ready.clone(), stop.clone(), kafka.clone());
            async move { faregate_ingress::run_on(listener, ingress, kafka, ready, stop).await.unwrap() }
        });
        tokio::task::spawn_blocking(move || {
            wait_for("the ingress to read keys and decisions", Duration::from_secs(60), || {
                ready.load(Ordering::Acquire)
            })
        })
        .await
        .unwrap();
        let events = EventReader::new(&kafka).await;
        Stack { fake, url, stop, handle, events, _spool: spool }
    }

    /// Every usage event of the run that just ended, and no more: read until the fake saw as many
    /// requests as there are metered events (plus `blocked` refused ones), then send a marker
    /// request and read up to its event. The usage topic has one partition and the spool keeps
    /// order, so a second event for any earlier request would have come before the marker's.
    async fn run_events(&mut self, blocked: usize) -> Vec<UsageEvent> {
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let forwarded = self.fake.requests().len();
            if events.len() >= forwarded + blocked {
                break;
            }
            let event = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .unwrap_or_else(|_| panic!("{} events for {forwarded} forwarded requests", events.len()));
            events.push(event);
        }
        let marker = unique("marker");
        let response = reqwest::Client::new()
            .post(format!("{}/v1/messages", self.url))
            .header("x-api-key", SECRET)
            .header("x-claude-code-session-id", &marker)
            .json(&json!({"model": "claude-marker", "max_tokens": 1, "messages": [{"role": "user", "content": "m"}]}))
            .send()
            .await
            .unwrap();
        let _ = response.bytes().await;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .expect("the marker's event did not arrive");
            if event.session_id.as_deref() == Some(marker.as_str()) {
                break;
            }
            events.push(event);
        }
        events
    }

    /// The requests that reached the fake provider, the marker excluded.
    fn upstream_requests(&self) -> Vec<RecordedRequest> {
        let mut requests = self.fake.requests();
        requests.retain(|r| r.body.get("model").and_then(Value::as_str) != Some("claude-marker"));
        requests
    }

    async fn stop(self) {
        self.stop.cancel();
        self.handle.await.unwrap();
    }
}

/// A consumer of the stack's usage topic from its beginning.
struct EventReader {
    consumer: StreamConsumer,
    codec: AvroCodec<UsageEvent>,
}

impl EventReader {
    async fn new(kafka: &KafkaConfig) -> EventReader {
        let codec =
            AvroCodec::new(SchemaFamily::UsageEvent, &kafka.topics.usage, kafka.schema_registry.registry())
                .await
                .unwrap();
        let consumer: StreamConsumer = kafka.consumer_config("test", &unique("usage")).create().unwrap();
        consumer.subscribe(&[&kafka.topics.usage]).unwrap();
        EventReader { consumer, codec }
    }

    async fn next(&mut self) -> UsageEvent {
        let message = self.consumer.recv().await.unwrap();
        self.codec.decode(message.payload().unwrap()).await.unwrap()
    }
}

/// A TCP relay in front of the ingress that notes the request line of every HTTP/1.1 request
/// passing through: what a CLI sent, seen independently of the ingress (which does not meter
/// requests it does not route).
struct Tap {
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tap {
    async fn start(target: &str) -> Tap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let target = target.trim_start_matches("http://").to_string();
        tokio::spawn({
            let lines = lines.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, target.clone(), lines.clone()));
                }
            }
        });
        Tap { url, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

async fn relay(client: tokio::net::TcpStream, target: String, lines: Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(&target).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    // HTTP/1.1 framing by Content-Length (both CLIs send it); anything else is noted as such.
    let mut seen = Vec::new();
    let mut next = 0;
    let mut framed = true;
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = match client_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.extend_from_slice(&buffer[..n]);
        while framed && let Some(at) = find(&seen[next.min(seen.len())..], b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[next..next + at]).into_owned();
            let mut head_lines = head.split("\r\n");
            let line = head_lines.next().unwrap_or_default().to_string();
            let mut length = Some(0);
            for header in head_lines {
                let (name, value) = header.split_once(':').unwrap_or((header, ""));
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    length = None;
                }
            }
            match length {
                Some(length) => {
                    lines.lock().unwrap().push(line);
                    next += at + 4 + length;
                }
                None => {
                    lines.lock().unwrap().push(format!("{line} (not framed by content-length)"));
                    framed = false;
                }
            }
        }
        if server_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = server_write.shutdown().await;
    let _ = down.await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn key_record() -> ConfigRecord {
    config_record(ConfigEntity::VirtualKey(virtual_key("k-ana", SECRET, "acme", Some("infra"), Some("ana"))))
}

/// Run a CLI with only `env` (plus PATH) in its environment, in `dir`, with a deadline.
async fn run_cli(program: &Path, args: &[&str], env: &[(&str, String)], dir: &Path) -> Output {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(CLI_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish within {CLI_DEADLINE:?}", program.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The environment Claude Code runs with: the gateway's URL and a virtual key, nothing sent
/// anywhere but there (`CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`), a HOME of its own, and
/// extra headers: one that scripts the fake's cache usage, one that sets the Faregate project.
fn claude_env(base_url: &str, home: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("HOME", home.display().to_string()),
        ("ANTHROPIC_BASE_URL", base_url.to_string()),
        ("ANTHROPIC_API_KEY", SECRET.to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        (
            "ANTHROPIC_CUSTOM_HEADERS",
            "x-fake-usage: cache_read=1000,cache_write_1h=70\nx-faregate-project: cli-test".to_string(),
        ),
    ]
}

const CLAUDE_ARGS: [&str; 4] = ["-p", "Say hello", "--output-format", "json"];

/// Claude Code's request lines as the tap saw them, split into its API calls and the rest.
fn claude_calls(tap: &Tap) -> Vec<String> {
    let lines = tap.lines();
    // Besides its API calls Claude Code sends one `HEAD /` to the base URL at start (a
    // connectivity check, not usage; the ingress answers it 404 and Claude Code goes on).
    let (calls, other): (Vec<String>, Vec<String>) =
        lines.iter().cloned().partition(|l| l.starts_with("POST "));
    assert!(other.iter().all(|l| l == "HEAD / HTTP/1.1"), "unexpected requests from Claude Code: {lines:?}");
    assert!(
        calls.iter().all(|l| l == "POST /v1/messages?beta=true HTTP/1.1"),
        "Claude Code called something else than Messages: {lines:?}"
    );
    calls
}

fn sum(events: &[UsageEvent], class: impl Fn(&UsageEvent) -> i64) -> i64 {
    events.iter().map(class).sum()
}

/// The virtual key was replaced by the upstream credential: no header and no body that reached
/// the provider holds it, and neither do Faregate's own headers.
fn assert_key_never_reached_the_provider(requests: &[RecordedRequest]) {
    for request in requests {
        for (name, value) in &request.headers {
            assert!(!value.contains(SECRET), "the virtual key reached the provider in {name}: {value}");
            assert!(!name.starts_with("x-faregate-"), "{name} was forwarded");
        }
        assert!(!request.body.to_string().contains(SECRET), "the virtual key reached the provider in a body");
        let credential = request
            .header("x-api-key")
            .map(str::to_string)
            .or_else(|| request.header("authorization").map(|v| v.trim_start_matches("Bearer ").to_string()));
        assert_eq!(credential.as_deref(), Some(UPSTREAM_KEY), "{:?}", request.headers);
    }
}

#[tokio::test]
async fn claude_code_is_metered_once_per_request_with_its_session_and_its_own_usage() {
    let claude = cli("FAREGATE_TEST_CLAUDE_BIN");
    let mut stack = Stack::start(false).await;
    let tap = Tap::start(&stack.url).await;
    let (home, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let output = run_cli(&claude, &CLAUDE_ARGS, &claude_env(&tap.url, home.path()), work.path()).await;
    assert!(output.status.success(), "{}", describe(&output));
    let result: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&output)));
    assert_eq!(result["is_error"], false, "{result}");
    let session = result["session_id"].as_str().expect("Claude Code reports its session").to_string();

    let requests = stack.upstream_requests();
    let calls = claude_calls(&tap);
    assert!(!requests.is_empty(), "{}", describe(&output));
    assert_eq!(calls.len(), requests.len(), "every call Claude Code made reached the provider: {calls:?}");
    for request in &requests {
        assert_eq!(request.header("x-claude-code-session-id"), Some(session.as_str()));
        // metadata.user_id is a JSON string that names the same session.
        let user_id: Value =
            serde_json::from_str(request.body["metadata"]["user_id"].as_str().unwrap()).unwrap();
        assert_eq!(user_id["session_id"], session.as_str());
        assert!(request.header("user-agent").unwrap_or_default().starts_with("claude-cli/2.1.197"));
    }
    assert_key_never_reached_the_provider(&requests);

    let events = stack.run_events(0).await;
    assert_eq!(events.len(), requests.len(), "one event per request: {events:#?}");
    for event in &events {
        assert_eq!(
            (event.tool, event.endpoint, event.outcome, event.usage_source, event.http_status),
            (Tool::ClaudeCode, Endpoint::Messages, Outcome::Ok, UsageSource::Reported, 200),
            "{event:#?}"
        );
        assert_eq!(event.session_id.as_deref(), Some(session.as_str()));
        assert_eq!(event.project.as_deref(), Some("cli-test"), "ANTHROPIC_CUSTOM_HEADERS attributes");
        assert_eq!(
            (event.org.as_str(), event.user.as_deref(), event.key_id.as_deref()),
            ("acme", Some("ana"), Some("k-ana"))
        );
        assert_eq!((event.tokens.cache_read, event.tokens.cache_write_1h), (1000, 70), "{event:#?}");
    }
    // Claude Code's own count of the run, summed over its requests, is the gateway's.
    let usage = &result["usage"];
    assert_eq!(usage["input_tokens"], sum(&events, |e| e.tokens.input), "{usage}");
    assert_eq!(usage["output_tokens"], sum(&events, |e| e.tokens.output + e.tokens.reasoning), "{usage}");
    assert_eq!(usage["cache_read_input_tokens"], sum(&events, |e| e.tokens.cache_read), "{usage}");
    assert_eq!(
        usage["cache_creation_input_tokens"],
        sum(&events, |e| e.tokens.cache_write_5m + e.tokens.cache_write_1h),
        "{usage}"
    );
    assert_eq!(
        usage["cache_creation"]["ephemeral_1h_input_tokens"],
        sum(&events, |e| e.tokens.cache_write_1h)
    );
    assert_eq!(
        usage["cache_creation"]["ephemeral_5m_input_tokens"],
        sum(&events, |e| e.tokens.cache_write_5m)
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_blocked_key_stops_claude_code_after_one_attempt_with_the_budget_message() {
    let claude = cli("FAREGATE_TEST_CLAUDE_BIN");
    let mut stack = Stack::start(true).await;
    let tap = Tap::start(&stack.url).await;
    let (home, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let output = run_cli(&claude, &CLAUDE_ARGS, &claude_env(&tap.url, home.path()), work.path()).await;
    let shown = describe(&output);
    assert!(!output.status.success(), "{shown}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {shown}"));
    assert_eq!((&result["is_error"], &result["api_error_status"]), (&json!(true), &json!(402)), "{shown}");
    let message = result["result"].as_str().unwrap_or_default();
    assert!(message.starts_with("API Error: 402 Faregate: budget \"Infra daily\""), "{shown}");
    assert!(message.contains("$12.50 spent of $10.00") && message.contains("it resets at"), "{shown}");
    assert_eq!(claude_calls(&tap).len(), 1, "one attempt, no retry: {:?}", tap.lines());
    assert!(stack.upstream_requests().is_empty(), "nothing reached the provider");
    let events = stack.run_events(1).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (events[0].tool, events[0].outcome, events[0].http_status),
        (Tool::ClaudeCode, Outcome::Blocked, 402),
        "{events:#?}"
    );
    assert_eq!(events[0].session_id.as_deref(), result["session_id"].as_str());
    stack.stop().await;
}

/// A CODEX_HOME whose config.toml sends Codex to the gateway as a custom provider, with a
/// header that scripts the fake's cached and reasoning tokens.
fn codex_home(dir: &Path, base_url: &str) -> PathBuf {
    let home = dir.join("codex");
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        r#"model_provider = "faregate"

[model_providers.faregate]
name = "faregate"
base_url = "{base_url}/v1"
env_key = "FAREGATE_KEY"
wire_api = "responses"
supports_websockets = false
http_headers = {{ "x-fake-usage" = "cache_read=1000,reasoning=7" }}
"#
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    home
}

async fn run_codex(codex: &Path, tap: &Tap) -> (Output, Vec<Value>) {
    let (home, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [
        ("HOME", home.path().display().to_string()),
        ("CODEX_HOME", codex_home(home.path(), &tap.url).display().to_string()),
        ("FAREGATE_KEY", SECRET.to_string()),
    ];
    let args = ["exec", "--skip-git-repo-check", "--disable", "plugins", "--json", "Say hello"];
    let output = run_cli(codex, &args, &env, work.path()).await;
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (output, lines)
}

fn codex_calls(tap: &Tap) -> Vec<String> {
    let lines = tap.lines();
    assert!(
        lines.iter().all(|l| l == "POST /v1/responses HTTP/1.1"),
        "Codex called something else: {lines:?}"
    );
    lines
}

#[tokio::test]
async fn codex_is_metered_once_per_request_with_its_responses_usage() {
    let codex = cli("FAREGATE_TEST_CODEX_BIN");
    let mut stack = Stack::start(false).await;
    let tap = Tap::start(&stack.url).await;
    let (output, lines) = run_codex(&codex, &tap).await;
    assert!(output.status.success(), "{}", describe(&output));
    let thread = lines
        .iter()
        .find(|l| l["type"] == "thread.started")
        .and_then(|l| l["thread_id"].as_str())
        .unwrap_or_else(|| panic!("no thread.started: {}", describe(&output)))
        .to_string();

    let requests = stack.upstream_requests();
    assert!(!requests.is_empty(), "{}", describe(&output));
    assert_eq!(codex_calls(&tap).len(), requests.len(), "every call Codex made reached the provider");
    for request in &requests {
        assert_eq!(request.header("session-id"), Some(thread.as_str()), "{:?}", request.headers);
        assert!(request.header("user-agent").unwrap_or_default().starts_with("codex_exec/0.169.0"));
    }
    assert_key_never_reached_the_provider(&requests);

    let events = stack.run_events(0).await;
    assert_eq!(events.len(), requests.len(), "one event per request: {events:#?}");
    for event in &events {
        assert_eq!(
            (event.tool, event.endpoint, event.outcome, event.usage_source, event.http_status),
            (Tool::Codex, Endpoint::Responses, Outcome::Ok, UsageSource::Reported, 200),
            "{event:#?}"
        );
        assert_eq!(event.session_id.as_deref(), Some(thread.as_str()));
        assert_eq!((event.tokens.cache_read, event.tokens.reasoning), (1000, 7), "{event:#?}");
    }
    // Codex's own count (turn.completed, summed over turns) is the gateway's: Responses'
    // input_tokens include the cached ones and output_tokens the reasoning ones.
    let turns: Vec<&Value> = lines.iter().filter(|l| l["type"] == "turn.completed").collect();
    assert!(!turns.is_empty(), "{}", describe(&output));
    let reported = |field: &str| turns.iter().map(|t| t["usage"][field].as_i64().unwrap()).sum::<i64>();
    assert_eq!(reported("input_tokens"), sum(&events, |e| e.tokens.input + e.tokens.cache_read), "{turns:?}");
    assert_eq!(reported("cached_input_tokens"), sum(&events, |e| e.tokens.cache_read), "{turns:?}");
    assert_eq!(
        reported("output_tokens"),
        sum(&events, |e| e.tokens.output + e.tokens.reasoning),
        "{turns:?}"
    );
    assert_eq!(reported("reasoning_output_tokens"), sum(&events, |e| e.tokens.reasoning), "{turns:?}");
    stack.stop().await;
}

#[tokio::test]
async fn a_blocked_key_stops_codex_after_one_attempt_with_quota_exceeded() {
    let codex = cli("FAREGATE_TEST_CODEX_BIN");
    let mut stack = Stack::start(true).await;
    let tap = Tap::start(&stack.url).await;
    let (output, lines) = run_codex(&codex, &tap).await;
    let shown = describe(&output);
    assert!(!output.status.success(), "{shown}");
    // Codex shows its own text for insufficient_quota, not the gateway's message.
    let failed = lines.iter().find(|l| l["type"] == "turn.failed").unwrap_or_else(|| panic!("{shown}"));
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Quota exceeded"), "{shown}");
    assert_eq!(codex_calls(&tap).len(), 1, "one attempt, no retry: {:?}", tap.lines());
    assert!(stack.upstream_requests().is_empty(), "nothing reached the provider");
    let events = stack.run_events(1).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (events[0].tool, events[0].outcome, events[0].http_status),
        (Tool::Codex, Outcome::Blocked, 429),
        "{events:#?}"
    );
    let thread = lines.iter().find(|l| l["type"] == "thread.started").map(|l| l["thread_id"].clone());
    assert_eq!(events[0].session_id.as_deref(), thread.as_ref().and_then(Value::as_str));
    stack.stop().await;
}

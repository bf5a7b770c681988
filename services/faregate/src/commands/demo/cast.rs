//! The demo's cast: simulated developers and agents in two orgs, each with a virtual key of its
//! own and a way of working that looks like the real tool's traffic on the wire:
//!
//! - Claude Code: streaming `/v1/messages?beta=true`, `claude-cli/…` user agent, a session id
//!   per session, cache reads that grow with the session and cache writes (5 minutes and 1 hour);
//! - Codex: streaming `/v1/responses`, `codex_cli_rs/…` user agent, session ids, reasoning;
//! - SDKs: non-streaming Messages or Chat Completions from the Python SDKs' user agents;
//! - one runaway agent loop (`ci-bot`) on an expensive model, stopped by its daily budget.
//!
//! What the gateway refused (402 / 429 with its message) is kept per person in [`Refusals`], for
//! the live view: with admission by reservation the runaway is refused before its spend crosses
//! the limit, so no block decision may ever be published for it.
//!
//! Usage is scripted with the fake provider's `x-fake-usage` header; the pace between requests
//! is the simulated person's think time (this is load generation, not synchronisation).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use faregate_core::event::{
    Budget, BudgetAction, BudgetScope, BudgetWindow, KeyStatus, VirtualKey, WindowPeriod,
};
use faregate_core::money::Usd;
use faregate_ingress::keys::{display_prefix, hash_secret, new_secret};

/// The user whose agent loop runs away, and the limit of its daily budget (US dollars).
pub const RUNAWAY_USER: &str = "ci-bot";
pub const RUNAWAY_DAILY_LIMIT: &str = "5";

#[derive(Debug, Clone, Copy)]
enum Kind {
    ClaudeCode(&'static str),
    Codex,
    AnthropicSdk(&'static str),
    OpenaiSdk(&'static str),
    RunawayLoop,
}

/// The gateway's refusals per person (`org/user`), shared by the cast and the live view.
#[derive(Debug, Default, Clone)]
pub struct Refusals(Arc<Mutex<BTreeMap<String, Refused>>>);

/// One person's refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub count: u64,
    pub first_at: DateTime<Utc>,
    /// The gateway's message of the latest refusal.
    pub message: String,
}

impl Refusals {
    fn record(&self, who: &str, message: String) {
        let mut refusals = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = refusals.entry(who.to_string()).or_insert_with(|| Refused {
            count: 0,
            first_at: Utc::now(),
            message: String::new(),
        });
        entry.count += 1;
        entry.message = message;
    }

    /// Everyone refused so far.
    pub fn snapshot(&self) -> BTreeMap<String, Refused> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One simulated person (or agent) with a virtual key.
pub struct Person {
    pub key: VirtualKey,
    secret: String,
    kind: Kind,
    /// Think time between requests, in milliseconds.
    pace_ms: (u64, u64),
    start_after: Duration,
}

/// org, team, user, how they work, think time in milliseconds.
type Role = (&'static str, &'static str, &'static str, Kind, (u64, u64));

/// Everyone in the demo.
pub fn people() -> Vec<Person> {
    let cast: [Role; 9] = [
        ("acme", "infra", "ana", Kind::ClaudeCode("claude-sonnet-4-5"), (400, 2_000)),
        ("acme", "infra", "bo", Kind::ClaudeCode("claude-opus-4-5"), (1_500, 4_000)),
        ("acme", "infra", "chen", Kind::Codex, (800, 3_000)),
        ("acme", "payments", "dee", Kind::ClaudeCode("claude-sonnet-4-5"), (600, 2_500)),
        ("acme", "payments", "eli", Kind::OpenaiSdk("gpt-5-mini"), (300, 1_200)),
        ("acme", "payments", RUNAWAY_USER, Kind::RunawayLoop, (150, 300)),
        ("globex", "research", "fay", Kind::Codex, (700, 2_500)),
        ("globex", "research", "gus", Kind::AnthropicSdk("claude-haiku-4-5"), (300, 1_500)),
        ("globex", "research", "hal", Kind::ClaudeCode("claude-haiku-4-5"), (500, 2_000)),
    ];
    cast.into_iter()
        .map(|(org, team, user, kind, pace_ms)| {
            let secret = new_secret();
            let key = VirtualKey {
                key_id: format!("demo-{user}"),
                secret_hash: hash_secret(&secret),
                secret_prefix: display_prefix(&secret),
                org: org.into(),
                team: Some(team.into()),
                user: Some(user.into()),
                allowed_models: vec![],
                rpm_limit: None,
                tpm_limit: None,
                status: KeyStatus::Active,
                created_at: Utc::now(),
                expires_at: None,
            };
            let start_after = match kind {
                Kind::RunawayLoop => Duration::from_secs(15),
                _ => Duration::ZERO,
            };
            Person { key, secret, kind, pace_ms, start_after }
        })
        .collect()
}

/// The demo's budgets: the runaway's small daily budget, and an alert-only monthly team budget.
/// The demo budgets; the runaway's daily limit is what it already spent today (an earlier demo
/// run) plus [`RUNAWAY_DAILY_LIMIT`], so every run shows the block happen.
pub fn budgets(runaway_spent_today: Decimal) -> Vec<Budget> {
    let runaway_limit =
        (RUNAWAY_DAILY_LIMIT.parse::<Decimal>().unwrap_or_default() + runaway_spent_today).to_string();
    let budget = |id: &str, scope: BudgetScope, period, limit: &str, action| Budget {
        id: id.into(),
        name: id.into(),
        scope,
        window: BudgetWindow { period, days: None, rolling: false, time_zone: "UTC".into() },
        limit_usd: Usd(limit.parse::<Decimal>().unwrap_or_default()),
        action,
        downgrade_to: None,
        thresholds_pct: vec![50, 80, 100],
        owner: None,
        notify: vec![],
    };
    let scope = |team: Option<&str>, user: Option<&str>| BudgetScope {
        org: "acme".into(),
        team: team.map(Into::into),
        user: user.map(Into::into),
        ..BudgetScope::default()
    };
    vec![
        budget(
            "ci-bot-daily",
            scope(None, Some(RUNAWAY_USER)),
            WindowPeriod::Day,
            &runaway_limit,
            BudgetAction::Block,
        ),
        budget(
            "infra-monthly",
            scope(Some("infra"), None),
            WindowPeriod::Month,
            "2000",
            BudgetAction::AlertOnly,
        ),
    ]
}

impl Person {
    /// Send requests until `stop`, pausing for think time between them; refusals go to
    /// `refusals`.
    pub async fn run(
        self,
        client: &reqwest::Client,
        gateway: &str,
        refusals: &Refusals,
        stop: CancellationToken,
    ) {
        let who = format!("{}/{}", self.key.org, self.key.user.as_deref().unwrap_or("-"));
        let mut rng = StdRng::from_os_rng();
        if !pause(self.start_after, &stop).await {
            return;
        }
        let (mut session, mut turn, mut turns) = (new_session(&mut rng), 0u64, rng.random_range(5..30));
        loop {
            let request = self.request(client, gateway, &mut rng, &session, turn);
            let status = tokio::select! {
                _ = stop.cancelled() => return,
                response = send(request) => response,
            };
            turn += 1;
            if turn >= turns {
                (session, turn, turns) = (new_session(&mut rng), 0, rng.random_range(5..30));
            }
            // A refused client backs off, as a real one would after a 402 / 429.
            let think = if let Some(Sent { refusal: Some(message), .. }) = status {
                refusals.record(&who, message);
                Duration::from_secs(3)
            } else {
                Duration::from_millis(rng.random_range(self.pace_ms.0..self.pace_ms.1))
            };
            if !pause(think, &stop).await {
                return;
            }
        }
    }

    fn request(
        &self,
        client: &reqwest::Client,
        gateway: &str,
        rng: &mut StdRng,
        session: &str,
        turn: u64,
    ) -> reqwest::RequestBuilder {
        let prompt = [json!({"role": "user", "content": "continue with the next step of the task"})];
        match self.kind {
            Kind::ClaudeCode(model) => {
                let usage = format!(
                    "input={},output={},cache_read={},cache_write_5m={},cache_write_1h={}",
                    rng.random_range(20..3_000),
                    rng.random_range(80..2_500),
                    (12_000 + turn * 4_000).min(160_000),
                    rng.random_range(200..6_000),
                    if turn == 0 { 12_000 } else { 0 },
                );
                let metadata = json!({"user_id": format!("{{\"session_id\":\"{session}\"}}")});
                client
                    .post(format!("{gateway}/v1/messages?beta=true"))
                    .header("x-api-key", &self.secret)
                    .header("anthropic-version", "2023-06-01")
                    .header("anthropic-beta", "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14")
                    .header("user-agent", "claude-cli/2.1.197 (external, cli)")
                    .header("x-claude-code-session-id", session)
                    .header("x-fake-usage", usage)
                    .json(&json!({"model": model, "max_tokens": 32000, "stream": true,
                                  "metadata": metadata, "messages": prompt}))
            }
            Kind::Codex => {
                let usage = format!(
                    "input={},output={},cache_read={},reasoning={}",
                    rng.random_range(500..8_000),
                    rng.random_range(100..3_000),
                    (5_000 + turn * 3_000).min(90_000),
                    rng.random_range(100..2_500),
                );
                client
                    .post(format!("{gateway}/v1/responses"))
                    .bearer_auth(&self.secret)
                    .header("user-agent", "codex_cli_rs/0.169.0 (Debian 13; x86_64) xterm-256color")
                    .header("session-id", session)
                    .header("x-fake-usage", usage)
                    .json(&json!({"model": "gpt-5", "stream": true, "input": "continue"}))
            }
            Kind::AnthropicSdk(model) => {
                let usage =
                    format!("input={},output={}", rng.random_range(200..2_500), rng.random_range(40..600));
                client
                    .post(format!("{gateway}/v1/messages"))
                    .header("x-api-key", &self.secret)
                    .header("anthropic-version", "2023-06-01")
                    .header("user-agent", "Anthropic/Python 0.72.0")
                    .header("x-fake-usage", usage)
                    .json(&json!({"model": model, "max_tokens": 1024, "messages": prompt}))
            }
            Kind::OpenaiSdk(model) => {
                let usage = format!(
                    "input={},output={},cache_read={}",
                    rng.random_range(200..2_500),
                    rng.random_range(40..800),
                    rng.random_range(0..4_000),
                );
                client
                    .post(format!("{gateway}/v1/chat/completions"))
                    .bearer_auth(&self.secret)
                    .header("user-agent", "OpenAI/Python 2.8.1")
                    .header("x-fake-usage", usage)
                    .json(&json!({"model": model, "messages": prompt}))
            }
            Kind::RunawayLoop => client
                .post(format!("{gateway}/v1/messages"))
                .header("x-api-key", &self.secret)
                .header("anthropic-version", "2023-06-01")
                .header("user-agent", "Anthropic/Python 0.72.0 (ci-agent)")
                .header("x-faregate-project", "nightly-refactor")
                .header("x-fake-usage", "input=20000,output=4000,cache_read=80000")
                .json(&json!({"model": "claude-opus-4-5", "max_tokens": 8192, "messages": prompt})),
        }
    }
}

/// What one request got.
struct Sent {
    /// The gateway's message when it refused the request (402 or 429).
    refusal: Option<String>,
}

/// Send and read the whole body (streams included); None if the gateway is gone.
async fn send(request: reqwest::RequestBuilder) -> Option<Sent> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let refusal = matches!(status, 402 | 429).then(|| refusal_message(status, &body));
    Some(Sent { refusal })
}

/// The message of a refusal body, Anthropic's or OpenAI's shape (`error.message`).
fn refusal_message(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| format!("HTTP {status}"))
}

fn new_session(rng: &mut StdRng) -> String {
    format!("sess-{:016x}", rng.random::<u64>())
}

/// Wait `duration` unless stopped first; false when stopped.
async fn pause(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

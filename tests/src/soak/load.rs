//! The soak's steady load and its book of what was sent and acknowledged.
//!
//! Collector clients post batches of records with fresh UUID v7 ids and random token counts;
//! gateway clients send `POST /v1/messages` (whole and streamed) with a virtual key, each tagged
//! `x-faregate-tags: req=<tag>` and told by `x-fake-usage` which random tokens the fake provider
//! reports. Everything sent is written in the book before it is sent (a record or request cut by
//! a kill may still be metered, and the oracle must price it); what was acknowledged is written
//! when it was: a 202 for a collector batch, a response read to its end for a gateway request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faregate_core::event::TokenCounts;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::stack::{COLLECTOR_TOKEN, MODEL};

/// How long a load client waits for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What was sent and what was acknowledged.
#[derive(Default)]
pub struct Book {
    /// Collector records sent: event id -> tokens.
    pub records: HashMap<uuid::Uuid, TokenCounts>,
    /// Gateway requests sent: tag -> the tokens the fake was told to report.
    pub requests: HashMap<String, TokenCounts>,
    /// Collector records answered 202: event id -> when.
    pub acked_records: HashMap<uuid::Uuid, Instant>,
    /// Gateway requests whose response was read to its end: tag -> (when, HTTP status).
    pub acked_requests: HashMap<String, (Instant, u16)>,
}

impl Book {
    /// Acknowledgements so far (records and requests).
    pub fn acknowledged(&self) -> usize {
        self.acked_records.len() + self.acked_requests.len()
    }
}

/// A virtual key the gateway clients use.
#[derive(Debug, Clone)]
pub struct LoadKey {
    pub secret: String,
}

/// How much load.
#[derive(Debug, Clone)]
pub struct LoadShape {
    pub collector_clients: usize,
    pub records_per_batch: usize,
    pub gateway_clients: usize,
    /// Pause between two sends of one client.
    pub pause: Duration,
    /// (org, user) pairs of collector records.
    pub subjects: Vec<(String, String)>,
}

/// The running load.
pub struct Load {
    pub book: Arc<Mutex<Book>>,
    in_flight: Arc<AtomicUsize>,
    progress: Arc<Notify>,
    url: watch::Sender<String>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    http: reqwest::Client,
}

impl Load {
    pub fn start(url: String, shape: &LoadShape, keys: &[LoadKey]) -> Load {
        let (url, url_rx) = watch::channel(url);
        let load = Load {
            book: Arc::default(),
            in_flight: Arc::default(),
            progress: Arc::default(),
            url,
            stop: CancellationToken::new(),
            tasks: Vec::new(),
            // Longer than any wait the gateway may impose (`ingress.reservation.max_wait_ms`,
            // 10 s): a client that leaves first leaves a request that is rightly billed nothing
            // (it never reached the provider), which the book cannot tell from a lost one.
            http: reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build().unwrap(),
        };
        let mut tasks = Vec::new();
        for _ in 0..shape.collector_clients {
            tasks.push(tokio::spawn(collector(load.client(url_rx.clone()), shape.clone())));
        }
        for i in 0..shape.gateway_clients {
            let key = keys[i % keys.len()].clone();
            tasks.push(tokio::spawn(gateway(load.client(url_rx.clone()), key, i % 2 == 1, shape.pause)));
        }
        Load { tasks, ..load }
    }

    fn client(&self, url: watch::Receiver<String>) -> Client {
        Client {
            book: self.book.clone(),
            in_flight: self.in_flight.clone(),
            progress: self.progress.clone(),
            url,
            stop: self.stop.clone(),
            http: self.http.clone(),
        }
    }

    /// Point the clients at a restarted gateway.
    pub fn set_url(&self, url: String) {
        self.url.send_replace(url);
    }

    /// Records and requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn acknowledged(&self) -> usize {
        self.book.lock().unwrap().acknowledged()
    }

    /// Wait until `n` more acknowledgements than `from` arrived; false after `deadline`.
    pub async fn until_acknowledged(&self, from: usize, n: usize, deadline: Duration) -> bool {
        let start = Instant::now();
        while self.acknowledged() < from + n {
            if start.elapsed() > deadline {
                return false;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), self.progress.notified()).await;
        }
        true
    }

    /// Send requests costing $0.03 each with `key` until the gateway refuses one with 402;
    /// the time from the first request (a wait for its share included) to the refusal, or
    /// `None` after `deadline`.
    pub async fn until_blocked(&self, key: &LoadKey, deadline: Duration) -> Option<Duration> {
        let client = self.client(self.url.subscribe());
        let tokens = TokenCounts { input: 10_000, ..TokenCounts::default() };
        let started = Instant::now();
        loop {
            let status = client.message(key, tokens, false).await;
            if status == Some(402) {
                return Some(started.elapsed());
            }
            if started.elapsed() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop every client and wait for them.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            task.await.expect("a load client");
        }
    }
}

struct Client {
    book: Arc<Mutex<Book>>,
    in_flight: Arc<AtomicUsize>,
    progress: Arc<Notify>,
    url: watch::Receiver<String>,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Client {
    /// One gateway request; its status when the response was read to its end.
    async fn message(&self, key: &LoadKey, tokens: TokenCounts, stream: bool) -> Option<u16> {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        self.book.lock().unwrap().requests.insert(tag.clone(), tokens);
        let usage = format!(
            "input={},output={},cache_read={},cache_write_5m={},cache_write_1h={}",
            tokens.input, tokens.output, tokens.cache_read, tokens.cache_write_5m, tokens.cache_write_1h
        );
        let body = json!({"model": MODEL, "max_tokens": 64, "stream": stream,
                          "messages": [{"role": "user", "content": "soak"}]});
        let target = self.url.borrow().clone();
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let sent = self
            .http
            .post(format!("{target}/v1/messages"))
            .header("x-api-key", &key.secret)
            .header("anthropic-version", "2023-06-01")
            .header("x-faregate-tags", format!("req={tag}"))
            .header("x-fake-usage", usage)
            .json(&body)
            .send()
            .await;
        let status = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.ok().map(|_| status)
            }
            Err(_) => None,
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(status) = status {
            self.book.lock().unwrap().acked_requests.insert(tag, (Instant::now(), status));
            self.progress.notify_waiters();
        }
        status
    }
}

fn random_tokens(reasoning: bool) -> TokenCounts {
    let mut rng = rand::rng();
    TokenCounts {
        input: rng.random_range(0..5_000),
        output: rng.random_range(0..2_000),
        cache_read: rng.random_range(0..20_000),
        cache_write_5m: rng.random_range(0..3_000),
        cache_write_1h: rng.random_range(0..3_000),
        reasoning: if reasoning { rng.random_range(0..1_000) } else { 0 },
    }
}

async fn collector(client: Client, shape: LoadShape) {
    while !client.stop.is_cancelled() {
        let mut records = Vec::with_capacity(shape.records_per_batch);
        let mut sent = Vec::with_capacity(shape.records_per_batch);
        for _ in 0..shape.records_per_batch {
            let id = uuid::Uuid::now_v7();
            let tokens = random_tokens(true);
            let (org, user) = &shape.subjects[rand::random_range(0..shape.subjects.len())];
            records.push(record(id, org, user, &tokens));
            sent.push((id, tokens));
        }
        client.book.lock().unwrap().records.extend(sent.iter().copied());
        let target = client.url.borrow().clone();
        client.in_flight.fetch_add(sent.len(), Ordering::SeqCst);
        let response = client
            .http
            .post(format!("{target}/v1/usage"))
            .bearer_auth(COLLECTOR_TOKEN)
            .json(&json!({ "records": records }))
            .send()
            .await;
        client.in_flight.fetch_sub(sent.len(), Ordering::SeqCst);
        // A refusal or a connection cut by a kill acknowledges nothing.
        if let Ok(response) = response
            && response.status() == 202
        {
            let now = Instant::now();
            client.book.lock().unwrap().acked_records.extend(sent.iter().map(|(id, _)| (*id, now)));
            client.progress.notify_waiters();
        }
        tokio::time::sleep(shape.pause).await;
    }
}

fn record(id: uuid::Uuid, org: &str, user: &str, t: &TokenCounts) -> Value {
    json!({"event_id": id, "occurred_at": chrono::Utc::now(), "org": org, "user": user,
           "provider": "anthropic", "model": MODEL,
           "tokens": {"input": t.input, "output": t.output, "cache_read": t.cache_read,
                      "cache_write_5m": t.cache_write_5m, "cache_write_1h": t.cache_write_1h,
                      "reasoning": t.reasoning}})
}

async fn gateway(client: Client, key: LoadKey, stream: bool, pause: Duration) {
    while !client.stop.is_cancelled() {
        client.message(&key, random_tokens(false), stream).await;
        tokio::time::sleep(pause).await;
    }
}

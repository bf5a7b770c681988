//! Faregate's benchmarks live in `benches/`; this library holds what several of them share. Run
//! them with `cargo bench -p faregate-benches` and the bins in `src/bin`. Every figure is reported beside a baseline measured in the
//! same run (see docs/benchmarks.md).

mod latency;

pub use latency::{blocked_everywhere, follow_decisions, kafka_baseline, pct, sorted};

use faregate_core::event::{UsageEvent, arbitrary};
use faregate_core::kafka::{KafkaConfig, TopicSpec, ensure_topics};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

/// The number in environment variable `name`, or `default` when it is not set; a value that
/// does not parse stops the run with a message naming it.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("{name}={value} is not a valid number")),
        Err(_) => default,
    }
}

/// This process's CPU time in seconds: every thread, exited ones included, read in ns (the
/// process CPU clock; /proc's 10 ms ticks are too coarse for short windows). Presentation only.
#[allow(clippy::float_arithmetic)]
pub fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Kafka settings for `brokers` with every Faregate topic renamed `{prefix}-{name}-{suffix}`
/// (one partition each) plus a plain `{prefix}-echo-{suffix}` topic for a baseline hop, all
/// created; returns the settings and the echo topic's name.
pub async fn fresh_topics(brokers: &str, prefix: &str, fetch_wait_ms: u32) -> (KafkaConfig, String) {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let mut kafka = KafkaConfig {
        brokers: brokers.into(),
        fetch_wait_max_ms: fetch_wait_ms,
        background_fetch_wait_max_ms: fetch_wait_ms.max(KafkaConfig::default().background_fetch_wait_max_ms),
        ..KafkaConfig::default()
    };
    for (name, topic) in kafka.topics.names_mut() {
        *topic = format!("{prefix}-{name}-{suffix}");
    }
    kafka.topics.partitions = 1;
    let echo = format!("{prefix}-echo-{suffix}");
    let mut specs = kafka.topic_specs();
    specs.push(TopicSpec { name: echo.clone(), compacted: false, ..specs[0].clone() });
    ensure_topics(&kafka, &specs).await.expect("creating the benchmark's topics");
    (kafka, echo)
}

/// A consumer of partition 0 of `topic` from its beginning, in a group of its own.
pub fn consumer_at_start(kafka: &KafkaConfig, topic: &str) -> StreamConsumer {
    let group = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let consumer: StreamConsumer = kafka.consumer_config("bench", &group).create().expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).expect("partition 0");
    consumer.assign(&assignment).expect("assigned");
    consumer
}

/// `n` realistic usage events, as the ingress would emit them: 500 developers in 20 teams of 5
/// orgs, one key and one project each, five models, priced token counts, all just now.
pub fn usage_events(n: usize) -> Vec<UsageEvent> {
    let models = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5", "gpt-5", "gpt-5-mini"];
    let mut runner = TestRunner::deterministic();
    let strategy = arbitrary::usage_event();
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let mut e = strategy.new_tree(&mut runner).unwrap().current();
            e.event_id = uuid::Uuid::now_v7();
            // 500 developers in 20 teams of 5 orgs, one key and one project each: about 2,500
            // subjects (user x model) per hour, as a real organisation would have.
            let user = i % 500;
            e.org = format!("org{}", user % 5);
            e.team = Some(format!("team{}", user % 20));
            e.user = Some(format!("user{user}"));
            e.key_id = Some(format!("key{user}"));
            let model = models[i % models.len()];
            e.provider = if model.starts_with("gpt") { "openai" } else { "anthropic" }.into();
            e.requested_model = model.into();
            e.served_model = None;
            e.service_tier = None;
            e.inference_region = None;
            e.project = Some(format!("p{}", user % 10));
            e.tags.clear();
            e.session_id = Some(format!("s{}", i % 2000));
            e.http_status = 200;
            e.latency_us = 1_000;
            e.ttfb_us = Some(100);
            e.received_at = now;
            e.occurred_at = now - chrono::TimeDelta::milliseconds(i as i64);
            let t = &mut e.tokens;
            t.input = t.input.rem_euclid(50_000);
            t.output = t.output.rem_euclid(5_000);
            t.cache_read = t.cache_read.rem_euclid(100_000);
            // OpenAI has no cache-write price: such events would (rightly) stay unpriced.
            t.cache_write_5m = if model.starts_with("gpt") { 0 } else { t.cache_write_5m.rem_euclid(5_000) };
            t.cache_write_1h = 0;
            t.reasoning = if model.starts_with("gpt") { t.reasoning.rem_euclid(2_000) } else { 0 };
            e
        })
        .collect()
}

/// The `faregate` binary a harness runs: `FAREGATE_BIN`, else the one beside the harness's own
/// binary; a missing one stops the run with how to build it.
pub fn faregate_bin() -> std::path::PathBuf {
    let path = std::env::var_os("FAREGATE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().unwrap().parent().unwrap().join("faregate"));
    if !path.exists() {
        eprintln!(
            "{} does not exist: build it with `cargo build --release -p faregate -p faregate-benches` \
             or point FAREGATE_BIN at a faregate binary",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

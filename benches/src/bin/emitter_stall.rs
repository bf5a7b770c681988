//! Load harness: what the ingress's usage emitter costs while the broker is healthy, hung and
//! idle, in one run.
//!
//! A slow or hung broker must not cost the ingress more than a healthy one: librdkafka's
//! idempotent producer busy-loops while it holds records it cannot send because its five
//! requests in flight are unanswered, which burnt a whole core before the emitter sent one
//! flight at a time (docs/benchmarks.md). This runs the emitter (the ingress's own code, in this
//! process) against librdkafka's in-process mock cluster and emits usage events at a fixed rate
//! (FAREGATE_STALL_RATE, default 2,000 a second) in three phases of FAREGATE_STALL_SECONDS
//! (default 5) each, reading this process's CPU clock (every thread, the mock broker's included)
//! around each:
//! - healthy: the broker answers at once (the baseline);
//! - hung: every answer delayed by the phase's length plus 3 s, like a broker that keeps its
//!   connections and answers nothing;
//! - idle: no events (what a parked emitter costs).
//!
//! Then the delay is lifted and every event must arrive on the topic exactly once (counted by
//! event id), or the run fails.
//!
//!   cargo run --release -p faregate-benches --bin emitter-stall

// CPU seconds and ratios are measurements printed for people; no money is computed here.
#![allow(clippy::float_arithmetic)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use faregate_benches::{cpu_seconds, env_or};
use std::collections::HashSet;
use std::time::{Duration, Instant};

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::event::UsageEvent;
use faregate_core::kafka::KafkaConfig;
use faregate_ingress::emitter::{self, UsageSink};
use rdkafka::Message;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

/// Emit `events` at `rate` a second, on schedule; returns the CPU seconds the process used.
async fn phase(sink: &dyn UsageSink, events: Vec<UsageEvent>, rate: u32, length: Duration) -> f64 {
    let before = cpu_seconds();
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut events = events.into_iter();
    let mut sent = 0u64;
    loop {
        let now = ticker.tick().await;
        let due = ((now - start).as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let Some(event) = events.next() else { break };
            sink.emit(event);
            sent += 1;
        }
        if now - start >= length {
            break;
        }
    }
    cpu_seconds() - before
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let rate: u32 = env_or("FAREGATE_STALL_RATE", 2000);
    let seconds: u64 = env_or("FAREGATE_STALL_SECONDS", 5);
    assert!(rate > 0 && seconds > 0, "rate and seconds must be above 0");
    let length = Duration::from_secs(seconds);
    let per_phase = rate as usize * seconds as usize;

    let mock = MockCluster::new(1).expect("librdkafka's mock cluster");
    let mut kafka = KafkaConfig { brokers: mock.bootstrap_servers(), ..KafkaConfig::default() };
    kafka.topics.usage = format!("stall-usage-{}", uuid::Uuid::now_v7().simple());
    kafka.topics.partitions = 1;
    mock.create_topic(&kafka.topics.usage, 1, 1).expect("the usage topic");
    let spool = tempfile::tempdir().expect("a spool directory");
    let shutdown = CancellationToken::new();
    let (sink, emitter) =
        emitter::spawn(&kafka, spool.path(), 1 << 30, shutdown.clone()).await.expect("the emitter starts");

    println!(
        "emitter stall: {rate} events/s, {seconds} s per phase, against librdkafka's mock cluster (in this process)"
    );
    let all = faregate_benches::usage_events(2 * per_phase);
    let expected: HashSet<uuid::Uuid> = all.iter().map(|e| e.event_id).collect();
    let mut all = all.into_iter();
    let healthy = phase(&sink, all.by_ref().take(per_phase).collect(), rate, length).await;
    let delay = length + Duration::from_secs(3);
    mock.broker_round_trip_time(1, delay).expect("delaying the broker");
    let hung = phase(&sink, all.by_ref().take(per_phase).collect(), rate, length).await;
    let idle = phase(&sink, Vec::new(), rate, length).await;
    mock.broker_round_trip_time(1, Duration::ZERO).expect("undelaying the broker");

    let per_event = |cpu: f64| cpu / per_phase as f64 * 1e6;
    println!("phase     process CPU   per event   vs healthy");
    println!("healthy   {:>8.3} s   {:>6.1} us   1.00 x", healthy, per_event(healthy));
    println!("hung      {:>8.3} s   {:>6.1} us   {:.2} x", hung, per_event(hung), hung / healthy);
    println!("idle      {:>8.3} s          -   {:.2} x", idle, idle / healthy);

    // Every event arrives once the broker answers again.
    let started = Instant::now();
    let consumer = faregate_benches::consumer_at_start(&kafka, &kafka.topics.usage);
    let codec = AvroCodec::<UsageEvent>::new(
        SchemaFamily::UsageEvent,
        &kafka.topics.usage,
        kafka.schema_registry.registry(),
    )
    .await
    .expect("the usage codec");
    let (mut seen, mut duplicates) = (HashSet::new(), 0usize);
    while seen.len() < expected.len() {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} events arrived within a minute of the broker answering again",
                    seen.len(),
                    expected.len()
                )
            })
            .expect("reading the usage topic");
        let event = codec.decode(message.payload().unwrap_or_default()).await.expect("a usage event");
        if !expected.contains(&event.event_id) {
            panic!("an event that was never emitted arrived: {}", event.event_id);
        }
        if !seen.insert(event.event_id) {
            duplicates += 1;
        }
    }
    println!(
        "delivered: {} of {} events, {duplicates} duplicates, the last {:.1} s after the broker answered again",
        seen.len(),
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    shutdown.cancel();
    emitter.join().await;
}

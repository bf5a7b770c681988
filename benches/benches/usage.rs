//! Reading usage from a response as the ingress does, against baselines measured in the same
//! run. The response is what the fake upstream (and so `ingress-load`) sends for a
//! `POST /v1/messages` with `x-fake-usage: input=100,output=20`, captured into
//! `benches/fixtures/`.
//!
//! - streaming: `StreamUsage::feed` (framing, skipping by name, counting delta characters,
//!   reading `message_start` and `message_delta`) against `SseReader` alone with a no-op
//!   callback (the framing any event-aware observer needs) and a scan for newlines (the
//!   floor of touching every byte);
//! - whole body: `Observed::from_body` against deserialising into `IgnoredAny` (validating
//!   the JSON without keeping anything).
//!
//! The streaming case is fed both as one chunk (how the fake's events usually arrive) and
//! as one chunk per event.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faregate_ingress::sse::SseReader;
use faregate_ingress::usage::{Api, Observed, StreamUsage};

const STREAM: &[u8] = include_bytes!("../fixtures/anthropic_stream.sse");
const MESSAGE: &[u8] = include_bytes!("../fixtures/anthropic_message.json");

fn per_event(stream: &[u8]) -> Vec<&[u8]> {
    let mut events = Vec::new();
    let mut rest = stream;
    while let Some(end) = rest.windows(2).position(|w| w == b"\n\n") {
        let (event, tail) = rest.split_at(end + 2);
        events.push(event);
        rest = tail;
    }
    if !rest.is_empty() {
        events.push(rest);
    }
    events
}

fn streaming(c: &mut Criterion) {
    let chunks = per_event(STREAM);
    // The fixture must be what the ingress meters, or the timings mean nothing.
    let mut usage = StreamUsage::new(Api::AnthropicMessages);
    usage.feed(STREAM);
    assert!(usage.completed, "the fixture stream has no message_stop");
    assert_eq!((usage.observed.tokens.input, usage.observed.tokens.output), (100, 20));

    let mut group = c.benchmark_group("usage_stream");
    group.throughput(Throughput::Elements(1));
    group.bench_function("newline_scan_baseline", |b| {
        b.iter(|| black_box(STREAM).iter().filter(|byte| **byte == b'\n').count())
    });
    group.bench_function("sse_framing_baseline", |b| {
        b.iter(|| {
            let mut reader = SseReader::default();
            let mut events = 0_usize;
            reader.feed(black_box(STREAM), |_| events += 1);
            events
        })
    });
    group.bench_function("stream_usage_one_chunk", |b| {
        b.iter(|| {
            let mut usage = StreamUsage::new(Api::AnthropicMessages);
            usage.feed(black_box(STREAM));
            usage.observed.tokens.output
        })
    });
    group.bench_function("stream_usage_chunk_per_event", |b| {
        b.iter(|| {
            let mut usage = StreamUsage::new(Api::AnthropicMessages);
            for chunk in &chunks {
                usage.feed(black_box(chunk));
            }
            usage.observed.tokens.output
        })
    });
    group.finish();
}

fn whole(c: &mut Criterion) {
    assert_eq!(Observed::from_body(Api::AnthropicMessages, MESSAGE).tokens.output, 20);
    let mut group = c.benchmark_group("usage_whole");
    group.throughput(Throughput::Elements(1));
    group.bench_function("validate_json_baseline", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(MESSAGE)).is_ok())
    });
    group.bench_function("observed_from_body", |b| {
        b.iter(|| Observed::from_body(Api::AnthropicMessages, black_box(MESSAGE)).tokens.output)
    });
    group.finish();
}

criterion_group!(benches, streaming, whole);
criterion_main!(benches);

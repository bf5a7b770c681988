//! The Avro wire format of usage events (the hottest record: one per request) against a baseline
//! measured in the same run: serde_json of the same events. Both encode and decode.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faregate_core::avro::{AvroCodec, LocalRegistry, SchemaFamily};
use faregate_core::event::{UsageEvent, arbitrary};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

fn events(n: usize) -> Vec<UsageEvent> {
    let mut runner = TestRunner::deterministic();
    (0..n).map(|_| arbitrary::usage_event().new_tree(&mut runner).unwrap().current()).collect()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let codec: AvroCodec<UsageEvent> =
        runtime.block_on(AvroCodec::new(SchemaFamily::UsageEvent, "bench", Arc::new(LocalRegistry))).unwrap();
    let events = events(1_000);
    let avro: Vec<Vec<u8>> = events.iter().map(|e| codec.encode(e).unwrap()).collect();
    let json: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();

    let mut group = c.benchmark_group("usage_event");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("encode/avro", |b| {
        b.iter(|| events.iter().map(|e| codec.encode(black_box(e)).unwrap().len()).sum::<usize>())
    });
    group.bench_function("encode/json_baseline", |b| {
        b.iter(|| events.iter().map(|e| serde_json::to_vec(black_box(e)).unwrap().len()).sum::<usize>())
    });
    group.bench_function("decode/avro", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut n = 0;
                for bytes in &avro {
                    n = i64::wrapping_add(n, codec.decode(black_box(bytes)).await.unwrap().tokens.input);
                }
                n
            })
        })
    });
    group.bench_function("decode/json_baseline", |b| {
        b.iter(|| {
            json.iter()
                .map(|bytes| serde_json::from_slice::<UsageEvent>(black_box(bytes)).unwrap().tokens.input)
                .fold(0i64, i64::wrapping_add)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

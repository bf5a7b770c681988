//! Getting usage events to Kafka without the request path ever waiting on it.
//!
//! The request path calls [`UsageSink::emit`], which only queues the event in memory. One task
//! owns the [`Spool`]: it appends each event (Avro, Confluent framing, with its partition key),
//! then sends from the spool to the usage topic with the idempotent producer, keeping up to
//! `MAX_IN_FLIGHT` records outstanding, and moves the spool's acknowledged position over every
//! record the broker acknowledged in order. A failed delivery (broker down, timeout) rewinds the
//! sender to the acknowledged position after a back-off: the tail is sent again, in order, and
//! a record that was in fact delivered arrives twice, which the processor's dedup by event id
//! absorbs. At shutdown the task flushes the spool, waits briefly for in-flight deliveries and
//! persists the cursor; what is left is sent at the next start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::event::UsageEvent;
use faregate_core::kafka::KafkaConfig;

use crate::spool::{Position, Spool};

/// Where the request path puts finished usage events.
pub trait UsageSink: Send + Sync + 'static {
    /// Queue one event; never blocks.
    fn emit(&self, event: UsageEvent);
    /// Whether new work may be taken (false when the spool is full).
    fn accepting(&self) -> bool;
}

/// Collects events in memory: for tests of the request path.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    events: Arc<std::sync::Mutex<Vec<UsageEvent>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl MemorySink {
    pub fn events(&self) -> Vec<UsageEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Wait until at least `n` events were emitted.
    pub async fn wait_for(&self, n: usize) -> Vec<UsageEvent> {
        loop {
            let notified = self.notify.notified();
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            notified.await;
        }
    }
}

impl UsageSink for MemorySink {
    fn emit(&self, event: UsageEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
        self.notify.notify_waiters();
    }

    fn accepting(&self) -> bool {
        true
    }
}

/// The Kafka-backed sink; its task is started by [`spawn`].
#[derive(Debug, Clone)]
pub struct KafkaSink {
    tx: mpsc::UnboundedSender<UsageEvent>,
    state: Arc<EmitterState>,
}

/// Shared counters of the emitter, for readiness and metrics.
#[derive(Debug, Default)]
pub struct EmitterState {
    pub full: AtomicBool,
    pub broker_ok: AtomicBool,
}

impl UsageSink for KafkaSink {
    fn emit(&self, event: UsageEvent) {
        if self.tx.send(event).is_err() {
            metrics::counter!("faregate_ingress_events_after_shutdown_total").increment(1);
            tracing::error!("usage event emitted after the emitter stopped");
        }
    }

    fn accepting(&self) -> bool {
        !self.state.full.load(Ordering::Relaxed)
    }
}

const MAX_IN_FLIGHT: usize = 10_000;
const SEGMENT_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EmitterError {
    #[error("cannot open the event spool in {dir}: {source}")]
    Spool { dir: String, source: std::io::Error },
    #[error("cannot create the usage producer: {0}")]
    Producer(String),
}

/// Open the spool, create the producer and start the emitter task. The returned future ends
/// after `shutdown`, once the spool is flushed.
pub async fn spawn(
    kafka: &KafkaConfig,
    spool_dir: &std::path::Path,
    spool_max_bytes: u64,
    shutdown: CancellationToken,
) -> Result<(KafkaSink, tokio::task::JoinHandle<()>), EmitterError> {
    let spool = Spool::open(spool_dir, spool_max_bytes, SEGMENT_BYTES)
        .map_err(|source| EmitterError::Spool { dir: spool_dir.display().to_string(), source })?;
    let codec = AvroCodec::<UsageEvent>::new(
        SchemaFamily::UsageEvent,
        &kafka.topics.usage,
        kafka.schema_registry.registry(),
    )
    .await
    .map_err(|e| EmitterError::Producer(e.to_string()))?;
    let producer: FutureProducer =
        kafka.producer_config("ingress").create().map_err(|e| EmitterError::Producer(e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(EmitterState { broker_ok: AtomicBool::new(true), ..EmitterState::default() });
    let task = Task { spool, codec, producer, topic: kafka.topics.usage.clone(), state: state.clone() };
    let handle = tokio::spawn(task.run(rx, shutdown));
    Ok((KafkaSink { tx, state }, handle))
}

struct Task {
    spool: Spool,
    codec: AvroCodec<UsageEvent>,
    producer: FutureProducer,
    topic: String,
    state: Arc<EmitterState>,
}

type Delivery = futures::future::BoxFuture<'static, (Position, Position, bool)>;

/// Spool records are `[key length: u16 LE][key][Avro value]`.
fn spool_record(key: &str, value: &[u8]) -> Vec<u8> {
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    let mut record = Vec::with_capacity(2 + key.len() + value.len());
    record.extend_from_slice(&(key.len() as u16).to_le_bytes());
    record.extend_from_slice(key);
    record.extend_from_slice(value);
    record
}

fn split_record(record: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_le_bytes(record.get(..2)?.try_into().ok()?) as usize;
    let key = record.get(2..2 + len)?;
    Some((key, &record[2 + len..]))
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<UsageEvent>, shutdown: CancellationToken) {
        let mut send_from = self.spool.acked();
        let mut outstanding = std::collections::BTreeMap::<Position, (Position, bool)>::new();
        let mut in_flight: FuturesUnordered<Delivery> = FuturesUnordered::new();
        let mut retry_at: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { break };
                    self.append(event);
                    while let Ok(event) = rx.try_recv() {
                        self.append(event);
                    }
                    if let Err(e) = self.spool.flush() {
                        tracing::error!(error = %e, "spool: flush failed");
                    }
                }
                Some((start, _end, ok)) = in_flight.next() => {
                    if ok {
                        if let Some(entry) = outstanding.get_mut(&start) {
                            entry.1 = true;
                        }
                        let mut acked = None;
                        while let Some(entry) = outstanding.first_entry() {
                            if !entry.get().1 { break }
                            acked = Some(entry.remove().0);
                        }
                        if let Some(acked) = acked
                            && let Err(e) = self.spool.ack(acked)
                        {
                            tracing::error!(error = %e, "spool: dropping acknowledged segments failed");
                        }
                        backoff = Duration::from_millis(500);
                        self.state.broker_ok.store(true, Ordering::Relaxed);
                        metrics::counter!("faregate_ingress_events_delivered_total").increment(1);
                    } else if retry_at.is_none() {
                        self.state.broker_ok.store(false, Ordering::Relaxed);
                        metrics::counter!("faregate_ingress_delivery_failures_total").increment(1);
                        tracing::warn!(retry_in_ms = backoff.as_millis() as u64, pending_bytes = self.spool.pending_bytes(),
                            "usage topic unreachable; events wait in the spool");
                        // Everything after the acknowledged position goes again, in order.
                        in_flight = FuturesUnordered::new();
                        outstanding.clear();
                        send_from = self.spool.acked();
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.spool.persist_cursor() {
                        tracing::error!(error = %e, "spool: persisting the cursor failed");
                    }
                }
                _ = shutdown.cancelled() => break,
            }
            if retry_at.is_some_and(|at| Instant::now() >= at) {
                retry_at = None;
            }
            if retry_at.is_none() {
                self.send_more(&mut send_from, &mut outstanding, &mut in_flight);
            }
            let full = self.spool.is_full();
            if full != self.state.full.swap(full, Ordering::Relaxed) {
                if full {
                    tracing::error!(
                        pending_bytes = self.spool.pending_bytes(),
                        "spool full: refusing new requests until the broker catches up"
                    );
                } else {
                    tracing::info!("spool has room again");
                }
            }
            metrics::gauge!("faregate_ingress_spool_full").set(if full { 1.0 } else { 0.0 });
            metrics::gauge!("faregate_ingress_spool_pending_bytes").set(self.spool.pending_bytes() as f64);
        }
        self.drain(rx, &mut outstanding, in_flight).await;
    }

    fn append(&mut self, event: UsageEvent) {
        let value = match self.codec.encode(&event) {
            Ok(value) => value,
            Err(e) => {
                // Cannot happen for a well-formed event; never silent if it does.
                metrics::counter!("faregate_ingress_encode_failures_total").increment(1);
                tracing::error!(event_id = %event.event_id, error = %e, "usage event cannot be encoded");
                return;
            }
        };
        if let Err(e) = self.spool.append(&spool_record(&event.partition_key(), &value)) {
            metrics::counter!("faregate_ingress_spool_errors_total").increment(1);
            tracing::error!(event_id = %event.event_id, error = %e, "spool: append failed; sending without the spool");
            let key = event.partition_key();
            let record = FutureRecord::to(&self.topic).key(&key).payload(&value);
            let _ = self.producer.send_result(record);
        }
    }

    fn send_more(
        &mut self,
        send_from: &mut Position,
        outstanding: &mut std::collections::BTreeMap<Position, (Position, bool)>,
        in_flight: &mut FuturesUnordered<Delivery>,
    ) {
        let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        if room == 0 {
            return;
        }
        let entries = match self.spool.read_from(*send_from, room) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(error = %e, "spool: read failed");
                return;
            }
        };
        for entry in entries {
            let Some((key, value)) = split_record(&entry.payload) else {
                tracing::error!(position = ?entry.start, "spool: record without a key; skipped");
                *send_from = entry.end;
                continue;
            };
            let record = FutureRecord::to(&self.topic).key(key).payload(value);
            let future: DeliveryFuture = match self.producer.send_result(record) {
                Ok(future) => future,
                Err(_queue_full) => break,
            };
            let (start, end) = (entry.start, entry.end);
            outstanding.insert(start, (end, false));
            in_flight.push(Box::pin(async move { (start, end, matches!(future.await, Ok(Ok(_)))) }));
            *send_from = end;
        }
    }

    async fn drain(
        mut self,
        mut rx: mpsc::UnboundedReceiver<UsageEvent>,
        outstanding: &mut std::collections::BTreeMap<Position, (Position, bool)>,
        mut in_flight: FuturesUnordered<Delivery>,
    ) {
        rx.close();
        while let Some(event) = rx.recv().await {
            self.append(event);
        }
        if let Err(e) = self.spool.sync() {
            tracing::error!(error = %e, "spool: final sync failed");
        }
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = in_flight.next() => {
                    let Some((start, _, ok)) = next else { break };
                    if ok && let Some(entry) = outstanding.get_mut(&start) {
                        entry.1 = true;
                    }
                }
                _ = &mut deadline => break,
            }
        }
        let mut acked = None;
        while let Some(entry) = outstanding.first_entry() {
            if !entry.get().1 {
                break;
            }
            acked = Some(entry.remove().0);
        }
        if let Some(acked) = acked {
            let _ = self.spool.ack(acked);
        }
        let _ = self.producer.flush(Duration::from_secs(1));
        match self.spool.persist_cursor() {
            Ok(()) => tracing::info!(
                pending_bytes = self.spool.pending_bytes(),
                "usage emitter stopped; the rest is sent at next start"
            ),
            Err(e) => tracing::error!(error = %e, "spool: persisting the cursor at shutdown failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_records_split_back() {
        let record = spool_record("acme/ana", b"\x00\x00\x00\x00\x65avro");
        assert_eq!(split_record(&record), Some((&b"acme/ana"[..], &b"\x00\x00\x00\x00\x65avro"[..])));
        assert_eq!(split_record(&[5, 0, b'a']), None);
    }
}

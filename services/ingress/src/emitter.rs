//! Getting usage events to Kafka without the request path ever waiting on it.
//!
//! The request path calls [`UsageSink::emit`], which only pushes the event onto an in-memory
//! inbox (an uncontended lock; no wake-up and no system call while the emitter is busy). The
//! emitter runs on a thread of its own, so spool file I/O never stalls a request worker. While
//! there is work it goes in ticks of `TICK`: it takes the inbox, appends each event to the
//! [`Spool`] (Avro, Confluent framing, with its partition key), flushes, takes the delivery
//! reports the producer has and, once the previous flight is acknowledged, sends the next one
//! from the spool to the usage topic with the idempotent producer. When there is nothing to do
//! (inbox empty, nothing unsent or unacknowledged) it parks, and the request that puts the next
//! event into the empty inbox wakes it: an idle ingress does not wake up 200 times a second.
//!
//! One flight at a time (at most `FLIGHT_RECORDS` records, a request or two): the idempotent
//! producer allows five requests in flight per partition, and librdkafka's broker thread
//! busy-loops while it holds records whose `linger.ms` has passed and cannot send them (it
//! wakes at once, finds the in-flight window full, and wakes at once again), which burnt a
//! whole core while the broker was slow or hung. A flight never needs more than two requests,
//! so that state is never reached; and while the broker is slow, what arrives in the meantime
//! goes in the next flight, so slower acknowledgements make fewer, larger produce requests.
//!
//! The spool's acknowledged position moves over every record the
//! broker acknowledged in order. Records just appended are also kept in a small in-memory tail
//! (`MAX_CACHED`), so while the broker keeps up they are sent without reading the file back;
//! after a rewind, a restart or a long backlog the sender reads from the file.
//!
//! A failed delivery (broker down, timeout) rewinds the sender to the acknowledged position
//! after a back-off: the tail is sent again, in order, and a record that was in fact delivered
//! arrives twice, which the processor's dedup by event id absorbs. Reports of sends from before
//! a rewind are told apart by an epoch and ignored. At shutdown the emitter appends what is left
//! in the inbox, syncs the spool, waits briefly for in-flight deliveries and persists the cursor;
//! what is left is sent at the next start. Batching per tick costs an event up to `TICK` before
//! it is appended, and saves a thread wake-up per request.
//!
//! [`UsageSink::emit_durable`] (the collector) puts a batch into the inbox with a waiter and
//! wakes the emitter at once (it waits for its tick with `park_timeout`, not a sleep, so a
//! durable batch does not wait for the tick). The round that appends the batch hands the waiter
//! to the syncer thread (`syncer.rs`), which syncs
//! the spool once for every waiter queued meanwhile (group commit) and answers them; the
//! emitter never waits for a sync, so a slow disk does not hold back the gateway's events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio_util::sync::CancellationToken;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::error::{ErrorClass, FaregateError};
use faregate_core::event::UsageEvent;
use faregate_core::kafka::KafkaConfig;

use crate::reserve::Landing;
use crate::spool::{Entry, Position, Spool};

/// Where the request path puts finished usage events.
pub trait UsageSink: Send + Sync + 'static {
    /// Queue one event; never blocks.
    fn emit(&self, event: UsageEvent);
    /// [`emit`](Self::emit), and set `landing` to where the event landed on the usage topic
    /// once the broker acknowledged it (a reservation's cost is held until a headroom record
    /// shows that position). A sink that cannot tell leaves it unset.
    fn emit_landed(&self, event: UsageEvent, landing: Landing);
    /// Queue a batch and learn when it is durable: every event appended to the spool and the
    /// spool synced to stable storage. Batches that arrive together share one sync (group
    /// commit). The collector acknowledges a batch only after this resolves `Ok`.
    fn emit_durable(&self, events: Vec<UsageEvent>) -> Durable;
    /// Whether new work may be taken (false when the spool is full).
    fn accepting(&self) -> bool;
}

/// Why a batch given to [`UsageSink::emit_durable`] is not known to be durable. Either way the
/// sender should send it again: the processor counts each event id once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDurable {
    #[error("the event spool could not store the batch: {0}")]
    Spool(String),
    #[error("the usage emitter has stopped (shutting down)")]
    Stopped,
}

impl faregate_core::FaregateError for NotDurable {
    /// The disk under the spool, or a replica going away: the sender retries (another replica).
    fn class(&self) -> faregate_core::ErrorClass {
        faregate_core::ErrorClass::External
    }
}

/// The promise of [`UsageSink::emit_durable`]: resolves once the batch is durable, or not.
#[derive(Debug)]
pub struct Durable(tokio::sync::oneshot::Receiver<Result<(), NotDurable>>);

impl Durable {
    /// A batch that is durable (or not) already.
    pub fn ready(result: Result<(), NotDurable>) -> Durable {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(result);
        Durable(rx)
    }

    /// Wait for the answer; an emitter that went away without answering counts as stopped.
    pub async fn wait(self) -> Result<(), NotDurable> {
        self.0.await.unwrap_or(Err(NotDurable::Stopped))
    }
}

type Waiter = tokio::sync::oneshot::Sender<Result<(), NotDurable>>;

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

    /// Lands the event at its index on partition 0.
    fn emit_landed(&self, event: UsageEvent, landing: Landing) {
        if let Ok(mut events) = self.events.lock() {
            landing.set(0, events.len() as i64);
            events.push(event);
        }
        self.notify.notify_waiters();
    }

    fn emit_durable(&self, events: Vec<UsageEvent>) -> Durable {
        for event in events {
            self.emit(event);
        }
        Durable::ready(Ok(()))
    }

    fn accepting(&self) -> bool {
        true
    }
}

/// Events waiting for the emitter's next tick.
#[derive(Debug, Default)]
struct Inbox {
    events: Vec<UsageEvent>,
    /// Landings to set for some of `events`, by event id.
    landings: Vec<(uuid::Uuid, Landing)>,
    /// Callers of `emit_durable` whose events are in `events`, told once those are synced.
    waiters: Vec<Waiter>,
    /// The emitter has taken its last batch; nothing pushed now would be sent.
    closed: bool,
    /// The emitter is parked with nothing to do: the next event must wake it.
    parked: bool,
    /// The emitter's thread, to wake it.
    emitter: Option<std::thread::Thread>,
}

impl Inbox {
    /// Wake the emitter if it is parked (or about to park: the token is kept).
    fn wake(&mut self) {
        if std::mem::take(&mut self.parked)
            && let Some(thread) = &self.emitter
        {
            thread.unpark();
        }
    }
}

/// Closes the inbox when the emitter thread ends, however it ends.
struct CloseOnExit(Arc<Mutex<Inbox>>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).closed = true;
    }
}

/// The Kafka-backed sink; its emitter is started by [`spawn`].
#[derive(Debug, Clone)]
pub struct KafkaSink {
    inbox: Arc<Mutex<Inbox>>,
    state: Arc<EmitterState>,
}

/// Shared flags of the emitter, for readiness and metrics.
#[derive(Debug, Default)]
pub struct EmitterState {
    pub full: AtomicBool,
}

impl KafkaSink {
    fn push(&self, event: UsageEvent, landing: Option<Landing>) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inbox.closed {
            drop(inbox);
            metrics::counter!("faregate_ingress_events_after_shutdown_total").increment(1);
            tracing::error!(event_id = %event.event_id, "usage event emitted after the emitter stopped");
            return;
        }
        if let Some(landing) = landing {
            inbox.landings.push((event.event_id, landing));
        }
        inbox.events.push(event);
        inbox.wake();
        drop(inbox);
        // Usage is on its way: this process's paced consumers fetch continuously again.
        faregate_core::kafka::idle::nudge();
    }
}

impl UsageSink for KafkaSink {
    fn emit(&self, event: UsageEvent) {
        self.push(event, None);
    }

    fn emit_landed(&self, event: UsageEvent, landing: Landing) {
        self.push(event, Some(landing));
    }

    fn emit_durable(&self, events: Vec<UsageEvent>) -> Durable {
        let mut inbox = self.inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inbox.closed {
            return Durable::ready(Err(NotDurable::Stopped));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        inbox.events.extend(events);
        inbox.waiters.push(tx);
        // Busy or parked, the emitter takes it now: a sender is waiting for the sync.
        inbox.parked = false;
        if let Some(thread) = &inbox.emitter {
            thread.unpark();
        }
        drop(inbox);
        faregate_core::kafka::idle::nudge();
        Durable(rx)
    }

    fn accepting(&self) -> bool {
        !self.state.full.load(Ordering::Relaxed)
    }
}

/// How long events wait in the inbox at most while the emitter is busy; also its polling
/// interval then.
const TICK: Duration = Duration::from_millis(5);
/// How long the emitter parks at most when it has nothing to do (it still serves the producer's
/// other events, such as errors and logs, that often).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Records in one flight at most: usage records are a few hundred bytes, so at most a request
/// or two of librdkafka's default `batch.size` (1 MB), well inside the idempotent producer's
/// five requests in flight.
const FLIGHT_RECORDS: usize = 2_000;
/// Records kept in memory after their append (a few megabytes at most).
const MAX_CACHED: usize = 8_192;
const SEGMENT_BYTES: u64 = 64 << 20;
const CURSOR_EVERY: Duration = Duration::from_millis(200);
/// Producer events served per tick at most (the rest wait for the next tick).
const MAX_POLLS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EmitterError {
    #[error("cannot open the event spool in {dir}: {source}")]
    Spool { dir: String, source: std::io::Error },
    #[error("cannot create the usage producer: {0}")]
    Producer(String),
    #[error("cannot start the emitter thread: {0}")]
    Thread(std::io::Error),
}

/// The running emitter; [`EmitterHandle::join`] waits until it has flushed and stopped.
#[derive(Debug)]
pub struct EmitterHandle {
    done: tokio::sync::oneshot::Receiver<()>,
}

impl EmitterHandle {
    pub async fn join(self) {
        let _ = self.done.await;
    }
}

/// One delivery report: which send (epoch), which spool record, and why it did not arrive.
#[derive(Debug, Clone)]
struct Report {
    epoch: u64,
    start: Position,
    /// Where it landed (partition, offset), when it did.
    landed: Option<(i32, i64)>,
    error: Option<KafkaError>,
}

/// Collects delivery reports; they are produced on the emitter thread itself, inside `poll`.
#[derive(Default)]
struct Reports(Mutex<Vec<Report>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<(u64, Position, Position)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (epoch, start, _end) = *opaque;
        let report = match result {
            Ok(message) => {
                Report { epoch, start, landed: Some((message.partition(), message.offset())), error: None }
            }
            Err((error, _)) => Report { epoch, start, landed: None, error: Some(error.clone()) },
        };
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(report);
    }
}

impl Reports {
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |r| r.len())
    }
}

/// Open the spool, create the producer and start the emitter on its own thread. It stops
/// after `shutdown`, once the spool is flushed.
pub async fn spawn(
    kafka: &KafkaConfig,
    spool_dir: &std::path::Path,
    spool_max_bytes: u64,
    shutdown: CancellationToken,
) -> Result<(KafkaSink, EmitterHandle), EmitterError> {
    spawn_with(kafka, spool_dir, spool_max_bytes, shutdown, IDLE_WAIT).await
}

async fn spawn_with(
    kafka: &KafkaConfig,
    spool_dir: &std::path::Path,
    spool_max_bytes: u64,
    shutdown: CancellationToken,
    idle_wait: Duration,
) -> Result<(KafkaSink, EmitterHandle), EmitterError> {
    let spool = Spool::open(spool_dir, spool_max_bytes, SEGMENT_BYTES)
        .map_err(|source| EmitterError::Spool { dir: spool_dir.display().to_string(), source })?;
    let codec = AvroCodec::<UsageEvent>::new(
        SchemaFamily::UsageEvent,
        &kafka.topics.usage,
        kafka.schema_registry.registry(),
    )
    .await
    .map_err(|e| EmitterError::Producer(e.to_string()))?;
    let producer: BaseProducer<Reports> = kafka
        .producer_config("ingress")
        .create_with_context(Reports::default())
        .map_err(|e| EmitterError::Producer(e.to_string()))?;
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let state = Arc::new(EmitterState::default());
    let task = Task {
        spool,
        cache: VecDeque::new(),
        codec,
        producer,
        topic: kafka.topics.usage.clone(),
        inbox: inbox.clone(),
        state: state.clone(),
        epoch: 0,
        send_from: Position::default(),
        outstanding: BTreeMap::new(),
        retry_at: None,
        backoff: Duration::from_millis(500),
        idle_wait,
        syncer: syncer::Syncer::start().map_err(EmitterError::Thread)?,
        unplaced: HashMap::new(),
        landings: BTreeMap::new(),
    };
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let stop = shutdown.clone();
    std::thread::Builder::new()
        .name("faregate-emitter".into())
        .spawn(move || {
            // Should the emitter ever panic, the inbox is closed on the way out, so later events
            // are counted and logged as unsent rather than piling up unseen.
            let _close = CloseOnExit(task.inbox.clone());
            task.run(&stop);
            let _ = done_tx.send(());
        })
        .map_err(EmitterError::Thread)?;
    // A parked emitter learns of the shutdown at once.
    let waker = inbox.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let mut inbox = waker.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inbox.parked = true;
        inbox.wake();
    });
    Ok((KafkaSink { inbox, state }, EmitterHandle { done }))
}

struct Task {
    spool: Spool,
    /// The most recently appended records, in spool order.
    cache: VecDeque<Entry>,
    codec: AvroCodec<UsageEvent>,
    producer: BaseProducer<Reports>,
    topic: String,
    inbox: Arc<Mutex<Inbox>>,
    state: Arc<EmitterState>,
    /// Bumped at each rewind; reports of older sends are ignored.
    epoch: u64,
    /// The next spool record to send.
    send_from: Position,
    /// Sent and not yet acknowledged in order: start -> (end, acknowledged).
    outstanding: BTreeMap<Position, (Position, bool)>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// How long to park at most when idle (`IDLE_WAIT`; longer in tests).
    idle_wait: Duration,
    /// Syncs the spool for the collector's acknowledgements, off this thread.
    syncer: syncer::Syncer,
    /// Landings of events taken from the inbox and not yet appended, by event id.
    unplaced: HashMap<uuid::Uuid, Landing>,
    /// Landings of spool records not yet acknowledged, by the record's start.
    landings: BTreeMap<Position, Landing>,
}

/// Whether the broker will refuse this record whatever happens (too large, invalid): the record
/// is at fault, not the broker or the deployment (`faregate_core::kafka::error`).
fn refused_for_good(error: &KafkaError) -> bool {
    !error.retryable() && error.class() == ErrorClass::Internal
}

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
    fn run(mut self, shutdown: &CancellationToken) {
        self.send_from = self.spool.acked();
        self.lock_inbox().emitter = Some(std::thread::current());
        let mut cursor_at = Instant::now();
        while !shutdown.is_cancelled() {
            let (events, waiters) = self.take_inbox();
            self.append_all(events, waiters);
            self.serve_producer();
            self.handle_reports();
            self.send_more();
            let idle = self.is_idle();
            if idle || cursor_at.elapsed() >= CURSOR_EVERY {
                cursor_at = Instant::now();
                if let Err(e) = self.spool.persist_cursor() {
                    tracing::error!(error = %e, "spool: persisting the cursor failed");
                }
            }
            self.publish_state();
            if !idle || !self.park() {
                // Not a sleep: a durable batch (the collector waiting for its 202) wakes the
                // emitter at once instead of waiting for the tick.
                std::thread::park_timeout(TICK);
            }
        }
        self.drain();
    }

    /// Nothing unsent, nothing unacknowledged, no retry pending.
    fn is_idle(&self) -> bool {
        self.outstanding.is_empty() && self.retry_at.is_none() && self.send_from >= self.spool.end()
    }

    /// Park until an event arrives (or `IDLE_WAIT`, or shutdown); false, without parking, when
    /// the inbox already holds events (they wait for the next tick, to travel together).
    fn park(&self) -> bool {
        {
            let mut inbox = self.lock_inbox();
            if !inbox.events.is_empty() {
                return false;
            }
            inbox.parked = true;
        }
        std::thread::park_timeout(self.idle_wait);
        self.lock_inbox().parked = false;
        true
    }

    /// Let the producer hand over its delivery reports (each `poll` serves at most one event;
    /// a report event carries a whole batch). Not `poll(TICK)`: rdkafka 0.39 turns the last
    /// sub-millisecond of a timeout into zero-timeout polls, a busy loop measured at a fifth of
    /// a core.
    fn serve_producer(&self) {
        for _ in 0..MAX_POLLS {
            let before = self.producer.context().len();
            self.producer.poll(Duration::ZERO);
            if self.producer.context().len() == before {
                break;
            }
        }
    }

    fn lock_inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The inbox's events and the waiters for them, together.
    fn take_inbox(&mut self) -> (Vec<UsageEvent>, Vec<Waiter>) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.unplaced.extend(std::mem::take(&mut inbox.landings));
        (std::mem::take(&mut inbox.events), std::mem::take(&mut inbox.waiters))
    }

    /// Append `events` and flush them to the operating system (from then on they survive the
    /// process being killed); when callers wait for durability, hand them to the syncer, which
    /// syncs the spool once for everything queued (group commit) and answers each. A failed
    /// append or flush answers every waiter of this tick with an error: some of its events may
    /// not be durable, and a re-sent batch is harmless.
    fn append_all(&mut self, events: Vec<UsageEvent>, waiters: Vec<Waiter>) {
        if events.is_empty() && waiters.is_empty() {
            return;
        }
        let mut failure = None;
        for event in events {
            if let Err(e) = self.append(event) {
                failure = Some(e);
            }
        }
        if let Err(e) = self.spool.flush() {
            metrics::counter!("faregate_ingress_spool_errors_total").increment(1);
            tracing::error!(error = %e, "spool: flush failed");
            failure = Some(e.to_string());
        }
        if !waiters.is_empty() {
            self.syncer.submit(syncer::Job { file: self.spool.sync_handle(), waiters, failure });
        }
    }

    /// Apply the delivery reports that arrived: advance the acknowledged position over the
    /// in-order acknowledged prefix, or rewind after a failure.
    fn handle_reports(&mut self) {
        let reports =
            std::mem::take(&mut *self.producer.context().0.lock().unwrap_or_else(|p| p.into_inner()));
        let mut failed = None;
        let epoch = self.epoch;
        for report in reports.into_iter().filter(|r| r.epoch == epoch) {
            match report.error {
                None => {
                    if let Some(entry) = self.outstanding.get_mut(&report.start) {
                        entry.1 = true;
                    }
                    if let (Some(landing), Some((partition, offset))) =
                        (self.landings.remove(&report.start), report.landed)
                    {
                        landing.set(partition, offset);
                    }
                    metrics::counter!("faregate_ingress_events_delivered_total").increment(1);
                }
                // This record will never be taken (too large, invalid): kept aside, so the
                // records after it are not held up for ever.
                Some(error) if refused_for_good(&error) => {
                    if self.refuse(report.start, &error) {
                        if let Some(entry) = self.outstanding.get_mut(&report.start) {
                            entry.1 = true;
                        }
                    } else {
                        failed = Some(error);
                    }
                }
                Some(error) => failed = Some(error),
            }
        }
        let mut acked = None;
        while let Some(entry) = self.outstanding.first_entry() {
            if !entry.get().1 {
                break;
            }
            acked = Some(entry.remove().0);
        }
        if let Some(acked) = acked {
            // Records acknowledged without a landing report (kept aside as refused) never land.
            self.landings = self.landings.split_off(&acked);
            if let Err(e) = self.spool.ack(acked) {
                tracing::error!(error = %e, "spool: dropping acknowledged segments failed");
            }
            self.backoff = Duration::from_millis(500);
        }
        if let Some(error) = failed.filter(|_| self.retry_at.is_none()) {
            metrics::counter!("faregate_ingress_delivery_failures_total").increment(1);
            let (retry_in_ms, pending_bytes) = (self.backoff.as_millis() as u64, self.spool.pending_bytes());
            if error.retryable() {
                tracing::warn!(%error, retry_in_ms, pending_bytes, "usage topic unreachable; events wait in the spool");
            } else {
                // The deployment's to fix (credentials, ACLs, the topic's name): retrying is
                // right, as the events wait safely, but it will not cure itself.
                tracing::error!(%error, class = ?error.class(), retry_in_ms, pending_bytes,
                    "the broker refuses the ingress's usage events; fix the configuration; events wait in the spool");
            }
            // Everything after the acknowledged position goes again, in order.
            self.epoch += 1;
            self.outstanding.clear();
            self.send_from = self.spool.acked();
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
        }
        if self.retry_at.is_some_and(|at| Instant::now() >= at) {
            self.retry_at = None;
        }
    }

    fn publish_state(&self) {
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

    /// Append one event to the spool (or, should the spool fail, hand it to the producer
    /// directly); an error says it is not in the spool.
    fn append(&mut self, event: UsageEvent) -> Result<(), String> {
        let value = match self.codec.encode(&event) {
            Ok(value) => value,
            Err(e) => {
                // Cannot happen for a well-formed event; never silent if it does.
                metrics::counter!("faregate_ingress_encode_failures_total").increment(1);
                tracing::error!(event_id = %event.event_id, error = %e, "usage event cannot be encoded");
                return Err(format!("event {} cannot be encoded: {e}", event.event_id));
            }
        };
        let record = spool_record(&event.partition_key(), &value);
        let landing = self.unplaced.remove(&event.event_id);
        match self.spool.append(&record) {
            Ok((start, end)) => {
                if let Some(landing) = landing {
                    self.landings.insert(start, landing);
                }
                if self.cache.len() >= MAX_CACHED {
                    self.cache.pop_front();
                }
                self.cache.push_back(Entry { start, end, payload: record });
                Ok(())
            }
            Err(e) => {
                metrics::counter!("faregate_ingress_spool_errors_total").increment(1);
                tracing::error!(event_id = %event.event_id, error = %e, "spool: append failed; sending without the spool");
                let key = event.partition_key();
                let unspooled = Box::new((u64::MAX, Position::default(), Position::default()));
                let record = BaseRecord::with_opaque_to(&self.topic, unspooled).key(&key).payload(&value);
                if let Err((e, _)) = self.producer.send(record) {
                    tracing::error!(event_id = %event.event_id, error = %e, "usage event lost: neither spooled nor sent");
                }
                Err(e.to_string())
            }
        }
    }

    /// Up to `max` records from `from` on: from the in-memory tail when it starts there, else
    /// from the spool file.
    fn next_records(&mut self, from: Position, max: usize) -> std::io::Result<Vec<Entry>> {
        while self.cache.front().is_some_and(|e| e.start < from) {
            self.cache.pop_front();
        }
        if self.cache.front().is_none_or(|e| e.start != from) {
            return self.spool.read_from(from, max);
        }
        let mut entries = Vec::with_capacity(max.min(self.cache.len()));
        let mut next = from;
        while entries.len() < max && self.cache.front().is_some_and(|e| e.start == next) {
            let Some(entry) = self.cache.pop_front() else { break };
            next = entry.end;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Send the next flight, once the previous one is acknowledged (see the module's docs).
    fn send_more(&mut self) {
        if self.retry_at.is_some() || !self.outstanding.is_empty() {
            return;
        }
        let entries = match self.next_records(self.send_from, FLIGHT_RECORDS) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(error = %e, "spool: read failed");
                return;
            }
        };
        for entry in entries {
            let Some((key, value)) = split_record(&entry.payload) else {
                tracing::error!(position = ?entry.start, "spool: record without a key; skipped");
                self.send_from = entry.end;
                continue;
            };
            let opaque = Box::new((self.epoch, entry.start, entry.end));
            let record = BaseRecord::with_opaque_to(&self.topic, opaque).key(key).payload(value);
            match self.producer.send(record) {
                Ok(()) => {
                    self.outstanding.insert(entry.start, (entry.end, false));
                }
                // Refused before it left (larger than the producer's limit): acknowledged as
                // kept, in order with the others (or tried again at the next tick if it could
                // not be kept).
                Err((error, _)) if refused_for_good(&error) => {
                    if !self.keep_refused(&entry, &error) {
                        break;
                    }
                    self.outstanding.insert(entry.start, (entry.end, true));
                }
                // The producer's queue is full: the rest goes at the next tick.
                Err(_) => break,
            }
            self.send_from = entry.end;
        }
    }

    /// Keep the record at `start` aside (read back from the spool); false if that failed.
    fn refuse(&self, start: Position, error: &KafkaError) -> bool {
        match self.spool.read_from(start, 1).map(|mut e| e.pop()) {
            Ok(Some(entry)) => self.keep_refused(&entry, error),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(error = %e, position = ?start, "spool: reading a refused record back failed");
                false
            }
        }
    }

    /// Copy `entry` to the spool's `refused/` directory, count it and say where it is.
    fn keep_refused(&self, entry: &Entry, error: &KafkaError) -> bool {
        match self.spool.keep_refused(entry.start, &entry.payload) {
            Ok(path) => {
                metrics::counter!("faregate_ingress_refused_events_total").increment(1);
                tracing::error!(%error, kept = %path.display(), bytes = entry.payload.len(),
                    "the broker refused a usage event for good; kept aside, not metered: the rest goes on");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, %error, "spool: keeping a refused usage event aside failed; retrying it");
                false
            }
        }
    }

    fn drain(mut self) {
        self.lock_inbox().closed = true;
        let (events, waiters) = self.take_inbox();
        self.append_all(events, waiters);
        if let Err(e) = self.spool.sync() {
            tracing::error!(error = %e, "spool: final sync failed");
        }
        // Every acknowledgement still waiting is answered before the emitter reports it stopped.
        drop(std::mem::replace(&mut self.syncer, syncer::Syncer::stopped()));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.handle_reports();
            self.send_more();
            if self.outstanding.is_empty() && self.send_from >= self.spool.end() || Instant::now() >= deadline
            {
                break;
            }
            self.producer.poll(TICK);
        }
        let _ = self.producer.flush(Duration::from_secs(1));
        self.serve_producer();
        self.handle_reports();
        match self.spool.persist_cursor() {
            Ok(()) => tracing::info!(
                pending_bytes = self.spool.pending_bytes(),
                "usage emitter stopped; the rest is sent at the next start"
            ),
            Err(e) => tracing::error!(error = %e, "spool: persisting the cursor at shutdown failed"),
        }
    }
}

mod syncer;
#[cfg(test)]
mod tests;

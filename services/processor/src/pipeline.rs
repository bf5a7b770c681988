//! The processing loop: usage topic -> decode -> validate -> price -> ledger -> spend totals ->
//! offset commit.
//!
//! Effectively-once without Kafka transactions, with ClickHouse as the ledger:
//! - an offset is committed only after the ledger holds every row up to it and the spend totals
//!   they change were acknowledged by the broker, so a crash replays, never skips;
//! - a replayed message is recognised by its event id, which the pipeline looks up in the ledger
//!   before each write, so it is not written again. (Skipping by the ledger's highest offset per
//!   partition was rejected: an insert spanning two monthly partitions can be applied in part, and
//!   the highest stored offset then hides lower offsets that were never written.);
//! - an event that arrives twice at different offsets (re-sent after a lost acknowledgement) is
//!   caught by the same event-id check, and within one batch by de-duplicating on the id;
//! - spend totals (per subject and hour, and per session and minute) are absolute: the ledger's
//!   as of the write, advanced in memory for buckets written recently ([`crate::totals_cache`])
//!   and otherwise re-read from the ledger in one read after the write is acknowledged, with
//!   the time taken just before that read (or after the write) as their revision, so
//!   republishing them is harmless; each goes to the
//!   spend-topic partition of its org ([`faregate_core::kafka::partition_for`]), so one budget
//!   instance sees all of an org's spend (the spend producer does not linger: a flush waits for
//!   its totals' acknowledgement);
//! - on a partition revocation the batch's rows of that partition are dropped unwritten: the
//!   next owner reads them again from the last commit. Every write attempt (a flush on the
//!   batch deadline and each retry included) is fenced ([`crate::fence`]): it writes only rows
//!   of partitions still held under the assignment they were read in, and a revocation waits
//!   for a write in progress.
//!
//! Undecodable or invalid values go to the dead-letter topic (acknowledged before their offset
//! is committed). While ClickHouse or Kafka fail, the batch is retried with backoff and nothing
//! new is consumed, so memory stays bounded.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use foldhash::{HashSet, HashSetExt};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ProcessorConfig;
use crate::dlq::{DeadLetters, Stage};
use crate::fence::{BatchFences, Fences};
use crate::ledger::{Ledger, SpendTotals};
use crate::membership;
use crate::session::SESSION_REBUILD;
use crate::totals_cache::{Plan, TotalsCache};
use crate::validate::validate;
use crate::{Pricer, ProcessorError};
use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::clickhouse::LedgerRow;
use faregate_core::clickhouse::ledger::{KafkaPosition, PricingStatus};
use faregate_core::error::FaregateError;
use faregate_core::event::{SpendAggregate, UsageEvent};
use faregate_core::kafka::{
    AckProducer, IdlePacer, KafkaConfig, OwnershipWatch, RecordProducer, Verdict, partition_for,
};

/// How long the batch in hand at shutdown may take to be written.
const FINAL_FLUSH: Duration = Duration::from_secs(20);

/// How long one stage of a batch's flush took (the last attempt's, for a retried write), as
/// `faregate_processor_flush_stage_seconds{stage}`: `dedup` (the ledger's duplicate check),
/// `insert` (the ledger and its rollup views), `totals_read` (the spend totals' read-back, only
/// for a flush with a bucket [`crate::totals_cache`] could not vouch for) and `publish` (their
/// acknowledgement). Most of an event's time to a budget decision is here
/// (docs/benchmarks.md, "Event to decision under load").
fn flush_stage(stage: &'static str, took: Duration) {
    metrics::histogram!("faregate_processor_flush_stage_seconds", "stage" => stage)
        .record(took.as_secs_f64());
}

/// Records partition revocations, which librdkafka reports from inside `recv`, and keeps the
/// write fence of each assigned partition.
#[derive(Default)]
pub struct RebalanceContext {
    revoked: Mutex<Vec<i32>>,
    /// Partitions were assigned since the loop last looked (the idle pacer resumes them).
    assigned: AtomicBool,
    fences: Fences,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut revoked = self.revoked.lock().unwrap();
            revoked.extend(partitions.elements().iter().map(|p| p.partition()));
            self.fences.revoke(partitions.elements().iter().map(|p| p.partition()));
            tracing::info!(partitions = ?*revoked, "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.fences.assign(partitions.elements().iter().map(|p| p.partition()));
            self.assigned.store(true, Ordering::Release);
        }
    }
}

/// A batch's rows the ledger holds, and its end on each partition still owned.
#[derive(Clone, Copy)]
struct Written<'a> {
    rows: &'a [&'a LedgerRow],
    next_offsets: &'a BTreeMap<i32, i64>,
    fences: &'a BatchFences,
}

/// The events read but not yet committed.
#[derive(Default)]
struct Batch {
    rows: Vec<LedgerRow>,
    /// Partition -> the offset to commit once the batch is written (last offset + 1).
    next_offsets: BTreeMap<i32, i64>,
    bytes: usize,
    deadline: Option<Instant>,
    /// The assignment each partition's rows were read under.
    fences: BatchFences,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.next_offsets.is_empty()
    }

    fn advance(&mut self, partition: i32, offset: i64, max_wait: Duration, fences: &Fences) {
        self.fences.note(partition, fences);
        self.next_offsets.insert(partition, offset + 1);
        self.deadline.get_or_insert_with(|| Instant::now() + max_wait);
    }

    fn drop_partitions(&mut self, partitions: &[i32]) {
        self.rows.retain(|r| !partitions.contains(&r.kafka_partition));
        for p in partitions {
            self.next_offsets.remove(p);
        }
        if self.next_offsets.is_empty() {
            *self = Batch::default();
        }
    }
}

/// The processor's consuming loop and what it writes to.
pub struct Pipeline {
    config: ProcessorConfig,
    kafka: KafkaConfig,
    ledger: Arc<dyn Ledger>,
    pricer: Arc<dyn Pricer>,
    /// Set while the ledger answers; exported to readiness.
    ledger_ok: Arc<AtomicBool>,
    /// Why the pipeline had to stop, if a step failed in a way no retry can cure.
    fatal: Mutex<Option<String>>,
    /// Set while the group's partitions are owned and consumed ([`OwnershipWatch`]).
    partitions_ok: Arc<AtomicBool>,
    /// Recent totals of the buckets written, published without a read ([`crate::totals_cache`]).
    totals: Mutex<TotalsCache>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("group", &self.config.group_id).finish_non_exhaustive()
    }
}

struct Running {
    consumer: StreamConsumer<RebalanceContext>,
    codec: AvroCodec<UsageEvent>,
    spend: RecordProducer<SpendAggregate>,
    /// The spend topic's partition count, read at start (see `publish_totals`).
    spend_partitions: i32,
    dlq: DeadLetters,
}

impl Pipeline {
    pub fn new(
        config: ProcessorConfig,
        kafka: KafkaConfig,
        ledger: Arc<dyn Ledger>,
        pricer: Arc<dyn Pricer>,
        ledger_ok: Arc<AtomicBool>,
    ) -> Self {
        let partitions_ok = Arc::new(AtomicBool::new(false));
        let totals = Mutex::new(TotalsCache::new(Duration::from_millis(config.totals_cache_ms)));
        Pipeline { config, kafka, ledger, pricer, ledger_ok, fatal: Mutex::default(), partitions_ok, totals }
    }

    /// Export the ownership watchdog's readiness to `flag` (a readiness component).
    pub fn with_partitions_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.partitions_ok = flag;
        self
    }

    /// Consume until `shutdown`; the batch in hand is written before returning.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProcessorError> {
        // Cancelled by shutdown, or by a step that failed for good (see `retry`).
        let shutdown = shutdown.child_token();
        let topic = self.kafka.topics.usage.clone();
        let consumer = membership::join(&self.kafka, &self.config, false)?;
        let mut watch =
            OwnershipWatch::new(&self.kafka, &self.config.group_id, &topic, self.partitions_ok.clone())
                .map_err(|source| ProcessorError::Kafka { what: "creating the ownership probe", source })?;
        let mut check = tokio::time::interval(watch.interval());
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let registry = self.kafka.schema_registry.registry();
        let codec = AvroCodec::new(SchemaFamily::UsageEvent, &topic, registry)
            .await?
            .with_hand_decoder(faregate_core::avro::usage_decoder::HAND_DECODER);
        // The spend producer sends a flush's totals together and the flush waits for their
        // acknowledgement, so lingering (the shared producer default, 5 ms) only delays them:
        // linger.ms = 0 here, unless `kafka.properties` sets it (the operator's value wins).
        let mut spend_kafka = self.kafka.clone();
        spend_kafka.properties.entry("linger.ms".into()).or_insert_with(|| "0".into());
        // One client for the spend topic and the dead letters (rare: no lingering suits them).
        let producer = AckProducer::new(&spend_kafka, "processor")
            .map_err(|source| ProcessorError::Kafka { what: "creating the producer", source })?;
        let spend = RecordProducer::sharing(
            &producer,
            &self.kafka,
            SchemaFamily::SpendAggregate,
            &self.kafka.topics.spend,
        )
        .await?;
        let dlq = DeadLetters::sharing(&producer, &self.kafka);
        let Some(spend_partitions) =
            self.retry("reading the spend topic's partitions", &shutdown, || spend.partition_count()).await
        else {
            return match self.fatal.lock().unwrap().take() {
                Some(reason) => Err(ProcessorError::Fatal(reason)),
                None => Ok(()),
            };
        };
        let mut running = Running { consumer, codec, spend, spend_partitions, dlq };

        self.rebuild_totals(&running, &shutdown).await;
        tracing::info!(topic = %topic, group = %self.config.group_id, "processor consuming");

        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let mut batch = Batch::default();
        let mut pacer = IdlePacer::new(&self.kafka, "processor");
        loop {
            let deadline = batch.deadline;
            let mut rejoin = None;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = check.tick() => {
                    if let Verdict::Rejoin(how) = watch.check(&running.consumer).await {
                        rejoin = Some(how.dynamic);
                    }
                    // A new assignment, or messages waiting: fetch (if paced while idle).
                    if running.consumer.context().assigned.swap(false, Ordering::AcqRel) || watch.backlog() {
                        pacer.active(&running.consumer);
                    }
                },
                _ = pacer.due() => pacer.step(&running.consumer),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.flush(&running, &mut batch, &shutdown).await;
                }
                received = running.consumer.recv() => {
                    let revoked = std::mem::take(&mut *running.consumer.context().revoked.lock().unwrap());
                    if !revoked.is_empty() {
                        batch.drop_partitions(&revoked);
                    }
                    match received {
                        Ok(message) => {
                            pacer.active(&running.consumer);
                            if !self.accept(&running, &mut batch, &message, max_wait, &shutdown).await {
                                // Neither batched nor acknowledged as a dead letter: nothing at or
                                // past it may be committed, so stop reading here.
                                break;
                            }
                            if batch.rows.len() >= self.config.batch_max_rows || batch.bytes >= self.config.batch_max_bytes {
                                self.flush(&running, &mut batch, &shutdown).await;
                            }
                        }
                        Err(error) => tracing::warn!(%error, "usage consumer error"),
                    }
                }
            }
            if let Some(dynamic) = rejoin {
                // The batch is written first: nothing of the old assignment is written after.
                self.flush(&running, &mut batch, &shutdown).await;
                running.consumer =
                    membership::rejoin(running.consumer, &self.kafka, &self.config, dynamic).await?;
            }
        }
        if let Some(reason) = self.fatal.lock().unwrap().take() {
            return Err(ProcessorError::Fatal(reason));
        }
        if !batch.is_empty() {
            // Retried for at most FINAL_FLUSH, then abandoned uncommitted (the next owner
            // replays it), well inside the process's drain deadline.
            let (give_up, rows) = (CancellationToken::new(), batch.rows.len());
            let flushed = tokio::time::timeout(FINAL_FLUSH, self.flush(&running, &mut batch, &give_up)).await;
            give_up.cancel();
            if flushed.is_err() {
                tracing::warn!(
                    rows,
                    "the last batch could not be written before stopping; it will be read again"
                );
            }
        }
        if let Some(reason) = self.fatal.lock().unwrap().take() {
            return Err(ProcessorError::Fatal(reason));
        }
        tracing::info!("processor stopped");
        Ok(())
    }

    /// Take one message into the batch (or to the dead-letter topic); false if it was neither
    /// (its dead letter was not acknowledged before shutdown or a permanent failure), and then
    /// the batch does not advance over it, so its offset is never committed.
    async fn accept(
        &self,
        running: &Running,
        batch: &mut Batch,
        message: &BorrowedMessage<'_>,
        max_wait: Duration,
        shutdown: &CancellationToken,
    ) -> bool {
        let (partition, offset) = (message.partition(), message.offset());
        let refusal = match message.payload() {
            None => Some((Stage::Decode, "the value is empty (a tombstone on the usage topic)".to_string())),
            Some(payload) => match running.codec.decode(payload).await {
                Err(error) => Some((Stage::Decode, error.to_string())),
                Ok(event) => match validate(&event) {
                    Err(error) => Some((Stage::Validate, error.to_string())),
                    Ok(()) => {
                        self.batch_event(batch, message, event, payload.len());
                        None
                    }
                },
            },
        };
        if let Some((stage, reason)) = refusal
            && !self.dead_letter(running, message, stage, &reason, shutdown).await
        {
            return false;
        }
        batch.advance(partition, offset, max_wait, &running.consumer.context().fences);
        true
    }

    /// Price a valid event and add its row to the batch.
    fn batch_event(&self, batch: &mut Batch, message: &BorrowedMessage<'_>, event: UsageEvent, bytes: usize) {
        let pricing = self.pricer.price(&event);
        let position = KafkaPosition {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let row = LedgerRow::from_event(event, pricing, position, faregate_core::time::now_micros());
        if row.pricing_status == PricingStatus::Unpriced {
            metrics::counter!("faregate_processor_unpriced_total").increment(1);
            tracing::debug!(event_id = %row.event_id, model = %row.model, reason = %row.unpriced_reason, "event is unpriced");
        }
        batch.bytes += bytes;
        batch.rows.push(row);
    }

    /// Write `message` to the dead-letter topic; true once the broker acknowledged it, false if
    /// shutdown came first or the write failed for good (then the processor stops with it).
    async fn dead_letter(
        &self,
        running: &Running,
        message: &BorrowedMessage<'_>,
        stage: Stage,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        tracing::warn!(partition = message.partition(), offset = message.offset(), stage = stage.as_str(), %reason, "dead-lettering a usage value");
        metrics::counter!("faregate_processor_dead_letters_total", "stage" => stage.as_str()).increment(1);
        self.retry("writing to the dead-letter topic", shutdown, || running.dlq.send(message, stage, reason))
            .await
            .is_some()
    }

    /// Write the batch, publish the totals it changed, then commit its offsets.
    async fn flush(&self, running: &Running, batch: &mut Batch, shutdown: &CancellationToken) {
        let Batch { rows, next_offsets, fences, .. } = std::mem::take(batch);
        if next_offsets.is_empty() {
            return;
        }
        let mut seen = HashSet::with_capacity(rows.len());
        let rows: Vec<LedgerRow> = rows.into_iter().filter(|r| seen.insert(r.event_id)).collect();
        // The duplicate check runs again before every attempt: a write whose answer was lost
        // (ClickHouse went away mid-request) may have been applied, and must not be repeated.
        let ledger = self.ledger.clone();
        let unique = rows.len();
        let stages = Mutex::new((Duration::ZERO, Duration::ZERO));
        let attempts = AtomicU32::new(0);
        let write = || async {
            let retried = attempts.fetch_add(1, Ordering::Relaxed) > 0;
            // Held until the ledger answered (and the rollups were repaired): a revocation of
            // these partitions waits for it.
            let permit = fences.hold();
            let started = std::time::Instant::now();
            let existing = ledger.existing(&rows).await?;
            let checked = std::time::Instant::now();
            let owned: Vec<usize> =
                (0..rows.len()).filter(|&i| permit.allows(rows[i].kafka_partition)).collect();
            let fresh: Vec<usize> =
                owned.iter().copied().filter(|&i| !existing.contains(&rows[i].event_id)).collect();
            if fresh.len() == rows.len() {
                ledger.insert(&rows).await?;
            } else if !fresh.is_empty() {
                let subset: Vec<LedgerRow> = fresh.iter().map(|&i| rows[i].clone()).collect();
                ledger.insert(&subset).await?;
            }
            *stages.lock().unwrap() = (checked - started, checked.elapsed());
            // An earlier attempt failed, or rows were already stored (a write whose offsets were
            // never committed): either may have reached the ledger and not every rollup view,
            // or a view and not the ledger. Rebuild the buckets from the ledger.
            if retried || fresh.len() < owned.len() {
                let uncertain: Vec<LedgerRow> = owned.iter().map(|&i| rows[i].clone()).collect();
                ledger.repair_rollups(&uncertain).await?;
                metrics::counter!("faregate_processor_rollup_repairs_total").increment(1);
                tracing::info!(
                    rows = uncertain.len(),
                    after_failed_attempt = retried,
                    "rebuilt the rollups of an uncertain write from the ledger"
                );
            }
            Ok::<_, crate::ledger::LedgerError>((owned, fresh))
        };
        let Some((owned, fresh)) = self.retry("writing to the ledger", shutdown, write).await else {
            return;
        };
        let (dedup_time, insert_time) = *stages.lock().unwrap();
        flush_stage("dedup", dedup_time);
        flush_stage("insert", insert_time);
        let fresh: Vec<&LedgerRow> = fresh.into_iter().map(|i| &rows[i]).collect();
        // Every owned row is in the ledger now, fresh or not: the totals of rows stored by an
        // earlier write whose totals may never have been published are published too.
        let written: Vec<&LedgerRow> = owned.into_iter().map(|i| &rows[i]).collect();
        let fenced = rows.iter().filter(|r| !fences.is_alive(r.kafka_partition)).count();
        if fenced > 0 {
            tracing::info!(
                rows = fenced,
                "not writing rows of revoked partitions; their next owner reads them"
            );
        }
        let duplicates = unique.saturating_sub(fenced + fresh.len());
        if duplicates > 0 {
            metrics::counter!("faregate_processor_duplicates_total").increment(duplicates as u64);
            tracing::info!(duplicates, "skipped events already in the ledger");
        }
        if !fresh.is_empty() {
            metrics::counter!("faregate_processor_events_written_total").increment(fresh.len() as u64);
        }
        if !written.is_empty() {
            let started = std::time::Instant::now();
            let clean = attempts.load(Ordering::Relaxed) == 1 && fresh.len() == written.len();
            let plan = self.totals.lock().unwrap().plan(&written, clean, &fences);
            let (buckets, session_minutes) = (plan.buckets(), plan.session_minutes());
            let owned_ends: BTreeMap<i32, i64> =
                next_offsets.iter().filter(|(p, _)| fences.is_alive(**p)).map(|(p, o)| (*p, *o)).collect();
            let batch = Written { rows: &written, next_offsets: &owned_ends, fences: &fences };
            if !self.publish_totals(running, plan, batch, shutdown).await {
                return;
            }
            tracing::debug!(
                rows = fresh.len(),
                dedup_ms = dedup_time.as_millis() as u64,
                insert_ms = insert_time.as_millis() as u64,
                totals_ms = started.elapsed().as_millis() as u64,
                buckets,
                session_minutes,
                "batch written"
            );
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in next_offsets.iter().filter(|(p, _)| fences.is_alive(**p)) {
            let _ = offsets.add_partition_offset(&self.kafka.topics.usage, *partition, Offset::Offset(*next));
        }
        if let Err(error) = running.consumer.commit(&offsets, CommitMode::Async) {
            // Safe: the event-id check makes the replay a no-op.
            tracing::warn!(%error, "offset commit failed; the ledger makes the replay harmless");
        }
    }

    /// Publish the totals of a written batch's buckets: those `plan` knows, and the others read
    /// from the ledger (one read); false if shutdown interrupted it. Their revision is the time
    /// taken just before the read, or after the write when nothing was read (see
    /// [`crate::session`] and [`crate::totals_cache`]).
    async fn publish_totals(
        &self,
        running: &Running,
        plan: Plan,
        batch: Written<'_>,
        shutdown: &CancellationToken,
    ) -> bool {
        let started = std::time::Instant::now();
        let (read_at, mut totals) = if plan.read_hourly.is_empty() && plan.read_sessions.is_empty() {
            (faregate_core::time::now_micros(), SpendTotals::default())
        } else {
            let ledger = self.ledger.clone();
            let read = || async {
                let (at, began) = (faregate_core::time::now_micros(), std::time::Instant::now());
                ledger.spend_totals(&plan.read_hourly, &plan.read_sessions).await.map(|t| (at, began, t))
            };
            let Some((read_at, began, totals)) = self.retry("reading spend totals", shutdown, read).await
            else {
                return false;
            };
            flush_stage("totals_read", started.elapsed());
            self.totals.lock().unwrap().store(&plan, &totals, batch.fences, began);
            (read_at, totals)
        };
        let read_time = started.elapsed();
        totals.hourly.extend(plan.known.hourly);
        totals.sessions.extend(plan.known.sessions);
        let groups = crate::watermark::usage_groups(batch.rows, batch.next_offsets, &totals.hourly);
        let published = self.publish(running, read_at, &totals, &groups, shutdown).await;
        flush_stage("publish", started.elapsed() - read_time);
        tracing::debug!(
            read_ms = read_time.as_millis() as u64,
            publish_ms = (started.elapsed() - read_time).as_millis() as u64,
            records = totals.hourly.len() + totals.sessions.len(),
            "spend totals published"
        );
        published
    }

    /// Publish `totals`, read at `read_at`, each to the spend-topic partition of its org, the
    /// hourly ones with their usage groups (`groups`, in order; see [`crate::watermark`]);
    /// false if shutdown interrupted it.
    async fn publish(
        &self,
        running: &Running,
        read_at: DateTime<Utc>,
        totals: &SpendTotals,
        groups: &[Vec<faregate_core::event::UsageGroup>],
        shutdown: &CancellationToken,
    ) -> bool {
        let n = running.spend_partitions;
        let records: Vec<(i32, String, SpendAggregate)> = totals
            .hourly
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut record = t.to_aggregate(read_at);
                record.usage_positions = groups.get(i).cloned().unwrap_or_default();
                (partition_for(&t.key.subject.org, n), t.key.topic_key(), record)
            })
            .chain(
                totals
                    .sessions
                    .iter()
                    .map(|t| (partition_for(&t.key.org, n), t.key.topic_key(), t.to_aggregate(read_at))),
            )
            .collect();
        let spend = &running.spend;
        let publish = || async {
            futures::future::try_join_all(
                records.iter().map(|(partition, key, record)| spend.send_to(*partition, key, record)),
            )
            .await
        };
        self.retry("publishing spend totals", shutdown, publish).await.is_some()
    }

    /// Republish recent totals from the ledger (hourly ones of `rebuild_hours`, session ones of
    /// [`SESSION_REBUILD`]), so the budget service starts from the truth.
    async fn rebuild_totals(&self, running: &Running, shutdown: &CancellationToken) {
        let now = Utc::now();
        let since = now - chrono::TimeDelta::hours(i64::from(self.config.rebuild_hours));
        let ledger = self.ledger.clone();
        let read = || async {
            let at = faregate_core::time::now_micros();
            ledger.spend_totals_since(since, now - SESSION_REBUILD).await.map(|t| (at, t))
        };
        let Some((read_at, totals)) = self.retry("reading recent spend totals", shutdown, read).await else {
            return;
        };
        if self.publish(running, read_at, &totals, &[], shutdown).await {
            tracing::info!(
                buckets = totals.hourly.len(),
                session_minutes = totals.sessions.len(),
                hours = self.config.rebuild_hours,
                "republished spend totals from the ledger"
            );
        }
    }

    /// Run `attempt` until it succeeds, backing off exponentially; `None` if shutdown came first
    /// or the failure is permanent (then the reason is recorded and `shutdown` cancelled, so the
    /// pipeline stops with it and nothing past the failed step is committed). Whether a failure
    /// is permanent is the error's own [`FaregateError::retryable`], nothing else. Every step of
    /// the pipeline stops the processor on a permanent failure rather than dead-lettering: the
    /// ledger write and the spend totals concern valid events (a dead letter would lose money),
    /// and a dead letter that cannot be written has nowhere else to go.
    async fn retry<T, E, F, Fut>(&self, what: &str, shutdown: &CancellationToken, mut attempt: F) -> Option<T>
    where
        E: std::fmt::Display + FaregateError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delay = Duration::from_millis(self.config.retry_initial_ms);
        let max = Duration::from_millis(self.config.retry_max_ms);
        let mut failures = 0u32;
        loop {
            match attempt().await {
                Ok(value) => {
                    if failures > 0 {
                        tracing::info!(what, failures, "recovered");
                    }
                    self.ledger_ok.store(true, Ordering::Release);
                    metrics::gauge!("faregate_processor_sink_available").set(1.0);
                    return Some(value);
                }
                Err(error) if !error.retryable() => {
                    tracing::error!(what, %error, "failed in a way no retry can cure; stopping the processor");
                    self.fatal.lock().unwrap().get_or_insert_with(|| format!("{what}: {error}"));
                    shutdown.cancel();
                    return None;
                }
                Err(error) => {
                    failures += 1;
                    self.ledger_ok.store(false, Ordering::Release);
                    metrics::gauge!("faregate_processor_sink_available").set(0.0);
                    metrics::counter!("faregate_processor_retries_total").increment(1);
                    tracing::warn!(what, %error, failures, retry_in_ms = delay.as_millis() as u64, "failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(max);
                }
            }
        }
    }
}

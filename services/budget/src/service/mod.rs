//! The running service: topics in, decisions and alerts out.
//!
//! Start: the config topic (budgets) is read from its beginning to its end, then the service
//! joins the spend topic's consumer group ([`group`]). Instances of one deployment share the
//! group and so the work: the processor puts all of an org's spend on the org's partition, and
//! an instance decides and alerts only for the orgs of the partitions it is assigned
//! ([`Ownership`]). Budgets are always within one org, so no decision needs two instances.
//!
//! Each assignment rebuilds: the spend state is dropped, the decisions and alerts topics are read
//! to their ends (what was published, by whichever instance, and which windows were alerted),
//! and the assigned spend partitions are read from their beginnings to the end offsets they had
//! at assignment; only then does the engine decide, so a rebalance or a restart publishes only
//! what changed and alerts nothing twice. A revocation drops the state. The processor
//! republishes recent totals from the ledger when it starts, so the spend topic (compacted) holds
//! the truth the state is rebuilt from.
//!
//! Live: budgets and spend keep streaming in; after each record the engine decides the scopes
//! it touched and the result is published at once (decisions keyed by scope, acknowledged by
//! the broker; a failed publication is retried until it succeeds or the service stops). A
//! ticker moves windows on, so a reset is published on time with no traffic. Records that
//! cannot be used go to the dead-letter topic ([`intake`]). Nothing is read back from committed
//! offsets (positions are committed only to show progress to the ownership watchdog).
//!
//! Ready: only while deciding (the assignment's state rebuilt) and the ownership watchdog
//! ([`faregate_core::kafka::ownership`]) finds the spend partitions owned and consumed with a
//! lag within bound; when it asks for a rejoin, the state is dropped and the consumer joins the
//! group again.
//!
//! Headroom: every `budget.headroom_interval_ms` while deciding, the budgets whose spend,
//! definition or window changed get their limit, spent and remaining published to the
//! compacted headroom topic (absolute values as of a spend revision), so a busy budget
//! publishes at most once per interval and gateways show each developer's remaining budget.
//!
//! Liveness: while deciding, the service heart-beats every `budget.heartbeat_ms` to the
//! heartbeats topic ([`heartbeat`]) with the partitions it owns and how far it decided them;
//! while joining or catching up it does not, so every reader can tell enforcement is stale.

mod group;
mod heartbeat;
mod intake;
mod publish;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::event::{ConfigRecord, Demand, Heartbeat, SpendAggregate};
use faregate_core::kafka::{
    AckProducer, DeadLetters, IdlePacer, KafkaConfig, OwnershipWatch, ProduceError, RecordProducer, Verdict,
    ensure_topics,
};

use crate::clock::Clock;
use crate::engine::{Engine, Ownership};
use crate::notify::Notifier;
use crate::topic::TopicReader;
use crate::{BudgetConfig, BudgetError};
use group::{GroupEvent, SpendGroup};
use heartbeat::Heartbeats;
use intake::Intake;
pub use intake::check_aggregate;
use publish::Publisher;

/// The next message of a reader still catching up, or `None` once it has.
async fn next_until_caught_up(
    reader: &mut TopicReader,
    shutdown: &CancellationToken,
) -> Result<Option<OwnedMessage>, BudgetError> {
    loop {
        if reader.caught_up() {
            return Ok(None);
        }
        let topic = reader.topic().to_string();
        tokio::select! {
            _ = shutdown.cancelled() => return Err(BudgetError::Stopped),
            message = reader.next() => match message {
                Ok(m) => return Ok(Some(m)),
                Err(error) => tracing::warn!(%topic, %error, "consumer error while catching up"),
            }
        }
    }
}

/// `budget-<host name>`, so a restart on the same host (or pod) rejoins as the same static
/// member and gets its partitions back at once; a random id where the host has no name.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("budget-{host}"),
        None => format!("budget-{}", uuid::Uuid::now_v7().simple()),
    }
}

/// Where the spend state stands.
enum Phase {
    /// Waiting for the group to assign partitions.
    Joining,
    /// Reading the assigned partitions up to these end offsets (partition -> end).
    CatchingUp(HashMap<i32, i64>),
    Deciding,
}

struct Service {
    config: BudgetConfig,
    kafka: KafkaConfig,
    clock: Arc<dyn Clock>,
    engine: Arc<Mutex<Engine>>,
    /// The service's readiness: deciding and `partitions_ok`.
    ready: Arc<AtomicBool>,
    /// Set by the ownership watchdog.
    partitions_ok: Arc<AtomicBool>,
    publisher: Publisher,
    intake: Intake,
    heartbeats: Heartbeats,
    assigned: BTreeSet<i32>,
    phase: Phase,
}

impl Service {
    /// A reader of `topic`; see [`TopicReader::open`] for `background`.
    async fn open(&self, topic: &str, background: bool) -> Result<TopicReader, BudgetError> {
        TopicReader::open(&self.kafka, topic, &self.config.group_id, background)
            .await
            .map_err(|e| BudgetError::Kafka(format!("{topic}: {e}")))
    }

    /// A new assignment (or a revocation, `None`): drop the spend state and start rebuilding.
    async fn reassign(
        &mut self,
        group: &SpendGroup,
        assigned: Option<BTreeSet<i32>>,
        shutdown: &CancellationToken,
    ) -> Result<(), BudgetError> {
        let Some(assigned) = assigned else {
            let mut engine = self.engine.lock().unwrap();
            let count = match engine.ownership() {
                Ownership::Partitions { count, .. } => *count,
                Ownership::All => 1,
            };
            *engine = engine.without_spend();
            engine.set_ownership(Ownership::Partitions { count, assigned: BTreeSet::new() });
            self.heartbeats.reassigned(count, &BTreeSet::new());
            self.assigned.clear();
            self.phase = Phase::Joining;
            self.refresh_ready();
            return Ok(());
        };
        let (count, ends) = group.layout(&assigned).await.map_err(|e| BudgetError::Kafka(e.to_string()))?;
        {
            let mut engine = self.engine.lock().unwrap();
            *engine = engine.without_spend();
            engine.set_ownership(Ownership::Partitions { count, assigned: assigned.clone() });
        }
        self.heartbeats.reassigned(count, &assigned);
        self.restore_published(shutdown).await?;
        tracing::info!(partitions = ?assigned, of = count, "rebuilding spend state of the assigned partitions");
        self.assigned = assigned;
        self.phase = Phase::CatchingUp(ends);
        self.refresh_ready();
        self.warm_if_caught_up(shutdown).await
    }

    /// Read the decisions and alerts topics to their ends into the engine.
    async fn restore_published(&mut self, shutdown: &CancellationToken) -> Result<(), BudgetError> {
        let t = &self.kafka.topics;
        let decision_codec = self.publisher.decisions.codec();
        let mut decisions = self.open(&t.decisions, false).await?;
        while let Some(m) = next_until_caught_up(&mut decisions, shutdown).await? {
            match m.payload() {
                Some(p) => match decision_codec.decode(p).await {
                    Ok(d) => self.engine.lock().unwrap().restore_decision(d),
                    Err(error) => tracing::warn!(%error, "undecodable decision; ignored"),
                },
                None => self
                    .engine
                    .lock()
                    .unwrap()
                    .forget_decision(&String::from_utf8_lossy(m.key().unwrap_or_default())),
            }
        }
        let alert_codec = self.publisher.alerts.codec();
        let mut alerts = self.open(&t.alerts, false).await?;
        while let Some(m) = next_until_caught_up(&mut alerts, shutdown).await? {
            if let Some(p) = m.payload() {
                match alert_codec.decode(p).await {
                    Ok(a) => self.engine.lock().unwrap().restore_alert(&a),
                    Err(error) => tracing::warn!(%error, "undecodable alert; ignored"),
                }
            }
        }
        Ok(())
    }

    /// Once every assigned partition was read to its end offset: decide, publish, be ready.
    async fn warm_if_caught_up(&mut self, shutdown: &CancellationToken) -> Result<(), BudgetError> {
        if !matches!(&self.phase, Phase::CatchingUp(pending) if pending.is_empty()) {
            return Ok(());
        }
        let out = {
            let mut engine = self.engine.lock().unwrap();
            engine.set_warm();
            let (subjects, bytes) = engine.footprint();
            tracing::info!(partitions = ?self.assigned, subjects, bytes, "budget state rebuilt");
            engine.tick(self.clock.now())
        };
        self.phase = Phase::Deciding;
        self.publisher.publish(out, shutdown).await?;
        self.refresh_ready();
        Ok(())
    }

    /// Ready while deciding and the watchdog finds the partitions owned and consumed.
    fn refresh_ready(&self) {
        let ready = matches!(self.phase, Phase::Deciding) && self.partitions_ok.load(Ordering::Acquire);
        self.ready.store(ready, Ordering::Release);
    }

    /// Take one spend message of the group.
    async fn spend<M: Message>(
        &mut self,
        message: &M,
        shutdown: &CancellationToken,
    ) -> Result<(), BudgetError> {
        let partition = message.partition();
        if !self.assigned.contains(&partition) {
            return Ok(());
        }
        let aggregate = self.intake.spend(message, shutdown).await?;
        if let Some(aggregate) = &aggregate {
            self.apply(aggregate);
        }
        self.heartbeats.observed(partition, message.offset(), aggregate.map(|a| a.revision));
        if let Phase::CatchingUp(pending) = &mut self.phase {
            if pending.get(&partition).is_some_and(|end| message.offset() + 1 >= *end) {
                pending.remove(&partition);
            }
            return self.warm_if_caught_up(shutdown).await;
        }
        let out = self.engine.lock().unwrap().evaluate(self.clock.now());
        self.publisher.publish(out, shutdown).await
    }

    fn apply(&self, aggregate: &SpendAggregate) {
        let mut engine = self.engine.lock().unwrap();
        if !engine.ownership().owns(&aggregate.org) {
            // Not on its org's partition (a producer that does not partition by org): the
            // org's owner never sees it. The processor's start-up rebuild republishes it where
            // it belongs.
            metrics::counter!("faregate_budget_misrouted_total").increment(1);
            tracing::debug!(org = %aggregate.org, subject = %aggregate.subject, "spend aggregate of an org this instance does not own; ignored");
            return;
        }
        engine.apply(aggregate);
    }
}

/// The service's loop; see the module docs.
pub async fn serve(
    config: BudgetConfig,
    kafka: KafkaConfig,
    clock: Arc<dyn Clock>,
    engine: Arc<Mutex<Engine>>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), BudgetError> {
    let t = kafka.topics.clone();
    let specs: Vec<_> = kafka
        .topic_specs()
        .into_iter()
        .filter(|s| {
            [&t.spend, &t.decisions, &t.config, &t.alerts, &t.dlq, &t.heartbeats, &t.headroom, &t.demand]
                .contains(&&s.name)
        })
        .collect();
    ensure_topics(&kafka, &specs).await.map_err(|e| BudgetError::Kafka(e.to_string()))?;
    let registry = kafka.schema_registry.registry();
    // One client for every topic the service writes.
    let producer = AckProducer::new(&kafka, "budget")
        .map_err(|source| ProduceError::Create { brokers: kafka.brokers.clone(), source })?;
    let intake = Intake::new(
        AvroCodec::<ConfigRecord>::new(SchemaFamily::ConfigRecord, &t.config, registry.clone()).await?,
        AvroCodec::<SpendAggregate>::new(SchemaFamily::SpendAggregate, &t.spend, registry.clone()).await?,
        AvroCodec::<Demand>::new(SchemaFamily::Demand, &t.demand, registry.clone()).await?,
        DeadLetters::sharing(&producer, &kafka),
    );
    let publisher = Publisher {
        decisions: RecordProducer::sharing(&producer, &kafka, SchemaFamily::Decision, &t.decisions).await?,
        alerts: RecordProducer::sharing(&producer, &kafka, SchemaFamily::Alert, &t.alerts).await?,
        headroom: RecordProducer::sharing(&producer, &kafka, SchemaFamily::Headroom, &t.headroom).await?,
        notifier: Notifier::new(config.webhooks.clone()),
    };
    let instance_id = match config.instance_id.trim() {
        "" => default_instance_id(),
        id => id.to_string(),
    };
    let tick = Duration::from_millis(config.tick_ms);
    let heartbeat_every = Duration::from_millis(config.heartbeat_ms);
    let heartbeats = Heartbeats::new(
        RecordProducer::<Heartbeat>::sharing(&producer, &kafka, SchemaFamily::Heartbeat, &t.heartbeats)
            .await?,
        &instance_id,
        &config.group_id,
        &t.spend,
        heartbeat_every,
    );
    let partitions_ok = Arc::new(AtomicBool::new(false));
    ready.store(false, Ordering::Release);
    let mut service = Service {
        config,
        kafka,
        clock,
        engine,
        ready,
        partitions_ok: partitions_ok.clone(),
        publisher,
        intake,
        heartbeats,
        assigned: BTreeSet::new(),
        phase: Phase::Joining,
    };

    // Budgets first, to their end: a decision never sees a partial set of budgets. The reader
    // stays open for live changes, which no budget crossing waits on (the background wait).
    let mut budgets = service.open(&t.config, true).await?;
    while let Some(m) = next_until_caught_up(&mut budgets, &shutdown).await? {
        service.intake.config(&service.engine, &m, &shutdown).await?;
    }
    // The gateways' demand, from the whole topic (shares need every replica's), as it comes.
    let mut demands = service.open(&t.demand, true).await?;
    let mut group = SpendGroup::join(&service.kafka, &service.config.group_id, &instance_id, &t.spend)
        .map_err(|e| BudgetError::Kafka(format!("{}: {e}", t.spend)))?;
    let mut watch = OwnershipWatch::new(&service.kafka, &service.config.group_id, &t.spend, partitions_ok)
        .map_err(|e| BudgetError::Kafka(format!("{}: ownership probe: {e}", t.spend)))?;
    watch.gate(service.ready.clone());
    let mut check = tokio::time::interval(watch.interval());
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(group = %service.config.group_id, instance = %instance_id, spend = %t.spend, "joined the spend group");

    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat_ticker = tokio::time::interval(heartbeat_every);
    heartbeat_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut headroom_ticker =
        tokio::time::interval(Duration::from_millis(service.config.headroom_interval_ms));
    headroom_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pacer = IdlePacer::new(&service.kafka, "budget");
    let result = loop {
        let mut rejoin = None;
        let step = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            _ = group.rebalanced() => {
                pacer.active(&group.consumer);
                service.rebalance(&group, &shutdown).await
            }
            _ = pacer.due() => {
                pacer.step(&group.consumer);
                Ok(())
            }
            _ = heartbeat_ticker.tick() => {
                service.heartbeat(&group);
                Ok(())
            }
            _ = check.tick() => {
                watch.commit_positions(&group.consumer);
                if let Verdict::Rejoin(how) = watch.check(&group.consumer).await {
                    rejoin = Some(how.dynamic);
                }
                if watch.backlog() {
                    // Spend waiting: fetch (if paced while idle).
                    pacer.active(&group.consumer);
                }
                service.refresh_ready();
                Ok(())
            }
            _ = headroom_ticker.tick() => {
                let out = if matches!(service.phase, Phase::Deciding) {
                    service.engine.lock().unwrap().take_headroom(service.clock.now())
                } else {
                    Default::default()
                };
                service.publisher.publish_headroom(out, &shutdown).await
            }
            _ = ticker.tick() => {
                let out = {
                    let mut engine = service.engine.lock().unwrap();
                    let out = engine.tick(service.clock.now());
                    let (subjects, bytes) = engine.footprint();
                    metrics::gauge!("faregate_budget_subjects").set(subjects as f64);
                    metrics::gauge!("faregate_budget_state_bytes").set(bytes as f64);
                    out
                };
                service.publisher.publish(out, &shutdown).await
            }
            message = budgets.next() => match message {
                Ok(m) => {
                    match service.intake.config(&service.engine, &m, &shutdown).await {
                        Ok(()) => {
                            let out = service.engine.lock().unwrap().evaluate(service.clock.now());
                            service.publisher.publish(out, &shutdown).await
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "config consumer error");
                    Ok(())
                }
            },
            message = demands.next() => match message {
                Ok(m) => {
                    let now = service.clock.now();
                    service.intake.demand(&service.engine, &m, now, &shutdown).await
                }
                Err(error) => {
                    tracing::warn!(%error, "demand consumer error");
                    Ok(())
                }
            },
            message = group.consumer.recv() => match message {
                Ok(m) => {
                    pacer.active(&group.consumer);
                    let m = m.detach();
                    match service.rebalance(&group, &shutdown).await {
                        Ok(()) => service.spend(&m, &shutdown).await,
                        Err(e) => Err(e),
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "spend consumer error");
                    Ok(())
                }
            },
        };
        match step {
            Ok(()) => {}
            Err(BudgetError::Stopped) => break Ok(()),
            Err(error) => break Err(error),
        }
        if let Some(dynamic) = rejoin {
            // The state of the old assignment goes; the next assignment rebuilds it.
            if let Err(error) = service.reassign(&group, None, &shutdown).await {
                break Err(error);
            }
            group = match group.rejoin(dynamic).await {
                Ok(group) => group,
                Err(e) => break Err(BudgetError::Kafka(format!("{}: rejoining: {e}", t.spend))),
            };
        }
    };
    service.publisher.flush();
    tracing::info!("budget service stopped");
    result
}

impl Service {
    /// Heart-beat if deciding: for the rebuilt partitions the consumer still holds.
    fn heartbeat(&mut self, group: &SpendGroup) {
        let deciding = matches!(self.phase, Phase::Deciding);
        metrics::gauge!("faregate_budget_deciding").set(if deciding { 1.0 } else { 0.0 });
        if !deciding {
            return;
        }
        match group.owned() {
            Ok(owned) => self.heartbeats.beat(&owned),
            Err(error) => tracing::warn!(%error, "cannot read the spend consumer's assignment; no heartbeat"),
        }
    }

    /// Handle the group's rebalance events, in order.
    async fn rebalance(
        &mut self,
        group: &SpendGroup,
        shutdown: &CancellationToken,
    ) -> Result<(), BudgetError> {
        for event in group.take_events() {
            match event {
                GroupEvent::Assigned(partitions) => self.reassign(group, Some(partitions), shutdown).await?,
                GroupEvent::Revoked => self.reassign(group, None, shutdown).await?,
            }
        }
        Ok(())
    }
}

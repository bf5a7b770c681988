//! The ownership watchdog of a consumer group member: every partition of the group's topic is
//! owned and consumed, or the member says so and rejoins.
//!
//! A group coordinator is supposed to give every partition to a live member, but one may not
//! (tansu 0.6 keeps a SIGKILLed static member in the group for ever and can leave a restarted
//! member with an empty assignment), and a librdkafka member can also end up holding nothing
//! after a failed rebalance. So each member checks, every `check_interval_ms`, what it can see
//! from the outside, with no broker-specific behaviour assumed:
//!
//! - **owned**: the partitions of the topic in its own assignment;
//! - **lag**: over its owned partitions, the high watermark minus its position;
//! - **stalled**: partitions it does not own that have data past the group's committed offset
//!   (every Faregate group commits: the processor after each write, the budget service its
//!   positions on each check, [`OwnershipWatch::commit_positions`]) and whose committed offset
//!   has not moved for `starved_after_ms`: nobody is consuming them.
//!
//! The rule:
//! - it is **ready** only while it owns at least one partition, no partition is stalled, and
//!   its lag is at most `max_lag`; an ERROR is logged on each transition to not ready and a
//!   WARN on recovery;
//! - it **rejoins** (the service closes the consumer and creates it again as a dynamic member,
//!   without `group.instance.id`, see [`Rejoin::dynamic`]) when a partition is stalled, or when
//!   it has owned nothing for `starved_after_ms`. The first three rejoins of one episode come
//!   `starved_after_ms` apart, later ones back off exponentially up to
//!   `max_rejoin_interval_ms`; an assignment with partitions and no stall ends the episode. Without a stalled partition a member rejoins at most three times per episode:
//!   a member that owns nothing because the group has more members than partitions (legitimate
//!   on Apache Kafka) costs the group at most three rebalances and then stays quiet and not
//!   ready (it does no work); data that then waits unconsumed is a stall and brings the rejoins
//!   back. Run no more instances than partitions.
//!
//! Metrics, labelled by `group`: `faregate_consumer_owned_partitions`,
//! `faregate_consumer_topic_partitions`, `faregate_consumer_lag` (messages, owned partitions),
//! `faregate_consumer_stalled_partitions`, `faregate_consumer_ready` (1 or 0), and the counter
//! `faregate_consumer_rejoins_total`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::KafkaConfig;
use super::offsets::{self, End};
use crate::config::ConfigError;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the ownership watchdog (see the module docs for the rule).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OwnershipConfig {
    /// How long a member may own nothing, or a partition may have unconsumed data with no
    /// progress of the group's committed offset, before the member rejoins the group. The
    /// consumer's session timeout (10 s): on Kafka a dead member's partitions move about then,
    /// so a rejoin at the same moment costs at most one extra rebalance.
    pub starved_after_ms: u64,
    /// The longest wait between two rejoins while the member stays without partitions.
    pub max_rejoin_interval_ms: u64,
    /// Readiness bound: a member whose owned partitions lag the end by more messages than this
    /// (summed) is not ready.
    pub max_lag: i64,
    /// How often ownership and lag are checked.
    pub check_interval_ms: u64,
}

impl Default for OwnershipConfig {
    fn default() -> Self {
        OwnershipConfig {
            starved_after_ms: 10_000,
            max_rejoin_interval_ms: 600_000,
            max_lag: 100_000,
            check_interval_ms: 1_000,
        }
    }
}

impl OwnershipConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let field = |name: &str| format!("kafka.ownership.{name}");
        if self.check_interval_ms == 0 {
            return Err(ConfigError::field(field("check_interval_ms"), "must be at least 1"));
        }
        if self.starved_after_ms < self.check_interval_ms {
            return Err(ConfigError::field(field("starved_after_ms"), "must be at least check_interval_ms"));
        }
        if self.max_rejoin_interval_ms < self.starved_after_ms {
            return Err(ConfigError::field(
                field("max_rejoin_interval_ms"),
                "must be at least starved_after_ms",
            ));
        }
        if self.max_lag < 0 {
            return Err(ConfigError::field(field("max_lag"), "must not be negative"));
        }
        Ok(())
    }
}

/// What a member sees of its group's topic at one check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The topic's partition count.
    pub partitions: i32,
    /// The partitions in this member's assignment.
    pub owned: BTreeSet<i32>,
    /// Over the owned partitions, messages between the position and the high watermark.
    pub lag: i64,
    /// Partitions this member does not own, with data past the group's committed offset:
    /// partition -> that committed offset (or the low watermark when nothing was committed).
    pub behind: HashMap<i32, i64>,
}

/// What the member should do after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// Close the consumer and create it again.
    Rejoin(Rejoin),
}

/// How to rejoin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejoin {
    /// For the log.
    pub reason: String,
    /// Join without `group.instance.id` (a dynamic member). Always, today: tansu 0.6 expires
    /// dead members only when a dynamic member makes a request, so a group whose leader is a
    /// dead static member stays stuck however often the live members rejoin with their
    /// instance ids. On Kafka it costs one rebalance, and the instance stays dynamic until it
    /// restarts.
    pub dynamic: bool,
}

/// Rejoins of one episode while the member owns nothing but no partition is seen stalled (the
/// topic's data is all consumed, or the member is a legitimate standby): then it stops trying
/// until a stall is seen.
const BLIND_REJOINS: u32 = 3;

/// The pure part of the watchdog: the rule of the module docs over a series of observations.
#[derive(Debug)]
pub struct Judge {
    config: OwnershipConfig,
    /// Since when the member has owned nothing.
    empty_since: Option<Instant>,
    /// Behind partitions not owned here: partition -> (committed offset, since when unchanged).
    behind_since: HashMap<i32, (i64, Instant)>,
    /// The earliest next rejoin of the current episode, and the wait after it.
    next_rejoin: Option<(Instant, Duration)>,
    /// Rejoins in the current episode.
    attempts: u32,
    /// Why the member is not ready, if it is not.
    unready: Option<String>,
}

impl Judge {
    /// A judge whose member joined at `now` (owning nothing yet, so not ready).
    pub fn new(config: OwnershipConfig, now: Instant) -> Judge {
        Judge {
            config,
            empty_since: Some(now),
            behind_since: HashMap::new(),
            next_rejoin: None,
            attempts: 0,
            unready: Some("not assigned partitions yet".into()),
        }
    }

    /// The member could not observe its group (the broker does not answer) since `since`: not
    /// ready once that lasts `starved_after_ms`.
    pub fn blind(&mut self, now: Instant, since: Instant) {
        let starved = Duration::from_millis(self.config.starved_after_ms);
        if now - since >= starved {
            self.unready = Some(format!("cannot see the group's topic for {:?}", now - since));
        }
    }

    /// Why the member is not ready, or `None` when it is.
    pub fn unready(&self) -> Option<&str> {
        self.unready.as_deref()
    }

    /// Partitions seen behind with no progress for `starved_after_ms`, sorted.
    pub fn stalled(&self, now: Instant) -> Vec<i32> {
        let starved = Duration::from_millis(self.config.starved_after_ms);
        let mut stalled: Vec<i32> = self
            .behind_since
            .iter()
            .filter(|(_, (_, since))| now - *since >= starved)
            .map(|(p, _)| *p)
            .collect();
        stalled.sort_unstable();
        stalled
    }

    /// Judge one observation made at `now`.
    pub fn observe(&mut self, now: Instant, seen: &Observation) -> Verdict {
        let starved = Duration::from_millis(self.config.starved_after_ms);
        if seen.owned.is_empty() {
            self.empty_since.get_or_insert(now);
        } else {
            self.empty_since = None;
        }
        self.behind_since.retain(|p, (committed, _)| seen.behind.get(p) == Some(committed));
        for (p, committed) in &seen.behind {
            self.behind_since.entry(*p).or_insert((*committed, now));
        }
        let stalled = self.stalled(now);
        let starving = self.empty_since.is_some_and(|since| now - since >= starved);

        self.unready = if seen.owned.is_empty() && seen.partitions > 0 {
            Some(format!("owns none of the topic's {} partitions", seen.partitions))
        } else if !stalled.is_empty() {
            Some(format!("partitions {stalled:?} have unconsumed data and no owner making progress"))
        } else if seen.lag > self.config.max_lag {
            Some(format!("lag {} above the bound {}", seen.lag, self.config.max_lag))
        } else {
            None
        };

        let reason = if !stalled.is_empty() {
            format!("partitions {stalled:?} have had unconsumed data and no progress for {starved:?}")
        } else if starving && seen.partitions > 0 && self.attempts < BLIND_REJOINS {
            format!("owned none of {} partitions for {starved:?}", seen.partitions)
        } else {
            // Healthy (owns partitions, nothing anywhere waits): the episode is over. A
            // partition behind but not yet stalled keeps it, so a stuck owner elsewhere (its
            // ledger down) makes this member rejoin ever more rarely, not every few seconds.
            if !seen.owned.is_empty() && seen.behind.is_empty() {
                self.next_rejoin = None;
                self.attempts = 0;
            }
            return Verdict::Fine;
        };
        match self.next_rejoin {
            Some((at, _)) if now < at => Verdict::Fine,
            _ => {
                // The first three rejoins of an episode come `starved` apart (tansu may need
                // several), then the wait doubles up to the maximum.
                self.attempts += 1;
                let max = Duration::from_millis(self.config.max_rejoin_interval_ms);
                let doublings = self.attempts.saturating_sub(BLIND_REJOINS - 1).min(16);
                let wait = (starved * 2u32.pow(doublings)).min(max);
                self.next_rejoin = Some((now + wait, wait));
                // A stall is judged afresh after the rejoin.
                self.behind_since.clear();
                Verdict::Rejoin(Rejoin { reason, dynamic: true })
            }
        }
    }
}

/// The watchdog of one member: observes the group's topic through the member's consumer and a
/// probe of its own, exports readiness and metrics, and tells the service when to rejoin.
pub struct OwnershipWatch {
    group: String,
    topic: String,
    judge: Judge,
    probe: Arc<BaseConsumer>,
    /// The probe's round trips in flight (they wait for the broker, so they run off the loop).
    observing: Option<tokio::task::JoinHandle<Result<Observation, KafkaError>>>,
    /// When an observation last succeeded.
    observed_at: Instant,
    /// Whether the member was ever ready (the first time is not a recovery).
    was_ever_ready: bool,
    /// The lag of the last observation (the idle pacer wakes on it: [`OwnershipWatch::backlog`]).
    last_lag: i64,
    /// What [`OwnershipWatch::commit_positions`] last committed, per partition.
    committed: BTreeMap<i32, i64>,
    /// When every position was last committed, moved or not.
    committed_at: Instant,
    ready: Arc<AtomicBool>,
    /// Flags that must never say ready while this one does not (see [`OwnershipWatch::gate`]).
    gated: Vec<Arc<AtomicBool>>,
}

impl std::fmt::Debug for OwnershipWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnershipWatch").field("group", &self.group).field("topic", &self.topic).finish()
    }
}

impl OwnershipWatch {
    /// Watch the member of `group` consuming `topic`; `ready` is set while the rule holds.
    pub fn new(
        kafka: &KafkaConfig,
        group: &str,
        topic: &str,
        ready: Arc<AtomicBool>,
    ) -> Result<Self, KafkaError> {
        // The probe only reads metadata, watermarks and the group's committed offsets; it
        // never subscribes, so it is no member of the group.
        let probe: BaseConsumer = kafka.consumer_config("ownership-probe", group).create()?;
        ready.store(false, Ordering::Release);
        Ok(OwnershipWatch {
            group: group.to_string(),
            topic: topic.to_string(),
            judge: Judge::new(kafka.ownership.clone(), Instant::now()),
            probe: Arc::new(probe),
            observing: None,
            observed_at: Instant::now(),
            was_ever_ready: false,
            last_lag: 0,
            committed: BTreeMap::new(),
            committed_at: Instant::now(),
            ready,
            gated: Vec::new(),
        })
    }

    /// Clear `flag` whenever this watch turns not ready, before the metrics say so; the service
    /// sets it again on its own terms (including this watch's readiness).
    pub fn gate(&mut self, flag: Arc<AtomicBool>) {
        self.gated.push(flag);
    }

    /// How often [`OwnershipWatch::check`] should run.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.judge.config.check_interval_ms)
    }

    /// The readiness flag this watch maintains.
    pub fn ready(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// The last observation found messages past the member's position on its own partitions:
    /// a consumer asleep (see [`crate::kafka::idle`]) has something to read.
    pub fn backlog(&self) -> bool {
        self.last_lag > 0
    }

    /// Commit `consumer`'s positions on its owned partitions (asynchronously), so other members
    /// see that they progress. For a group that commits nothing else (the budget service
    /// always starts its partitions from the beginning, so the offsets are never read back).
    /// Positions that have not moved since the last commit are committed again only every
    /// half `starved_after_ms` (an idle member writes almost nothing to the broker, and an
    /// asynchronous commit that failed is repeated before any other member could take the
    /// partition for stalled).
    pub fn commit_positions<C: ConsumerContext + 'static>(&mut self, consumer: &StreamConsumer<C>) {
        let Ok(positions) = consumer.position() else { return };
        let refresh =
            self.committed_at.elapsed() >= Duration::from_millis(self.judge.config.starved_after_ms) / 2;
        let mut offsets = TopicPartitionList::new();
        let mut moved = BTreeMap::new();
        for e in positions.elements_for_topic(&self.topic) {
            if let Offset::Offset(o) = e.offset()
                && (refresh || self.committed.get(&e.partition()) != Some(&o))
            {
                let _ = offsets.add_partition_offset(&self.topic, e.partition(), Offset::Offset(o));
                moved.insert(e.partition(), o);
            }
        }
        if offsets.count() > 0 && consumer.commit(&offsets, CommitMode::Async).is_ok() {
            self.committed.extend(moved);
            if refresh {
                self.committed_at = Instant::now();
            }
        }
    }

    /// Judge the last completed observation (logs and metrics included) and start the next
    /// one through `consumer` and the probe. Never waits for the broker: while an observation
    /// is in flight (a slow or absent broker), nothing is judged.
    pub async fn check<C: ConsumerContext + 'static>(&mut self, consumer: &StreamConsumer<C>) -> Verdict {
        if self.observing.as_ref().is_some_and(|task| !task.is_finished()) {
            return Verdict::Fine;
        }
        let previous = match self.observing.take() {
            Some(task) => task.await.map_err(|_| KafkaError::Canceled).and_then(|r| r),
            None => Err(KafkaError::Canceled),
        };
        let owned: BTreeSet<i32> = consumer
            .assignment()
            .map(|a| a.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let positions: HashMap<i32, i64> = consumer
            .position()
            .map(|p| {
                p.elements_for_topic(&self.topic)
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (probe, topic) = (self.probe.clone(), self.topic.clone());
        self.observing =
            Some(tokio::task::spawn_blocking(move || observe(&probe, &topic, owned, &positions)));
        let was_ready = self.judge.unready().is_none();
        let seen = match previous {
            Ok(seen) => seen,
            Err(KafkaError::Canceled) => return Verdict::Fine,
            Err(error) => {
                // The broker does not answer: no rejoin can help, but the member is blind.
                tracing::debug!(group = %self.group, %error, "ownership probe failed");
                self.judge.blind(Instant::now(), self.observed_at);
                self.export(was_ready, None);
                return Verdict::Fine;
            }
        };
        self.observed_at = Instant::now();
        self.last_lag = seen.lag;
        let verdict = self.judge.observe(Instant::now(), &seen);
        self.export(was_ready, Some(&seen));
        if let Verdict::Rejoin(Rejoin { reason, dynamic }) = &verdict {
            metrics::counter!("faregate_consumer_rejoins_total", "group" => self.group.clone()).increment(1);
            tracing::warn!(group = %self.group, topic = %self.topic, owned = ?seen.owned, %reason, dynamic, "rejoining the consumer group (closing and recreating the consumer)");
        }
        verdict
    }

    /// Metrics, the readiness flag and a log line on each readiness transition.
    fn export(&mut self, was_ready: bool, seen: Option<&Observation>) {
        let group = self.group.clone();
        // Readiness is withdrawn before the metrics show why, and given after they show it:
        // whoever reads both never sees "owns nothing" and "ready" together.
        let ready = self.judge.unready().is_none();
        if !ready {
            self.ready.store(false, Ordering::Release);
            for flag in &self.gated {
                flag.store(false, Ordering::Release);
            }
        }
        if let Some(seen) = seen {
            let g =
                |name: &'static str, value: f64| metrics::gauge!(name, "group" => group.clone()).set(value);
            g("faregate_consumer_owned_partitions", seen.owned.len() as f64);
            g("faregate_consumer_topic_partitions", f64::from(seen.partitions));
            g("faregate_consumer_lag", seen.lag as f64);
            g("faregate_consumer_stalled_partitions", self.judge.stalled(Instant::now()).len() as f64);
        }
        let (owned, lag) = seen.map_or((BTreeSet::new(), 0), |s| (s.owned.clone(), s.lag));
        metrics::gauge!("faregate_consumer_ready", "group" => group).set(if ready { 1.0 } else { 0.0 });
        self.ready.store(ready, Ordering::Release);
        match (was_ready, self.judge.unready()) {
            (true, Some(why)) => tracing::error!(
                group = %self.group, topic = %self.topic, owned = ?owned, lag, reason = %why,
                "consumer not ready: the group's partitions are not all being consumed"
            ),
            (false, None) if self.was_ever_ready => tracing::warn!(
                group = %self.group, topic = %self.topic, owned = ?owned, lag,
                "consumer ready again: owns partitions and keeps up"
            ),
            (false, None) => tracing::info!(
                group = %self.group, topic = %self.topic, owned = ?owned, lag,
                "consumer ready: owns partitions and keeps up"
            ),
            _ => {}
        }
        self.was_ever_ready |= ready;
    }
}

/// The blocking part of a check: the topic's layout and the group's committed offsets.
fn observe(
    probe: &BaseConsumer,
    topic: &str,
    owned: BTreeSet<i32>,
    positions: &HashMap<i32, i64>,
) -> Result<Observation, KafkaError> {
    let metadata = probe.fetch_metadata(Some(topic), PROBE_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .map(|p| p.id())
        .collect();
    let mut query = TopicPartitionList::new();
    for p in &partitions {
        query.add_partition(topic, *p);
    }
    let committed: HashMap<i32, i64> = probe
        .committed_offsets(query, PROBE_TIMEOUT)?
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    let mut seen = Observation { partitions: partitions.len() as i32, owned, ..Observation::default() };
    // Two offsets requests for the whole topic, not two per partition (`fetch_watermarks`).
    let each = || partitions.iter().map(|p| (topic.to_string(), *p));
    let lows = offsets::ends(probe, each(), End::Earliest, PROBE_TIMEOUT)?;
    let highs = offsets::ends(probe, each(), End::Latest, PROBE_TIMEOUT)?;
    for p in partitions {
        let key = (topic.to_string(), p);
        let (Some(&low), Some(&high)) = (lows.get(&key), highs.get(&key)) else {
            return Err(KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownPartition));
        };
        let committed = committed.get(&p).copied().unwrap_or(low).max(low);
        if seen.owned.contains(&p) {
            let position = positions.get(&p).copied().unwrap_or(committed);
            seen.lag += (high - position).max(0);
        } else if high > committed {
            seen.behind.insert(p, committed);
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OwnershipConfig {
        OwnershipConfig {
            starved_after_ms: 10_000,
            max_rejoin_interval_ms: 40_000,
            max_lag: 100,
            check_interval_ms: 1_000,
        }
    }

    fn seen(partitions: i32, owned: &[i32], lag: i64, behind: &[(i32, i64)]) -> Observation {
        Observation {
            partitions,
            owned: owned.iter().copied().collect(),
            lag,
            behind: behind.iter().copied().collect(),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_member_owning_nothing_is_not_ready_and_rejoins_with_backoff() {
        let t0 = Instant::now();
        let mut judge = Judge::new(config(), t0);
        assert_eq!(judge.observe(t0 + 9 * S, &seen(2, &[], 0, &[])), Verdict::Fine);
        assert!(judge.unready().is_some());
        let rejoin = |dynamic: bool| {
            Verdict::Rejoin(Rejoin { reason: "owned none of 2 partitions for 10s".into(), dynamic })
        };
        assert_eq!(judge.observe(t0 + 10 * S, &seen(2, &[], 0, &[])), rejoin(true));
        // then after 10 s and 20 s, and no more without a stall
        let mut rejoins = vec![];
        for s in 11..=130 {
            if let Verdict::Rejoin(r) = judge.observe(t0 + s * S, &seen(2, &[], 0, &[])) {
                rejoins.push((s, r.dynamic));
            }
        }
        assert_eq!(rejoins, vec![(20, true), (30, true)]);
        assert!(judge.unready().is_some());
        // a stall (data nobody consumes) brings rejoins back, with the episode's backoff
        let stalled: Vec<u32> = (131..=250)
            .filter(|&s| judge.observe(t0 + s * S, &seen(2, &[], 0, &[(0, 7)])) != Verdict::Fine)
            .collect();
        assert_eq!(stalled, vec![141, 181, 221]);
        // an assignment ends the episode and makes it ready
        assert_eq!(judge.observe(t0 + 251 * S, &seen(2, &[0, 1], 5, &[])), Verdict::Fine);
        assert_eq!(judge.unready(), None);
        // a new episode starts with the short wait again
        assert_eq!(judge.observe(t0 + 252 * S, &seen(2, &[], 0, &[])), Verdict::Fine);
        assert_eq!(judge.observe(t0 + 262 * S, &seen(2, &[], 0, &[])), rejoin(true));
    }

    #[test]
    fn a_partition_behind_with_no_progress_is_stalled_but_progress_is_not() {
        let t0 = Instant::now();
        let mut judge = Judge::new(config(), t0);
        // Owns 0; partition 1 is behind and its committed offset moves: someone consumes it.
        for s in 0..30 {
            assert_eq!(judge.observe(t0 + s * S, &seen(2, &[0], 0, &[(1, s as i64)])), Verdict::Fine);
            assert_eq!(judge.unready(), None);
        }
        // It stops moving: stalled after 10 s, not ready, rejoin.
        for s in 30..39 {
            assert_eq!(judge.observe(t0 + s * S, &seen(2, &[0], 0, &[(1, 29)])), Verdict::Fine);
        }
        assert!(matches!(
            judge.observe(t0 + 40 * S, &seen(2, &[0], 0, &[(1, 29)])),
            Verdict::Rejoin(Rejoin { dynamic: true, .. })
        ));
        assert!(judge.unready().is_some());
        // Caught up (no longer behind): nothing to do.
        assert_eq!(judge.observe(t0 + 41 * S, &seen(2, &[0], 0, &[])), Verdict::Fine);
    }

    #[test]
    fn lag_above_the_bound_is_not_ready_without_a_rejoin() {
        let t0 = Instant::now();
        let mut judge = Judge::new(config(), t0);
        assert_eq!(judge.observe(t0, &seen(1, &[0], 101, &[])), Verdict::Fine);
        assert!(judge.unready().unwrap().contains("lag 101"));
        assert_eq!(judge.observe(t0 + S, &seen(1, &[0], 100, &[])), Verdict::Fine);
        assert_eq!(judge.unready(), None);
        // A topic with no partitions asks nothing of anyone.
        assert_eq!(judge.observe(t0 + 60 * S, &seen(0, &[], 0, &[])), Verdict::Fine);
        assert_eq!(judge.unready(), None);
    }
}

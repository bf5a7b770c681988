//! Idle pacing of the consumers on the decision path (the processor on usage, the budget
//! service on spend, the ingress's decisions table): while nothing arrives they stop fetching;
//! a message, a rebalance, a backlog seen by their owner's probe, or traffic seen by the process
//! ([`nudge`]) makes them fetch continuously again.
//!
//! Why: tansu answers a fetch only when its wait (`kafka.fetch_wait_max_ms`, 10 ms on the local
//! stack so that each hop is fast) has expired, and every answer costs it a few sqlite queries
//! per partition, so an idle consumer costs the broker about 10 % of a core with 3 partitions.
//! Kafka answers a waiting fetch as soon as data arrives, so there a long fetch wait is free
//! and pacing is not needed: it is off by default (`after_ms = 0`) and the local stack turns it on.
//!
//! The rule, per consumer ([`IdlePacer`]):
//! - **awake**: fetching. Checked every `after_ms`: if no message came since the last check it
//!   falls **asleep**: its assignment is paused, and librdkafka sends it no fetch at all.
//!   Each check while awake also resumes the whole assignment, so a partition that comes back
//!   from a rebalance still paused (librdkafka keeps an application pause on the partition
//!   across revocation and reassignment) fetches again within `after_ms` at worst; the services
//!   also call [`IdlePacer::active`] on every rebalance.
//! - **asleep**: nothing is fetched. The owner looks for a backlog with the probe it runs
//!   anyway, and calls [`IdlePacer::active`] when it sees one: the group members at every
//!   ownership check (`kafka.ownership.check_interval_ms`, 1 s: the watchdog's lag,
//!   [`crate::kafka::OwnershipWatch::backlog`]), the decisions table with [`backlog`] at the same
//!   interval. The watermarks are asked, never a fetch: a look costs the broker two offsets
//!   requests per partition, and cannot miss data the way a short resumed window could on a
//!   loaded machine. Pausing keeps no message back: librdkafka drops what it fetched but did not
//!   hand over and fetches it again on resume, from the position the application consumed to.
//!
//! What it costs: the first message after an idle spell waits for the next look (up to two
//! check intervals for a group member, whose observation is judged at the check after it was
//! started) per sleeping hop. In one process (`faregate up`) the ingress nudges every consumer
//! of the process when it emits usage, so nothing on the decision path is asleep by the time the
//! event reaches it; with the services in separate processes, only the ingress's decisions table
//! is woken that way. Metric: `faregate_consumer_idle` (1 while asleep), labelled by `consumer`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::ConfigError;

/// Settings of idle pacing (see the module docs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdleConfig {
    /// How long a consumer on the decision path may receive nothing before it stops fetching
    /// (0: never; the default, right for Kafka). At least `kafka.ownership.check_interval_ms`.
    pub after_ms: u64,
}

impl IdleConfig {
    pub(crate) fn validate(&self, check_interval_ms: u64) -> Result<(), ConfigError> {
        if self.after_ms > 0 && self.after_ms < check_interval_ms {
            return Err(ConfigError::field(
                "kafka.idle.after_ms",
                format!(
                    "must be 0 (off) or at least kafka.ownership.check_interval_ms ({check_interval_ms}): \
                     a sleeping consumer looks for new data that often"
                ),
            ));
        }
        Ok(())
    }
}

/// Process-wide: how many pacers sleep, how many nudges came while one did, and the bell.
struct Activity {
    asleep: AtomicUsize,
    nudges: AtomicU64,
    bell: Notify,
}

static ACTIVITY: Activity =
    Activity { asleep: AtomicUsize::new(0), nudges: AtomicU64::new(0), bell: Notify::const_new() };

/// Traffic arrived in this process: wake every sleeping pacer of the process, including one
/// that is not waiting at this instant (it sees the count move). One relaxed atomic load when
/// none sleeps (the request path calls it).
pub fn nudge() {
    if ACTIVITY.asleep.load(Ordering::Relaxed) > 0 {
        ACTIVITY.nudges.fetch_add(1, Ordering::AcqRel);
        ACTIVITY.bell.notify_waiters();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Pacing is off: always fetching, nothing to do.
    Off,
    Awake,
    Asleep,
}

/// The pacing state of one consumer; see the module docs.
#[derive(Debug)]
pub struct IdlePacer {
    name: String,
    after: Duration,
    state: State,
    /// A message came since the last check while awake.
    seen: bool,
    next: Instant,
    /// [`Activity::nudges`] when it fell asleep.
    nudges_at_sleep: u64,
}

impl IdlePacer {
    /// A pacer named `name` (the metric's `consumer` label); when pacing is off
    /// (`kafka.idle.after_ms = 0`) it never acts and [`IdlePacer::due`] never resolves.
    pub fn new(config: &super::KafkaConfig, name: &str) -> IdlePacer {
        let idle = &config.idle;
        let after = Duration::from_millis(idle.after_ms);
        let state = if idle.after_ms > 0 {
            metrics::gauge!("faregate_consumer_idle", "consumer" => name.to_string()).set(0.0);
            State::Awake
        } else {
            State::Off
        };
        IdlePacer {
            name: name.to_string(),
            after,
            state,
            seen: false,
            next: Instant::now() + after,
            nudges_at_sleep: 0,
        }
    }

    /// A pacer that never acts (a consumer that is not paced).
    pub fn off() -> IdlePacer {
        IdlePacer {
            name: String::new(),
            after: Duration::ZERO,
            state: State::Off,
            seen: false,
            next: Instant::now(),
            nudges_at_sleep: 0,
        }
    }

    /// Resolves when [`IdlePacer::step`] has something to do (never when pacing is off).
    pub async fn due(&self) {
        let bell = ACTIVITY.bell.notified();
        if self.state == State::Off {
            return std::future::pending().await;
        }
        if self.state == State::Awake {
            tokio::time::sleep_until(self.next).await;
            return;
        }
        if ACTIVITY.nudges.load(Ordering::Acquire) == self.nudges_at_sleep {
            bell.await;
        }
    }

    /// A message arrived, or the assignment changed: fetch continuously.
    pub fn active<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(&mut self, consumer: &C) {
        self.seen = true;
        if self.is_asleep() {
            self.wake(consumer);
        }
    }

    /// Act once [`IdlePacer::due`] resolved: the awake check, or a nudge that wakes it.
    pub fn step<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(&mut self, consumer: &C) {
        let now = Instant::now();
        match self.state {
            State::Off => {}
            State::Awake => {
                resume(consumer);
                if std::mem::take(&mut self.seen) {
                    self.next = now + self.after;
                } else {
                    pause(consumer);
                    self.state = State::Asleep;
                    ACTIVITY.asleep.fetch_add(1, Ordering::AcqRel);
                    self.nudges_at_sleep = ACTIVITY.nudges.load(Ordering::Acquire);
                    metrics::gauge!("faregate_consumer_idle", "consumer" => self.name.clone()).set(1.0);
                    tracing::debug!(consumer = %self.name, "idle: not fetching until there is something to read");
                }
            }
            State::Asleep => self.wake(consumer),
        }
    }

    fn wake<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(&mut self, consumer: &C) {
        resume(consumer);
        self.state = State::Awake;
        self.seen = false;
        self.next = Instant::now() + self.after;
        ACTIVITY.asleep.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("faregate_consumer_idle", "consumer" => self.name.clone()).set(0.0);
        tracing::debug!(consumer = %self.name, "awake: fetching continuously");
    }

    /// Asleep: not fetching.
    pub fn is_asleep(&self) -> bool {
        self.state == State::Asleep
    }
}

impl Drop for IdlePacer {
    fn drop(&mut self) {
        if self.is_asleep() {
            ACTIVITY.asleep.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether `consumer` has messages to read on its assignment: a high watermark past its
/// position (or, before it consumed anything there, past the low watermark). Blocking (two
/// offsets requests per partition): call it off the async runtime.
///
/// `fetch_watermarks`, not [`crate::kafka::offsets::ends`]: asked through the consumer being
/// paced, `offsets_for_times` sometimes left the resumed consumer without the message it had
/// found (`idle_mock.rs`, 2 failures in 19 runs against 0 in 14 with `fetch_watermarks`).
pub fn backlog<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    timeout: Duration,
) -> Result<bool, rdkafka::error::KafkaError> {
    let positions = consumer.position()?;
    for element in positions.elements() {
        let (low, high) = consumer.fetch_watermarks(element.topic(), element.partition(), timeout)?;
        let position = match element.offset() {
            rdkafka::Offset::Offset(offset) => offset,
            _ => low,
        };
        if high > position {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Pause or resume the whole current assignment. A failure (no assignment yet, a closing
/// consumer) changes nothing worth reporting: the next step tries again.
fn pause<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(consumer: &C) {
    if let Ok(assignment) = consumer.assignment()
        && assignment.count() > 0
    {
        let _ = consumer.pause(&assignment);
    }
}

fn resume<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(consumer: &C) {
    if let Ok(assignment) = consumer.assignment()
        && assignment.count() > 0
    {
        let _ = consumer.resume(&assignment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Validate;
    use crate::kafka::KafkaConfig;

    #[test]
    fn pacing_must_not_act_faster_than_the_consumer_looks() {
        let config = |after_ms, check_interval_ms| {
            let mut config = KafkaConfig { idle: IdleConfig { after_ms }, ..KafkaConfig::default() };
            config.ownership.check_interval_ms = check_interval_ms;
            config
        };
        assert!(config(0, 1_000).validate().is_ok(), "off needs nothing else");
        assert!(config(5_000, 1_000).validate().is_ok(), "the local stack's values");
        let early = config(500, 1_000).validate().unwrap_err().to_string();
        assert!(early.contains("kafka.idle.after_ms") && early.contains("1000"), "{early}");
    }

    #[test]
    fn an_unpaced_consumer_never_has_anything_to_do() {
        let pacer = IdlePacer::new(&KafkaConfig::default(), "test");
        assert!(!pacer.is_asleep());
        let due = poll_once(pacer.due());
        assert!(due.is_none(), "pacing is off by default: `due` never resolves");
    }

    /// Poll `future` once with a no-op waker.
    fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}

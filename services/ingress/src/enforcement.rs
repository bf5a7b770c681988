//! Enforcement liveness: whether the budget service is deciding for every spend partition right
//! now, from its heartbeats (the compacted heartbeats topic, followed like the decisions).
//! Enforcement is stale when the heartbeats do not cover every partition of the spend topic, or
//! the watermark (the oldest of the newest covering heartbeats, see
//! [`faregate_core::event::Coverage`]) is older than `ingress.enforcement_stale_after_secs`.
//!
//! Contract: [`Enforcement::stale`] is what every request asks (one atomic load and a clock
//! read); it turns stale by itself when heartbeats stop, without any new record. The watcher
//! calls [`Enforcement::observe`] a few times a second, which reports transitions once (for the
//! ERROR / INFO logs and the SSE stream). The bound 0 turns the check off (a deployment without
//! a budget service). The heartbeat's time is the budget service's clock: keep clocks in sync;
//! skew adds to (or takes from) the bound.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use faregate_core::event::{Coverage, Heartbeat};

/// What a gateway (or a client of the decisions API) needs to know about enforcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnforcementStatus {
    /// False when `ingress.enforcement_stale_after_secs` is 0 (never stale).
    pub checked: bool,
    pub stale: bool,
    /// Since when, if stale: the watermark plus the bound, or when this gateway saw it go stale
    /// (a partition uncovered, or no heartbeat ever).
    pub stale_since: Option<DateTime<Utc>>,
    /// The enforcement watermark, when every partition is covered.
    pub watermark: Option<DateTime<Utc>>,
    /// Its age in milliseconds.
    pub heartbeat_age_ms: Option<i64>,
    pub stale_after_secs: u64,
    /// The spend topic's partitions, as the newest heartbeat says (0: no heartbeat seen).
    pub partition_count: i32,
    /// Partitions no heartbeat covers.
    pub uncovered_partitions: Vec<i32>,
}

#[derive(Debug)]
pub struct Enforcement {
    stale_after: Option<TimeDelta>,
    stale_after_secs: u64,
    heartbeats: RwLock<HashMap<String, Heartbeat>>,
    coverage: RwLock<Coverage>,
    /// The watermark in microseconds since the epoch; 0 when there is none.
    watermark_us: AtomicI64,
    /// When the watcher saw enforcement go stale (ms since the epoch), 0 while live.
    seen_stale_ms: AtomicI64,
    was_stale: AtomicBool,
    started: DateTime<Utc>,
    changes: tokio::sync::broadcast::Sender<EnforcementStatus>,
}

impl Enforcement {
    /// Stale after `stale_after_secs` without a covering heartbeat; 0 turns the check off.
    pub fn new(stale_after_secs: u64) -> Enforcement {
        Enforcement {
            stale_after: (stale_after_secs > 0).then(|| TimeDelta::seconds(stale_after_secs as i64)),
            stale_after_secs,
            heartbeats: RwLock::default(),
            coverage: RwLock::default(),
            watermark_us: AtomicI64::new(0),
            seen_stale_ms: AtomicI64::new(0),
            was_stale: AtomicBool::new(false),
            started: Utc::now(),
            changes: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// Whether the check is on.
    pub fn checked(&self) -> bool {
        self.stale_after.is_some()
    }

    /// Apply one heartbeats-topic record (`None` is a tombstone: that instance is gone).
    pub fn apply(&self, key: &str, heartbeat: Option<Heartbeat>) {
        let Ok(mut heartbeats) = self.heartbeats.write() else { return };
        match heartbeat {
            Some(heartbeat) => {
                if heartbeats.get(key).is_some_and(|h| h.published_at > heartbeat.published_at) {
                    return;
                }
                heartbeats.insert(key.to_string(), heartbeat);
            }
            None => {
                heartbeats.remove(key);
            }
        }
        let coverage = Coverage::of(heartbeats.values());
        self.watermark_us.store(coverage.watermark().map_or(0, |w| w.timestamp_micros()), Ordering::Release);
        if let Ok(mut current) = self.coverage.write() {
            *current = coverage;
        }
    }

    fn watermark(&self) -> Option<DateTime<Utc>> {
        match self.watermark_us.load(Ordering::Acquire) {
            0 => None,
            us => DateTime::from_timestamp_micros(us),
        }
    }

    /// Whether enforcement is stale now (false when the check is off).
    pub fn stale(&self) -> bool {
        let Some(bound) = self.stale_after else { return false };
        self.watermark().is_none_or(|w| Utc::now() - w > bound)
    }

    /// The full picture, for the decisions API and error messages.
    pub fn status(&self) -> EnforcementStatus {
        let now = Utc::now();
        let watermark = self.watermark();
        let stale = self.stale();
        let (partition_count, uncovered_partitions) =
            self.coverage.read().map(|c| (c.partition_count, c.uncovered.clone())).unwrap_or_default();
        let seen = match self.seen_stale_ms.load(Ordering::Acquire) {
            0 => self.started,
            ms => DateTime::from_timestamp_millis(ms).unwrap_or(self.started),
        };
        let stale_since = stale.then(|| match (watermark, self.stale_after) {
            (Some(w), Some(bound)) => w + bound,
            _ => seen,
        });
        EnforcementStatus {
            checked: self.checked(),
            stale,
            stale_since,
            watermark,
            heartbeat_age_ms: watermark.map(|w| (now - w).num_milliseconds().max(0)),
            stale_after_secs: self.stale_after_secs,
            partition_count,
            uncovered_partitions,
        }
    }

    /// The status when it changed since the last call (and tell the subscribers), else `None`.
    pub fn observe(&self) -> Option<EnforcementStatus> {
        let stale = self.stale();
        if self.was_stale.swap(stale, Ordering::AcqRel) == stale {
            return None;
        }
        let seen = if stale { Utc::now().timestamp_millis() } else { 0 };
        self.seen_stale_ms.store(seen, Ordering::Release);
        let status = self.status();
        let _ = self.changes.send(status.clone());
        Some(status)
    }

    /// Every transition reported by [`observe`](Self::observe) from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EnforcementStatus> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faregate_core::event::PartitionPosition;

    fn beat(instance: &str, partitions: &[i32], age: TimeDelta) -> Heartbeat {
        Heartbeat {
            instance_id: instance.into(),
            group_id: "g".into(),
            spend_topic: "s".into(),
            partition_count: 2,
            partitions: partitions
                .iter()
                .map(|&partition| PartitionPosition { partition, next_offset: 0 })
                .collect(),
            spend_revision: 0,
            interval_ms: 2000,
            published_at: Utc::now() - age,
            sequence: 1,
        }
    }

    #[test]
    fn stale_until_every_partition_is_covered_recently_and_transitions_are_reported_once() {
        let enforcement = Enforcement::new(10);
        assert!(enforcement.stale());
        assert!(enforcement.observe().is_some_and(|s| s.stale && s.stale_since.is_some()));
        assert!(enforcement.observe().is_none());
        enforcement.apply("a", Some(beat("a", &[0], TimeDelta::zero())));
        assert!(enforcement.stale(), "partition 1 is not covered");
        assert_eq!(enforcement.status().uncovered_partitions, vec![1]);
        enforcement.apply("b", Some(beat("b", &[1], TimeDelta::seconds(3))));
        assert!(!enforcement.stale());
        let live = enforcement.observe().unwrap();
        assert!(!live.stale && live.heartbeat_age_ms.unwrap() >= 3000 && live.stale_since.is_none());
        // b's newest heartbeat is too old: stale since its time plus the bound.
        enforcement.apply("b", Some(beat("b", &[1], TimeDelta::seconds(11))));
        assert!(!enforcement.stale(), "an older record does not replace a newer one");
        enforcement.apply("b", None);
        enforcement.apply("b", Some(beat("b", &[1], TimeDelta::seconds(11))));
        let status = enforcement.status();
        assert!(status.stale);
        assert_eq!(status.stale_since, Some(status.watermark.unwrap() + TimeDelta::seconds(10)));
        assert!(!Enforcement::new(0).stale(), "0 turns the check off");
    }
}

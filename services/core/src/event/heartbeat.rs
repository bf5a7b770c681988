//! Heartbeats: the budget service's watermark of enforcement. Each instance publishes one every
//! `budget.heartbeat_ms` to the compacted heartbeats topic, keyed by its instance id, while (and
//! only while) it owns spend partitions and has rebuilt their state; an instance that is blind
//! (joining, catching up, stuck, dead) stops heart-beating.
//!
//! [`Coverage`] is the one reading of a set of heartbeats that gateways and `faregate status`
//! share: enforcement is live when the newest heartbeats cover every partition of the spend
//! topic and the oldest of them (the watermark) is younger than the reader's bound. Only
//! heartbeats made for the newest partition count are counted: after partitions are added, orgs
//! move, and an owner of the old layout does not cover the new one.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// One instance's proof of life (schema `heartbeat.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The static group member id; the compaction key.
    pub instance_id: String,
    pub group_id: String,
    pub spend_topic: String,
    /// Partitions of the spend topic when the instance was assigned.
    pub partition_count: i32,
    /// The partitions it owns and has caught up on, with the next offset to decide from.
    pub partitions: Vec<PartitionPosition>,
    /// The highest spend revision decided so far (0 when none).
    pub spend_revision: i64,
    /// How often the instance heart-beats.
    pub interval_ms: i64,
    #[serde(with = "crate::time::micros")]
    pub published_at: DateTime<Utc>,
    /// Counts up from 1 in each run of the instance.
    pub sequence: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    pub partition: i32,
    /// Everything before this spend offset was decided (0 when nothing was read).
    pub next_offset: i64,
}

/// What a set of heartbeats says about the spend partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coverage {
    /// The spend topic's partition count, from the newest heartbeat (0 without any).
    pub partition_count: i32,
    /// Per partition, the newest heartbeat covering it: (published at, instance, next offset).
    pub newest: BTreeMap<i32, (DateTime<Utc>, String, i64)>,
    /// Partitions no heartbeat covers.
    pub uncovered: Vec<i32>,
}

impl Coverage {
    /// The coverage of `heartbeats` (the latest per instance).
    pub fn of<'a>(heartbeats: impl IntoIterator<Item = &'a Heartbeat>) -> Coverage {
        let heartbeats: Vec<&Heartbeat> = heartbeats.into_iter().collect();
        let Some(latest) = heartbeats.iter().max_by_key(|h| h.published_at) else {
            return Coverage::default();
        };
        let count = latest.partition_count;
        let mut newest: BTreeMap<i32, (DateTime<Utc>, String, i64)> = BTreeMap::new();
        for heartbeat in heartbeats.iter().filter(|h| h.partition_count == count) {
            for position in heartbeat.partitions.iter().filter(|p| (0..count).contains(&p.partition)) {
                let newer =
                    newest.get(&position.partition).is_none_or(|(at, _, _)| heartbeat.published_at > *at);
                if newer {
                    newest.insert(
                        position.partition,
                        (heartbeat.published_at, heartbeat.instance_id.clone(), position.next_offset),
                    );
                }
            }
        }
        let uncovered = (0..count).filter(|p| !newest.contains_key(p)).collect();
        Coverage { partition_count: count, newest, uncovered }
    }

    /// The enforcement watermark: the oldest of the newest covering heartbeats, when every
    /// partition is covered (`None` when one is not, or nothing was heard).
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        if self.partition_count == 0 || !self.uncovered.is_empty() {
            return None;
        }
        self.newest.values().map(|(at, _, _)| *at).min()
    }

    /// Whether enforcement is live at `now`: every partition covered, watermark within `bound`.
    pub fn live(&self, now: DateTime<Utc>, bound: TimeDelta) -> bool {
        self.watermark().is_some_and(|w| now - w <= bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(instance: &str, count: i32, partitions: &[i32], at_secs: i64) -> Heartbeat {
        Heartbeat {
            instance_id: instance.into(),
            group_id: "g".into(),
            spend_topic: "s".into(),
            partition_count: count,
            partitions: partitions
                .iter()
                .map(|&p| PartitionPosition { partition: p, next_offset: 1 })
                .collect(),
            spend_revision: 0,
            interval_ms: 2000,
            published_at: DateTime::from_timestamp(1_700_000_000 + at_secs, 0).unwrap(),
            sequence: 1,
        }
    }

    #[test]
    fn every_partition_must_be_covered_and_the_oldest_covering_beat_is_the_watermark() {
        let t = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        assert_eq!(Coverage::of([]).watermark(), None);
        let a = beat("a", 3, &[0, 1], 10);
        let b = beat("b", 3, &[2], 7);
        let coverage = Coverage::of([&a]);
        assert_eq!(coverage.uncovered, vec![2]);
        assert!(!coverage.live(t(10), TimeDelta::seconds(60)));
        let coverage = Coverage::of([&a, &b]);
        assert_eq!(coverage.watermark(), Some(t(7)));
        assert!(coverage.live(t(17), TimeDelta::seconds(10)));
        assert!(!coverage.live(t(18), TimeDelta::seconds(10)));
        // b died; a took partition 2 over: a's newer beat covers it.
        let a2 = beat("a", 3, &[0, 1, 2], 20);
        assert_eq!(Coverage::of([&a2, &b]).watermark(), Some(t(20)));
        // After partitions were added, a beat of the old layout covers nothing.
        let c = beat("c", 4, &[0, 1, 2], 30);
        let coverage = Coverage::of([&a2, &c]);
        assert_eq!((coverage.partition_count, coverage.uncovered.clone()), (4, vec![3]));
        assert_eq!(coverage.watermark(), None);
    }
}

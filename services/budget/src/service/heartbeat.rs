//! The instance's heartbeat: every `budget.heartbeat_ms`, while the service is deciding (its
//! assignment rebuilt), one record to the compacted heartbeats topic keyed by the instance id,
//! naming the spend partitions it owns (the ones the service rebuilt *and* the consumer still
//! holds) with the next offset to decide from. Joining, catching up, a revoked assignment or a
//! stuck loop publish nothing, so gateways see enforcement go stale.
//!
//! Publication is fire-and-forget on a task of its own (the decision loop never waits on it); a
//! failed heartbeat is counted and logged, and the next one is a fresh attempt: a missing
//! heartbeat is exactly what readers must notice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use faregate_core::event::{Heartbeat, PartitionPosition};
use faregate_core::kafka::RecordProducer;

pub(crate) struct Heartbeats {
    producer: Arc<RecordProducer<Heartbeat>>,
    instance_id: String,
    group_id: String,
    spend_topic: String,
    interval: Duration,
    sequence: i64,
    partition_count: i32,
    /// Assigned partition -> next spend offset to decide from.
    positions: BTreeMap<i32, i64>,
    spend_revision: i64,
}

impl Heartbeats {
    pub(crate) fn new(
        producer: RecordProducer<Heartbeat>,
        instance_id: &str,
        group_id: &str,
        spend_topic: &str,
        interval: Duration,
    ) -> Heartbeats {
        Heartbeats {
            producer: Arc::new(producer),
            instance_id: instance_id.to_string(),
            group_id: group_id.to_string(),
            spend_topic: spend_topic.to_string(),
            interval,
            sequence: 0,
            partition_count: 0,
            positions: BTreeMap::new(),
            spend_revision: 0,
        }
    }

    /// A new assignment (empty on a revocation) of a topic of `partition_count` partitions.
    pub(crate) fn reassigned(&mut self, partition_count: i32, assigned: &BTreeSet<i32>) {
        self.partition_count = partition_count;
        self.positions = assigned.iter().map(|p| (*p, 0)).collect();
        self.spend_revision = 0;
    }

    /// A spend record at `offset` of `partition` was taken (and decided once warm).
    pub(crate) fn observed(&mut self, partition: i32, offset: i64, revision: Option<i64>) {
        if let Some(position) = self.positions.get_mut(&partition) {
            *position = (*position).max(offset + 1);
        }
        if let Some(revision) = revision {
            self.spend_revision = self.spend_revision.max(revision);
        }
    }

    /// Publish one heartbeat for the assigned partitions the consumer still `owns`.
    pub(crate) fn beat(&mut self, owns: &BTreeSet<i32>) {
        self.sequence += 1;
        let heartbeat = Heartbeat {
            instance_id: self.instance_id.clone(),
            group_id: self.group_id.clone(),
            spend_topic: self.spend_topic.clone(),
            partition_count: self.partition_count,
            partitions: self
                .positions
                .iter()
                .filter(|(p, _)| owns.contains(p))
                .map(|(&partition, &next_offset)| PartitionPosition { partition, next_offset })
                .collect(),
            spend_revision: self.spend_revision,
            interval_ms: self.interval.as_millis() as i64,
            published_at: chrono::Utc::now(),
            sequence: self.sequence,
        };
        if heartbeat.partitions.len() < self.positions.len() {
            tracing::warn!(assigned = ?self.positions.keys().collect::<Vec<_>>(), owned = ?owns,
                "the consumer no longer holds every rebuilt spend partition; heart-beating for the ones it holds");
        }
        let producer = self.producer.clone();
        let timeout = self.interval.max(Duration::from_secs(1));
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, producer.send(&heartbeat.instance_id, &heartbeat)).await {
                Ok(Ok(_)) => {
                    metrics::counter!("faregate_budget_heartbeats_total").increment(1);
                    metrics::gauge!("faregate_budget_heartbeat_partitions")
                        .set(heartbeat.partitions.len() as f64);
                }
                Ok(Err(error)) => {
                    metrics::counter!("faregate_budget_heartbeat_failures_total").increment(1);
                    tracing::warn!(%error, "heartbeat not published");
                }
                Err(_) => {
                    metrics::counter!("faregate_budget_heartbeat_failures_total").increment(1);
                    tracing::warn!(
                        timeout_ms = timeout.as_millis() as u64,
                        "heartbeat not acknowledged in time"
                    );
                }
            }
        });
    }
}

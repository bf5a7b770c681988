//! This replica's demand on each budget, reported to the compacted demand topic
//! (`kafka.topics.demand`, Avro `demand.v2`, keyed `<replica>#<scope key>#budget=<id>`), from
//! which the budget service shares each budget's headroom among the replicas
//! (docs/ARCHITECTURE.md, "Admission by reservation").
//!
//! Contract: every `ingress.reservation.demand_interval_ms`, and at once when a request starts
//! waiting for room (a share this replica may lack), one record per budget this replica holds
//! anything against or was asked for in the last window: its holds, its demand and the largest
//! likely cost among it; once a budget goes quiet, one record of zeros, then nothing; at
//! shutdown (after the gateway stopped serving), zeros for every budget still active, so
//! the budget service does not keep this replica's last holdings aside (a killed replica's
//! stay aside for a while, `budget::engine::shares::ORPHAN_HOLD`). A record
//! that cannot be sent is counted (`faregate_ingress_demand_failures_total`), and the next
//! report replaces it; while reports fail the gauge `faregate_ingress_demand_failing` is 1 (read
//! by `faregate status`), with an ERROR log when they start failing and an INFO log when they
//! go out again. The budget service stops counting a replica whose reports stop (three
//! intervals and two seconds), which costs that replica its share, never another's. Not a
//! reason to be unready: requests under no shared budget are still served.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use faregate_core::avro::SchemaFamily;
use faregate_core::event::Demand;
use faregate_core::kafka::{KafkaConfig, ProduceError, RecordProducer};

use crate::headroom::HeadroomCache;
use crate::reserve::Reserver;

/// Report until `shutdown`.
pub async fn report(
    kafka: KafkaConfig,
    headroom: Arc<HeadroomCache>,
    reserver: Arc<Reserver>,
    shutdown: CancellationToken,
) -> Result<(), ProduceError> {
    let producer =
        RecordProducer::<Demand>::new(&kafka, "ingress", SchemaFamily::Demand, &kafka.topics.demand).await?;
    let interval_ms = reserver.config().demand_interval_ms;
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Budgets last reported with something in them: each gets one record of zeros when quiet.
    let mut active: HashSet<String> = HashSet::new();
    let mut health = Health::default();
    metrics::gauge!("faregate_ingress_demand_failing").set(0.0);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                farewell(&producer, &headroom, &reserver, &active, interval_ms).await;
                return Ok(());
            }
            _ = ticker.tick() => {}
            _ = reserver.urgent.notified() => {}
        }
        let now = Utc::now();
        let mut records = Vec::new();
        for (key, scope_key, budget_id, position, book) in headroom.books() {
            let report =
                book.report(&position, reserver.share(&position), reserver.rules(), now.timestamp_micros());
            let quiet = report.is_zero();
            if quiet && !active.remove(&key) {
                continue;
            }
            if !quiet {
                active.insert(key);
            }
            records.push(Demand {
                replica: reserver.replica().to_string(),
                scope_key,
                budget_id,
                open_usd: report.open,
                settled_usd: report.settled,
                demand_usd: report.demand,
                unit_usd: report.unit,
                interval_ms: i64::try_from(interval_ms).unwrap_or(i64::MAX),
                published_at: now,
                // The record it admits against, and what counts against its share there.
                record_revision: Some(position.revision),
                used_usd: Some(report.used),
            });
        }
        if !records.is_empty() {
            tracing::debug!(budgets = records.len(), "reporting demand");
        }
        let keys: Vec<String> = records.iter().map(Demand::key).collect();
        let sends = futures::future::join_all(
            keys.iter().zip(&records).map(|(key, record)| producer.send(key, record)),
        );
        let results = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            results = sends => results,
        };
        let failed: Vec<ProduceError> = results.into_iter().filter_map(Result::err).collect();
        metrics::counter!("faregate_ingress_demand_failures_total").increment(failed.len() as u64);
        match (health.reported(failed.len()), failed.first()) {
            (Some(true), Some(error)) => tracing::error!(%error, records = failed.len(),
                "demand reports cannot be sent: this replica's shares lapse and requests under budgets shared by demand wait, then are refused"),
            (Some(false), _) => tracing::info!("demand reports go out again"),
            _ => {}
        }
    }
}

/// Whether the last report went out: the gauge `faregate_ingress_demand_failing` (1 while
/// reports fail, which `faregate status` reads), set on each change.
#[derive(Debug, Default)]
struct Health {
    failing: bool,
}

impl Health {
    /// A report went out with `failed` records not sent; the new state when it changed.
    fn reported(&mut self, failed: usize) -> Option<bool> {
        let failing = failed > 0;
        if failing == std::mem::replace(&mut self.failing, failing) {
            return None;
        }
        metrics::gauge!("faregate_ingress_demand_failing").set(if failing { 1.0 } else { 0.0 });
        Some(failing)
    }
}

/// Zeros for every budget in `active`, briefly (a broker that is away loses them: the budget
/// service then keeps the last holdings aside for a while, which is safe).
async fn farewell(
    producer: &RecordProducer<Demand>,
    headroom: &HeadroomCache,
    reserver: &Reserver,
    active: &HashSet<String>,
    interval_ms: u64,
) {
    let now = Utc::now();
    let records: Vec<Demand> = headroom
        .books()
        .into_iter()
        .filter(|(key, ..)| active.contains(key))
        .map(|(_, scope_key, budget_id, ..)| Demand {
            replica: reserver.replica().to_string(),
            scope_key,
            budget_id,
            open_usd: faregate_core::money::Usd::ZERO,
            settled_usd: faregate_core::money::Usd::ZERO,
            demand_usd: faregate_core::money::Usd::ZERO,
            unit_usd: faregate_core::money::Usd::ZERO,
            interval_ms: i64::try_from(interval_ms).unwrap_or(i64::MAX),
            published_at: now,
            // Stopped: no share of any record is in use any more.
            record_revision: Some(Demand::STOPPED),
            used_usd: Some(faregate_core::money::Usd::ZERO),
        })
        .collect();
    let keys: Vec<String> = records.iter().map(Demand::key).collect();
    let sends =
        futures::future::join_all(keys.iter().zip(&records).map(|(key, record)| producer.send(key, record)));
    if tokio::time::timeout(Duration::from_secs(2), sends).await.is_err() {
        tracing::warn!(budgets = records.len(), "the last demand reports did not go out before shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn a_failing_report_is_told_once_and_so_is_its_recovery() {
        let mut health = Health::default();
        let seen: Vec<Option<bool>> =
            [0, 2, 1, 0, 0, 3].into_iter().map(|failed| health.reported(failed)).collect();
        assert_eq!(seen, [None, Some(true), None, Some(false), None, Some(true)]);
    }
}

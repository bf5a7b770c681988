//! Where the engine's output goes: decisions to the compacted decisions topic (keyed by scope),
//! alerts to the alerts topic and to webhooks. Each publication waits for the broker's
//! acknowledgement and is retried until it succeeds or the service stops; a failure no retry can
//! cure stops the service with its reason. Headroom goes to the compacted headroom topic keyed
//! by `<scope key>#budget=<id>` (a tombstone for a removed budget), the same way.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use faregate_core::error::FaregateError;
use faregate_core::event::{Alert, Decision, Headroom};
use faregate_core::kafka::RecordProducer;

use crate::BudgetError;
use crate::engine::{HeadroomOutput, Output};
use crate::notify::Notifier;

pub(crate) struct Publisher {
    pub(crate) decisions: RecordProducer<Decision>,
    pub(crate) alerts: RecordProducer<Alert>,
    pub(crate) headroom: RecordProducer<Headroom>,
    pub(crate) notifier: Notifier,
}

impl Publisher {
    pub(crate) async fn publish(&self, out: Output, shutdown: &CancellationToken) -> Result<(), BudgetError> {
        for decision in &out.decisions {
            tracing::info!(subject = %decision.subject, state = ?decision.state, budget = ?decision.budget_id, spent = %decision.spent_usd, "decision");
            metrics::counter!("faregate_budget_decisions_total", "state" => format!("{:?}", decision.state).to_lowercase()).increment(1);
        }
        let sends = out.decisions.iter().map(|d| retry(shutdown, || self.decisions.send(&d.subject, d)));
        futures::future::try_join_all(sends).await?;
        for alert in &out.alerts {
            tracing::info!(key = %alert.alert_key, kind = ?alert.kind, owner = ?alert.owner, "alert");
            metrics::counter!("faregate_budget_alerts_total", "kind" => format!("{:?}", alert.kind).to_lowercase()).increment(1);
            retry(shutdown, || self.alerts.send(&alert.alert_key, alert)).await?;
            self.notifier.deliver(alert);
        }
        Ok(())
    }

    pub(crate) async fn publish_headroom(
        &self,
        out: HeadroomOutput,
        shutdown: &CancellationToken,
    ) -> Result<(), BudgetError> {
        metrics::counter!("faregate_budget_headroom_records_total").increment(out.records.len() as u64);
        for h in &out.records {
            tracing::debug!(budget = %h.budget_id, revision = h.revision, spent = %h.spent_usd,
                remaining = %h.remaining_usd, spend_revision = h.spend_revision,
                marks = ?h.usage_watermarks.as_ref().map(|m| m.iter().map(|m| (m.partition, m.next_offset)).collect::<Vec<_>>()),
                shares = ?h.shares.as_ref().map(|s| s.iter().map(|s| format!("{}={}@{}", s.replica, s.share_usd, s.report_at.timestamp_micros())).collect::<Vec<_>>()),
                "publishing headroom");
        }
        let sends = out.records.iter().map(|h| {
            let key = h.key();
            async move { retry(shutdown, || self.headroom.send(&key, h)).await }
        });
        futures::future::try_join_all(sends).await?;
        for key in &out.removed {
            retry(shutdown, || self.headroom.send_tombstone(key)).await?;
        }
        Ok(())
    }

    pub(crate) fn flush(&self) {
        let _ = self.decisions.flush(Duration::from_secs(5));
        let _ = self.alerts.flush(Duration::from_secs(5));
        let _ = self.headroom.flush(Duration::from_secs(5));
    }
}

/// Run `attempt` until it succeeds, backing off up to 5 s; a permanent failure (the error's own
/// [`FaregateError::retryable`] says so: a record too large, an invalid topic, a refused
/// authorization) is returned, and shutdown ends the wait with [`BudgetError::Stopped`].
///
/// Every caller stops the service with a permanent failure rather than dead-lettering: a
/// decision or alert that cannot be published must not be skipped (the budget service would
/// believe it enforced), and a dead letter that cannot be written has nowhere else to go.
pub(crate) async fn retry<T, E, F, Fut>(
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<T, BudgetError>
where
    E: FaregateError + std::fmt::Display + Into<BudgetError>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(error) if !error.retryable() => {
                tracing::error!(%error, "publishing failed in a way no retry can cure; stopping");
                return Err(error.into());
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "publishing failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(BudgetError::Stopped),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;
    use faregate_core::kafka::ProduceError;

    fn send_error(code: RDKafkaErrorCode) -> ProduceError {
        ProduceError::Send { topic: "decisions".into(), source: KafkaError::MessageProduction(code) }
    }

    #[tokio::test]
    async fn a_record_the_broker_refuses_is_not_retried_and_a_timeout_is() {
        let attempts = Cell::new(0);
        let result: Result<(), BudgetError> = retry(&CancellationToken::new(), || {
            attempts.set(attempts.get() + 1);
            async { Err(send_error(RDKafkaErrorCode::MessageSizeTooLarge)) }
        })
        .await;
        assert_eq!(attempts.get(), 1, "a permanent refusal is tried once");
        let error = result.unwrap_err();
        assert!(matches!(error, BudgetError::Produce(_)) && !error.retryable(), "{error}");

        let attempts = Cell::new(0);
        let result = retry(&CancellationToken::new(), || {
            attempts.set(attempts.get() + 1);
            let outcome = match attempts.get() {
                1 => Err(send_error(RDKafkaErrorCode::MessageTimedOut)),
                _ => Ok(()),
            };
            async move { outcome }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(attempts.get(), 2, "a timeout is retried");
    }
}

//! Exactly one usage event per request. A [`Meter`] is created once a request is attributed
//! and is consumed by [`Meter::finish`]; if it is dropped unfinished (the client went away, the
//! handler was cancelled, a stream was cut) its `Drop` emits the event with outcome
//! CLIENT_ABORTED and what was observed so far, estimated where the provider had not reported
//! yet; a meter dropped before the request was handed to the upstream ([`Meter::forwarding`]:
//! a client that left while its request waited for headroom, say) bills nothing. Failed upstream requests (status >= 400) and refusals carry no tokens: nobody bills
//! them; a stream cut after a 200 keeps what the provider reported. The request's reservation,
//! if it holds one, is settled to the priced cost of exactly that event, once.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use faregate_core::event::{Outcome, TokenCounts, UsageEvent, UsageSource};

use crate::emitter::UsageSink;
use crate::limits::RateLimiter;
use crate::reserve::{Reservation, Reserver};
use crate::usage::Observed;

pub struct Meter {
    event: Option<UsageEvent>,
    sink: Arc<dyn UsageSink>,
    limiter: Option<Arc<RateLimiter>>,
    started: Instant,
    request_bytes: usize,
    ttfb_us: Option<i64>,
    /// The request's reservation, settled to its priced cost when the event is emitted.
    reservation: Option<Reservation>,
    /// Learns the request's output (for later estimates) when the event is emitted.
    reserver: Option<Arc<Reserver>>,
    /// What a dropped meter reports (updated by streams as they go).
    pub observed: Observed,
    /// The request is being (or was) sent upstream: from then on the provider may bill it.
    forwarded: bool,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("event", &self.event.as_ref().map(|e| e.event_id))
            .finish_non_exhaustive()
    }
}

impl Meter {
    pub fn new(
        template: UsageEvent,
        sink: Arc<dyn UsageSink>,
        limiter: Option<Arc<RateLimiter>>,
        started: Instant,
        request_bytes: usize,
    ) -> Meter {
        Meter {
            event: Some(template),
            sink,
            limiter,
            started,
            request_bytes,
            ttfb_us: None,
            reservation: None,
            reserver: None,
            observed: Observed::default(),
            forwarded: false,
        }
    }

    /// The event as built so far (before `finish`).
    pub fn event(&self) -> Option<&UsageEvent> {
        self.event.as_ref()
    }

    pub fn event_id(&self) -> Option<uuid::Uuid> {
        self.event.as_ref().map(|e| e.event_id)
    }

    /// Teach `reserver` this request's output when the event is emitted.
    pub fn teach(&mut self, reserver: Arc<Reserver>) {
        self.reserver = Some(reserver);
    }

    /// Hold `reservation` until the event is emitted, then settle it.
    pub fn hold(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// The request goes upstream now: a client leaving from here on leaves a billed request.
    pub fn forwarding(&mut self) {
        self.forwarded = true;
    }

    /// The upstream's first byte arrived.
    pub fn first_byte(&mut self, upstream_request_id: Option<String>) {
        self.ttfb_us = Some(self.started.elapsed().as_micros() as i64);
        if let Some(event) = self.event.as_mut() {
            event.upstream_request_id = upstream_request_id;
        }
    }

    /// Emit the event with what was observed.
    pub fn finish(mut self, observed: Observed, outcome: Outcome, http_status: u16) {
        self.emit(observed, outcome, http_status);
    }

    fn emit(&mut self, mut observed: Observed, outcome: Outcome, http_status: u16) {
        let Some(mut event) = self.event.take() else { return };
        let billable = match outcome {
            // A stream cut after a 200 was partly served, and billed.
            Outcome::Ok | Outcome::UpstreamError => http_status < 400,
            // Gone before the request left: the provider never saw it.
            Outcome::ClientAborted => self.forwarded,
            Outcome::Blocked => false,
        };
        let usage_source = if !billable || event.endpoint == faregate_core::event::Endpoint::CountTokens {
            event.tokens = TokenCounts::default();
            UsageSource::None
        } else {
            let source = observed.finish(self.request_bytes);
            event.tokens = observed.tokens;
            source
        };
        event.usage_source = usage_source;
        if observed.served_model.is_some() {
            event.served_model = observed.served_model.take();
        }
        event.service_tier = observed.service_tier.take();
        event.inference_region = observed.inference_region.take();
        event.outcome = outcome;
        event.http_status = i32::from(http_status);
        event.latency_us = self.started.elapsed().as_micros() as i64;
        event.ttfb_us = self.ttfb_us;
        event.received_at = Utc::now();
        if let (Some(limiter), Some(key)) = (&self.limiter, &event.key_id) {
            limiter.charge(key, event.tokens.total(), event.occurred_at.timestamp());
        }
        metrics::counter!("faregate_ingress_requests_total",
            "endpoint" => format!("{:?}", event.endpoint), "outcome" => format!("{outcome:?}"))
        .increment(1);
        if usage_source == UsageSource::Estimated {
            metrics::counter!("faregate_ingress_estimated_usage_total").increment(1);
        }
        let landing = self.reservation.take().map(|reservation| reservation.settle(&event));
        if let Some(reserver) = self.reserver.take() {
            reserver.learn(&event, self.request_bytes);
        }
        match landing {
            Some(landing) => self.sink.emit_landed(event, landing),
            None => self.sink.emit(event),
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.event.is_some() {
            let observed = std::mem::take(&mut self.observed);
            self.emit(observed, Outcome::ClientAborted, 499);
        }
    }
}

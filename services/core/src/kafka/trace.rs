//! W3C trace context (`traceparent`, `tracestate`) in Kafka message headers, so one trace runs
//! from the ingress request through the processor to the decision. Uses the globally installed
//! OpenTelemetry propagator (W3C TraceContext, set by `telemetry::init`).

use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

struct HeaderExtractor<'a, H: Headers>(&'a H);

impl<H: Headers> Extractor for HeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

/// Add the current span's trace context to `headers`.
pub fn inject_current(headers: OwnedHeaders) -> OwnedHeaders {
    inject(&tracing::Span::current().context(), headers)
}

/// Add `context`'s trace context to `headers`.
pub fn inject(context: &opentelemetry::Context, headers: OwnedHeaders) -> OwnedHeaders {
    let mut pairs = Vec::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut HeaderInjector(&mut pairs));
    });
    pairs.iter().fold(headers, |headers, (key, value)| {
        headers.insert(Header { key: key.as_str(), value: Some(value.as_bytes()) })
    })
}

/// The trace context carried in `headers` (an empty context when there is none).
pub fn extract<H: Headers>(headers: &H) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Make `span` a child of the trace context carried in `headers`, if any.
pub fn set_parent_from<H: Headers>(span: &tracing::Span, headers: &H) {
    let _ = span.set_parent(extract(headers));
}

/// The raw `traceparent` header value, if the message carries one.
pub fn traceparent<H: Headers>(headers: &H) -> Option<String> {
    HeaderExtractor(headers).get("traceparent").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    #[test]
    fn trace_context_survives_kafka_headers() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let context = opentelemetry::Context::new().with_remote_span_context(span_context.clone());
        let headers = inject(&context, OwnedHeaders::new().insert(Header { key: "other", value: Some("x") }));
        assert_eq!(
            traceparent(&headers).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let extracted = extract(&headers);
        assert_eq!(extracted.span().span_context().trace_id(), span_context.trace_id());
        assert_eq!(extracted.span().span_context().span_id(), span_context.span_id());
    }
}

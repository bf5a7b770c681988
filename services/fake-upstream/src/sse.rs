//! Server-sent event bodies: events built up front, then sent with an optional delay between
//! them, and optionally cut (the connection dropped) after a number of events.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

/// How a streamed body is sent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamPlan {
    /// Pause before every event but the first.
    pub delay: Duration,
    /// Send this many events, then drop the connection.
    pub cut_after: Option<usize>,
}

/// One `event: NAME` + `data: JSON` frame.
pub(crate) fn named_event(name: &str, data: &Value) -> Bytes {
    let data = data.to_string();
    let mut frame = String::with_capacity(name.len() + data.len() + 16);
    frame.push_str("event: ");
    frame.push_str(name);
    frame.push_str("\ndata: ");
    frame.push_str(&data);
    frame.push_str("\n\n");
    Bytes::from(frame)
}

/// One `data: JSON` frame (OpenAI Chat Completions).
pub(crate) fn data_event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// The Chat Completions terminator.
pub(crate) fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// A `200 text/event-stream` response sending `events` according to `plan`.
pub(crate) fn response(events: Vec<Bytes>, plan: StreamPlan) -> Response {
    let mut response = Response::new(body(events, plan));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A body that ends in an error after `cut_after` events of `events` (a dropped connection).
pub(crate) fn body(events: Vec<Bytes>, plan: StreamPlan) -> Body {
    if plan.delay.is_zero() && plan.cut_after.is_none() {
        return Body::from(events.concat());
    }
    let limit = plan.cut_after.unwrap_or(usize::MAX);
    let state = (events.into_iter().enumerate(), false);
    let stream = futures::stream::unfold(state, move |(mut events, finished)| async move {
        if finished {
            return None;
        }
        match events.next() {
            Some((index, event)) if index < limit => {
                if index > 0 && !plan.delay.is_zero() {
                    tokio::time::sleep(plan.delay).await;
                }
                Some((Ok(event), (events, false)))
            }
            None if limit == usize::MAX => None,
            _ => {
                // Let the connection flush the events sent so far before the error drops it.
                tokio::task::yield_now().await;
                Some((Err(cut_error()), (events, true)))
            }
        }
    });
    Body::from_stream(stream)
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fake upstream: stream cut by script")
}

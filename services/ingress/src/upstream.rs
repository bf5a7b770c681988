//! The HTTP client the gateway forwards with: hyper's pooled HTTP/1.1 client over TCP (with
//! `TCP_NODELAY`) or TLS (native-tls), keep-alive connections reused across requests, and no
//! automatic decompression (usage must be read from the bytes the client gets).
//!
//! Contract:
//! - [`UpstreamClient::send`] sends one request and returns the response head with its body
//!   still streaming; it fails with [`UpstreamError`] when the upstream cannot be reached or
//!   does not answer before the request's deadline.
//! - Every request has one deadline, `upstream_timeout_secs` after it was sent, covering the
//!   whole exchange: the caller passes [`Deadline`] on to whatever reads the body
//!   ([`read_limited`], or the gateway's metered stream), so a stalled body fails like a
//!   stalled head.
//! - Error messages name what failed through the whole cause chain ("tcp connect error:
//!   Connection refused"), never the URL's credentials (the client never puts credentials in
//!   URLs).
//!
//! It is hyper's own client rather than a higher-level one because the gateway is a proxy: it
//! already holds an `http::Request` with the exact headers to send, and per-request URL
//! parsing, redirect and retry layers cost time on every request while doing nothing here.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

/// When a request (head and body) must be done.
pub type Deadline = Instant;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(String),
}

/// Cannot build the client (the TLS backend failed to initialise).
#[derive(Debug, thiserror::Error)]
#[error("cannot initialise TLS for upstream connections: {0}")]
pub struct ClientError(String);

/// The pooled upstream client; cheap to clone.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl UpstreamClient {
    /// A client whose requests may take `timeout` in total.
    pub fn new(timeout: Duration) -> Result<Self, ClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let tls = hyper_tls::native_tls::TlsConnector::new().map_err(|e| ClientError(e.to_string()))?;
        let https = HttpsConnector::from((http, tls.into()));
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(UpstreamClient { inner, timeout })
    }

    /// Send `request`; the response's body is still to be read, before the returned deadline.
    pub async fn send(
        &self,
        request: axum::http::Request<Full<Bytes>>,
    ) -> Result<(axum::http::Response<Incoming>, Deadline), UpstreamError> {
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, self.inner.request(request)).await {
            Ok(Ok(response)) => Ok((response, deadline)),
            Ok(Err(error)) => Err(UpstreamError::Failed(describe(&error))),
            Err(_) => Err(UpstreamError::TimedOut(self.timeout)),
        }
    }

    /// The total time a request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// An error and its causes, joined ("client error (Connect): tcp connect error: Connection
/// refused (os error 111)").
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Why reading a whole response failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("upstream response exceeds {0} bytes")]
    TooLarge(usize),
    #[error("reading the upstream response failed: {0}")]
    Failed(String),
    #[error("reading the upstream response timed out after {0:?}")]
    TimedOut(Duration),
}

/// Read a whole body of at most `limit` bytes before `deadline`. A body that arrives in one
/// piece (the usual small JSON answer) is returned without a copy.
pub async fn read_limited(
    body: Incoming,
    limit: usize,
    deadline: Deadline,
    timeout: Duration,
) -> Result<Bytes, ReadError> {
    match tokio::time::timeout_at(deadline, collect(body, limit)).await {
        Ok(result) => result,
        Err(_) => Err(ReadError::TimedOut(timeout)),
    }
}

async fn collect(mut body: Incoming, limit: usize) -> Result<Bytes, ReadError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Failed(describe(&e)))?;
        let Ok(chunk) = frame.into_data() else { continue };
        let so_far = joined.as_ref().map(|j| j.len()).or(first.as_ref().map(Bytes::len)).unwrap_or(0);
        if so_far + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        let Some(head) = &first else {
            first = Some(chunk);
            continue;
        };
        joined
            .get_or_insert_with(|| {
                let mut all = bytes::BytesMut::with_capacity(head.len() + chunk.len());
                all.extend_from_slice(head);
                all
            })
            .extend_from_slice(&chunk);
    }
    Ok(match (joined, first) {
        (Some(all), _) => all.freeze(),
        (None, Some(head)) => head,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_joined_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(describe(&outer), "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error")]
        struct Connect(#[source] std::io::Error);
        let chained = Connect(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(describe(&chained), "tcp connect error: refused");
    }
}

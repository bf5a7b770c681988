//! Reading a request (decoding gzip, deflate or zstd bodies, parsing JSON), recording it, and the
//! error answers in each provider's shape.

use std::io::Read as _;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::Provider;
use crate::usage::{MODEL_HEADER, USAGE_HEADER};

/// Bodies larger than this (after decoding) are refused.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A request as the fake upstream received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// Every header in order of arrival, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as JSON after decoding; `Null` when empty, a JSON string holding the text when
    /// it is not JSON.
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of a header (`name` in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// A request read and decoded.
pub(crate) struct Incoming {
    pub method: Method,
    pub path: String,
    pub provider: Provider,
    query: Option<String>,
    /// Present only when recording.
    headers: Option<HeaderMap>,
    pub usage_header: Option<String>,
    pub model_header: Option<String>,
    body: Result<Value, InvalidBody>,
}

/// A body that is not JSON: why, and its text for the record.
struct InvalidBody {
    message: String,
    text: String,
}

impl Incoming {
    /// Read the whole body and decode it; an unreadable body is answered at once.
    pub async fn read(request: Request, keep_headers: bool) -> Result<Incoming, Response> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let provider = if path.starts_with("/v1/messages") || parts.headers.contains_key("anthropic-version")
        {
            Provider::Anthropic
        } else {
            Provider::OpenAi
        };
        let fail = |message: String| error(provider, 0, StatusCode::BAD_REQUEST, &message);
        let raw = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| fail(format!("cannot read the request body: {e}")))?;
        let encoding = parts.headers.get(header::CONTENT_ENCODING).and_then(|value| value.to_str().ok());
        let decoded = decode(encoding, raw).map_err(fail)?;
        let body = if decoded.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(&decoded).map_err(|e| InvalidBody {
                message: format!("the request body is not valid JSON: {e}"),
                text: String::from_utf8_lossy(&decoded).into_owned(),
            })
        };
        let header_text =
            |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(Incoming {
            usage_header: header_text(USAGE_HEADER),
            model_header: header_text(MODEL_HEADER),
            method: parts.method,
            query: parts.uri.query().map(str::to_string),
            headers: keep_headers.then_some(parts.headers),
            path,
            provider,
            body,
        })
    }

    /// The record of this request, when recording.
    pub fn record(&self) -> Option<RecordedRequest> {
        let headers = self.headers.as_ref()?;
        let body = match &self.body {
            Ok(body) => body.clone(),
            Err(invalid) => Value::String(invalid.text.clone()),
        };
        Some(RecordedRequest {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned())
                })
                .collect(),
            body,
        })
    }

    /// The JSON body (a POST needs a JSON object), or why it is refused.
    pub fn take_json_body(&mut self) -> Result<Value, String> {
        match std::mem::replace(&mut self.body, Ok(Value::Null)) {
            Ok(body) if self.method != Method::POST || body.is_object() => Ok(body),
            Ok(_) => Err("the request body must be a JSON object".to_string()),
            Err(invalid) => Err(invalid.message),
        }
    }
}

fn decode(encoding: Option<&str>, raw: Bytes) -> Result<Bytes, String> {
    let mut decoded = Vec::new();
    let result = match encoding.map(str::trim) {
        None | Some("" | "identity") => return Ok(raw),
        Some("gzip" | "x-gzip") => flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut decoded),
        Some("deflate") => flate2::read::ZlibDecoder::new(&raw[..]).read_to_end(&mut decoded),
        Some("zstd") => {
            zstd::stream::read::Decoder::new(&raw[..]).and_then(|mut d| d.read_to_end(&mut decoded))
        }
        Some(other) => return Err(format!("unsupported content-encoding `{other}`")),
    };
    result.map_err(|e| format!("cannot decode the {} request body: {e}", encoding.unwrap_or_default()))?;
    if decoded.len() > MAX_BODY_BYTES {
        return Err(format!("the decoded request body is larger than {MAX_BODY_BYTES} bytes"));
    }
    Ok(Bytes::from(decoded))
}

/// The request-id header of a provider and its value for `id`.
pub(crate) fn request_id(provider: Provider, id: u64) -> (&'static str, String) {
    match provider {
        Provider::Anthropic => ("request-id", format!("req_fake{id:020}")),
        Provider::OpenAi => ("x-request-id", format!("req_fake{id:020}")),
    }
}

/// A JSON response with the provider's request-id header.
pub(crate) fn json_response(provider: Provider, id: u64, status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_request_id(headers, provider, id);
    response
}

pub(crate) fn add_request_id(headers: &mut HeaderMap, provider: Provider, id: u64) {
    let (name, value) = request_id(provider, id);
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

/// An error in the provider's shape.
pub(crate) fn error(provider: Provider, id: u64, status: StatusCode, message: &str) -> Response {
    json_response(provider, id, status, &error_body(provider, id, status, message))
}

fn error_body(provider: Provider, id: u64, status: StatusCode, message: &str) -> Value {
    match provider {
        Provider::Anthropic => {
            let kind = match status.as_u16() {
                400 => "invalid_request_error",
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                504 => "timeout_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            let request_id = request_id(provider, id).1;
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})
        }
        Provider::OpenAi => {
            let (kind, code) = match status.as_u16() {
                400 => ("invalid_request_error", Value::Null),
                401 => ("invalid_request_error", json!("invalid_api_key")),
                403 => ("invalid_request_error", json!("unsupported_country_region_territory")),
                404 => ("invalid_request_error", json!("model_not_found")),
                429 => ("requests", json!("rate_limit_exceeded")),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
    }
}

/// The answer of a [`crate::Script::Status`].
pub(crate) fn scripted_status(
    provider: Provider,
    id: u64,
    status: u16,
    body: Value,
    headers: &[(String, String)],
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match body {
        Value::Null => error_body(provider, id, status, &format!("scripted status {}", status.as_u16())),
        body => body,
    };
    let mut response = json_response(provider, id, status, &body);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// What each provider answers when the account cannot pay (shapes observed from the providers).
pub(crate) fn out_of_funds(provider: Provider, id: u64) -> Response {
    let (status, body) = match provider {
        Provider::Anthropic => (
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}),
        ),
        Provider::OpenAi => (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
        ),
    };
    json_response(provider, id, status, &body)
}

/// A response whose connection is dropped before any body.
pub(crate) fn dropped_connection() -> Response {
    let error =
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fake upstream: connection cut by script");
    Response::new(Body::from_stream(futures::stream::once(async move { Err::<Bytes, _>(error) })))
}

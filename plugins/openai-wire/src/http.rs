//! Sending a request to a model server, with one retry on a stale pooled connection, and
//! mapping HTTP statuses, provider error objects and transport failures to
//! [`RuntimeError`]s:
//!
//! | failure | kind | retriable |
//! | --- | --- | --- |
//! | HTTP 400, 404, 413, 422 … | `invalid_request` | no |
//! | HTTP 401, 403 | `authentication` | no |
//! | HTTP 429 | `rate_limited` | yes |
//! | HTTP 5xx, connection refused or reset | `unavailable` | yes |
//! | connect, read or request timeout, HTTP 408 | `timeout` | yes |
//! | an error object in a stream or body | by its `type` (else its `code`) | as the kind |
//!
//! The HTTP status is in the error's metadata (`{"status": 429}`) and the provider's own
//! message in its text.

use std::error::Error as _;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use runtime_api::{ErrorKind, RuntimeError, Value, json};

/// The most of an error body kept in a message.
const MAX_ERROR_BODY: usize = 2048;

/// One request to a model server, kept whole so that it can be sent again once.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

impl Request {
    /// A request without a body, with the configured extra `headers`.
    pub fn new(method: Method, url: impl Into<String>, headers: &HeaderMap) -> Self {
        Self {
            method,
            url: url.into(),
            headers: headers.clone(),
            body: None,
        }
    }

    /// The URL the request goes to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds a header (after the ones already there; a name may repeat).
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets `body` as the JSON body, with `Content-Type: application/json` and `accept` as
    /// the `Accept` header.
    ///
    /// # Errors
    ///
    /// `internal` when the body cannot be encoded or `accept` is not a header value.
    pub fn json(mut self, body: &Value, accept: &str) -> Result<Self, RuntimeError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| RuntimeError::internal(format!("could not encode the request: {e}")))?;
        let accept = HeaderValue::from_str(accept).map_err(|_| {
            RuntimeError::internal(format!("{accept:?} is not an Accept header value"))
        })?;
        self.headers
            .append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.headers.append(ACCEPT, accept);
        self.body = Some(bytes);
        Ok(self)
    }

    fn build(&self, client: &reqwest::Client) -> RequestBuilder {
        let builder = client
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone());
        match &self.body {
            Some(bytes) => builder.body(bytes.clone()),
            None => builder,
        }
    }

    /// Sends the request, again once when the connection was closed before any byte of a
    /// response arrived (a pooled connection the server had already closed), then turns a
    /// non-success status into an error.
    ///
    /// # Errors
    ///
    /// A [`RuntimeError`] from the transport or the status.
    pub async fn send(&self, client: &reqwest::Client) -> Result<Response, RuntimeError> {
        let response = match self.build(client).send().await {
            Ok(response) => response,
            Err(error) if is_stale_connection(&error) => {
                tracing::debug!(%error, "the connection was closed before a response; retrying once");
                self.build(client)
                    .send()
                    .await
                    .map_err(|e| transport_error(&e, "request"))?
            }
            Err(error) => return Err(transport_error(&error, "request")),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = match response.bytes().await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => format!("(the error body could not be read: {error})"),
        };
        Err(status_error(status, retry_after, &body))
    }
}

/// Whether a send error means "the connection closed before a response started": hyper's
/// incomplete-message error, or an I/O reset/abort/broken pipe/EOF, and no timeout.
fn is_stale_connection(error: &reqwest::Error) -> bool {
    if error.is_timeout() || error.is_connect() || error.is_builder() || error.is_status() {
        return false;
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            if matches!(
                io.kind(),
                Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof
            ) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// The error kind for an HTTP status.
pub fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Authentication,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Unavailable,
        400..=499 => ErrorKind::InvalidRequest,
        _ => ErrorKind::Internal,
    }
}

/// The error kind for a provider's error `type` (OpenAI, Anthropic and llama.cpp names).
fn kind_for_type(error_type: &str) -> Option<ErrorKind> {
    Some(match error_type {
        "invalid_request_error"
        | "exceed_context_size_error"
        | "not_found_error"
        | "request_too_large"
        | "not_supported_error"
        | "context_length_exceeded" => ErrorKind::InvalidRequest,
        "authentication_error" | "permission_error" => ErrorKind::Authentication,
        "rate_limit_error" | "rate_limit_exceeded" | "tokens" | "requests" => {
            ErrorKind::RateLimited
        }
        "overloaded_error" | "api_error" | "server_error" | "unavailable_error" => {
            ErrorKind::Unavailable
        }
        "timeout_error" => ErrorKind::Timeout,
        _ => return None,
    })
}

/// An error for a non-success HTTP status, with the provider's message when the body has one.
pub fn status_error(status: StatusCode, retry_after: Option<u64>, body: &str) -> RuntimeError {
    let code = status.as_u16();
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let (message, error_type) = match &parsed {
        Some(value) => provider_message(value),
        None => (None, None),
    };
    let message = message.unwrap_or_else(|| {
        let text = body.trim();
        if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no error message")
                .to_owned()
        } else {
            truncate(text, MAX_ERROR_BODY).to_owned()
        }
    });
    let kind = kind_for_status(code);
    let retriable = code == 429 || code == 408 || status.is_server_error();
    let mut metadata = json!({ "status": code });
    if let Some(error_type) = error_type {
        metadata["type"] = json!(error_type);
    }
    if let Some(seconds) = retry_after {
        metadata["retry_after_s"] = json!(seconds);
    }
    RuntimeError::new(kind, format!("HTTP {code}: {message}"))
        .with_retriable(retriable)
        .with_metadata(metadata)
}

/// The message and type of a provider error body: `{"error": {"message", "type"}}` (OpenAI,
/// Anthropic, llama.cpp), `{"error": "text"}`, or `{"message": "text"}`.
fn provider_message(value: &Value) -> (Option<String>, Option<String>) {
    let error = value.get("error").unwrap_or(value);
    let message = match error {
        Value::String(text) => Some(text.clone()),
        _ => error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let error_type = error.get("type").and_then(Value::as_str).map(str::to_owned);
    (message, error_type)
}

/// An error object that arrived inside a stream (`data: {"error": {...}}` or Anthropic's
/// `event: error`) or a response body: its message, kind from its type or code, and retriable
/// as the kind says.
pub fn stream_error_object(error: &Value) -> RuntimeError {
    let (message, error_type) = provider_message(&json!({ "error": error }));
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (100..=599).contains(c));
    let kind = error_type
        .as_deref()
        .and_then(kind_for_type)
        .or_else(|| status.map(kind_for_status))
        .unwrap_or(ErrorKind::Internal);
    let mut metadata = json!({ "during": "stream" });
    if let Some(status) = status {
        metadata["status"] = json!(status);
    }
    if let Some(error_type) = &error_type {
        metadata["type"] = json!(error_type);
    }
    if let Some(code) = error.get("code").and_then(Value::as_str) {
        metadata["code"] = json!(code);
    }
    let message =
        message.unwrap_or_else(|| truncate(&error.to_string(), MAX_ERROR_BODY).to_owned());
    RuntimeError::new(
        kind,
        format!("the server reported an error mid-stream: {message}"),
    )
    .with_metadata(metadata)
}

/// An error for a transport failure `during` a phase ("request", "stream", "response").
pub fn transport_error(error: &reqwest::Error, during: &str) -> RuntimeError {
    // reqwest's Display omits the cause; the chain says what actually happened.
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let metadata = json!({ "during": during });
    if error.is_timeout() {
        RuntimeError::timeout(format!("the HTTP {during} timed out: {text}"))
            .with_metadata(metadata)
    } else if error.is_connect() {
        RuntimeError::unavailable(format!("could not connect: {text}")).with_metadata(metadata)
    } else {
        RuntimeError::unavailable(format!("the HTTP {during} failed: {text}"))
            .with_metadata(metadata)
    }
}

/// The text cut to at most `max` bytes, at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads a whole JSON response body.
///
/// # Errors
///
/// A transport error, or `internal` when the body is not JSON.
pub async fn json_body(response: Response) -> Result<Value, RuntimeError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(&e, "response"))?;
    serde_json::from_slice(&bytes).map_err(|error| {
        RuntimeError::internal(format!(
            "the response is not JSON ({error}): {}",
            truncate(&String::from_utf8_lossy(&bytes), 512)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds_with_the_providers_message() {
        let body = r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#;
        let error = status_error(StatusCode::TOO_MANY_REQUESTS, Some(7), body);
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert!(error.retriable);
        assert!(error.message.contains("slow down"));
        assert_eq!(error.metadata["status"], 429);
        assert_eq!(error.metadata["retry_after_s"], 7);

        let error = status_error(StatusCode::UNAUTHORIZED, None, r#"{"error":"bad key"}"#);
        assert_eq!(error.kind, ErrorKind::Authentication);
        assert!(!error.retriable);
        assert!(error.message.contains("bad key"));
        let error = status_error(StatusCode::UNAUTHORIZED, None, "");
        assert_eq!(error.kind, ErrorKind::Authentication);

        let error = status_error(StatusCode::FORBIDDEN, None, "");
        assert_eq!(error.kind, ErrorKind::Authentication);

        let error = status_error(StatusCode::BAD_REQUEST, None, "plain text problem");
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert!(!error.retriable);
        assert!(error.message.contains("plain text problem"));

        let error = status_error(StatusCode::SERVICE_UNAVAILABLE, None, "<html>busy</html>");
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert!(error.retriable);
        assert_eq!(error.metadata["status"], 503);
        let error = status_error(StatusCode::SERVICE_UNAVAILABLE, None, "");
        assert_eq!(error.kind, ErrorKind::Unavailable);

        let long = "é".repeat(5000);
        let error = status_error(StatusCode::BAD_GATEWAY, None, &long);
        assert!(error.message.len() < 2100);
    }

    #[test]
    fn stream_error_objects_map_by_type_then_code() {
        let error =
            stream_error_object(&json!({"type": "overloaded_error", "message": "Overloaded"}));
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert!(error.retriable);
        assert!(error.message.contains("Overloaded"));
        let error =
            stream_error_object(&json!({"code": 500, "message": "parse", "type": "server_error"}));
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert_eq!(error.metadata["status"], 500);
        let error = stream_error_object(&json!({"code": 400, "message": "bad"}));
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        let error = stream_error_object(&json!("just text"));
        assert_eq!(error.kind, ErrorKind::Internal);
        assert!(error.message.contains("just text"));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("été", 2), "é");
        assert_eq!(truncate("abc", 5), "abc");
    }
}

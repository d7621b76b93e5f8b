//! HTTP plumbing both runtimes share: sending with one retry on a stale pooled connection,
//! mapping HTTP and provider errors to [`RuntimeError`]s, and turning an SSE response into a
//! stream of [`StreamItem`]s through a provider-specific [`StreamDecoder`].
//!
//! # SSE framing
//!
//! Framing is done by the `eventsource-stream` crate, not by hand. It is the parser under
//! `reqwest-eventsource` and `async-openai`, works on any stream of byte chunks, and
//! implements the WHATWG rules this code relies on (each checked by a test in this crate):
//! CRLF, CR and LF line ends, including a CRLF split across chunks; `data:` with or without
//! the space; multi-line `data` joined with `\n`; `:` comment lines ignored; an `event:` name;
//! and a UTF-8 sequence split across chunks reassembled before parsing. An event not yet
//! terminated by a blank line when the body ends is dropped, which is why the decoders treat
//! a missing `[DONE]` / `message_stop` as an error rather than as the end.

use std::collections::VecDeque;
use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response, StatusCode};
use runtime_api::{Delta, ErrorKind, RuntimeError, StreamItem, TurnOutput, Value, json};

/// The most of an error body kept in a message.
const MAX_ERROR_BODY: usize = 2048;

/// Sends a request built by `build`, retrying once when the connection was closed before any
/// byte of a response arrived (a pooled connection the server had already closed), then
/// turns a non-success status into an error.
///
/// # Errors
///
/// A [`RuntimeError`] from the transport or the status.
pub(crate) async fn send(build: impl Fn() -> RequestBuilder) -> Result<Response, RuntimeError> {
    let response = match build().send().await {
        Ok(response) => response,
        Err(error) if is_stale_connection(&error) => {
            tracing::debug!(%error, "the connection was closed before a response; retrying once");
            build()
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
pub(crate) fn kind_for_status(status: u16) -> ErrorKind {
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
pub(crate) fn status_error(
    status: StatusCode,
    retry_after: Option<u64>,
    body: &str,
) -> RuntimeError {
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
/// `event: error`): its message, kind from its type or code, and retriable as the kind says.
pub(crate) fn stream_error_object(error: &Value) -> RuntimeError {
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
pub(crate) fn transport_error(error: &reqwest::Error, during: &str) -> RuntimeError {
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
/// The final output's metadata: what the provider sent, plus the whole thinking text (also
/// streamed as thinking deltas) under `thinking` when there was any.
pub(crate) fn output_metadata(mut metadata: Value, thinking: String) -> Value {
    if metadata.is_null() {
        metadata = Value::Object(Default::default());
    }
    if !thinking.is_empty() {
        metadata["thinking"] = Value::String(thinking);
    }
    metadata
}

pub(crate) fn truncate(text: &str, max: usize) -> &str {
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
pub(crate) async fn json_body(response: Response) -> Result<Value, RuntimeError> {
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

/// A provider's streaming protocol: fed SSE events, it produces deltas and, once the
/// provider said the stream is complete, the final output.
// `pub` in a private module: nameable by the provider trait `shell::Api`, not outside the crate.
pub trait StreamDecoder: Send + 'static {
    /// Feeds one SSE event (its `event` name, `message` when absent, and its `data`).
    ///
    /// # Errors
    ///
    /// An error object from the provider, or a malformed event.
    fn feed(&mut self, event: &str, data: &str) -> Result<Vec<Delta>, RuntimeError>;

    /// Whether the provider said the stream is complete (`[DONE]`, `message_stop`).
    fn is_done(&self) -> bool;

    /// The final output.
    ///
    /// # Errors
    ///
    /// When the stream is not complete: a truncated stream is an error, not an answer.
    fn finish(&mut self) -> Result<TurnOutput, RuntimeError>;
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The SSE events of a response body.
pub(crate) fn sse_events<S, B>(
    body: S,
) -> impl Stream<Item = Result<(String, String), RuntimeError>> + Send
where
    S: Stream<Item = Result<B, reqwest::Error>> + Send + 'static,
    B: AsRef<[u8]> + Send,
{
    body.eventsource().map(|item| match item {
        Ok(event) => Ok((event.event, event.data)),
        Err(EventStreamError::Transport(error)) => Err(transport_error(&error, "stream")),
        Err(EventStreamError::Utf8(error)) => Err(RuntimeError::unavailable(format!(
            "the event stream is not valid UTF-8: {error}"
        ))),
        Err(EventStreamError::Parser(error)) => Err(RuntimeError::unavailable(format!(
            "the event stream is malformed: {error}"
        ))),
    })
}

enum Drive<D> {
    Start(BoxFuture<Result<Response, RuntimeError>>, D),
    Streaming(
        BoxStream<Result<(String, String), RuntimeError>>,
        D,
        VecDeque<Delta>,
    ),
    Finished,
}

/// The stream of a turn: awaits `start` (the response), then feeds its SSE events to
/// `decoder`, yielding deltas as they come and the final output once the provider said the
/// stream is complete. An error ends the stream; dropping it drops the response, which
/// closes the connection.
pub(crate) fn drive<D: StreamDecoder>(
    start: impl Future<Output = Result<Response, RuntimeError>> + Send + 'static,
    decoder: D,
) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
    let start: BoxFuture<_> = Box::pin(start);
    futures::stream::unfold(Drive::Start(start, decoder), |mut state| async move {
        loop {
            state = match state {
                Drive::Finished => return None,
                Drive::Start(start, decoder) => match start.await {
                    Ok(response) => {
                        let events: BoxStream<_> = Box::pin(sse_events(response.bytes_stream()));
                        Drive::Streaming(events, decoder, VecDeque::new())
                    }
                    Err(error) => return Some((Err(error), Drive::Finished)),
                },
                Drive::Streaming(mut events, mut decoder, mut pending) => {
                    if let Some(delta) = pending.pop_front() {
                        let item = Ok(StreamItem::Delta(delta));
                        return Some((item, Drive::Streaming(events, decoder, pending)));
                    }
                    if decoder.is_done() {
                        return Some((decoder.finish().map(StreamItem::Done), Drive::Finished));
                    }
                    match events.next().await {
                        Some(Ok((event, data))) => match decoder.feed(&event, &data) {
                            Ok(deltas) => pending.extend(deltas),
                            Err(error) => return Some((Err(error), Drive::Finished)),
                        },
                        Some(Err(error)) => return Some((Err(error), Drive::Finished)),
                        // The body ended: `finish` says the stream was truncated.
                        None => {
                            return Some((decoder.finish().map(StreamItem::Done), Drive::Finished));
                        }
                    }
                    Drive::Streaming(events, decoder, pending)
                }
            };
        }
    })
}

/// Feeds a whole recorded SSE body, cut into `chunks`, to a decoder and collects the items
/// `drive` would yield. For tests of the decoders against fixtures.
#[cfg(test)]
pub(crate) async fn replay<D: StreamDecoder>(
    chunks: &[&[u8]],
    decoder: D,
) -> Vec<Result<StreamItem, RuntimeError>> {
    let owned: Vec<Result<Vec<u8>, reqwest::Error>> =
        chunks.iter().map(|c| Ok(c.to_vec())).collect();
    let mut events = Box::pin(sse_events(futures::stream::iter(owned)));
    let mut decoder = decoder;
    let mut items = Vec::new();
    loop {
        if decoder.is_done() {
            items.push(decoder.finish().map(StreamItem::Done));
            return items;
        }
        match events.next().await {
            Some(Ok((event, data))) => match decoder.feed(&event, &data) {
                Ok(deltas) => items.extend(deltas.into_iter().map(|d| Ok(StreamItem::Delta(d)))),
                Err(error) => {
                    items.push(Err(error));
                    return items;
                }
            },
            Some(Err(error)) => {
                items.push(Err(error));
                return items;
            }
            None => {
                items.push(decoder.finish().map(StreamItem::Done));
                return items;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let owned: Vec<Result<Vec<u8>, reqwest::Error>> =
            chunks.iter().map(|c| Ok(c.to_vec())).collect();
        sse_events(futures::stream::iter(owned))
            .map(|e| e.unwrap())
            .collect()
            .await
    }

    fn data(events: &[(String, String)]) -> Vec<&str> {
        events.iter().map(|(_, d)| d.as_str()).collect()
    }

    #[tokio::test]
    async fn the_sse_parser_handles_what_servers_send() {
        // CRLF line ends, one CRLF split across two chunks.
        let got = events(&[b"data: a\r\n\r\ndata: b\r", b"\n\r\n"]).await;
        assert_eq!(data(&got), ["a", "b"]);
        // `data:` without a space.
        let got = events(&[b"data:{\"x\":1}\n\n"]).await;
        assert_eq!(data(&got), ["{\"x\":1}"]);
        // Multi-line data is joined with \n.
        let got = events(&[b"data: one\ndata: two\n\n"]).await;
        assert_eq!(data(&got), ["one\ntwo"]);
        // Comments (keep-alives) are skipped.
        let got = events(&[b": keep-alive\n\n: ping\ndata: x\n\n"]).await;
        assert_eq!(data(&got), ["x"]);
        // A UTF-8 sequence split across chunks.
        let got = events(&[b"data: \xc3", b"\xa9t\xc3", b"\xa9\n\n"]).await;
        assert_eq!(data(&got), ["été"]);
        // Event names.
        let got = events(&[b"event: ping\ndata: {}\n\n"]).await;
        assert_eq!(got, [("ping".to_owned(), "{}".to_owned())]);
        // Without a name an event is a `message`.
        let got = events(&[b"data: x\n\n"]).await;
        assert_eq!(got[0].0, "message");
        // An unterminated last event is dropped, not delivered half-read.
        let got = events(&[b"data: a\n\ndata: cut"]).await;
        assert_eq!(data(&got), ["a"]);
    }

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
}

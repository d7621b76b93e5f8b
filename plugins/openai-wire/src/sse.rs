//! Server-sent events: a response body framed into events by the `eventsource-stream` crate,
//! fed to a provider's [`StreamDecoder`], and yielded as deltas and then the final output.
//!
//! # SSE framing
//!
//! Framing is done by the `eventsource-stream` crate, not by hand. It is the parser under
//! `reqwest-eventsource` and `async-openai`, works on any stream of byte chunks, and
//! implements the WHATWG rules this code relies on (each checked by a test in this module):
//! CRLF, CR and LF line ends, including a CRLF split across chunks; `data:` with or without
//! the space; multi-line `data` joined with `\n`; `:` comment lines ignored; an `event:` name;
//! and a UTF-8 sequence split across chunks reassembled before parsing. An event not yet
//! terminated by a blank line when the body ends is dropped, which is why the decoders treat
//! a missing `[DONE]` / `message_stop` as an error rather than as the end.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::Response;
use runtime_api::{Delta, RuntimeError, StreamItem, TurnOutput, Value};

use crate::http::transport_error;

/// A provider's streaming protocol: fed SSE events, it produces deltas and, once the
/// provider said the stream is complete, the final output.
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

/// The SSE events of a response body, as `(event name, data)`.
pub fn sse_events<S, B>(
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
pub fn drive<D: StreamDecoder>(
    start: impl Future<Output = Result<Response, RuntimeError>> + Send + 'static,
    decoder: D,
) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
    drive_bounded(
        start,
        decoder,
        usize::MAX,
        RuntimeError::internal("unreachable"),
    )
}

/// As [`drive`], reading at most `max_bytes` of the response body: past them the body is
/// dropped (the connection closed) and the stream ends with `too_large`, whether or not an
/// event was complete (an endless `data:` line without its blank line included).
pub fn drive_bounded<D: StreamDecoder>(
    start: impl Future<Output = Result<Response, RuntimeError>> + Send + 'static,
    decoder: D,
    max_bytes: usize,
    too_large: RuntimeError,
) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let start: BoxFuture<_> = Box::pin(start);
    let exceeded = Arc::new(AtomicBool::new(false));
    let over = Arc::clone(&exceeded);
    let cut = move |result: Result<StreamItem, RuntimeError>| {
        if over.load(Ordering::SeqCst) {
            Err(too_large.clone())
        } else {
            result
        }
    };
    let stream = futures::stream::unfold(Drive::Start(start, decoder), move |mut state| {
        let exceeded = Arc::clone(&exceeded);
        async move {
            loop {
                state = match state {
                    Drive::Finished => return None,
                    Drive::Start(start, decoder) => match start.await {
                        Ok(response) => {
                            let exceeded = Arc::clone(&exceeded);
                            let body = response.bytes_stream().scan(0usize, move |seen, chunk| {
                                let keep = match &chunk {
                                    Ok(bytes) => {
                                        *seen = seen.saturating_add(bytes.len());
                                        *seen <= max_bytes
                                    }
                                    Err(_) => true,
                                };
                                if !keep {
                                    exceeded.store(true, Ordering::SeqCst);
                                }
                                futures::future::ready(keep.then_some(chunk))
                            });
                            let events: BoxStream<_> = Box::pin(sse_events(body));
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
                                return Some((
                                    decoder.finish().map(StreamItem::Done),
                                    Drive::Finished,
                                ));
                            }
                        }
                        Drive::Streaming(events, decoder, pending)
                    }
                };
            }
        }
    });
    // Once the body went over its bound, the item that ended the stream (a truncation
    // error, or whatever the cut body produced) is replaced by `too_large`, and it is last.
    let mut ended = false;
    stream.filter_map(move |item| {
        let item = if ended { None } else { Some(cut(item)) };
        if item.as_ref().is_some_and(Result::is_err) {
            ended = true;
        }
        futures::future::ready(item)
    })
}

/// The final output's metadata: what the provider sent, plus the whole thinking text (also
/// streamed as thinking deltas) under `thinking` when there was any.
pub fn output_metadata(mut metadata: Value, thinking: String) -> Value {
    if metadata.is_null() {
        metadata = Value::Object(Default::default());
    }
    if !thinking.is_empty() {
        metadata["thinking"] = Value::String(thinking);
    }
    metadata
}

/// Feeds a whole recorded SSE body, cut into `chunks`, to a decoder and collects the items
/// [`drive`] would yield. For tests of decoders against recorded fixtures.
pub async fn replay<D: StreamDecoder>(
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
}

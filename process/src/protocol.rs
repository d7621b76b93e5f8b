//! The wire protocol between a host and a worker process.
//!
//! Frames are length-delimited (tokio-util's `LengthDelimitedCodec`, a 4-byte big-endian
//! length, at most [`MAX_FRAME`] bytes); each frame is one message in MessagePack
//! (`rmp-serde`, structs as maps, so optional fields may be left out).
//!
//! The conversation:
//! 1. the worker says [`WorkerMessage::Hello`] with its protocol version; the host says
//!    [`HostMessage::Start`] with its own and the library to load. A worker refuses a host of
//!    another version, and a host a worker of another version.
//! 2. the worker loads the library (the same checks as discovery, then abi_stable's) and
//!    says [`WorkerMessage::Ready`] or [`WorkerMessage::Refused`];
//! 3. the host creates the worker's one runtime ([`HostMessage::Create`]), then starts turns
//!    and calls, each with its own number, so many run at once over one pipe. Streams carry a
//!    credit window in units that weigh an item's size ([`credit_cost`]): the worker sends
//!    items only within the credit the host has granted, so a slow consumer holds back at
//!    most the window's items and bytes.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::PathBuf;

use runtime_discovery::admission::Pin;
use runtime_discovery::security::Identity;

use runtime_api::{RuntimeError, RuntimeInfo, StreamItem, TurnOutput, TurnRequest};

/// The protocol version; host and worker must speak the same (2: credit weighs bytes).
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame either side accepts ([`ProcessLimits::max_frame`](crate::ProcessLimits::max_frame)).
pub const MAX_FRAME: usize = crate::limits::LIMITS.max_frame;

/// The stream credit a worker may use ahead of the host's consumer, in units
/// ([`ProcessLimits::stream_window`](crate::ProcessLimits::stream_window)).
pub const STREAM_WINDOW: u32 = crate::limits::LIMITS.stream_window;

/// The bytes one unit of stream credit stands for, beyond an item's own unit.
pub const CREDIT_UNIT_BYTES: usize = 4096;

/// What a stream item costs in credit: one unit, plus one per [`CREDIT_UNIT_BYTES`] of its
/// text and metadata, at most half the window (so one item never waits for credit the host
/// only grants after consuming it). Host and worker compute it alike from the same item, so
/// neither has to trust the other's count. With the 256-unit window a consumer that stops
/// holds back at most 256 items and about 1 MiB plus two items of at most a frame each.
pub fn credit_cost(item: &StreamItem) -> u32 {
    let bytes = match item {
        StreamItem::Delta(delta) => delta
            .content
            .len()
            .saturating_add(json_size(&delta.metadata)),
        _ => 0,
    };
    let units = 1 + bytes / CREDIT_UNIT_BYTES;
    u32::try_from(units)
        .unwrap_or(u32::MAX)
        .min(STREAM_WINDOW / 2)
}

/// About how many bytes a JSON value holds (its strings and keys, 8 per number), walked
/// without recursion: a value's depth is up to whoever built it.
fn json_size(value: &runtime_api::Value) -> usize {
    use runtime_api::Value;
    let mut size = 0usize;
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        size = size.saturating_add(match value {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 8,
            Value::String(text) => text.len(),
            Value::Array(items) => {
                pending.extend(items);
                1
            }
            Value::Object(map) => {
                for (key, item) in map {
                    size = size.saturating_add(key.len());
                    pending.push(item);
                }
                1
            }
        });
    }
    size
}

/// A codec for frames of at most [`MAX_FRAME`] bytes.
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// A configuration as it crosses: JSON text, `""` for `null`.
pub fn config_text(config: &runtime_api::Value) -> String {
    if config.is_null() {
        String::new()
    } else {
        config.to_string()
    }
}

/// A message too large to cross as one frame, as the error of the turn or call it belongs to:
/// named, not retriable, and never a crash (the worker is not touched).
pub fn too_large(what: &str, bytes: usize) -> RuntimeError {
    RuntimeError::invalid_request(format!(
        "{what} is {bytes} bytes encoded: at most {MAX_FRAME} bytes cross between a host and its worker (ProcessLimits::max_frame)"
    ))
    .with_retriable(false)
    .with_metadata(serde_json::json!({"error": "message_too_large", "bytes": bytes, "max": MAX_FRAME}))
}

/// The worker's message as a frame, or, when it is too large to cross, the message that ends
/// its turn or call with [`too_large`] instead (a log event too large is dropped).
pub fn worker_frame(message: WorkerMessage) -> Option<bytes::Bytes> {
    let frame = encode(&message).ok()?;
    if frame.len() <= MAX_FRAME {
        return Some(frame);
    }
    let instead = match message {
        WorkerMessage::Items { turn, .. } | WorkerMessage::Finished { turn, .. } => {
            WorkerMessage::Finished {
                turn,
                result: Err(too_large("the turn's answer", frame.len())),
            }
        }
        WorkerMessage::Reply { call, .. } => WorkerMessage::Reply {
            call,
            result: Err(too_large("the call's answer", frame.len())),
        },
        WorkerMessage::Created { .. } => WorkerMessage::Created {
            result: Err(too_large("the runtime's description", frame.len())),
        },
        _ => return None,
    };
    encode(&instead).ok()
}

/// Encodes a message.
pub fn encode<T: Serialize>(message: &T) -> Result<bytes::Bytes, String> {
    rmp_serde::to_vec_named(message)
        .map(bytes::Bytes::from)
        .map_err(|e| format!("could not encode a message: {e}"))
}

/// Decodes a message.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(frame).map_err(|e| format!("a malformed message: {e}"))
}

/// The file a worker must load: the host's checked open file, inherited as descriptor `fd`,
/// with what the host checked it against. The worker refuses it (`changed`, `hash_mismatch`)
/// unless the inherited file is still that file, unchanged, and matches its pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedFile {
    /// The descriptor number the file has in the worker ([`LIBRARY_FD`]).
    pub fd: i32,
    /// The identity the host checked.
    pub identity: Identity,
    /// The pin that applies, if any.
    pub pin: Option<Pin>,
}

/// The descriptor number at which a worker inherits the library file its host checked.
pub const LIBRARY_FD: i32 = 3;

/// What the host asks a worker. Messages live for one send; boxing the large turn would only
/// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
pub enum HostMessage {
    /// Load this library (checked again, as discovery does).
    Start {
        protocol: u32,
        library: PathBuf,
        allow_insecure: bool,
        log_level: u8,
        /// The open file the host checked, inherited by the worker: the worker loads exactly
        /// that file (absent from hosts that do not pass one: the worker admits the path).
        #[serde(default)]
        checked: Option<CheckedFile>,
    },
    /// Create the worker's runtime.
    Create { runtime: String, config: String },
    /// Check a configuration for a runtime without creating it.
    Validate {
        call: u64,
        runtime: String,
        config: String,
    },
    /// Start a turn (a stream when `stream`), with `credit` units granted.
    Turn {
        turn: u64,
        request: TurnRequest,
        stream: bool,
        credit: u32,
        log_level: u8,
    },
    /// More stream credit, in units (see [`credit_cost`]).
    Credit { turn: u64, amount: u32 },
    /// Stop a turn; the worker answers [`WorkerMessage::Ended`] once the plugin let go of it.
    Cancel { turn: u64 },
    /// A call on the runtime.
    Call { call: u64, what: Call },
    /// Are you there?
    Ping { seq: u64 },
}

/// A call on the worker's runtime.
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    Supports { model: String },
    Health,
    Extension { name: String, payload: String },
}

/// What a call returns.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Supports(bool),
    Health(String),
    Extension(String),
    Problems(Vec<String>),
}

/// What a worker tells the host.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// The first message: the worker's protocol version and process id.
    Hello { protocol: u32, pid: u32 },
    /// The library is loaded.
    Ready {
        plugin_name: String,
        plugin_version: String,
        /// The identity of the file it loaded (device, inode, size, times), which the host
        /// compares with the file it checked.
        #[serde(default)]
        identity: Option<Identity>,
        /// The sha256 of the file it loaded, when a pin applied (the worker hashed it).
        #[serde(default)]
        sha256: Option<String>,
    },
    /// The library was refused; `kind` and `detail` as the host's rejection says them.
    Refused { reason: String },
    /// The runtime was created (with what it says about itself), or not.
    Created {
        result: Result<RuntimeInfo, RuntimeError>,
    },
    /// Stream items of a turn.
    Items { turn: u64, items: Vec<StreamItem> },
    /// A turn's end: its output (or the stream's last item went in `Items`), or its error.
    Finished {
        turn: u64,
        result: Result<Option<TurnOutput>, RuntimeError>,
    },
    /// A cancelled turn's plugin task has ended.
    Ended { turn: u64 },
    /// A call's answer.
    Reply {
        call: u64,
        result: Result<Reply, RuntimeError>,
    },
    /// A plugin log event, to re-emit in the host's subscriber.
    Log(LogRecord),
    /// The answer to a ping.
    Pong { seq: u64 },
}

/// A plugin log event, with the fields the in-process log bridge emits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogRecord {
    pub level: u8,
    pub plugin: String,
    pub runtime: String,
    pub execution_id: String,
    pub plugin_target: String,
    pub fields: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_api::{Delta, ToolDefinition};
    use serde_json::json;

    #[test]
    fn an_item_costs_a_unit_and_one_per_4_kib_at_most_half_the_window() {
        let text = |bytes: usize| StreamItem::Delta(Delta::text("x".repeat(bytes)));
        assert_eq!(credit_cost(&text(0)), 1);
        assert_eq!(credit_cost(&text(4095)), 1);
        assert_eq!(credit_cost(&text(4096)), 2);
        assert_eq!(credit_cost(&text(64 << 20)), STREAM_WINDOW / 2);
        let mut heavy = Delta::text("");
        heavy.metadata = json!({ "blob": "y".repeat(8192), "n": [1, 2, 3] });
        assert_eq!(credit_cost(&StreamItem::Delta(heavy)), 3);
        // Deep metadata is weighed without recursion.
        let mut deep = json!(null);
        for _ in 0..100_000 {
            deep = runtime_api::Value::Array(vec![deep]);
        }
        let mut nested = Delta::text("");
        nested.metadata = deep;
        let item = StreamItem::Delta(nested);
        assert_eq!(credit_cost(&item), 25);
        // Dropping it would recurse (serde_json's drop does): leaked, in a test.
        std::mem::forget(item);
    }

    #[test]
    fn public_types_round_trip() {
        let request = TurnRequest::new("hi")
            .with_execution_id("x")
            .with_tools(vec![ToolDefinition::new(
                "t",
                "d",
                json!({"type": "object"}),
            )]);
        let message = HostMessage::Turn {
            turn: 7,
            request: request.clone(),
            stream: true,
            credit: 3,
            log_level: 2,
        };
        let back: HostMessage = decode(&encode(&message).unwrap()).unwrap();
        let HostMessage::Turn { request: got, .. } = back else {
            panic!("a turn")
        };
        assert_eq!(got, request);
        let items = WorkerMessage::Items {
            turn: 1,
            items: vec![
                StreamItem::Delta(Delta::text("a")),
                StreamItem::Done(TurnOutput::new("a")),
            ],
        };
        let back: WorkerMessage = decode(&encode(&items).unwrap()).unwrap();
        assert!(matches!(back, WorkerMessage::Items { items, .. } if items.len() == 2));
        let failed = WorkerMessage::Finished {
            turn: 2,
            result: Err(RuntimeError::timeout("late").with_metadata(json!({"a": 1}))),
        };
        let back: WorkerMessage = decode(&encode(&failed).unwrap()).unwrap();
        let WorkerMessage::Finished { result: Err(e), .. } = back else {
            panic!("an error")
        };
        assert_eq!(e.metadata, json!({"a": 1}));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<WorkerMessage>(b"\xff\x00garbage").is_err());
        assert!(decode::<HostMessage>(&[]).is_err());
    }
}

//! The wire format: what a job and a result entry hold in Redis.
//!
//! Both are JSON (serde) of runtime-api's own types, tagged with [`FORMAT_VERSION`]. A reader
//! refuses a version it does not know with an error that names both versions, rather than
//! guessing; the version changes only when a field's meaning changes (new optional fields do
//! not change it, since serde ignores unknown fields and defaults missing ones).

use runtime_api::{Capabilities, ErrorKind, RuntimeError, StreamItem, TurnRequest, Value};
use serde::{Deserialize, Serialize};

/// The version of the job and result formats this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One turn to run: the job a client adds to the job stream (field `job`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Job {
    /// [`FORMAT_VERSION`] of the writer.
    pub v: u32,
    /// The runtime's id or alias, resolved by the worker's registry.
    pub runtime: String,
    /// The runtime's configuration (`Null`: the registry's shared instance).
    #[serde(default)]
    pub config: Value,
    /// The turn; its `execution_id` is the job's idempotency key.
    pub request: TurnRequest,
    /// The submitter's inbox stream, told (by execution id) when items are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// When it was submitted (Unix milliseconds).
    #[serde(default)]
    pub submitted_ms: u64,
}

impl Job {
    /// A job in this crate's format.
    pub fn new(runtime: impl Into<String>, config: Value, request: TurnRequest) -> Self {
        Self {
            v: FORMAT_VERSION,
            runtime: runtime.into(),
            config,
            request,
            notify: None,
            submitted_ms: now_ms(),
        }
    }

    /// The JSON stored in the job stream.
    pub fn encode(&self) -> String {
        // A `Job` is plain data (strings, JSON values): serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a job.
    ///
    /// # Errors
    ///
    /// A text that is not a job, or a job of another format version.
    pub fn decode(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the job is not JSON: {e}"))?;
        check_version(&value, "job")?;
        serde_json::from_value(value).map_err(|e| format!("the job is malformed: {e}"))
    }
}

/// One element of a turn's result list: a stream item, or the turn's error.
/// The last entry of a turn is a [`StreamItem::Done`] or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResultEntry {
    /// [`FORMAT_VERSION`] of the writer.
    pub v: u32,
    /// The item.
    #[serde(flatten)]
    pub result: WireResult,
}

/// A stream item or an error, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WireResult {
    /// A delta or the final output.
    Item(StreamItem),
    /// The turn's error (always the last entry).
    Error(RuntimeError),
}

impl ResultEntry {
    /// The JSON of one result.
    pub fn encode(result: &Result<StreamItem, RuntimeError>) -> String {
        let entry = ResultEntry {
            v: FORMAT_VERSION,
            result: match result {
                Ok(item) => WireResult::Item(item.clone()),
                Err(error) => WireResult::Error(error.clone()),
            },
        };
        serde_json::to_string(&entry).unwrap_or_default()
    }

    /// Reads one result; a text this crate cannot read becomes an `internal` error item, so a
    /// reader always ends.
    pub fn decode(text: &str) -> Result<StreamItem, RuntimeError> {
        let parsed = serde_json::from_str::<Value>(text)
            .map_err(|e| format!("a result entry is not JSON: {e}"))
            .and_then(|value| {
                check_version(&value, "result entry")?;
                serde_json::from_value::<ResultEntry>(value)
                    .map_err(|e| format!("a result entry is malformed: {e}"))
            });
        match parsed {
            Ok(ResultEntry {
                result: WireResult::Item(item),
                ..
            }) => Ok(item),
            Ok(ResultEntry {
                result: WireResult::Error(error),
                ..
            }) => Err(error),
            Err(message) => Err(RuntimeError::new(ErrorKind::Internal, message)),
        }
    }
}

/// One runtime a worker serves, as it advertises it (what `runtime_loader::RuntimeEntry`
/// says, less where the library lies on the worker's disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuntimeAdvert {
    /// The runtime's id.
    pub id: String,
    /// Its aliases, sorted.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A name for people.
    #[serde(default)]
    pub display_name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The version of the package that provides it.
    #[serde(default)]
    pub version: String,
    /// The runtime-api version it was built against.
    #[serde(default)]
    pub api_version: String,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Capabilities,
}

impl RuntimeAdvert {
    /// The advert of a registry entry.
    pub fn of(entry: &runtime_loader::RuntimeEntry) -> Self {
        Self {
            id: entry.id.clone(),
            aliases: entry.aliases.clone(),
            display_name: entry.display_name.clone(),
            description: entry.description.clone(),
            version: entry.version.clone(),
            api_version: entry.api_version.clone(),
            capabilities: entry.capabilities,
        }
    }

    /// Whether `name` is its id or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|alias| alias == name)
    }
}

/// What a live worker advertises in `<prefix>:workers` (one hash field per worker, refreshed
/// by its heartbeat): who it is and the runtimes it runs. Readers ignore an advert past
/// `expires_ms` (its worker stopped renewing it); workers remove such adverts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerAdvert {
    /// [`FORMAT_VERSION`] of the writer.
    pub v: u32,
    /// The worker's consumer name in the group.
    pub consumer: String,
    /// Turns it runs at a time.
    #[serde(default)]
    pub concurrency: u64,
    /// The runtimes it has, sorted by id.
    #[serde(default)]
    pub runtimes: Vec<RuntimeAdvert>,
    /// When it started (Unix ms).
    #[serde(default)]
    pub started_ms: u64,
    /// Until when this advert holds (Unix ms) unless renewed.
    #[serde(default)]
    pub expires_ms: u64,
}

impl WorkerAdvert {
    /// The JSON stored for it.
    pub fn encode(&self) -> String {
        // Plain data: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an advert.
    ///
    /// # Errors
    ///
    /// A text that is not an advert, or one of another format version.
    pub fn decode(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the advert is not JSON: {e}"))?;
        check_version(&value, "worker advert")?;
        serde_json::from_value(value).map_err(|e| format!("the advert is malformed: {e}"))
    }
}

/// Whether a result ends its turn.
pub fn is_final(result: &Result<StreamItem, RuntimeError>) -> bool {
    !matches!(result, Ok(StreamItem::Delta(_)))
}

fn check_version(value: &Value, what: &str) -> Result<(), String> {
    match value.get("v").and_then(Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => Ok(()),
        Some(v) => Err(format!(
            "the {what} is in format version {v}; this build reads version {FORMAT_VERSION}: run clients and workers of the same release"
        )),
        None => Err(format!("the {what} has no format version (`v`)")),
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_api::{Delta, TurnOutput};

    #[test]
    fn results_round_trip() {
        for result in [
            Ok(StreamItem::Delta(Delta::text("hi "))),
            Ok(StreamItem::Done(TurnOutput::new("hi there"))),
            Err(RuntimeError::cancelled("stop")),
        ] {
            assert_eq!(ResultEntry::decode(&ResultEntry::encode(&result)), result);
        }
    }

    #[test]
    fn adverts_round_trip_and_answer_to_ids_and_aliases() {
        let advert = WorkerAdvert {
            v: FORMAT_VERSION,
            consumer: "w1-pid2".into(),
            concurrency: 4,
            runtimes: vec![RuntimeAdvert {
                id: "echo".into(),
                aliases: vec!["parrot".into()],
                display_name: "echo".into(),
                description: String::new(),
                version: "1.0.0".into(),
                api_version: "0.2.0".into(),
                capabilities: Capabilities::STREAMING,
            }],
            started_ms: 1,
            expires_ms: 2,
        };
        assert_eq!(WorkerAdvert::decode(&advert.encode()).unwrap(), advert);
        let runtime = &advert.runtimes[0];
        assert!(runtime.answers_to("echo") && runtime.answers_to("parrot"));
        assert!(!runtime.answers_to("ech"));
        let newer = advert.encode().replace("\"v\":1", "\"v\":2");
        assert!(
            WorkerAdvert::decode(&newer)
                .unwrap_err()
                .contains("version 2")
        );
        assert!(WorkerAdvert::decode("not json").is_err());
    }

    #[test]
    fn another_version_is_refused_with_both_versions() {
        let error = ResultEntry::decode(r#"{"v":9,"item":{"type":"done"}}"#).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Internal);
        assert!(error.message.contains("version 9"), "{}", error.message);
        let job = Job::new("echo", Value::Null, TurnRequest::new("x"));
        let text = job.encode().replace("\"v\":1", "\"v\":2");
        assert!(Job::decode(&text).unwrap_err().contains("version 2"));
        assert_eq!(Job::decode(&job.encode()).unwrap(), job);
    }
}

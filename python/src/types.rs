//! The typed Python objects: requests, outputs, deltas, usage, runtime entries and discovery
//! reports. All are immutable, with read-only attributes.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use runtime_api::{
    Delta, DeltaKind, Message, Role, ToolCall, ToolDefinition, TurnOutput, TurnRequest, Usage,
};
use runtime_loader::{
    DirReport, DiscoveryReport, Rejection, RuntimeEntry, RuntimeSource, Shadowed,
};
use serde_json::Value;

use crate::convert;

/// One turn's input: `TurnRequest(prompt, *, system=None, model=None, history=None,
/// max_tokens=None, temperature=None, stop=None, config=None, metadata=None,
/// execution_id=None, tools=None)`.
///
/// `history` is a list of `{"role": ..., "content": ...}` dicts or `(role, content)` pairs;
/// `config` and `metadata` are JSON-like values; `tools` a list of `{"name", "description",
/// "parameters"}` dicts (a JSON schema as `parameters`), for runtimes that declare tools. A plain `str` is accepted wherever a request
/// is, as the prompt.
#[pyclass(name = "TurnRequest", module = "agent_runtimes", frozen)]
#[derive(Clone)]
pub struct PyTurnRequest {
    pub inner: TurnRequest,
}

impl PyTurnRequest {
    /// A request from a prompt (`str`) or a `TurnRequest`.
    pub fn take(value: &Bound<'_, PyAny>) -> PyResult<TurnRequest> {
        if let Ok(prompt) = value.cast::<PyString>() {
            return Ok(TurnRequest::new(prompt.extract::<String>()?));
        }
        if let Ok(request) = value.cast::<PyTurnRequest>() {
            return Ok(request.get().inner.clone());
        }
        Err(PyTypeError::new_err(format!(
            "a request is a str (the prompt) or an agent_runtimes.TurnRequest, not {}",
            value.get_type().name()?
        )))
    }
}

fn message(item: &Bound<'_, PyAny>) -> PyResult<Message> {
    let (role, content): (String, String) = if let Ok(dict) = item.cast::<PyDict>() {
        let get = |key: &str| -> PyResult<String> {
            dict.get_item(key)?
                .ok_or_else(|| PyValueError::new_err(format!("a history message needs `{key}`")))?
                .extract()
        };
        (get("role")?, get("content")?)
    } else {
        item.extract().map_err(|_| {
            PyTypeError::new_err(
                "a history message is a {\"role\": ..., \"content\": ...} dict or a (role, content) pair",
            )
        })?
    };
    Ok(Message::new(Role::from(role), content))
}

fn tool(item: &Bound<'_, PyAny>) -> PyResult<ToolDefinition> {
    let value = convert::to_json(item)?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let name =
        text("name").ok_or_else(|| PyValueError::new_err("a tool is a dict with a str `name`"))?;
    let parameters = value
        .get("parameters")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"type": "object"}));
    Ok(ToolDefinition::new(
        name,
        text("description").unwrap_or_default(),
        parameters,
    ))
}

#[pymethods]
impl PyTurnRequest {
    #[new]
    #[pyo3(signature = (prompt, *, system=None, model=None, history=None, max_tokens=None,
        temperature=None, stop=None, config=None, metadata=None, execution_id=None, tools=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        prompt: String,
        system: Option<String>,
        model: Option<String>,
        history: Option<Vec<Bound<'_, PyAny>>>,
        max_tokens: Option<u32>,
        temperature: Option<f64>,
        stop: Option<Vec<String>>,
        config: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        execution_id: Option<String>,
        tools: Option<Vec<Bound<'_, PyAny>>>,
    ) -> PyResult<Self> {
        let mut request = TurnRequest::new(prompt);
        if let Some(system) = system {
            request = request.with_system(system);
        }
        if let Some(model) = model {
            request = request.with_model(model);
        }
        if let Some(history) = history {
            request = request.with_history(history.iter().map(message).collect::<PyResult<_>>()?);
        }
        if let Some(max_tokens) = max_tokens {
            request = request.with_max_tokens(max_tokens);
        }
        if let Some(temperature) = temperature {
            if !temperature.is_finite() {
                return Err(PyValueError::new_err("temperature must be a finite number"));
            }
            request = request.with_temperature(temperature);
        }
        if let Some(stop) = stop {
            request.sampling.stop = stop;
        }
        if let Some(config) = config {
            request = request.with_config(convert::to_json(config)?);
        }
        if let Some(metadata) = metadata {
            request = request.with_metadata(convert::to_json(metadata)?);
        }
        if let Some(tools) = tools {
            request = request.with_tools(tools.iter().map(tool).collect::<PyResult<_>>()?);
        }
        if let Some(execution_id) = execution_id {
            request = request.with_execution_id(execution_id);
        }
        Ok(Self { inner: request })
    }

    /// The user's prompt.
    #[getter]
    fn prompt(&self) -> &str {
        &self.inner.prompt
    }
    /// The system prompt, or `None`.
    #[getter]
    fn system(&self) -> Option<&str> {
        self.inner.system.as_deref()
    }
    /// The model asked for, or `None`.
    #[getter]
    fn model(&self) -> Option<&str> {
        self.inner.model.as_deref()
    }
    /// The conversation so far, as `(role, content)` pairs.
    #[getter]
    fn history(&self) -> Vec<(String, String)> {
        self.inner
            .history
            .iter()
            .map(|m| (m.role.as_str().to_owned(), m.content.clone()))
            .collect()
    }
    /// The token limit, or `None`.
    #[getter]
    fn max_tokens(&self) -> Option<u32> {
        self.inner.sampling.max_tokens
    }
    /// The sampling temperature, or `None`.
    #[getter]
    fn temperature(&self) -> Option<f64> {
        self.inner.sampling.temperature
    }
    /// The stop sequences.
    #[getter]
    fn stop(&self) -> Vec<String> {
        self.inner.sampling.stop.clone()
    }
    /// Per-turn configuration (JSON-like).
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        convert::to_py(py, &self.inner.config)
    }
    /// Caller metadata (JSON-like).
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        convert::to_py(py, &self.inner.metadata)
    }
    /// The tools offered, as `{"name", "description", "parameters"}` dicts.
    #[getter]
    fn tools(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let tools: Vec<Value> = self
            .inner
            .tools
            .iter()
            .map(|t| serde_json::json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        convert::to_py(py, &Value::Array(tools))
    }
    /// The execution id (empty: the loader assigns one).
    #[getter]
    fn execution_id(&self) -> &str {
        &self.inner.execution_id
    }
    fn __repr__(&self) -> String {
        format!("TurnRequest(prompt={:?})", self.inner.prompt)
    }
}

/// Token counts of a turn.
#[pyclass(name = "Usage", module = "agent_runtimes", frozen, get_all, eq)]
#[derive(Clone, PartialEq)]
pub struct PyUsage {
    /// Tokens read (prompt, history, system).
    pub input_tokens: u64,
    /// Tokens written.
    pub output_tokens: u64,
    /// Their sum, as the runtime reports it.
    pub total_tokens: u64,
    /// Input tokens served from a cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to a cache.
    pub cache_write_tokens: u64,
    /// Tokens of reasoning.
    pub reasoning_tokens: u64,
}

impl From<&Usage> for PyUsage {
    fn from(u: &Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            total_tokens: u.total_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
            reasoning_tokens: u.reasoning_tokens,
        }
    }
}

#[pymethods]
impl PyUsage {
    fn __repr__(&self) -> String {
        format!(
            "Usage(input_tokens={}, output_tokens={}, total_tokens={})",
            self.input_tokens, self.output_tokens, self.total_tokens
        )
    }
}

/// A tool call the model asked for.
#[pyclass(name = "ToolCall", module = "agent_runtimes", frozen)]
#[derive(Clone)]
pub struct PyToolCall {
    inner: ToolCall,
}

#[pymethods]
impl PyToolCall {
    /// The call's id.
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }
    /// The tool's name.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }
    /// The arguments (JSON-like).
    #[getter]
    fn arguments(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        convert::to_py(py, &self.inner.arguments)
    }
    fn __repr__(&self) -> String {
        format!(
            "ToolCall(id={:?}, name={:?})",
            self.inner.id, self.inner.name
        )
    }
}

/// What a turn produced.
#[pyclass(name = "TurnOutput", module = "agent_runtimes", frozen)]
#[derive(Clone)]
pub struct PyTurnOutput {
    inner: TurnOutput,
}

impl From<TurnOutput> for PyTurnOutput {
    fn from(inner: TurnOutput) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PyTurnOutput {
    /// The answer's text.
    #[getter]
    fn content(&self) -> &str {
        &self.inner.content
    }
    /// The tool calls the model asked for.
    #[getter]
    fn tool_calls(&self) -> Vec<PyToolCall> {
        self.inner
            .tool_calls
            .iter()
            .map(|c| PyToolCall { inner: c.clone() })
            .collect()
    }
    /// Token counts.
    #[getter]
    fn usage(&self) -> PyUsage {
        PyUsage::from(&self.inner.usage)
    }
    /// Why the turn ended: `"stop"`, `"length"`, `"tool_calls"`, `"content_filter"`,
    /// `"cancelled"`, `"error"` or the runtime's own word.
    #[getter]
    fn finish_reason(&self) -> &str {
        self.inner.finish_reason.as_str()
    }
    /// The runtime's extras (JSON-like).
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        convert::to_py(py, &self.inner.metadata)
    }
    fn __str__(&self) -> &str {
        &self.inner.content
    }
    fn __repr__(&self) -> String {
        format!(
            "TurnOutput(content={:?}, finish_reason={:?}, total_tokens={})",
            self.inner.content,
            self.inner.finish_reason.as_str(),
            self.inner.usage.total_tokens
        )
    }
}

/// One typed piece of a streamed turn.
#[pyclass(name = "Delta", module = "agent_runtimes", frozen)]
pub struct PyDelta {
    inner: Delta,
}

impl From<Delta> for PyDelta {
    fn from(inner: Delta) -> Self {
        Self { inner }
    }
}

fn kind_name(kind: DeltaKind) -> &'static str {
    match kind {
        DeltaKind::Text => "text",
        DeltaKind::ToolCall => "tool_call",
        DeltaKind::Thinking => "thinking",
        DeltaKind::Error => "error",
        DeltaKind::ToolResult => "tool_result",
        _ => "unknown",
    }
}

#[pymethods]
impl PyDelta {
    /// `"text"`, `"tool_call"`, `"thinking"`, `"error"`, `"tool_result"` or `"unknown"`.
    #[getter]
    fn kind(&self) -> &'static str {
        kind_name(self.inner.kind)
    }
    /// The piece's text.
    #[getter]
    fn content(&self) -> &str {
        &self.inner.content
    }
    /// Structured extras (JSON-like); `None` when absent.
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        convert::to_py(py, &self.inner.metadata)
    }
    fn __str__(&self) -> &str {
        &self.inner.content
    }
    fn __repr__(&self) -> String {
        format!(
            "Delta(kind={:?}, content={:?})",
            kind_name(self.inner.kind),
            self.inner.content
        )
    }
}

/// A registered runtime, as its plugin's manifest declares it (nothing is loaded to read it).
#[pyclass(name = "RuntimeInfo", module = "agent_runtimes", frozen)]
#[derive(Clone)]
pub struct PyRuntimeInfo {
    /// The id.
    #[pyo3(get)]
    pub id: String,
    /// The name for people.
    #[pyo3(get)]
    pub display_name: String,
    /// What it does.
    #[pyo3(get)]
    pub description: String,
    /// The plugin's version.
    #[pyo3(get)]
    pub version: String,
    /// The runtime-api version it was built against.
    #[pyo3(get)]
    pub api_version: String,
    /// Its aliases, sorted.
    #[pyo3(get)]
    pub aliases: Vec<String>,
    /// Its capabilities' names.
    #[pyo3(get)]
    pub capabilities: Vec<String>,
    /// The library's path, or `None` for a runtime compiled into the host.
    #[pyo3(get)]
    pub path: Option<String>,
    /// The plugin's name, or `None`.
    #[pyo3(get)]
    pub plugin_name: Option<String>,
    schema: Option<Value>,
}

impl From<&RuntimeEntry> for PyRuntimeInfo {
    fn from(e: &RuntimeEntry) -> Self {
        let (path, plugin_name) = match &e.source {
            RuntimeSource::Plugin { path, plugin_name } => {
                (Some(path.display().to_string()), Some(plugin_name.clone()))
            }
            _ => (None, None),
        };
        Self {
            id: e.id.clone(),
            display_name: e.display_name.clone(),
            description: e.description.clone(),
            version: e.version.clone(),
            api_version: e.api_version.clone(),
            aliases: e.aliases.clone(),
            capabilities: e.capabilities.names(),
            path,
            plugin_name,
            schema: e.config_schema(),
        }
    }
}

#[pymethods]
impl PyRuntimeInfo {
    /// The JSON schema of the runtime's configuration, or `None`.
    #[getter]
    fn config_schema(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.schema {
            Some(schema) => convert::to_py(py, schema),
            None => Ok(py.None()),
        }
    }
    fn __repr__(&self) -> String {
        format!("RuntimeInfo(id={:?}, version={:?})", self.id, self.version)
    }
}

/// A plugin file discovery refused, and why.
#[pyclass(name = "Rejection", module = "agent_runtimes", frozen, get_all)]
#[derive(Clone)]
pub struct PyRejection {
    /// The file as found.
    pub path: String,
    /// The runtime ids it declares, when its manifest could be read.
    pub runtime_ids: Vec<String>,
    /// The reason's kind (`"not_a_library"`, `"insecure"`, `"no_manifest"`...).
    pub kind: String,
    /// The reason, saying what to do.
    pub reason: String,
}

impl From<&Rejection> for PyRejection {
    fn from(r: &Rejection) -> Self {
        let kind = serde_json::to_value(&r.reason)
            .ok()
            .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        Self {
            path: r.path.display().to_string(),
            runtime_ids: r.runtime_ids.clone(),
            kind,
            reason: r.reason.to_string(),
        }
    }
}

#[pymethods]
impl PyRejection {
    fn __repr__(&self) -> String {
        format!("Rejection(path={:?}, reason={:?})", self.path, self.reason)
    }
}

/// A name an earlier plugin already provides: the later one is not registered under it.
#[pyclass(name = "Shadowed", module = "agent_runtimes", frozen, get_all)]
#[derive(Clone)]
pub struct PyShadowed {
    /// The name.
    pub name: String,
    /// The file whose declaration was shadowed.
    pub path: String,
    /// What keeps the name.
    pub kept: String,
}

impl From<&Shadowed> for PyShadowed {
    fn from(s: &Shadowed) -> Self {
        Self {
            name: s.name.clone(),
            path: s.path.display().to_string(),
            kept: s.kept.clone(),
        }
    }
}

#[pymethods]
impl PyShadowed {
    fn __repr__(&self) -> String {
        format!("Shadowed(name={:?}, path={:?})", self.name, self.path)
    }
}

/// A plugin folder searched.
#[pyclass(name = "DirReport", module = "agent_runtimes", frozen, get_all)]
#[derive(Clone)]
pub struct PyDirReport {
    /// The folder.
    pub path: String,
    /// Where it came from (`"argument"`, `"AGENT_RUNTIMES_PATH"`, `"user"`...).
    pub origin: String,
    /// What was found there.
    pub status: String,
}

impl From<&DirReport> for PyDirReport {
    fn from(d: &DirReport) -> Self {
        Self {
            path: d.path.display().to_string(),
            origin: d.origin.to_string(),
            status: d.status.to_string(),
        }
    }
}

#[pymethods]
impl PyDirReport {
    fn __repr__(&self) -> String {
        format!("DirReport(path={:?}, status={:?})", self.path, self.status)
    }
}

/// What a discovery pass found: folders searched, libraries registered, files refused (with
/// reasons) and names shadowed. `str(report)` is the loader's text.
#[pyclass(name = "DiscoveryReport", module = "agent_runtimes", frozen, get_all)]
pub struct PyDiscoveryReport {
    /// Every folder searched, in order.
    pub dirs: Vec<PyDirReport>,
    /// The libraries registered.
    pub registered: Vec<String>,
    /// The files refused, with reasons.
    pub rejected: Vec<PyRejection>,
    /// The names shadowed by an earlier provider.
    pub shadowed: Vec<PyShadowed>,
    /// Nothing was refused or shadowed.
    pub is_clean: bool,
    /// The loader's text of the report (what `str(report)` gives).
    pub text: String,
}

impl From<&DiscoveryReport> for PyDiscoveryReport {
    fn from(r: &DiscoveryReport) -> Self {
        Self {
            dirs: r.dirs.iter().map(PyDirReport::from).collect(),
            registered: r
                .registered
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            rejected: r.rejected.iter().map(PyRejection::from).collect(),
            shadowed: r.shadowed.iter().map(PyShadowed::from).collect(),
            is_clean: r.is_clean(),
            text: r.to_string(),
        }
    }
}

#[pymethods]
impl PyDiscoveryReport {
    fn __str__(&self) -> &str {
        &self.text
    }
    fn __repr__(&self) -> String {
        format!(
            "DiscoveryReport(registered={}, rejected={}, shadowed={})",
            self.registered.len(),
            self.rejected.len(),
            self.shadowed.len()
        )
    }
}

//! The tool loop of one turn: call the model, execute the tool calls it decided through the
//! MCP servers, feed the results back, repeat until a final answer or `max_steps`.
//!
//! The loop is one future that sends deltas into a bounded channel; [`Driven`] polls it and
//! the channel together, so the stream keeps the contract (deltas in order, then exactly one
//! final item or an error), backpressure holds, and dropping the stream drops the loop — its
//! model response and its in-flight tool calls, which rmcp cancels on the server with
//! `notifications/cancelled`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::{Stream, StreamExt as _};
use openai_wire::{arguments_text, chat};
use rmcp::model::Tool;
use runtime_api::{
    Delta, FinishReason, Message, RuntimeError, StreamItem, ToolCall, ToolDefinition, TurnOutput,
    TurnRequest, Usage, Value, json,
};
use runtime_text::clean;
use tokio::sync::mpsc;

use crate::config::{Config, TurnConfig};
use crate::error::AgentError;
use crate::model;
use crate::servers::{self, Live, Pool, ToolFailure, truncate_owned};
use crate::spec::ServerSpec;

/// What a runtime instance shares with its running turns.
#[derive(Debug)]
pub(crate) struct Inner {
    pub config: Config,
    pub client: reqwest::Client,
    pub pool: Pool,
}

/// The most bytes of a tool result shown in its delta.
pub(crate) const PREVIEW_BYTES: usize = 512;
/// Deltas buffered between the loop and the stream's reader.
const CHANNEL: usize = 64;

type Driver = Pin<Box<dyn Future<Output = Result<TurnOutput, RuntimeError>> + Send>>;

/// A stream driven by a future that sends its deltas into a channel.
pub(crate) struct Driven {
    driver: Option<Driver>,
    result: Option<Result<TurnOutput, RuntimeError>>,
    deltas: mpsc::Receiver<Delta>,
    ended: bool,
}

impl Stream for Driven {
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            if let Poll::Ready(Some(delta)) = this.deltas.poll_recv(cx) {
                return Poll::Ready(Some(Ok(StreamItem::Delta(delta))));
            }
            if let Some(driver) = this.driver.as_mut() {
                match driver.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        // The sender went with the driver: the channel now drains and closes.
                        this.driver = None;
                        this.result = Some(result);
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            this.ended = true;
            return Poll::Ready(
                this.result
                    .take()
                    .map(|result| result.map(StreamItem::Done)),
            );
        }
    }
}

/// The stream of one turn.
pub(crate) fn stream(inner: Arc<Inner>, request: TurnRequest) -> Driven {
    let (sender, deltas) = mpsc::channel(CHANNEL);
    let context = &request.context;
    let span = tracing::info_span!(
        "agent_turn",
        execution_id = %request.execution_id,
        agent_id = context.agent_id.as_deref(),
        organization_id = context.organization_id.as_deref(),
        user_id = context.user_id.as_deref(),
        session_id = context.session_id.as_deref(),
    );
    let driver: Driver = Box::pin(tracing::Instrument::instrument(
        async move { run(&inner, request, sender).await },
        span,
    ));
    Driven {
        driver: Some(driver),
        result: None,
        deltas,
        ended: false,
    }
}

/// Where a tool name the model sees leads.
#[derive(Debug, Clone)]
enum Route {
    /// A tool of the MCP server at this index of the turn's servers, by its own name.
    Mcp { server: usize, tool: String },
    /// A tool the host passed in the request: handed back to the host.
    Host,
}

/// The tools of a turn: what the model is offered, and where each name leads.
struct Tools {
    routes: HashMap<String, Route>,
    definitions: Vec<Value>,
}

/// A tool name as OpenAI-compatible servers accept it: `[a-zA-Z0-9_-]{1,64}`.
fn function_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The turn's tools: the host's (`host`), then each server's `(name, tools)`.
fn tools(servers: &[(&str, &[Tool])], host: &[ToolDefinition]) -> Tools {
    let mut routes: HashMap<String, Route> = host
        .iter()
        .map(|tool| (tool.name.clone(), Route::Host))
        .collect();
    let mut definitions = chat::tools(host);
    // A tool keeps its own name unless another server (or a host tool) has it too; then each
    // of those is `server__tool`.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, server_tools) in servers {
        for tool in server_tools.iter() {
            *seen.entry(function_name(&tool.name)).or_default() += 1;
        }
    }
    for (index, (server, server_tools)) in servers.iter().enumerate() {
        for tool in server_tools.iter() {
            let plain = function_name(&tool.name);
            let name = if seen.get(&plain).copied().unwrap_or(0) > 1 || routes.contains_key(&plain)
            {
                function_name(&format!("{server}__{}", tool.name))
            } else {
                plain
            };
            if routes.contains_key(&name) {
                tracing::warn!(%server, tool = %tool.name, "two tools share the name {name}; the second is not offered");
                continue;
            }
            routes.insert(
                name.clone(),
                Route::Mcp {
                    server: index,
                    tool: tool.name.to_string(),
                },
            );
            definitions.push(chat::tool(
                &name,
                tool.description.as_deref().unwrap_or_default(),
                Value::Object((*tool.input_schema).clone()),
            ));
        }
    }
    Tools {
        routes,
        definitions,
    }
}

/// The final output's metadata: steps, tool calls, the model, the whole thinking, `extra`.
fn output_metadata(
    steps: u32,
    tool_calls: usize,
    model: Option<&str>,
    thinking: &str,
    extra: Value,
) -> Value {
    let mut metadata = json!({ "steps": steps, "tool_calls": tool_calls });
    if let Some(model) = model {
        metadata["model"] = json!(model);
    }
    if !thinking.is_empty() {
        metadata["thinking"] = json!(thinking);
    }
    if let (Some(object), Value::Object(extra)) = (metadata.as_object_mut(), extra) {
        object.extend(extra);
    }
    metadata
}

/// The outcome of one tool call, for the model and for the stream.
struct Outcome {
    ok: bool,
    text: String,
    /// The failure's name when the call failed here (not a tool's own `isError`).
    failure: Option<&'static str>,
}

impl Outcome {
    fn failed(failure: ToolFailure) -> Self {
        Self {
            ok: false,
            failure: Some(failure.code()),
            text: failure.to_string(),
        }
    }
}

/// Runs one tool call routed to an MCP server, restarting the server first if it died (in
/// `pool`, the one it was started in).
async fn call_mcp(
    inner: &Inner,
    pool: &Pool,
    live: &Live,
    spec: &ServerSpec,
    tool: &str,
    arguments: &Value,
    timeout: std::time::Duration,
) -> Outcome {
    let arguments = match arguments {
        Value::Object(map) => map.clone(),
        Value::Null => serde_json::Map::new(),
        Value::String(text) => {
            return Outcome::failed(ToolFailure::BadArguments {
                tool: tool.to_owned(),
                reason: format!("not valid JSON: {}", truncate_owned(text.clone(), 200)),
            });
        }
        other => {
            return Outcome::failed(ToolFailure::BadArguments {
                tool: tool.to_owned(),
                reason: format!("got {other}"),
            });
        }
    };
    let restarted;
    let live = if live.peer.is_transport_closed() {
        match pool
            .restart_if_dead(&live.name, spec, inner.config.startup_timeout)
            .await
        {
            Ok(fresh) => {
                restarted = fresh;
                &restarted
            }
            Err(error) => {
                return Outcome::failed(ToolFailure::ServerDown {
                    server: live.name.clone(),
                    reason: error.to_string(),
                });
            }
        }
    } else {
        live
    };
    match servers::call_tool(live, tool, arguments, timeout).await {
        Ok(result) => match servers::result_text(&result, tool, inner.config.tool_result_max_bytes)
        {
            Ok(text) => Outcome {
                ok: result.is_error != Some(true),
                text,
                failure: None,
            },
            Err(failure) => Outcome::failed(failure),
        },
        Err(failure) => Outcome::failed(failure),
    }
}

async fn run(
    inner: &Inner,
    request: TurnRequest,
    deltas: mpsc::Sender<Delta>,
) -> Result<TurnOutput, RuntimeError> {
    let config = &inner.config;
    let turn = TurnConfig::parse(&request.config, &request.mcp_servers)
        .map_err(|problems| AgentError::InvalidTurnConfig { problems })?;
    let raised = turn.raises(config);
    if !raised.is_empty() {
        return Err(AgentError::InvalidTurnConfig { problems: raised }.into());
    }
    if !turn.mcp_servers.is_empty() && !config.request_mcp_servers {
        return Err(AgentError::RequestServersRefused {
            names: turn.mcp_servers.keys().cloned().collect(),
        }
        .into());
    }
    let taken: Vec<String> = turn
        .mcp_servers
        .keys()
        .filter(|name| config.mcp_servers.contains_key(*name))
        .cloned()
        .collect();
    if !taken.is_empty() {
        return Err(AgentError::RequestServerNameTaken { names: taken }.into());
    }
    let max_steps = turn.max_steps.unwrap_or(config.max_steps);
    let tool_timeout = turn.tool_timeout.unwrap_or(config.tool_timeout);

    // The configured servers live in the instance's pool, reused by every turn; a request's
    // own servers in a pool of this turn, stopped (their process group killed) when the turn
    // ends, however it ends.
    let turn_pool = Pool::default();
    let mut servers = inner
        .pool
        .live(&config.mcp_servers, config.startup_timeout)
        .await?;
    let configured = servers.len();
    servers.extend(
        turn_pool
            .live(&turn.mcp_servers, config.startup_timeout)
            .await?,
    );
    let server_specs: Vec<&ServerSpec> = servers
        .iter()
        .enumerate()
        .map(|(index, live)| {
            if index < configured {
                &config.mcp_servers[&live.name]
            } else {
                &turn.mcp_servers[&live.name]
            }
        })
        .collect();
    let server_pools: Vec<&Pool> = (0..servers.len())
        .map(|index| {
            if index < configured {
                &inner.pool
            } else {
                &turn_pool
            }
        })
        .collect();
    let offered: Vec<(&str, &[Tool])> = servers
        .iter()
        .map(|live| (live.name.as_str(), live.tools.as_slice()))
        .collect();
    let tools = tools(&offered, &request.tools);
    let mut messages = chat::messages(&request);
    let mut transcript: Vec<Message> = Vec::new();
    let mut usage = Usage::default();
    let mut content = String::new();
    let mut thinking = String::new();
    let mut call_index = 0usize;
    let mut tool_call_count = 0usize;
    let mut last_model = None;

    for step in 1..=max_steps {
        let lead = (!content.is_empty()).then_some("\n\n");
        let body = chat::body(
            &config.server,
            &request,
            messages.clone(),
            tools.definitions.clone(),
            true,
        );
        let limits = model::ResponseLimits {
            max_tool_calls: config.max_tool_calls_per_step,
            max_bytes: config.model_response_max_bytes,
            step,
        };
        let result =
            model::call(&inner.client, &config.server, &body, &deltas, lead, limits).await?;
        usage += result.usage;
        if result.lead_sent {
            content.push_str("\n\n");
        }
        content.push_str(&result.content);
        thinking.push_str(&result.thinking);
        if result.model.is_some() {
            last_model = result.model.clone();
        }
        if result.tool_calls.is_empty() {
            return Ok(TurnOutput::new(content.clone())
                .with_usage(usage)
                .with_finish_reason(result.finish_reason)
                .with_metadata(output_metadata(
                    step,
                    tool_call_count,
                    last_model.as_deref(),
                    &thinking,
                    Value::Null,
                )));
        }

        let host_calls: Vec<ToolCall> = result
            .tool_calls
            .iter()
            .filter(|call| matches!(tools.routes.get(&call.name), Some(Route::Host)))
            .cloned()
            .collect();
        // Each decided call, whole, before anything runs.
        for call in &result.tool_calls {
            let mut delta = Delta::tool_call(
                call_index,
                Some(&call.id),
                Some(&call.name),
                arguments_text(&call.arguments),
            );
            delta.metadata["step"] = json!(step);
            delta.metadata["handled_by"] = json!(match tools.routes.get(&call.name) {
                Some(Route::Mcp { server, .. }) => servers[*server].name.as_str(),
                Some(Route::Host) => "host",
                None => "unknown",
            });
            let _ = deltas.send(delta).await;
            call_index += 1;
        }
        tool_call_count += result.tool_calls.len();
        // Calls this runtime would run at the last step: there is no step left to read their
        // results, so the turn ends here (the calls were shown, none runs).
        if host_calls.len() < result.tool_calls.len() && step == max_steps {
            return Err(AgentError::MaxSteps { max_steps, usage }.into());
        }
        let mut assistant = Message::assistant_tool_calls(result.tool_calls.clone());
        assistant.content = result.content.clone();
        messages.push(chat::message_json(&assistant));
        transcript.push(assistant);

        // The calls this runtime answers, concurrently; each result is streamed as it comes.
        let runs = result
            .tool_calls
            .iter()
            .filter(|call| !matches!(tools.routes.get(&call.name), Some(Route::Host)))
            .map(|call| {
                let deltas = deltas.clone();
                let tools = &tools;
                let servers = &servers;
                let server_specs = &server_specs;
                let server_pools = &server_pools;
                async move {
                    let started = Instant::now();
                    let outcome = match tools.routes.get(&call.name) {
                        Some(Route::Mcp { server, tool }) => {
                            call_mcp(
                                inner,
                                server_pools[*server],
                                &servers[*server],
                                server_specs[*server],
                                tool,
                                &call.arguments,
                                tool_timeout,
                            )
                            .await
                        }
                        _ => {
                            let mut available: Vec<&str> =
                                tools.routes.keys().map(String::as_str).collect();
                            available.sort_unstable();
                            Outcome::failed(ToolFailure::UnknownTool {
                                tool: clean(&truncate_owned(call.name.clone(), 64)).into_owned(),
                                available: if available.is_empty() {
                                    "(none)".to_owned()
                                } else {
                                    available.join(", ")
                                },
                            })
                        }
                    };
                    let preview = truncate_owned(outcome.text.clone(), PREVIEW_BYTES);
                    let mut delta = Delta::tool_result(&call.id, &call.name, outcome.ok, preview);
                    delta.metadata["step"] = json!(step);
                    if let Some(failure) = outcome.failure {
                        delta.metadata["error"] = json!(failure);
                    }
                    delta.metadata["duration_ms"] =
                        json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                    let _ = deltas.send(delta).await;
                    tracing::debug!(tool = %call.name, ok = outcome.ok, "tool call finished");
                    (call.id.clone(), outcome)
                }
            })
            .collect::<Vec<_>>();
        // At most `max_concurrent_tool_calls` at a time, results in the calls' order.
        let outcomes: Vec<(String, Outcome)> = futures::stream::iter(runs)
            .buffered(config.max_concurrent_tool_calls.max(1))
            .collect()
            .await;
        for (id, outcome) in outcomes {
            messages.push(json!({ "role": "tool", "tool_call_id": id, "content": outcome.text }));
            transcript.push(Message::tool_result(id, outcome.text));
        }

        if !host_calls.is_empty() {
            // The host runs these; it continues the conversation with `transcript` (this
            // turn's assistant messages and the results of the calls run here) plus its own
            // results.
            let transcript = serde_json::to_value(&transcript).unwrap_or(Value::Null);
            return Ok(TurnOutput::new(content.clone())
                .with_tool_calls(host_calls)
                .with_usage(usage)
                .with_finish_reason(FinishReason::ToolCalls)
                .with_metadata(output_metadata(
                    step,
                    tool_call_count,
                    last_model.as_deref(),
                    &thinking,
                    json!({ "transcript": transcript }),
                )));
        }
    }
    Err(AgentError::MaxSteps { max_steps, usage }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        Tool::new(
            name.to_owned(),
            "a tool",
            json!({ "type": "object" })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
    }

    fn names(tools: &Tools) -> Vec<String> {
        let mut names: Vec<String> = tools.routes.keys().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn tools_keep_their_names_unless_they_clash() {
        let a = [tool("echo"), tool("read.file"), tool("only_a")];
        let b = [tool("echo"), tool("weather")];
        let host = [ToolDefinition::new("weather", "host's", Value::Null)];
        let tools = tools(&[("a", &a), ("b", &b)], &host);
        assert_eq!(
            names(&tools),
            [
                "a__echo",
                "b__echo",
                "b__weather",
                "only_a",
                "read_file",
                "weather"
            ]
        );
        assert!(matches!(tools.routes["weather"], Route::Host));
        assert!(
            matches!(&tools.routes["read_file"], Route::Mcp { server: 0, tool } if tool == "read.file")
        );
        assert!(
            matches!(&tools.routes["b__weather"], Route::Mcp { server: 1, tool } if tool == "weather")
        );
        assert_eq!(tools.definitions.len(), 6);
        // A host tool without a schema is offered with the empty object schema.
        assert_eq!(
            tools.definitions[0]["function"]["parameters"]["type"],
            "object"
        );
    }

    #[test]
    fn function_names_are_what_openai_accepts() {
        assert_eq!(function_name("a.b/c d"), "a_b_c_d");
        assert_eq!(function_name(""), "_");
        assert_eq!(function_name(&"x".repeat(100)).len(), 64);
    }
}

//! The pieces of the request and stream contract this runtime needs from runtime-api, in one
//! place: the request's MCP servers and the tool-result delta.

use runtime_api::{Delta, DeltaKind, TurnRequest, Value, json};

/// The MCP servers a request names (`null` when none). Until `TurnRequest.mcp_servers`
/// exists, a request names them under `mcp_servers` in its per-turn `config` (which
/// [`crate::config::TurnConfig`] reads), so there is nothing more here.
pub(crate) fn request_mcp_servers(_request: &TurnRequest) -> Value {
    Value::Null
}

/// A tool's result as a delta: metadata `tool_call_id`, `name`, `ok`; the preview as content.
pub(crate) fn tool_result(call_id: &str, name: &str, ok: bool, preview: String) -> Delta {
    Delta::new(DeltaKind::Unknown, preview).with_metadata(json!({
        "type": "tool_result",
        "tool_call_id": call_id,
        "name": name,
        "ok": ok,
    }))
}

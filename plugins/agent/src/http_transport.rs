//! Streamable HTTP MCP servers (`{"url": ...}`), through rmcp's reqwest transport.
//!
//! rmcp's client is built without a TLS crypto provider of its own; the `ring` provider (the
//! one the model client's reqwest already uses) is installed as this plugin's process default
//! the first time an HTTP server is connected.

use std::collections::{BTreeMap, HashMap};
use std::sync::Once;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::ServiceExt as _;
use rmcp::model::Tool;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Connects to a streamable HTTP server and lists its tools.
///
/// # Errors
///
/// What failed, as text for the caller's start error.
pub(crate) async fn connect(
    url: &str,
    headers: &BTreeMap<String, String>,
) -> Result<(RunningService<RoleClient, ()>, Vec<Tool>), String> {
    install_crypto_provider();
    let mut custom = HashMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header `{name}` is not valid"))?;
        value.set_sensitive(true);
        custom.insert(name, value);
    }
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).custom_headers(custom);
    let transport = StreamableHttpClientTransport::from_config(config);
    let service = ().serve(transport).await.map_err(|error| error.to_string())?;
    let tools = service
        .list_all_tools()
        .await
        .map_err(|error| format!("listing its tools failed: {error}"))?;
    tracing::info!(%url, tools = tools.len(), "the MCP server is ready");
    Ok((service, tools))
}

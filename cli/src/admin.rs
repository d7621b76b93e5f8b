//! Commands that ask a running `runtimes serve` to change its state: `clear-failed`.

use std::time::Duration;

use clap::Args;
use runtime_text::escape::clean;

use crate::failure::Failure;
use crate::style::Style;

/// What `runtimes clear-failed` takes.
#[derive(Debug, Args)]
pub struct ClearFailedArgs {
    /// The runtime's id or alias.
    name: String,
    /// The server's base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8700")]
    server: String,
    /// The environment variable holding the server's API key (the endpoint needs one).
    #[arg(long, value_name = "NAME", default_value = "RUNTIMES_API_KEY")]
    api_key_env: String,
}

/// How long the server may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The largest answer read from the server.
const MOST_ANSWER_BYTES: usize = 64 * 1024;

/// `runtimes clear-failed NAME`: `POST /v1/runtimes/NAME/clear-failed` on a running server.
pub async fn clear_failed(args: ClearFailedArgs, style: &Style) -> Result<(), Failure> {
    let key = std::env::var(&args.api_key_env).map_err(|_| {
        Failure::Usage(format!(
            "the environment variable `{}` holds no API key: set it to the key the server was \
             started with (`serve --api-key-env`), or name another with --api-key-env",
            clean(&args.api_key_env)
        ))
    })?;
    let base = args.server.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Failure::Usage(format!(
            "--server must be an http:// or https:// URL, not `{}`",
            clean(base)
        )));
    }
    let name: String = args
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    if name != args.name || name.is_empty() {
        return Err(Failure::Usage(format!(
            "`{}` is not a runtime id or alias (letters, digits, `.`, `_`, `-`)",
            clean(&args.name)
        )));
    }
    let url = format!("{base}/v1/runtimes/{name}/clear-failed");
    let client = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .map_err(|e| Failure::Other(e.into()))?;
    let response = client
        .post(&url)
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| {
            Failure::Other(anyhow::anyhow!(
                "could not reach the server at {}: {e}",
                clean(base)
            ))
        })?;
    let status = response.status();
    let mut body = response
        .bytes()
        .await
        .map_err(|e| Failure::Other(e.into()))?;
    body.truncate(MOST_ANSWER_BYTES);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status.is_success() {
        if answer["was_failed"].as_bool() == Some(true) {
            println!(
                "{}",
                style.ok(&format!("cleared the failed mark of `{name}`"))
            );
        } else {
            println!("`{name}` was not marked failed");
        }
        return Ok(());
    }
    let message = answer["error"]["message"]
        .as_str()
        .map_or_else(|| format!("status {status}"), |m| clean(m).into_owned());
    match status.as_u16() {
        404 => Err(Failure::Usage(message)),
        _ => Err(Failure::Other(anyhow::anyhow!(
            "the server refused: {message}"
        ))),
    }
}

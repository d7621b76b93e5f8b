//! The endpoints, bearer authentication, the concurrency limit, and each chat completion
//! from request to response.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

use crate::backend::{Backend, LookupError, Running, TurnHandle, TurnItems};
use crate::config::ApiKey;
use crate::error::ApiError;
use crate::limits::ServeLimits;
use crate::metrics::{self, Outcome};
use crate::sse::{self, ChunkContext};
use crate::translate;
use crate::wire::Model;

/// The response header that carries a turn's execution id.
pub const EXECUTION_ID: HeaderName = HeaderName::from_static("x-execution-id");

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Where turns run: this process's plugins, or a queue's workers.
    pub handles: Backend,
    /// The key clients must send, if one is required.
    pub api_key: Option<ApiKey>,
    /// Permits for running turns: `limits.max_concurrent` of them.
    pub turns: Arc<Semaphore>,
    /// Sizes, counts and time bounds.
    pub limits: ServeLimits,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Unix seconds when the server started.
    pub started: u64,
    /// Set when the grace period is over: every running turn is then dropped (which cancels
    /// it inside its plugin).
    pub closing: tokio::sync::watch::Receiver<bool>,
}

type Shared = Arc<AppState>;

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AppState {
    /// The state of a server starting now, with `limits.max_concurrent` permits (at most
    /// tokio's `Semaphore::MAX_PERMITS`, which only a 32-bit target can reach).
    pub fn new(
        handles: Backend,
        api_key: Option<ApiKey>,
        mut limits: ServeLimits,
        metrics: PrometheusHandle,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let most = u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX);
        limits.max_concurrent = limits.max_concurrent.min(most);
        Self {
            handles,
            api_key,
            turns: Arc::new(Semaphore::new(limits.max_concurrent as usize)),
            limits,
            metrics,
            started: unix_now(),
            closing,
        }
    }

    /// How many turns hold a permit now.
    pub fn running(&self) -> usize {
        (self.limits.max_concurrent as usize).saturating_sub(self.turns.available_permits())
    }

    /// Resolves when the grace period is over.
    fn closed(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let mut closing = self.closing.clone();
        async move {
            let _ = closing.wait_for(|closed| *closed).await;
        }
    }

    /// Every runtime id and alias, sorted.
    async fn model_names(&self) -> Result<Vec<String>, ApiError> {
        let offered = self.handles.offered().await.map_err(unavailable)?;
        let mut names: Vec<String> = offered.iter().flat_map(|o| o.names().cloned()).collect();
        names.sort();
        Ok(names)
    }

    /// The handle of the runtime a request names (from [`Backend::get`], where `--config`,
    /// `--isolate` and `--redis` apply), or the error a client gets.
    async fn handle_for(&self, runtime: &str, model: &str) -> Result<TurnHandle, ApiError> {
        match self.handles.get(runtime).await {
            Ok(handle) => Ok(handle),
            Err(LookupError::NotFound) => Err(ApiError::UnknownModel {
                model: model.to_owned(),
                available: self.model_names().await?,
            }),
            Err(LookupError::NotLoaded(message)) => Err(ApiError::RuntimeNotLoaded { message }),
            Err(LookupError::Unavailable(error)) => Err(unavailable(error)),
        }
    }
}

/// The backend could not be asked (Redis out of reach): a 503 with the reason.
fn unavailable(error: runtime_api::RuntimeError) -> ApiError {
    ApiError::Runtime {
        runtime: "queue".to_owned(),
        error,
    }
}

/// Answers a failed request (and counts it).
fn failed(error: ApiError) -> Response {
    metrics::error(&error.metric_kind());
    error.into_response()
}

/// The application: every endpoint, authentication, limits.
pub fn router(state: Shared) -> Router {
    let authenticated = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{*model}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/runtimes", get(runtimes))
        .route("/v1/runtimes/{name}/clear-failed", post(clear_failed))
        .route("/v1/runtimes/reload", post(reload))
        .route("/metrics", get(render_metrics))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(authenticated)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            failed(ApiError::Runtime {
                runtime: "server".to_owned(),
                error: runtime_api::RuntimeError::internal("the server failed on this request"),
            })
        }))
        .with_state(state)
}

async fn auth(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| {
                v.strip_prefix(b"Bearer ")
                    .or_else(|| v.strip_prefix(b"bearer "))
            });
        let valid = given.is_some_and(|key| expected.matches(key));
        if !valid {
            return failed(ApiError::Unauthorized);
        }
    }
    next.run(request).await
}

async fn healthz(State(state): State<Shared>) -> Response {
    let in_flight = state.running();
    let body = match &state.handles {
        // A count only: which runtimes, and why, are for authenticated `/v1/runtimes`.
        Backend::Local(_) => json!({
            "status": "ok",
            "runtimes": state.handles.offered().await.map_or(0, |o| o.len()),
            "failed_runtimes": state.handles.failed_ids().len(),
            "turns_in_flight": in_flight,
        }),
        // The front is up whatever Redis does; `queue` says whether turns can run.
        Backend::Queue(_) => {
            let offered =
                tokio::time::timeout(state.limits.health_wait, state.handles.offered()).await;
            let (queue, runtimes) = match offered {
                Ok(Ok(offered)) => ("ok", offered.len()),
                _ => ("unreachable", 0),
            };
            json!({
                "status": "ok",
                "backend": "queue",
                "queue": queue,
                "runtimes": runtimes,
                "turns_in_flight": in_flight,
            })
        }
    };
    axum::Json(body).into_response()
}

async fn models(State(state): State<Shared>) -> Response {
    let names = match state.model_names().await {
        Ok(names) => names,
        Err(error) => return failed(error),
    };
    let data: Vec<Model> = names
        .into_iter()
        .map(|id| Model {
            id,
            object: "model",
            created: state.started,
            owned_by: "agent-runtimes",
        })
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

async fn model(State(state): State<Shared>, Path(model): Path<String>) -> Response {
    let (runtime, _) = translate::split_model(&model);
    let offered = match state.handles.offered().await {
        Ok(offered) => offered,
        Err(error) => return failed(unavailable(error)),
    };
    if !offered.iter().any(|o| o.names().any(|n| n == runtime)) {
        let mut available: Vec<String> = offered.iter().flat_map(|o| o.names().cloned()).collect();
        available.sort();
        return failed(ApiError::UnknownModel { model, available });
    }
    axum::Json(Model {
        id: model,
        object: "model",
        created: state.started,
        owned_by: "agent-runtimes",
    })
    .into_response()
}

async fn runtimes(State(state): State<Shared>) -> Response {
    match state.handles.describe_runtimes().await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => failed(unavailable(error)),
    }
}

/// Clears a runtime's failed mark (`POST /v1/runtimes/{name}/clear-failed`); only on a
/// server with an API key, since it lets a crashing plugin run again.
async fn clear_failed(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    if state.api_key.is_none() {
        return failed(ApiError::AdminNeedsKey);
    }
    match state.handles.clear_failed(&name) {
        Ok(was_failed) => {
            tracing::info!(runtime = %name.escape_debug(), was_failed, "failed mark cleared by a client");
            axum::Json(json!({ "id": name, "was_failed": was_failed })).into_response()
        }
        Err(Some(why)) => failed(ApiError::NotSupported {
            message: why.to_owned(),
        }),
        Err(None) => match state.model_names().await {
            Ok(available) => failed(ApiError::UnknownModel {
                model: name,
                available,
            }),
            Err(error) => failed(error),
        },
    }
}

/// Discovers the plugins again (`POST /v1/runtimes/reload`): upgraded files serve new turns;
/// only on a server with an API key.
async fn reload(State(state): State<Shared>) -> Response {
    if state.api_key.is_none() {
        return failed(ApiError::AdminNeedsKey);
    }
    match state.handles.reload().await {
        Some(outcome) => axum::Json(reload_summary(&outcome)).into_response(),
        None => failed(ApiError::NotSupported {
            message: "this server runs turns on a queue's workers: reload the workers (SIGHUP to `runtimes worker`)".to_owned(),
        }),
    }
}

/// What a reload changed, as JSON.
fn reload_summary(outcome: &runtime_loader::Rediscovered) -> serde_json::Value {
    json!({
        "upgraded": outcome.upgraded,
        "added": outcome.added,
        "removed": outcome.removed,
        "restart_needed": outcome.restart_needed.iter().map(|r| &r.id).collect::<Vec<_>>(),
    })
}

async fn render_metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    failed(ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().escape_debug().to_string(),
    })
}

async fn method_not_allowed() -> Response {
    failed(ApiError::MethodNotAllowed)
}

/// The request's whole body: at most `max_body_bytes`, all of it within `body_timeout` from
/// now (one deadline for the whole body, not one per read).
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let limit = state.limits.max_body_bytes;
    let body = Limited::new(request.into_body(), limit);
    match tokio::time::timeout(state.limits.body_timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Ok(Err(error)) => Err(ApiError::InvalidRequest {
            param: None,
            message: format!("the request body could not be read: {error}"),
        }),
        Err(_) => Err(ApiError::BodyTimeout {
            timeout_secs: state.limits.body_timeout.as_secs(),
        }),
    }
}

async fn chat(State(state): State<Shared>, request: Request) -> Response {
    let mut execution_id = None;
    let body = read_body(&state, request).await;
    match chat_turn(&state, body, &mut execution_id).await {
        Ok(response) => response,
        Err(error) => {
            metrics::error(&error.metric_kind());
            // A server-side failure is logged with its request id when it is answered.
            if !error.status().is_server_error() {
                tracing::debug!(
                    "chat completion refused: {}",
                    error.to_string().escape_debug()
                );
            }
            let mut response = error.into_response();
            if let Some(id) = execution_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                response.headers_mut().insert(EXECUTION_ID, id);
            }
            response
        }
    }
}

async fn chat_turn(
    state: &AppState,
    body: Result<Bytes, ApiError>,
    execution_id_out: &mut Option<String>,
) -> Result<Response, ApiError> {
    let body = body?;
    let request = translate::parse(&body)?;
    let model = request.model.clone();
    let (runtime, inner_model) = translate::split_model(&model);
    // The permit first: a turn beyond the limit costs no plugin load, factory or lookup.
    let permit =
        Arc::clone(&state.turns)
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded {
                max_concurrent: state.limits.max_concurrent as usize,
            })?;
    let handle = state.handle_for(runtime, &model).await?;
    let execution_id = handle.new_execution_id(state.started);
    let (turn, options) = translate::to_turn(request, inner_model, &execution_id)?;
    *execution_id_out = Some(execution_id.clone());
    let mut running = Running::start(handle.id(), options.stream, &execution_id, permit);
    let id = format!("chatcmpl-{execution_id}");
    // Execution ids are ASCII (`serve-<hex>-<pid>-<n>`), so always a valid header value.
    let header_value = HeaderValue::from_str(&execution_id).ok();
    let runtime_id = handle.id().to_owned();
    let fail = |error| ApiError::Runtime {
        runtime: runtime_id.clone(),
        error,
    };

    if !options.stream {
        let turn = handle.run(turn);
        let closed = state.closed();
        let result = tokio::select! {
            result = turn => result,
            () = closed => Err(runtime_api::RuntimeError::unavailable(
                "the server is shutting down: the turn was cancelled",
            )),
        };
        return match result {
            Ok(output) => {
                running.finish(Outcome::Ok);
                let body = translate::completion(output, id, state.started_now(), model);
                Ok(with_execution_id(axum::Json(body), header_value))
            }
            Err(error) => {
                running.finish(Outcome::Error);
                Err(fail(error))
            }
        };
    }

    // A runtime that does not stream answers in one chunk: OpenAI clients ask for streams
    // whatever the model behind them does.
    let items: TurnItems = handle.stream(turn);
    // When the grace period is over the stream stops with `unavailable` (as a turn that is
    // not streamed), and dropping it cancels the turn.
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed = {
        let (cut, closed) = (Arc::clone(&cut), state.closed());
        async move {
            closed.await;
            cut.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let shutdown_error =
        futures::stream::once(async move { cut.load(std::sync::atomic::Ordering::SeqCst) })
            .filter_map(|cut| async move {
                cut.then(|| {
                    Err(runtime_api::RuntimeError::unavailable(
                        "the server is shutting down: the turn was cancelled",
                    ))
                })
            });
    let mut items: TurnItems = Box::pin(items.take_until(closed).chain(shutdown_error));
    // An error before the first chunk is answered with its status code.
    let first = match items.next().await {
        Some(Ok(item)) => item,
        Some(Err(error)) => {
            running.finish(Outcome::Error);
            return Err(fail(error));
        }
        None => {
            running.finish(Outcome::Error);
            return Err(fail(runtime_api::RuntimeError::internal(
                "the runtime's stream ended without a final result",
            )));
        }
    };
    let context = ChunkContext {
        id,
        created: state.started_now(),
        model,
        runtime: runtime_id.clone(),
        include_usage: options.include_usage,
    };
    let events = sse::events(first, items, context, running);
    let sse = Sse::new(events).keep_alive(KeepAlive::default());
    Ok(with_execution_id(sse, header_value))
}

fn with_execution_id(response: impl IntoResponse, id: Option<HeaderValue>) -> Response {
    let mut response = response.into_response();
    if let Some(id) = id {
        response.headers_mut().insert(EXECUTION_ID, id);
    }
    response
}

impl AppState {
    /// Unix seconds now.
    fn started_now(&self) -> u64 {
        unix_now()
    }
}

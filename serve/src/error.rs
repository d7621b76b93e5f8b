//! The errors the server answers with, in OpenAI's JSON error shape, and the status code of
//! each runtime error kind.
//!
//! | runtime error kind | status | `type` |
//! |---|---|---|
//! | `invalid_request`, `unsupported` | 400 | `invalid_request_error` |
//! | `rate_limited` | 429 | `rate_limit_error` |
//! | `authentication` (the runtime's backend refused its credentials) | 502 | `upstream_error` |
//! | `unavailable`, `cancelled` | 503 | `server_error` |
//! | `timeout` | 504 | `timeout_error` |
//! | `invalid_config`, `panicked`, `internal`, any other | 500 | `server_error` |
//!
//! The `code` of a runtime error is its kind's name. Every error's status, `type` and `code`
//! are declared together, once: the server's own errors in `ApiError::answer`, a runtime
//! error's by its kind in `runtime_answer` (this table). The errors metric counts each
//! failed request under its `code` ([`ApiError::metric_kind`]).
//!
//! A 5xx tells the client only a generic message with a request id (also in the
//! `x-request-id` header); the detail goes to the server's log under that id
//! ([`ApiError::public_body`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runtime_api::{ErrorKind, RuntimeError};

use crate::wire::{ErrorBody, ErrorDetail};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No or wrong bearer token.
    #[error(
        "missing or incorrect API key: send `Authorization: Bearer <key>` with the key the server was started with"
    )]
    Unauthorized,
    /// The model names no runtime.
    #[error("the model `{model}` does not exist: available models are {}", available.join(", "))]
    UnknownModel {
        /// What the client asked for.
        model: String,
        /// Every runtime id and alias.
        available: Vec<String>,
    },
    /// A runtime that is installed could not be loaded or created.
    #[error("{message}")]
    RuntimeNotLoaded {
        /// Why, from the loader.
        message: String,
    },
    /// The body is not valid JSON, or a field is missing or wrong.
    #[error("{message}")]
    InvalidRequest {
        /// The field at fault (`messages[1].role`), if one is.
        param: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the limit.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The client did not send its whole body within the deadline.
    #[error("the request body did not arrive within {timeout_secs} s")]
    BodyTimeout {
        /// The deadline, in seconds.
        timeout_secs: u64,
    },
    /// Too many turns are running.
    #[error("the server is running its maximum of {max_concurrent} concurrent turns: retry later")]
    Overloaded {
        /// `--max-concurrent`.
        max_concurrent: usize,
    },
    /// The turn failed.
    #[error("{}", error.message)]
    Runtime {
        /// The runtime's id.
        runtime: String,
        /// Its error.
        error: RuntimeError,
    },
    /// No such endpoint.
    #[error(
        "no endpoint `{method} {path}`: see GET /v1/models, POST /v1/chat/completions, GET /v1/runtimes, POST /v1/runtimes/{{name}}/clear-failed, GET /healthz, GET /metrics"
    )]
    NotFound {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// The endpoint exists with another method.
    #[error("method not allowed for this endpoint")]
    MethodNotAllowed,
    /// An endpoint that changes the server, on a server started without an API key.
    #[error(
        "this endpoint changes the server and needs an API key: start the server with --api-key-env"
    )]
    AdminNeedsKey,
    /// What the request asks of the server, this backend cannot do.
    #[error("{message}")]
    NotSupported {
        /// Why.
        message: String,
    },
}

impl ApiError {
    /// A 400 naming a field.
    pub fn field(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// How this error is answered: its HTTP status, OpenAI's error `type` and the `code`,
    /// declared together, once per error (a runtime error's from its kind: see
    /// [`runtime_answer`]).
    fn answer(&self) -> Answer<'_> {
        use StatusCode as S;
        let (status, kind, code) = match self {
            ApiError::Unauthorized => (S::UNAUTHORIZED, "authentication_error", "invalid_api_key"),
            ApiError::UnknownModel { .. } => {
                (S::NOT_FOUND, "invalid_request_error", "model_not_found")
            }
            ApiError::RuntimeNotLoaded { .. } => (
                S::INTERNAL_SERVER_ERROR,
                "server_error",
                "runtime_not_loaded",
            ),
            ApiError::InvalidRequest { .. } => {
                (S::BAD_REQUEST, "invalid_request_error", "invalid_value")
            }
            ApiError::BodyTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            ApiError::BodyTimeout { .. } => (
                S::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_body_timeout",
            ),
            ApiError::Overloaded { .. } => (
                S::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "too_many_concurrent_requests",
            ),
            ApiError::NotFound { .. } => (S::NOT_FOUND, "not_found_error", "unknown_url"),
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
            ),
            ApiError::AdminNeedsKey => (S::FORBIDDEN, "permission_error", "admin_needs_api_key"),
            ApiError::NotSupported { .. } => {
                (S::CONFLICT, "invalid_request_error", "not_supported")
            }
            ApiError::Runtime { error, .. } => {
                let (status, kind) = runtime_answer(&error.kind);
                (status, kind, error.kind.as_str())
            }
        };
        Answer { status, kind, code }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.answer().status
    }

    /// OpenAI's error `type`.
    pub fn kind(&self) -> &'static str {
        self.answer().kind
    }

    /// The field at fault.
    pub fn param(&self) -> Option<String> {
        match self {
            ApiError::UnknownModel { .. } => Some("model".to_owned()),
            ApiError::InvalidRequest { param, .. } => param.clone(),
            _ => None,
        }
    }

    /// A machine-readable code.
    pub fn code(&self) -> Option<String> {
        Some(self.answer().code.to_owned())
    }

    /// The label for the errors metric.
    pub fn metric_kind(&self) -> String {
        match self {
            ApiError::Runtime { error, .. } => error.kind.as_str().to_owned(),
            other => other.code().unwrap_or_default(),
        }
    }

    /// The JSON body, with the whole message (what the server's log gets).
    pub fn body(&self) -> ErrorBody<'static> {
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        }
    }

    /// What a client is told, and the request id when there is one. A client's own mistake
    /// (a 4xx) gets the whole message; a server-side failure (a 5xx) gets a generic message
    /// with a request id, while the detail (plugin paths, a worker's stderr tail, a Redis
    /// address) goes to the server's log under that id.
    pub fn public_body(&self) -> (ErrorBody<'static>, Option<String>) {
        let mut body = self.body();
        if !self.status().is_server_error() {
            return (body, None);
        }
        let id = request_id();
        tracing::error!(
            request_id = %id,
            status = self.status().as_u16(),
            code = self.code().unwrap_or_default(),
            "request failed: {}",
            self.to_string().escape_debug()
        );
        let generic = match self.answer().status {
            StatusCode::BAD_GATEWAY => "the runtime's backend refused the runtime's credentials",
            StatusCode::SERVICE_UNAVAILABLE => match self {
                ApiError::Runtime { error, .. } if error.kind == ErrorKind::Cancelled => {
                    "the turn was cancelled"
                }
                _ => "the runtime is unavailable now; retry later",
            },
            StatusCode::GATEWAY_TIMEOUT => "the turn did not finish in time",
            _ => "the server could not complete this request",
        };
        body.error.message =
            format!("{generic} (request id {id}; the details are in the server's log)");
        (body, Some(id))
    }
}

/// A request id for the log and the client: unique within the process (a counter) and,
/// with the start time in it, across restarts.
fn request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("req-{start:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The response header that carries a failed request's id.
pub const REQUEST_ID: &str = "x-request-id";

/// How an error is answered.
struct Answer<'a> {
    /// The HTTP status.
    status: StatusCode,
    /// OpenAI's error `type`.
    kind: &'static str,
    /// The machine-readable `code`.
    code: &'a str,
}

/// The status and OpenAI error `type` of a runtime error kind (the module's table).
fn runtime_answer(kind: &ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::Unsupported => {
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        }
        ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        ErrorKind::Authentication => (StatusCode::BAD_GATEWAY, "upstream_error"),
        ErrorKind::Unavailable | ErrorKind::Cancelled => {
            (StatusCode::SERVICE_UNAVAILABLE, "server_error")
        }
        ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (body, id) = self.public_body();
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(id) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            headers.insert(REQUEST_ID, id);
        }
        match &self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Overloaded { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Runtime { error, .. } if error.retriable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_kind_has_its_status() {
        let cases = [
            (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
            (ErrorKind::Unsupported, 400, "invalid_request_error"),
            (ErrorKind::RateLimited, 429, "rate_limit_error"),
            (ErrorKind::Authentication, 502, "upstream_error"),
            (ErrorKind::Unavailable, 503, "server_error"),
            (ErrorKind::Cancelled, 503, "server_error"),
            (ErrorKind::Timeout, 504, "timeout_error"),
            (ErrorKind::InvalidConfig, 500, "server_error"),
            (ErrorKind::Panicked, 500, "server_error"),
            (ErrorKind::Internal, 500, "server_error"),
            (ErrorKind::Other("new_kind".into()), 500, "server_error"),
        ];
        for (kind, status, kind_type) in cases {
            let error = ApiError::Runtime {
                runtime: "echo".to_owned(),
                error: RuntimeError::new(kind.clone(), "failed"),
            };
            assert_eq!(error.status().as_u16(), status, "{kind}");
            assert_eq!(error.kind(), kind_type, "{kind}");
            assert_eq!(error.code().as_deref(), Some(kind.as_str()), "{kind}");
        }
    }

    #[test]
    fn every_server_error_has_its_status_type_and_code() {
        let cases = [
            (
                ApiError::Unauthorized,
                401,
                "authentication_error",
                "invalid_api_key",
            ),
            (
                ApiError::UnknownModel {
                    model: "m".to_owned(),
                    available: vec![],
                },
                404,
                "invalid_request_error",
                "model_not_found",
            ),
            (
                ApiError::RuntimeNotLoaded {
                    message: "x".to_owned(),
                },
                500,
                "server_error",
                "runtime_not_loaded",
            ),
            (
                ApiError::field("model", "x"),
                400,
                "invalid_request_error",
                "invalid_value",
            ),
            (
                ApiError::BodyTooLarge { limit: 1 },
                413,
                "invalid_request_error",
                "request_too_large",
            ),
            (
                ApiError::Overloaded { max_concurrent: 1 },
                429,
                "rate_limit_error",
                "too_many_concurrent_requests",
            ),
            (
                ApiError::NotFound {
                    method: "GET".to_owned(),
                    path: "/".to_owned(),
                },
                404,
                "not_found_error",
                "unknown_url",
            ),
            (
                ApiError::MethodNotAllowed,
                405,
                "invalid_request_error",
                "method_not_allowed",
            ),
        ];
        for (error, status, kind, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.code().as_deref(), Some(code), "{error}");
            assert_eq!(error.metric_kind(), code, "{error}");
        }
    }

    #[test]
    fn body_has_openai_shape() {
        let body =
            serde_json::to_value(ApiError::field("messages[0].role", "bad role").body()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "messages[0].role");
        assert_eq!(body["error"]["code"], "invalid_value");
        assert_eq!(body["error"]["message"], "bad role");
    }
}

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
//! The `code` of a runtime error is its kind's name.

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
        "no endpoint `{method} {path}`: see GET /v1/models, POST /v1/chat/completions, GET /v1/runtimes, GET /healthz, GET /metrics"
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
}

impl ApiError {
    /// A 400 naming a field.
    pub fn field(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::UnknownModel { .. } | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::RuntimeNotLoaded { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Runtime { error, .. } => runtime_status(&error.kind),
        }
    }

    /// OpenAI's error `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "authentication_error",
            ApiError::UnknownModel { .. }
            | ApiError::InvalidRequest { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::MethodNotAllowed => "invalid_request_error",
            ApiError::NotFound { .. } => "not_found_error",
            ApiError::Overloaded { .. } => "rate_limit_error",
            ApiError::RuntimeNotLoaded { .. } => "server_error",
            ApiError::Runtime { error, .. } => runtime_type(&error.kind),
        }
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
        let code = match self {
            ApiError::Unauthorized => "invalid_api_key",
            ApiError::UnknownModel { .. } => "model_not_found",
            ApiError::RuntimeNotLoaded { .. } => "runtime_not_loaded",
            ApiError::InvalidRequest { .. } => "invalid_value",
            ApiError::BodyTooLarge { .. } => "request_too_large",
            ApiError::Overloaded { .. } => "too_many_concurrent_requests",
            ApiError::NotFound { .. } => "unknown_url",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Runtime { error, .. } => error.kind.as_str(),
        };
        Some(code.to_owned())
    }

    /// The label for the errors metric.
    pub fn metric_kind(&self) -> String {
        match self {
            ApiError::Runtime { error, .. } => error.kind.as_str().to_owned(),
            other => other.code().unwrap_or_default(),
        }
    }

    /// The JSON body.
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
}

/// The status code of a runtime error kind (see the module's table).
pub fn runtime_status(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::Unsupported => StatusCode::BAD_REQUEST,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Authentication => StatusCode::BAD_GATEWAY,
        ErrorKind::Unavailable | ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn runtime_type(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::Unsupported => "invalid_request_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Authentication => "upstream_error",
        ErrorKind::Timeout => "timeout_error",
        _ => "server_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
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
            (ErrorKind::InvalidRequest, 400),
            (ErrorKind::Unsupported, 400),
            (ErrorKind::RateLimited, 429),
            (ErrorKind::Authentication, 502),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Cancelled, 503),
            (ErrorKind::Timeout, 504),
            (ErrorKind::InvalidConfig, 500),
            (ErrorKind::Panicked, 500),
            (ErrorKind::Internal, 500),
            (ErrorKind::Other("new_kind".into()), 500),
        ];
        for (kind, status) in cases {
            assert_eq!(runtime_status(&kind).as_u16(), status, "{kind}");
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

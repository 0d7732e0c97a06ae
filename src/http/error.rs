//! The one mapping from every error to an HTTP answer:
//! `{"error": {"code": "<snake_case>", "message": "<what and how to fix>"}}`.
//! Internal failures are logged with their details and shown to clients as a generic 500.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::backbones::registry::BackboneError;
use crate::datasets::DatasetError;
use crate::serve::ServeError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{what}_not_found"),
            format!("no {what} with id {id:?}; list them with GET /v1/{what}s"),
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn overloaded(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }

    /// A request body that stalled or trickled (408; the connection is closed). The code
    /// `request_timeout` is new with issue 11.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// Over a per-key rate limit (429).
    pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// A failure that is not the client's: log the details, answer a generic 500.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<DatasetError> for ApiError {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::Invalid { code, message } => ApiError::unprocessable(code, message),
            DatasetError::UnsupportedFormat(m) => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format", m)
            }
            DatasetError::TooLarge(m) => ApiError::too_large(m),
            DatasetError::Io(e) => ApiError::internal(e),
        }
    }
}

impl From<BackboneError> for ApiError {
    fn from(e: BackboneError) -> Self {
        match e {
            BackboneError::Unknown(_) => ApiError::unprocessable("unknown_backbone", e.to_string()),
            BackboneError::Unavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backbone_unavailable",
                e.to_string(),
            ),
            BackboneError::Input(m) => ApiError::unprocessable("invalid_input", m),
            BackboneError::Load { .. } => ApiError::internal(e),
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::BadInput(m) => ApiError::unprocessable("invalid_input", m),
            ServeError::Backbone(b) => b.into(),
            ServeError::Corrupt(m) => {
                tracing::error!(error = %m, "model files are damaged");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "model_corrupt",
                    "this model's files on the server are damaged and it cannot predict; retrain it or upload its archive again (details are in the server log)",
                )
            }
            ServeError::Inference(e) => ApiError::internal(e),
        }
    }
}

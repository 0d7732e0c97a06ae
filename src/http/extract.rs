//! Request extractors that turn malformed requests into clear API errors: JSON bodies
//! (with the serde message naming the bad field) and the caller's tenant.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::error_code::Code;

/// `Json<T>` whose rejections are API errors. Every JSON body of the API is an object: any
/// other JSON value (an array, which serde would read as a struct's fields in order, a
/// string, a number) is refused with 422.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let value = match axum::Json::<Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rejection) => return Err(json_error(rejection)),
        };
        let kind = match &value {
            Value::Object(_) => None,
            Value::Array(_) => Some("an array"),
            Value::String(_) => Some("a string"),
            Value::Number(_) => Some("a number"),
            Value::Bool(_) => Some("a boolean"),
            Value::Null => Some("null"),
        };
        if let Some(kind) = kind {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!(
                    "the request body is {kind}; it must be a JSON object ({{\"field\": ...}}); see GET /openapi.json for the fields"
                ),
            ));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| {
                let at = e.path().to_string();
                let msg = if at == "." {
                    e.inner().to_string()
                } else {
                    format!("{at}: {}", e.inner())
                };
                ApiError::new(Code::InvalidRequest, format!("invalid request body: {msg}"))
            })
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            Code::UnsupportedMediaType,
            "send a JSON body with the header Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            Code::MalformedJson,
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => {
            ApiError::new(Code::InvalidRequest, clean_serde_message(&e.body_text()))
        }
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    Code::PayloadTooLarge,
                    "the request body is larger than the configured limit (WARMSTART_MAX_BODY_MB)",
                )
            } else {
                ApiError::new(Code::UnreadableBody, e.body_text())
            }
        }
        other => ApiError::new(Code::InvalidRequest, other.body_text()),
    }
}

/// serde messages start with "Failed to deserialize the JSON body into the target type: ".
fn clean_serde_message(text: &str) -> String {
    let msg = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(text);
    format!("invalid request body: {msg}")
}

/// The tenant that owns what a request creates and sees. Set by the auth middleware from
/// the API key; the empty tenant when the service runs without keys.
#[derive(Clone, Debug, Default)]
pub struct Tenant(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts
            .extensions
            .get::<Tenant>()
            .cloned()
            .unwrap_or_default())
    }
}

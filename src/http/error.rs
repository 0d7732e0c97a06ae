//! The one mapping from every error to an HTTP answer:
//! `{"error": {"code": "<snake_case>", "message": "<what and how to fix>"}}`, with the
//! status of its [`Code`]. Any layer's error (anything that implements [`ErrorCode`])
//! converts with `?`. Failures that are not the client's (`internal_error`,
//! `model_corrupt`) are logged here, once, as they are answered, and clients get a fixed
//! message instead of their details.

use super::schema::{ErrorBody, ErrorDetail};
use crate::error_code::{Code, ErrorCode};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    code: Code,
    /// Shown to the client, except for codes whose cause is hidden (then only logged).
    message: String,
    retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// For the codes whose cause is the server's: the line their details are logged under, and
/// what clients are told instead of the details.
fn hidden(code: Code) -> Option<(&'static str, &'static str)> {
    match code {
        Code::Internal => Some((
            "internal error",
            "an internal error occurred; it has been logged",
        )),
        Code::DatabaseUnavailable => Some((
            "database unreachable",
            "the database is unreachable right now; retry shortly (details are in the server log)",
        )),
        Code::ModelCorrupt => Some((
            "model files are damaged",
            "this model's files on the server are damaged and it cannot predict; retrain it or upload its archive again (details are in the server log)",
        )),
        Code::StorageUnavailable => Some((
            "artefact store unavailable",
            "the artefact store does not answer; retry shortly (details are in the server log)",
        )),
        _ => None,
    }
}

impl ApiError {
    /// An answer with `code`'s status. For `internal_error` and `model_corrupt`, `message`
    /// is logged and never sent.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `<what>_not_found` (404) for the id asked for.
    pub fn not_found(code: Code, id: &str) -> Self {
        debug_assert!(code.name().ends_with("_not_found"), "{code:?}");
        let what = code.name().trim_end_matches("_not_found");
        ApiError::new(
            code,
            format!("no {what} with id {id:?}; list them with GET /v1/{what}s"),
        )
    }

    /// A failure that is not the client's: the details are logged, the answer is a
    /// generic 500.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::new(Code::Internal, err.to_string())
    }

    /// Adds a `Retry-After` header (seconds).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn code(&self) -> Code {
        self.code
    }

    /// The message as logged (shown to the client unless the code hides its cause).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).expect("the code table holds valid statuses")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match hidden(self.code) {
            Some((log, public)) => {
                tracing::error!(code = self.code.name(), error = %self.message, "{log}");
                public.to_string()
            }
            None => self.message,
        };
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code.name(),
                message,
            },
        });
        let mut response = (status, body).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header"),
            );
        }
        response
    }
}

/// Every layer's error answers with its own code.
impl<E: ErrorCode> From<E> for ApiError {
    fn from(e: E) -> Self {
        let code = e.code();
        let message = match hidden(code) {
            // The details, for the log.
            Some(_) => e.to_string(),
            None => e.public_message(),
        };
        ApiError::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let r = e.into_response();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn answers_carry_the_code_and_its_status() {
        let (status, retry, json) = body(ApiError::not_found(Code::JobNotFound, "j1")).await;
        assert_eq!((status, retry), (StatusCode::NOT_FOUND, None));
        assert_eq!(json["error"]["code"], "job_not_found");
        assert_eq!(
            json["error"]["message"],
            "no job with id \"j1\"; list them with GET /v1/jobs"
        );
        let busy = ApiError::new(Code::Overloaded, "busy").retry_after(1);
        let (status, retry, _) = body(busy).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn internal_details_are_never_sent() {
        let store = crate::store::StoreError::Io {
            path: "/secret/path".into(),
            source: std::io::Error::other("disk on fire"),
        };
        for e in [
            ApiError::internal("disk on fire at /secret/path"),
            ApiError::from(store),
            ApiError::from(crate::serve::ServeError::Corrupt("/secret/path".into())),
        ] {
            let code = e.code();
            let (status, _, json) = body(e).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(json["error"]["code"], code.name());
            let message = json["error"]["message"].as_str().unwrap();
            assert!(!message.contains("secret"), "{message}");
        }
    }
}

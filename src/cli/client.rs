//! The client's HTTP side: one `reqwest` client with the base URL and API key, and the one
//! mapping from what can go wrong (transport, error answers, local files) to [`CliError`]
//! and its exit code.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Remote;

/// What went wrong, each kind with its own exit code (see the module table).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error: its `{"error": {"code", "message"}}`.
    #[error("{code} (HTTP {status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "the Warmstart server isn't reachable at {url} ({reason}); start it with `warmstart serve`, or point --url / WARMSTART_URL at it"
    )]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("job {id} {status}: {detail}")]
    JobFailed {
        id: String,
        status: String,
        detail: String,
    },
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Api { .. } | CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::JobFailed { .. } => 4,
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// A connection to one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
    /// `--json`: print raw responses.
    pub json: bool,
}

impl Client {
    pub fn new(remote: &Remote) -> CliResult<Client> {
        let base = remote.url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|e| {
            CliError::Usage(format!(
                "--url {base:?} is not a URL ({e}); use e.g. {}",
                super::DEFAULT_URL
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(CliError::Usage(format!(
                "--url {base:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Between bytes, not overall: event streams send a keep-alive every 15 s.
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("warmstart-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Other(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            base,
            api_key: remote.api_key.clone(),
            json: remote.json,
        })
    }

    /// A request to `path` (starting with `/`), with the API key when one is set.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Sends; an error status becomes [`CliError::Api`], a transport failure
    /// [`CliError::Unreachable`] or [`CliError::Other`].
    pub async fn send(&self, req: RequestBuilder) -> CliResult<Response> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(resp).await)
    }

    /// Sends and reads a JSON answer.
    pub async fn send_json(&self, req: RequestBuilder) -> CliResult<Value> {
        let resp = self.send(req).await?;
        resp.json()
            .await
            .map_err(|e| CliError::Other(format!("the server's answer is not JSON: {e}")))
    }

    pub async fn get(&self, path: &str) -> CliResult<Value> {
        self.send_json(self.request(Method::GET, path)).await
    }

    /// Every item of a list endpoint, following pages (`has_more`, `after`) when the server
    /// pages; accepts a bare array and `{"data": [...]}` alike.
    pub async fn list(&self, path: &str) -> CliResult<Vec<Value>> {
        let mut items: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let mut req = self.request(Method::GET, path).query(&[("limit", "100")]);
            if let Some(after) = &after {
                req = req.query(&[("after", after)]);
            }
            let page: ListBody = parse(self.send_json(req).await?)?;
            let (data, has_more) = match page {
                ListBody::Page { data, has_more } => (data, has_more),
                ListBody::Bare(data) => (data, false),
            };
            let last = data
                .last()
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str);
            after = last.map(str::to_string);
            items.extend(data);
            if !has_more || after.is_none() {
                break;
            }
        }
        Ok(items)
    }

    /// Maps a transport error: refused, unresolvable or silent servers are unreachable.
    pub fn transport(&self, e: reqwest::Error) -> CliError {
        if e.is_connect() || e.is_timeout() {
            return CliError::Unreachable {
                url: self.base.clone(),
                reason: root_cause(&e),
            };
        }
        CliError::Other(format!(
            "request to {} failed: {}",
            self.base,
            root_cause(&e)
        ))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ListBody {
    Page {
        data: Vec<Value>,
        #[serde(default)]
        has_more: bool,
    },
    Bare(Vec<Value>),
}

/// Reads an error answer: the JSON error body when there is one, else the status and the
/// start of the body.
async fn api_error(resp: Response) -> CliError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => CliError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => CliError::Api {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: text
                .chars()
                .take(300)
                .collect::<String>()
                .trim()
                .to_string(),
        },
    }
}

/// The innermost cause, e.g. "Connection refused (os error 111)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A JSON answer as the typed struct the client expects.
pub fn parse<T: DeserializeOwned>(value: Value) -> CliResult<T> {
    serde_json::from_value(value)
        .map_err(|e| CliError::Other(format!("unexpected answer from the server: {e}")))
}

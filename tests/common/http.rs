//! A minimal HTTP/1.1 client over tokio's TcpStream for tests that talk to a real server on
//! 127.0.0.1 (one request per connection, `Connection: close`; chunked bodies decoded).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into()))
    }
}

/// The request head (request line and headers, ending with the blank line).
pub fn head(method: &str, path: &str, headers: &[(&str, &str)], body_len: usize) -> String {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {body_len}\r\n\r\n"));
    out
}

/// Sends one request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(head(method, path, headers, body.len()).as_bytes())
        .await?;
    stream.write_all(body).await?;
    read_response(&mut stream).await
}

/// Reads a response until the server closes the connection, within a generous timeout.
pub async fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 120 s"))??;
    parse(&raw)
}

fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// JSON helpers bound to one server address and an optional API key.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub key: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, key: None }
    }

    fn auth(&self) -> Option<String> {
        self.key.as_ref().map(|k| format!("Bearer {k}"))
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Response> {
        let auth = self.auth();
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        request(self.addr, method, path, &headers, body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.send("GET", path, None, b"").await.expect("GET");
        (r.status, r.json())
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .send(
                "POST",
                path,
                Some("application/json"),
                body.to_string().as_bytes(),
            )
            .await
            .expect("POST");
        (r.status, r.json())
    }

    pub async fn upload(&self, path: &str, file_name: &str, bytes: &[u8]) -> (u16, Value) {
        let (ct, body) = super::multipart(&[("file", Some(file_name), bytes)], &[]);
        let r = self
            .send("POST", path, Some(&ct), &body)
            .await
            .expect("upload");
        (r.status, r.json())
    }
}

impl Client {
    /// Every event of a job, oldest first (read page by page: the API lists newest first).
    pub async fn events(&self, job_id: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let (status, page) = self
                .get(&format!("/v1/jobs/{job_id}/events?limit=100{after}"))
                .await;
            assert_eq!(status, 200, "{page}");
            all.extend(page["data"].as_array().unwrap().iter().cloned());
            if page["has_more"] != true {
                break;
            }
            after = format!("&after={}", page["last_id"].as_str().unwrap());
        }
        all.reverse();
        all
    }

    /// Polls a job until it reaches a terminal status.
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Value {
        let start = std::time::Instant::now();
        loop {
            let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
                return job;
            }
            assert!(
                start.elapsed() < timeout,
                "job did not finish in {timeout:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a job until `pred` holds for it.
    pub async fn wait_job_until(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = std::time::Instant::now();
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
            if pred(&job) {
                return job;
            }
            assert!(
                start.elapsed() < timeout,
                "condition not met in {timeout:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A keep-alive connection for load tests: many requests over one TCP connection
/// (responses must carry Content-Length, as the API's JSON answers do); reconnects when the
/// server closes it.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<tokio::io::BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None }
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        use tokio::io::AsyncBufReadExt;
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(tokio::io::BufReader::new(s));
        }
        let stream = self.stream.as_mut().unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        let result = async {
            stream.get_mut().write_all(&out).await?;
            let mut head = Vec::new();
            loop {
                let n = stream.read_until(b'\n', &mut head).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ));
                }
                if head.ends_with(b"\r\n\r\n") {
                    break;
                }
            }
            let mut response = parse(&head)?;
            let len: usize = response
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            stream.read_exact(&mut body).await?;
            response.body = body;
            Ok(response)
        }
        .await;
        let close = match &result {
            Ok(r) => r
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close")),
            Err(_) => true,
        };
        if close {
            self.stream = None;
        }
        result
    }
}

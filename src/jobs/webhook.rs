//! Job webhooks: when a job that carries a `webhook_url` ends (succeeded, failed or
//! cancelled), the service POSTs the job's JSON there, retrying with exponential back-off on
//! network errors, 429 and 5xx. With a secret configured, each delivery is signed:
//! `X-Warmstart-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` with the
//! timestamp in `X-Warmstart-Timestamp`, so receivers can check origin and freshness.
//!
//! Webhooks cannot be turned against internal services: the target's host is resolved once
//! per delivery, every address is checked against the private ranges, and the connection is
//! pinned to exactly those addresses (no second lookup that DNS could answer differently).
//! Redirects are never followed (a 3xx is a refused delivery) and no proxy is used, so
//! neither can carry the request somewhere the check did not see.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::jobs::JobRecord;

/// Deliveries tried before giving up.
pub const ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct Webhooks {
    secret: Option<String>,
    /// Whether webhooks may target loopback, private and link-local addresses. Off by
    /// default: otherwise any API user could make the server call internal services.
    allow_private: bool,
    /// First retry delay; doubles each time.
    pub backoff: Duration,
}

/// A webhook URL with its host resolved and checked: deliveries connect only to `addrs`.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: reqwest::Url,
    /// The host as written in the URL (without IPv6 brackets).
    pub host: String,
    /// The addresses that passed the check, in resolver order.
    pub addrs: Vec<SocketAddr>,
}

/// Checks a `webhook_url` when a job is submitted.
pub fn validate_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("webhook_url {url:?} is not a valid URL ({e}); use http(s)://host/path")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "webhook_url {url:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(())
}

/// Loopback, private (RFC 1918, unique-local), link-local, unspecified, shared and
/// multicast addresses.
fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// A client that connects to `target.addrs` only: DNS answers for the host are replaced by
/// the checked addresses, redirects are returned rather than followed, and no proxy
/// (which would resolve the host itself) is used.
fn pinned_client(target: &Target) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("warmstart/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve_to_addrs(&target.host, &target.addrs)
        .build()
        .expect("a TLS client with built-in roots")
}

/// The signature header value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhooks {
    pub fn new(secret: Option<String>, allow_private: bool) -> Webhooks {
        Webhooks {
            secret,
            allow_private,
            backoff: Duration::from_secs(2),
        }
    }

    /// Refuses targets that resolve to internal addresses (unless allowed).
    pub async fn check_target(&self, url: &str) -> Result<(), String> {
        self.resolve_target(url).await.map(|_| ())
    }

    /// Resolves the URL's host once and checks every address (unless private targets are
    /// allowed); the result is what a delivery connects to.
    pub async fn resolve_target(&self, url: &str) -> Result<Target, String> {
        validate_url(url)?;
        let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("webhook_url host {host:?} does not resolve ({e})"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("webhook_url host {host:?} has no addresses"));
        }
        if !self.allow_private
            && let Some(addr) = addrs.iter().find(|a| is_internal(a.ip()))
        {
            return Err(format!(
                "webhook_url {url:?} resolves to the internal address {}; the operator must set WARMSTART_WEBHOOK_ALLOW_PRIVATE=true to allow webhooks to internal services",
                addr.ip()
            ));
        }
        Ok(Target {
            url: parsed,
            host,
            addrs,
        })
    }

    /// Delivers the finished job in the background (never blocks the caller).
    pub fn notify(&self, url: String, job: JobRecord) {
        let this = self.clone();
        tokio::spawn(async move { this.deliver(&url, &job).await });
    }

    /// Tries to deliver; returns the number of attempts made and whether one succeeded.
    pub async fn deliver(&self, url: &str, job: &JobRecord) -> (u32, bool) {
        // Checked again at delivery: DNS may have changed since the job was submitted.
        let target = match self.resolve_target(url).await {
            Ok(target) => target,
            Err(why) => {
                tracing::warn!(job = %job.id, "webhook not sent: {why}");
                return (0, false);
            }
        };
        self.deliver_to(&target, job).await
    }

    /// Delivers to an already checked target, connecting only to its addresses.
    pub async fn deliver_to(&self, target: &Target, job: &JobRecord) -> (u32, bool) {
        let client = pinned_client(target);
        let body = serde_json::to_vec(job).expect("jobs serialise");
        let mut delay = self.backoff;
        for attempt in 1..=ATTEMPTS {
            let timestamp = chrono::Utc::now().timestamp().max(0) as u64;
            let mut req = client
                .post(target.url.clone())
                .header("content-type", "application/json")
                .header("x-warmstart-event", format!("job.{}", job.status.as_str()))
                .header("x-warmstart-delivery", format!("{}-{attempt}", job.id))
                .header("x-warmstart-timestamp", timestamp.to_string())
                .body(body.clone());
            if let Some(secret) = &self.secret {
                req = req.header("x-warmstart-signature", signature(secret, timestamp, &body));
            }
            let retry = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(job = %job.id, attempt, "webhook delivered");
                    return (attempt, true);
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_redirection() {
                        tracing::warn!(job = %job.id, %status, "webhook redirected; redirects are not followed");
                    } else {
                        tracing::warn!(job = %job.id, attempt, %status, "webhook refused");
                    }
                    status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, attempt, error = %e, "webhook delivery failed");
                    true
                }
            };
            if !retry || attempt == ATTEMPTS {
                return (attempt, false);
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        (ATTEMPTS, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (HMAC-SHA256, key "Jefe").
    #[test]
    fn hmac_matches_the_rfc_vector() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(signature("s", 1, b"{}").starts_with("sha256="));
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "100.64.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn internal_targets_are_refused_unless_allowed() {
        let strict = Webhooks::new(None, false);
        let err = strict
            .check_target("http://127.0.0.1:9/hook")
            .await
            .unwrap_err();
        assert!(err.contains("WARMSTART_WEBHOOK_ALLOW_PRIVATE"), "{err}");
        assert!(
            Webhooks::new(None, true)
                .check_target("http://127.0.0.1:9/hook")
                .await
                .is_ok()
        );
    }

    /// A host that no DNS knows reaches the local listener it is pinned to: the connection
    /// goes to the checked address, never to a second lookup.
    #[tokio::test]
    async fn deliveries_connect_to_the_checked_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let reply = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
            conn.write_all(reply).await.unwrap();
        });
        let target = Target {
            url: reqwest::Url::parse(&format!("http://hook.invalid:{}/x", addr.port())).unwrap(),
            host: "hook.invalid".into(),
            addrs: vec![addr],
        };
        let resp = pinned_client(&target)
            .post(target.url.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
    }

    #[tokio::test]
    async fn targets_resolve_to_checked_addresses() {
        let target = Webhooks::new(None, true)
            .resolve_target("http://127.0.0.1:9/hook")
            .await
            .unwrap();
        assert_eq!(target.host, "127.0.0.1");
        assert_eq!(target.addrs, vec!["127.0.0.1:9".parse().unwrap()]);
    }

    #[test]
    fn urls_are_checked() {
        assert!(validate_url("https://example.com/hook").is_ok());
        assert!(validate_url("ftp://example.com").is_err());
        assert!(validate_url("not a url").is_err());
    }
}

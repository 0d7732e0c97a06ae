//! Per-key rate limits on predict and upload: a token bucket per API key (anonymous
//! callers of a keyless service share one), refilled continuously, kept in memory. Keys are
//! verified before a bucket is made, so the map holds at most one entry per real key.
//! Over the limit → 429 `rate_limited` with `Retry-After`.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::error_code::Code;

/// One token bucket per key: `burst` tokens at most, `per_sec` added each second.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_sec` = 0 disables the limit.
    pub fn new(per_sec: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_sec,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` at `now`, or says how many whole seconds until one is there.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock();
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_sec;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now.max(*at);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

/// The limiters of the service.
pub struct RateLimits {
    pub predict: RateLimiter,
    pub upload: RateLimiter,
}

impl RateLimits {
    pub fn from_config(c: &crate::config::Config) -> RateLimits {
        RateLimits {
            predict: RateLimiter::new(c.predict_rate, c.predict_burst),
            upload: RateLimiter::new(c.upload_rate / 60.0, c.upload_burst),
        }
    }
}

fn key_of(req: &Request) -> String {
    req.extensions()
        .get::<Caller>()
        .and_then(|c| c.key_id.clone())
        .unwrap_or_default()
}

/// Route middleware for predict.
pub async fn limit_predict(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match st.rates.predict.take(&key_of(&req), Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => ApiError::new(
            Code::RateLimited,
            format!(
                "more than {} predict requests per second (burst {}) with this API key (WARMSTART_PREDICT_RATE, WARMSTART_PREDICT_BURST); retry after {wait} s",
                st.config.predict_rate, st.config.predict_burst
            ),
        )
        .retry_after(wait)
        .into_response(),
    }
}

/// Route middleware for dataset uploads and model imports.
pub async fn limit_upload(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match st.rates.upload.take(&key_of(&req), Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => ApiError::new(
            Code::RateLimited,
            format!(
                "more than {} uploads per minute (burst {}) with this API key (WARMSTART_UPLOAD_RATE, WARMSTART_UPLOAD_BURST); retry after {wait} s",
                st.config.upload_rate, st.config.upload_burst
            ),
        )
        .retry_after(wait)
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take("a", t0), Ok(()));
        }
        assert_eq!(limiter.take("a", t0), Err(1));
        // Another key has its own bucket.
        assert_eq!(limiter.take("b", t0), Ok(()));
        // Half a second at 2/s brings one token back, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.take("a", t1), Ok(()));
        assert!(limiter.take("a", t1).is_err());
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.take("a", t2), Ok(()));
        }
        assert!(limiter.take("a", t2).is_err());
    }

    #[test]
    fn slow_rates_say_how_long_to_wait_and_zero_means_no_limit() {
        let limiter = RateLimiter::new(1.0 / 60.0, 1);
        let t0 = Instant::now();
        assert_eq!(limiter.take("k", t0), Ok(()));
        assert_eq!(limiter.take("k", t0), Err(60));
        let wait = limiter.take("k", t0 + Duration::from_secs(30)).unwrap_err();
        assert!((30..=31).contains(&wait), "{wait}");
        let off = RateLimiter::new(0.0, 1);
        for _ in 0..1000 {
            assert_eq!(off.take("k", t0), Ok(()));
        }
    }
}

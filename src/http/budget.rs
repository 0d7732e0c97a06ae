//! The global memory budget of requests in flight (`--max-inflight-mb`). Uploads and
//! predicts reserve what they will hold in memory from one pool of megabyte permits: first
//! an estimate from the request's size, before its body is read, then what its content
//! turns out to need (the largest image's decode, a text dataset's rows). A request that
//! does not fit is answered 503 `overloaded` with `Retry-After` at once, rather than
//! letting N concurrent requests multiply the peak; its permits return when it ends.
//! Model computation is bounded separately, by the predict compute slots.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ApiResult};
use crate::datasets::{Limits, decode};
use crate::error_code::Code;

const MB: u64 = 1 << 20;
/// What an upload holds while its body streams to disk (multipart buffers, the first bytes).
pub const UPLOAD_STREAMING: u64 = 4 * MB;
/// Seconds a refused client is asked to wait.
const RETRY_AFTER_SECS: u64 = 2;

/// The pool of permits, one per megabyte.
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_mb: u32,
    rejected: AtomicU64,
}

/// Megabytes held by one request; returned to the pool when dropped.
#[derive(Debug)]
pub struct Reservation {
    permits: Vec<OwnedSemaphorePermit>,
    mb: u32,
}

impl Reservation {
    pub fn mb(&self) -> u32 {
        self.mb
    }
}

impl MemoryBudget {
    pub fn new(total_mb: u64) -> MemoryBudget {
        let total_mb = total_mb.clamp(1, Semaphore::MAX_PERMITS as u64) as u32;
        MemoryBudget {
            permits: Arc::new(Semaphore::new(total_mb as usize)),
            total_mb,
            rejected: AtomicU64::new(0),
        }
    }

    /// Megabytes reserved right now.
    pub fn in_use_mb(&self) -> u64 {
        (self.total_mb as usize - self.permits.available_permits()) as u64
    }

    /// Requests refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` for a new request, or refuses it (503) when the budget is in use.
    pub fn reserve(&self, bytes: u64) -> ApiResult<Reservation> {
        let mut r = Reservation {
            permits: Vec::new(),
            mb: 0,
        };
        self.grow(&mut r, bytes)?;
        Ok(r)
    }

    /// Raises a request's reservation to `bytes` in all (never lowers it). One request is
    /// never asked for more than the whole budget: it then runs when it is alone.
    pub fn grow(&self, r: &mut Reservation, bytes: u64) -> ApiResult<()> {
        let want = bytes.div_ceil(MB).clamp(1, self.total_mb as u64) as u32;
        if want <= r.mb {
            return Ok(());
        }
        match self.permits.clone().try_acquire_many_owned(want - r.mb) {
            Ok(p) => {
                r.permits.push(p);
                r.mb = want;
                Ok(())
            }
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::new(
                    Code::Overloaded,
                    format!(
                        "the server's memory budget for requests in flight ({} MB, WARMSTART_MAX_INFLIGHT_MB) is in use; retry in a few seconds",
                        self.total_mb
                    ),
                )
                .retry_after(RETRY_AFTER_SECS))
            }
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A predict request before its body is read: the body, its parsed JSON and the decoded
/// images (each about as large as the body). Without a Content-Length, the body limit.
pub fn predict_request(headers: &HeaderMap, body_limit: u64) -> u64 {
    let body = content_length(headers)
        .unwrap_or(body_limit)
        .min(body_limit);
    body.saturating_mul(3).saturating_add(MB)
}

/// Decoding a predict request's images, one at a time: the largest one's peak (from the
/// headers; an unreadable image costs nothing here and is refused when decoded).
pub fn image_decode(images: &[Vec<u8>], max_pixels: u64) -> u64 {
    images
        .iter()
        .filter_map(|bytes| decode::probe(Cursor::new(bytes), max_pixels).ok())
        .map(|h| h.decode_peak())
        .max()
        .unwrap_or(0)
}

/// Parsing a dataset upload of `size` bytes in `format`: text rows are held whole (texts,
/// labels, the duplicate index); an image ZIP decodes one image at a time, at most the
/// pixel limit in 16-bit RGBA, beside its entry list.
pub fn dataset_parse(format: &str, size: u64, limits: &Limits) -> u64 {
    match format {
        "zip" => limits
            .max_image_pixels
            .saturating_mul(8)
            .saturating_add(64 * MB),
        _ => size.saturating_mul(4).saturating_add(MB),
    }
}

/// Checking an uploaded model archive of `size` bytes: its weights are loaded once.
pub fn model_import(size: u64) -> u64 {
    size.saturating_mul(2).saturating_add(16 * MB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_beyond_the_budget_and_returned_when_dropped() {
        let budget = MemoryBudget::new(10);
        let a = budget.reserve(6 * MB).unwrap();
        assert_eq!((a.mb(), budget.in_use_mb()), (6, 6));
        let err = budget.reserve(5 * MB).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            (err.code(), err.retry_after_secs()),
            (Code::Overloaded, Some(2))
        );
        assert!(err.message().contains("WARMSTART_MAX_INFLIGHT_MB"));
        let mut b = budget.reserve(MB / 2).unwrap();
        assert_eq!(b.mb(), 1);
        budget.grow(&mut b, 4 * MB).unwrap();
        assert_eq!((b.mb(), budget.in_use_mb()), (4, 10));
        assert!(budget.grow(&mut b, 5 * MB).is_err());
        assert_eq!(budget.rejected(), 2);
        drop(a);
        // More than the whole budget: clamped, so it runs alone.
        budget.grow(&mut b, 1 << 40).unwrap();
        assert_eq!(b.mb(), 10);
        drop(b);
        assert_eq!(budget.in_use_mb(), 0);
    }
}

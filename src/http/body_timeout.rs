//! Stalled and trickling request bodies: every request body is read through [`TimedBody`],
//! which fails the read when the client sends nothing for `--body-timeout-secs` while the
//! server waits for it, or fewer than `--min-body-bytes-per-sec` on average over such a
//! window of waiting. The request is then answered 408 `request_timeout` and its connection
//! closed. Time the handler spends not reading (computing, waiting for a slot) never counts.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::ApiError;
use crate::error_code::Code;

/// The limits on reading a request body.
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeouts {
    /// Longest wait for the next bytes; also the window the rate is measured over.
    pub stall: Duration,
    /// Least average rate over each window of waiting, in bytes per second (0: none).
    pub min_bytes_per_sec: u64,
}

/// A request body that fails when its client stalls or trickles.
pub struct TimedBody {
    inner: Body,
    limits: BodyTimeouts,
    sleep: Pin<Box<Sleep>>,
    /// When the current wait for data began (`None`: not waiting).
    waiting_since: Option<Instant>,
    /// Time spent waiting in all finished waits.
    waited: Duration,
    /// `waited` when the current rate window began, and the bytes received since.
    window_start: Duration,
    window_bytes: u64,
    failed: Arc<OnceLock<String>>,
}

impl TimedBody {
    pub fn new(inner: Body, limits: BodyTimeouts, failed: Arc<OnceLock<String>>) -> TimedBody {
        TimedBody {
            inner,
            limits,
            sleep: Box::pin(tokio::time::sleep(limits.stall)),
            waiting_since: None,
            waited: Duration::ZERO,
            window_start: Duration::ZERO,
            window_bytes: 0,
            failed,
        }
    }

    fn fail(&mut self, why: String) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let _ = self.failed.set(why.clone());
        Poll::Ready(Some(Err(axum::Error::new(why))))
    }

    /// Ends a wait (data arrived): its time counts towards the window.
    fn stop_waiting(&mut self, now: Instant) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now - since;
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.stop_waiting(Instant::now());
                    if let Some(data) = frame.data_ref() {
                        this.window_bytes += data.len() as u64;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(other) => return Poll::Ready(other),
                Poll::Pending => {}
            }
            let now = Instant::now();
            let since = *this.waiting_since.get_or_insert(now);
            let stall = this.limits.stall;
            if now - since >= stall {
                return this.fail(format!(
                    "the request body stalled: nothing arrived for {} s (WARMSTART_BODY_TIMEOUT_SECS); send the body without pauses",
                    stall.as_secs()
                ));
            }
            let waited = this.waited + (now - since);
            if waited >= this.window_start + stall {
                let needed = (this.limits.min_bytes_per_sec as f64 * stall.as_secs_f64()) as u64;
                if this.window_bytes < needed {
                    return this.fail(format!(
                        "the request body arrived at less than {} bytes/s (WARMSTART_MIN_BODY_BYTES_PER_SEC); send it faster",
                        this.limits.min_bytes_per_sec
                    ));
                }
                // This window passed: the next one starts here.
                this.window_start = waited;
                this.window_bytes = 0;
            }
            let window_left = (this.window_start + stall).saturating_sub(waited);
            let deadline = (now + window_left).min(since + stall);
            this.sleep.as_mut().reset(deadline);
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The deadline passed while we looked: check again.
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: reads every request body through a [`TimedBody`]; a request whose body
/// timed out is answered 408 and its connection closed, whatever the handler made of the
/// failed read.
pub async fn guard(State(limits): State<BodyTimeouts>, req: Request, next: Next) -> Response {
    let failed = Arc::new(OnceLock::new());
    let req = req.map(|body| Body::new(TimedBody::new(body, limits, failed.clone())));
    let response = next.run(req).await;
    match failed.get() {
        None => response,
        Some(why) => {
            tracing::info!(reason = %why, "closed a request whose body timed out");
            let mut response = ApiError::new(Code::RequestTimeout, why.clone()).into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn limits(stall_ms: u64, rate: u64) -> BodyTimeouts {
        BodyTimeouts {
            stall: Duration::from_millis(stall_ms),
            min_bytes_per_sec: rate,
        }
    }

    /// A body fed by hand through a channel.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
        (tx, Body::from_stream(stream))
    }

    use futures::StreamExt;

    #[tokio::test]
    async fn a_stalled_body_fails_and_a_steady_one_does_not() {
        let (tx, body) = channel_body();
        let failed = Arc::new(OnceLock::new());
        let timed = TimedBody::new(body, limits(1000, 0), failed.clone());
        let feeder = tokio::spawn(async move {
            for _ in 0..4 {
                tx.send(Bytes::from_static(b"abc")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            // Then stall, holding the sender.
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tx);
        });
        let started = std::time::Instant::now();
        let err = timed.collect().await.unwrap_err();
        let took = started.elapsed();
        assert!(err.to_string().contains("stalled"), "{err}");
        assert!(failed.get().is_some());
        // The last bytes come at 1.2 s; the stall is noticed 1 s later.
        assert!(
            took >= Duration::from_millis(2100) && took < Duration::from_millis(3000),
            "{took:?}"
        );
        feeder.abort();

        let (tx, body) = channel_body();
        let timed = TimedBody::new(body, limits(1000, 0), Arc::new(OnceLock::new()));
        tokio::spawn(async move {
            for _ in 0..5 {
                tx.send(Bytes::from_static(b"abc")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        assert_eq!(timed.collect().await.unwrap().to_bytes().len(), 15);
    }

    #[tokio::test]
    async fn a_trickle_below_the_rate_fails() {
        let (tx, body) = channel_body();
        let failed = Arc::new(OnceLock::new());
        let timed = TimedBody::new(body, limits(1000, 100), failed.clone());
        let feeder = tokio::spawn(async move {
            loop {
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let err = timed.collect().await.unwrap_err();
        assert!(err.to_string().contains("bytes/s"), "{err}");
        feeder.abort();
    }
}

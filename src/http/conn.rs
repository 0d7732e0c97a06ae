//! Serving HTTP/1.1 connections with timeouts that `axum::serve` lacks. A connection must
//! deliver a request's headers within `--header-timeout-secs` of opening or of its first
//! byte, and may sit idle between requests for at most `--keep-alive-timeout-secs`; past
//! that it is closed, so idle or half-sent connections cannot pile up and exhaust the file
//! descriptors. (Bodies have their own limits: [`super::body_timeout`].) A connection with
//! a request in flight, including a streaming response, is never timed out here. On
//! shutdown the listener closes, idle connections close at once and busy ones once their
//! response is sent.

use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The connection-level timeouts.
#[derive(Clone, Copy, Debug)]
pub struct ConnTimeouts {
    /// From a connection's opening (or the first byte of a later request) to the end of
    /// that request's headers.
    pub header: Duration,
    /// Idle time allowed between two requests on one connection.
    pub keep_alive: Duration,
}

/// What one connection is doing, shared by its socket, its requests and its watchdog.
struct Activity {
    born: Instant,
    /// Requests whose response has not been sent completely.
    busy: AtomicUsize,
    /// Requests begun on this connection.
    requests: AtomicU64,
    /// Milliseconds since `born` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Milliseconds since `born`, plus one, when the first byte of the next request arrived
    /// on the idle connection; 0 while none has.
    head_since_ms: AtomicU64,
}

impl Activity {
    fn ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn begin_request(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.head_since_ms.store(0, Ordering::SeqCst);
        Busy(self.clone())
    }

    fn bytes_arrived(&self) {
        if self.busy.load(Ordering::SeqCst) == 0 && self.head_since_ms.load(Ordering::SeqCst) == 0 {
            self.head_since_ms.store(self.ms() + 1, Ordering::SeqCst);
        }
    }

    /// When the connection is due to be closed, and why; `None` while a request is in flight.
    fn deadline(&self, t: &ConnTimeouts) -> Option<(Instant, &'static str)> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let at = |ms: u64, limit: Duration| self.born + Duration::from_millis(ms) + limit;
        let head = self.head_since_ms.load(Ordering::SeqCst);
        Some(if head > 0 {
            (
                at(head - 1, t.header),
                "request headers not received in time",
            )
        } else if self.requests.load(Ordering::SeqCst) == 0 {
            (at(0, t.header), "no request received in time")
        } else {
            (
                at(self.idle_since_ms.load(Ordering::SeqCst), t.keep_alive),
                "idle keep-alive connection",
            )
        })
    }

    /// Resolves when the connection has been idle or stuck in its headers for too long.
    async fn expired(&self, t: ConnTimeouts) -> &'static str {
        loop {
            let now = Instant::now();
            match self.deadline(&t) {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => tokio::time::sleep_until(at.min(now + CHECK_EVERY)).await,
                None => tokio::time::sleep(CHECK_EVERY).await,
            }
        }
    }
}

/// How often a watchdog looks again (state changes are not signalled to it).
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Marks a request in flight until its response body is dropped (sent or abandoned).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.ms(), Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request marked busy until it is done.
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive on an idle connection.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then waits for the open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: ConnTimeouts,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors, for example: wait for connections to close.
                tracing::warn!(error = %e, "cannot accept a connection; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            router.clone(),
            timeouts,
            stop.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    timeouts: ConnTimeouts,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity {
        born: Instant::now(),
        busy: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        idle_since_ms: AtomicU64::new(0),
        head_since_ms: AtomicU64::new(0),
    });
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = requests.begin_request();
        let router = router.clone();
        async move {
            let response: Response = router.oneshot(req.map(Body::new)).await?;
            Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, _busy: busy }))
        }
    });
    let mut conn = pin!(
        hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service)
    );
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            why = activity.expired(timeouts) => {
                tracing::debug!(reason = why, "closing connection");
                return;
            }
        }
    }
}

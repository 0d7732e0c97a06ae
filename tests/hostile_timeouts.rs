//! Hostile-input suite, part 3: slow and silent clients against the real binary with short
//! timeouts (2 s). A connection that sends nothing, half a header, or a body that stalls or
//! trickles is closed (a body with a 408 `request_timeout`); a kept-alive connection is
//! closed once idle; and `/healthz` keeps answering while hundreds of such connections are
//! open, even when they outnumber the server's file descriptors. Timings are printed.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::server::{Server, serve_command, temp_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FLAGS: &[&str] = &[
    "--header-timeout-secs=2",
    "--keep-alive-timeout-secs=2",
    "--body-timeout-secs=2",
    "--min-body-bytes-per-sec=100",
];

/// Reads until the server closes the connection (or `limit` after `since` passes): what
/// it sent, and when it closed, counted from `since`.
async fn until_closed(
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> (String, Option<Duration>) {
    let start = since;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&got).into(), Some(start.elapsed()));
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz_within(addr: SocketAddr, limit: Duration) -> Duration {
    let start = Instant::now();
    let resp = tokio::time::timeout(
        limit,
        common::http::request(addr, "GET", "/healthz", &[], b""),
    )
    .await
    .unwrap_or_else(|_| panic!("/healthz did not answer within {limit:?}"))
    .expect("/healthz");
    assert_eq!(resp.status, 200);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_sent_and_stalled_connections_are_closed() {
    let root = temp_root();
    let server = Server::start(root.path(), FLAGS);
    let addr = server.addr;
    let limit = Duration::from_secs(8);
    let opened = Instant::now();

    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut half_head = TcpStream::connect(addr).await.unwrap();
    half_head
        .write_all(b"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .await
        .unwrap();
    let body_head = |len: usize| {
        format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(format!("{}{{\"dataset_id\": ", body_head(1000)).as_bytes())
        .await
        .unwrap();
    let (ct, form) = common::multipart(&[("file", Some("d.csv"), &[b'x'; 4000])], &[]);
    let upload_head = format!(
        "POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        form.len()
    );
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle.write_all(upload_head.as_bytes()).await.unwrap();
    let trickler = {
        let form = form.clone();
        let (mut read_half, mut write_half) = trickle.into_split();
        let writer = tokio::spawn(async move {
            // 10 bytes/s against a minimum of 100.
            for chunk in form.chunks(2) {
                if write_half.write_all(chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = tokio::time::timeout(limit, read_half.read_to_end(&mut got)).await;
            writer.abort();
            (String::from_utf8_lossy(&got).into_owned(), opened.elapsed())
        })
    };

    let (sent, idle_closed) = until_closed(&mut idle, opened, limit).await;
    println!(
        "idle connection: closed after {idle_closed:?} ({} bytes sent)",
        sent.len()
    );
    assert!(sent.is_empty(), "{sent}");
    let (sent, head_closed) = until_closed(&mut half_head, opened, limit).await;
    println!(
        "half-sent header: closed after {head_closed:?} ({} bytes sent)",
        sent.len()
    );
    let (answer, body_closed) = until_closed(&mut stalled, opened, limit).await;
    println!(
        "stalled body: closed after {body_closed:?}, answered {:?}",
        answer.lines().next().unwrap_or("")
    );
    let (trickled, trickle_took) = trickler.await.unwrap();
    println!(
        "trickling body (10 B/s): closed after {trickle_took:?}, answered {:?}",
        trickled.lines().next().unwrap_or("")
    );
    for (what, closed) in [
        ("idle", idle_closed),
        ("half header", head_closed),
        ("stalled body", body_closed),
    ] {
        let closed =
            closed.unwrap_or_else(|| panic!("{what} connection still open after {limit:?}"));
        assert!(
            closed >= Duration::from_millis(1500),
            "{what} closed early: {closed:?}"
        );
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request_timeout") && answer.contains("stalled"),
        "{answer}"
    );
    assert!(
        trickle_took >= Duration::from_millis(1500) && trickle_took < limit,
        "trickle closed after {trickle_took:?}"
    );
    assert!(trickled.starts_with("HTTP/1.1 408"), "{trickled}");
    assert!(trickled.contains("bytes/s"), "{trickled}");

    // A kept-alive connection: served, then closed once idle for 2 s.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    let kept_opened = Instant::now();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (answer, kept_closed) = until_closed(&mut kept, kept_opened, limit).await;
    println!(
        "keep-alive after one request: closed after {kept_closed:?}, answered {:?}",
        answer.lines().next().unwrap_or("")
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let kept_closed = kept_closed.expect("idle keep-alive connection still open");
    assert!(
        kept_closed >= Duration::from_millis(1500),
        "{kept_closed:?}"
    );

    // A client that sends its body steadily, however slowly within the limits, is served.
    let resp = common::http::request(addr, "GET", "/healthz", &[], b"")
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let server_log = server.kill();
    assert!(!server_log.contains("panicked"), "{server_log}");
}

/// Opens `n` connections: a third silent, a third with half a header, a third with half a body.
async fn hostile_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        let bytes: &[u8] = match i % 3 {
            0 => b"",
            1 => b"GET /healthz HTTP/1.1\r\nHost: 1",
            _ => b"POST /v1/jobs HTTP/1.1\r\nHost: 1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"dataset_id\"",
        };
        let _ = s.write_all(bytes).await;
        out.push(s);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_hundreds_of_hostile_connections_are_open() {
    let root = temp_root();
    let server = Server::start(root.path(), FLAGS);
    let hostile = hostile_connections(server.addr, 300).await;
    assert_eq!(hostile.len(), 300);
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        worst = worst.max(healthz_within(server.addr, Duration::from_secs(1)).await);
    }
    println!("300 hostile connections open: /healthz answered 10 times, slowest in {worst:?}");
    // They are all closed by the server within the timeouts.
    let start = Instant::now();
    let mut open = 0;
    for mut s in hostile {
        if until_closed(&mut s, start, Duration::from_secs(8))
            .await
            .1
            .is_none()
        {
            open += 1;
        }
    }
    println!(
        "300 hostile connections: {open} still open {:?} later",
        start.elapsed()
    );
    assert_eq!(open, 0);
    drop(server);

    // With fewer file descriptors than hostile connections, the timeouts free them again.
    let root = temp_root();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 160 && exec \"$@\"")
        .arg("sh")
        .arg(serve_command(root.path(), FLAGS).get_program())
        .args(serve_command(root.path(), FLAGS).get_args());
    let server = Server::spawn(cmd, root.path());
    let hostile = hostile_connections(server.addr, 300).await;
    let took = healthz_within(server.addr, Duration::from_secs(15)).await;
    println!(
        "server limited to 160 file descriptors, {} hostile connections: /healthz answered in {took:?}",
        hostile.len()
    );
    drop(hostile);
    healthz_within(server.addr, Duration::from_secs(5)).await;
    let log = server.kill();
    assert!(!log.contains("panicked"), "{log}");
}

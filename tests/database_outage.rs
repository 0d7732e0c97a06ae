//! Losing the database while running: the service reaches PostgreSQL through a TCP relay
//! that the test cuts (every connection closed, new ones refused) and restores. While it is
//! cut `/readyz` says 503 with `database: false` and requests that need the database answer
//! 503 `database_unavailable`; once it is back the service recovers by itself. Needs
//! `WARMSTART_TEST_POSTGRES_URL`; fails without it in CI.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestApp;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP relay to `target` that can be cut and restored.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            up: Arc::new(AtomicBool::new(true)),
            cut: Arc::default(),
        };
        let (up, cut) = (relay.up.clone(), relay.cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let token = cut.lock().clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        relay
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let old = std::mem::take(&mut *self.cut.lock());
        old.cancel();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_turns_readyz_false_and_answers_503_until_it_is_back() {
    let Some(url) = common::postgres::fresh_database().await else {
        return;
    };
    // postgres://user@HOST:PORT/db → the same through the relay.
    let (head, rest) = url.split_once('@').unwrap();
    let (host_port, db) = rest.split_once('/').unwrap();
    let target: SocketAddr = host_port.parse().unwrap();
    let relay = Relay::start(target).await;
    let via_relay = format!("{head}@{}/{db}", relay.addr);
    let app = TestApp::start_with(|c| c.database_url = Some(via_relay)).await;

    // (The tiny test backbones leave some catalogue entries missing, so readiness is read
    // from its `database` field.)
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["database"], true, "{ready}");
    let (status, _) = app.get("/v1/datasets").await;
    assert_eq!(status, 200);

    relay.cut();
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["database"], false, "{ready}");
    let (status, body) = app.get("/v1/datasets").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    let (status, body) = app.get("/v1/jobs").await;
    assert_eq!(status, 503, "{body}");

    relay.restore();
    let restored = Instant::now();
    loop {
        let (_, ready) = app.get("/readyz").await;
        if ready["database"] == true {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(30),
            "not ready again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = app.get("/v1/datasets").await;
    assert_eq!(status, 200, "{body}");
    println!(
        "ready again {:.2} s after the database came back",
        restored.elapsed().as_secs_f64()
    );
    app.stop().await;
}

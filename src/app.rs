//! Building the service: data folder, database and migrations, lease recovery, backbone
//! registry, worker threads (unless `--role api`) and the router (only health and metrics
//! for `--role worker`); then serving until SIGTERM/Ctrl-C.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use candle_core::Device;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backbones::registry::Registry;
use crate::config::Config;
use crate::datasets::Limits;
use crate::http::auth::AuthPolicy;
use crate::http::ratelimit::RateLimits;
use crate::http::{self, AppState};
use crate::jobs::lease::{LeaseTimes, reap_expired};
use crate::jobs::webhook::Webhooks;
use crate::jobs::worker::WorkerContext;
use crate::jobs::{Queue, Workers};
use crate::serve::ModelCache;
use crate::serve::batcher::{BatchSettings, Batcher};
use crate::store::{Artifacts, Db, Remote};
use crate::train::Engine;

/// A built service: its state, router and running workers.
pub struct App {
    pub state: AppState,
    workers: Option<Workers>,
}

impl App {
    /// Opens everything and starts the workers. Must run inside a multi-threaded tokio
    /// runtime (workers block on it from their own threads).
    pub async fn build(config: Config) -> anyhow::Result<App> {
        config.validate().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data folder {}",
                config.data_dir.display()
            )
        })?;
        let mut artifacts = Artifacts::open(&config.data_dir)?;
        if let Some(url) = &config.artifact_store {
            let remote = Remote::parse(url).map_err(anyhow::Error::msg)?;
            artifacts = artifacts.with_remote(remote).await.with_context(|| {
                format!("cannot write to the artefact store {url}; check the URL, the AWS_* credentials and that the bucket exists")
            })?;
        }
        let db = open_db(&config).await?;
        if config.shares_database() {
            // Another process may be writing an artefact whose row is not there yet.
            tracing::info!("database shared with other processes: no start-up artefact sweep");
        } else {
            let datasets: HashSet<String> = db.all_dataset_ids().await?.into_iter().collect();
            let models: HashSet<String> = db.all_model_ids().await?.into_iter().collect();
            let swept = artifacts.sweep(&datasets, &models)?;
            if swept > 0 {
                tracing::info!(swept, "removed leftovers of interrupted writes");
            }
        }
        let queue = Queue::new(
            db.clone(),
            Webhooks::new(config.webhook_secret.clone(), config.webhook_allow_private),
            LeaseTimes {
                lease: Duration::from_secs(config.lease_secs),
                heartbeat: Duration::from_secs(config.heartbeat_secs),
            },
        );
        let (requeued, failed) = queue.expire_leases().await?;
        if requeued + failed > 0 {
            tracing::warn!(
                requeued,
                failed,
                "took back jobs whose worker stopped answering"
            );
        }

        let registry = Arc::new(Registry::new(&config.models_dir, Device::Cpu));
        let catalog = Arc::new(registry.catalog().clone());
        for b in catalog.list() {
            if !b.available {
                tracing::warn!(
                    backbone = b.id,
                    "backbone not installed; run scripts/fetch-backbones.sh {}",
                    config.models_dir.display()
                );
            }
        }
        let engine = Arc::new(Engine {
            registry: registry.clone(),
        });
        let workers = config.role.runs_workers().then(|| {
            Workers::start(
                config.workers,
                WorkerContext {
                    queue: queue.clone(),
                    engine,
                    artifacts: artifacts.clone(),
                    runtime: tokio::runtime::Handle::current(),
                    name: config.worker_name(),
                },
            )
        });
        let limits = Limits {
            max_examples: config.max_examples,
            max_text_chars: config.max_text_chars,
            max_image_pixels: config.max_image_pixels,
            max_zip_entries: config.max_zip_entries,
            max_uncompressed_bytes: config.max_unzipped_mb.saturating_mul(1 << 20),
        };
        let auth = Arc::new(AuthPolicy::new(config.is_exposed()));
        if config.is_exposed() && !db.any_keys().await? {
            tracing::warn!(
                listen = %config.listen,
                "listening beyond loopback without any API key: every /v1 request will get 401 until one is created with `warmstart keys create --name NAME`"
            );
        }
        let compute = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(4);
        let rates = Arc::new(RateLimits::from_config(&config));
        let predict_admission = Arc::new(Semaphore::new(config.predict_queue));
        let models = Arc::new(ModelCache::new(registry.clone(), config.model_cache));
        let budget = Arc::new(http::budget::MemoryBudget::new(config.max_inflight_mb));
        let state = AppState {
            rates,
            predict_admission,
            batcher: Arc::new(Batcher::new(
                models.clone(),
                Arc::new(Semaphore::new(compute)),
                BatchSettings {
                    max_inputs: config.predict_max_batch,
                    max_wait: Duration::from_millis(config.predict_batch_wait_ms),
                },
                limits.max_image_pixels,
            )),
            models,
            config: Arc::new(config),
            db,
            artifacts,
            queue,
            catalog,
            limits,
            budget,
            metrics: Arc::new(http::metrics::Metrics::new()),
            started: std::time::Instant::now(),
            auth,
            shutdown: CancellationToken::new(),
        };
        // Any live process takes back jobs whose worker died.
        tokio::spawn(reap_expired(state.queue.clone(), state.shutdown.clone()));
        // Job stage timings for /metrics, from the queue's events.
        tokio::spawn(http::metrics::watch_jobs(
            state.metrics.clone(),
            state.queue.subscribe(),
            state.shutdown.clone(),
        ));
        Ok(App { state, workers })
    }

    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    /// Stops the workers (a running job goes back to the queue) and waits for them; ends
    /// live event streams.
    pub async fn shutdown(mut self) {
        self.state.shutdown.cancel();
        if let Some(w) = self.workers.take() {
            let _ = tokio::task::spawn_blocking(move || w.shutdown()).await;
        }
    }
}

/// The database `--database-url` names (the data folder's SQLite file by default).
async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let url = config.database_url();
    let redacted = crate::store::db::redact(&url);
    Db::connect(&url)
        .await
        .with_context(|| format!("cannot open the database {redacted}"))
}

impl Drop for App {
    fn drop(&mut self) {
        // Dropped without shutdown(): at least tell the threads and tasks to stop.
        self.state.queue.signal.shutdown();
        self.state.shutdown.cancel();
    }
}

/// Resolves on SIGTERM or Ctrl-C. The SIGTERM handler is installed when this is called
/// (before the service announces it is listening), not when first polled, so an early
/// SIGTERM still shuts down cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match term {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("shutdown requested: finishing in-flight requests");
    }
}

/// Runs the service until SIGTERM or Ctrl-C, then shuts down in bounded time: stop
/// accepting connections, let in-flight requests finish for up to `--shutdown-grace-secs`
/// while the workers put a running job back in the queue, and return (exit code 0).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let app = App::build(config).await?;
    let signal = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!("warmstart listening on http://{}", listener.local_addr()?);
    let timeouts = app.state.config.conn_timeouts();
    let mut server = tokio::spawn(http::conn::serve(
        listener,
        app.router(),
        timeouts,
        app.state.shutdown.clone(),
    ));
    tokio::select! {
        ended = &mut server => {
            // The server stopped by itself (an accept error): shut the rest down too.
            app.shutdown().await;
            return Ok(ended??);
        }
        _ = signal => {}
    }
    let in_flight = async {
        match tokio::time::timeout(grace, &mut server).await {
            Ok(ended) => ended
                .map_err(anyhow::Error::from)?
                .map_err(anyhow::Error::from),
            Err(_) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "in-flight requests did not finish within the grace period; closing them"
                );
                server.abort();
                Ok(())
            }
        }
    };
    // Cancelling the token (in shutdown) stops the accept loop and ends event streams;
    // meanwhile the workers stop and re-queue their jobs.
    let (served, ()) = tokio::join!(in_flight, app.shutdown());
    served?;
    tracing::info!("stopped");
    Ok(())
}

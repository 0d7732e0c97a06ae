//! Building the service: data folder, database and migrations, crash recovery, backbone
//! registry, worker threads and the router; then serving until SIGTERM/Ctrl-C.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use candle_core::Device;
use tokio::sync::Semaphore;

use crate::backbones::registry::Registry;
use crate::config::Config;
use crate::datasets::Limits;
use crate::http::{self, AppState, Counters};
use crate::jobs::webhook::Webhooks;
use crate::jobs::worker::WorkerContext;
use crate::jobs::{Queue, Workers};
use crate::serve::ModelCache;
use crate::store::{Artifacts, Db};
use crate::train::Engine;

/// Predict requests admitted at once (computing or waiting) before answering 503.
const PREDICT_QUEUE: usize = 64;

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
        let artifacts = Artifacts::open(&config.data_dir)?;
        let db = Db::open(&artifacts.db_path()).await.with_context(|| {
            format!("cannot open the database in {}", config.data_dir.display())
        })?;

        let datasets: HashSet<String> = db.all_dataset_ids().await?.into_iter().collect();
        let models: HashSet<String> = db.all_model_ids().await?.into_iter().collect();
        let swept = artifacts.sweep(&datasets, &models)?;
        if swept > 0 {
            tracing::info!(swept, "removed leftovers of interrupted writes");
        }
        let queue = Queue::new(db.clone(), Webhooks::new(config.webhook_secret.clone()));
        let (requeued, failed) = queue.recover().await?;
        if requeued + failed > 0 {
            tracing::warn!(
                requeued,
                failed,
                "recovered jobs interrupted by the last shutdown"
            );
        }

        let registry = Arc::new(Registry::new(&config.models_dir, Device::Cpu));
        for b in registry.list() {
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
        let workers = Workers::start(
            config.workers,
            WorkerContext {
                queue: queue.clone(),
                engine,
                artifacts: artifacts.clone(),
                runtime: tokio::runtime::Handle::current(),
            },
        );
        let limits = Limits {
            max_examples: config.max_examples,
            max_text_chars: config.max_text_chars,
            max_image_pixels: config.max_image_pixels,
            max_zip_entries: config.max_zip_entries,
            max_uncompressed_bytes: config.max_unzipped_mb << 20,
        };
        let compute = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(4);
        let state = AppState {
            models: Arc::new(ModelCache::new(registry.clone(), config.model_cache)),
            config: Arc::new(config),
            db,
            artifacts,
            queue,
            registry,
            limits,
            predict_admission: Arc::new(Semaphore::new(PREDICT_QUEUE)),
            predict_compute: Arc::new(Semaphore::new(compute)),
            counters: Arc::new(Counters::default()),
            started: std::time::Instant::now(),
        };
        Ok(App {
            state,
            workers: Some(workers),
        })
    }

    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    /// Stops the workers (a running job goes back to the queue) and waits for them.
    pub async fn shutdown(mut self) {
        if let Some(w) = self.workers.take() {
            let _ = tokio::task::spawn_blocking(move || w.shutdown()).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if self.workers.is_some() {
            // Dropped without shutdown(): at least tell the threads to stop.
            self.state.queue.signal.shutdown();
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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

/// Runs the service until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let app = App::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!("warmstart listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.router())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    app.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

//! Worker threads: plain OS threads (training is long, CPU-bound work that must not sit on
//! tokio's blocking pool), each taking one queued job at a time, woken by the queue's
//! signal. Each job is held under a lease that a heartbeat renews ([`super::lease`]). A
//! job's outcome is written through the queue, only while the lease is held; the model's
//! files are complete on disk before the row that points at them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use uuid::Uuid;

use super::failure::JobFailure;
use super::lease::{Beat, Heartbeat};
use super::queue::{Lease, NewEvent};
use super::{JobSpec, Queue};
use crate::datasets::stored::read_examples;
use crate::datasets::task::target_value;
use crate::datasets::{RawExample, Task};
use crate::error_code::ErrorCode;
use crate::store::jobs::{EventKind, JobRecord, Stage};
use crate::store::models::ModelRecord;
use crate::store::{Artifacts, Kind, now};
use crate::train::tasks::{set_strata, value_strata};
use crate::train::{
    BackboneChoice, Engine, EpochMetrics, Example, ExampleInput, Observer, Recipe, Targets,
    TrainError, TrainRequest,
};

/// The running worker threads.
pub struct Workers {
    queue: Queue,
    threads: Vec<JoinHandle<()>>,
}

/// What a worker needs.
#[derive(Clone)]
pub struct WorkerContext {
    pub queue: Queue,
    pub engine: Arc<Engine>,
    pub artifacts: Artifacts,
    pub runtime: Handle,
    /// This process's name for its workers, recorded on the jobs they start.
    pub name: String,
}

impl Workers {
    pub fn start(count: usize, ctx: WorkerContext) -> Workers {
        let threads = (0..count)
            .map(|i| {
                let mut ctx = ctx.clone();
                if count > 1 {
                    ctx.name = format!("{}#{i}", ctx.name);
                }
                std::thread::Builder::new()
                    .name(format!("warmstart-worker-{i}"))
                    .spawn(move || worker_loop(ctx))
                    .expect("spawning a worker thread")
            })
            .collect();
        Workers {
            queue: ctx.queue,
            threads,
        }
    }

    /// Stops the workers: a running job is interrupted at its next step and put back in the
    /// queue. Blocks until every thread has finished.
    pub fn shutdown(self) {
        self.queue.signal.shutdown();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn worker_loop(ctx: WorkerContext) {
    let mut seen = 0u64;
    // Jobs queued by other processes wake nobody here: look at the table this often.
    let poll = ctx.queue.lease_times.heartbeat.min(Duration::from_secs(5));
    while !ctx.queue.signal.is_shutdown() {
        match ctx.runtime.block_on(ctx.queue.claim_next(&ctx.name)) {
            Ok(Some((job, lease))) => {
                let heartbeat = Heartbeat::start(&ctx.runtime, ctx.queue.clone(), lease.clone());
                run_job(&ctx, job, &lease, &heartbeat);
                drop(heartbeat);
                ctx.queue.release(&lease.job_id);
            }
            Ok(None) => ctx.queue.signal.wait(&mut seen, poll),
            Err(e) => {
                tracing::error!(error = %e, "worker could not claim a job");
                ctx.queue.signal.wait(&mut seen, poll);
            }
        }
    }
}

/// Reports a job's progress through the queue (rows + broadcast), throttling progress
/// writes to a few per second.
struct JobObserver<'a> {
    ctx: &'a WorkerContext,
    lease: &'a Lease,
    heartbeat: &'a Heartbeat,
    job_id: String,
    stage: Stage,
    last_progress: Instant,
}

impl JobObserver<'_> {
    fn run<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = crate::store::StoreResult<T>>,
    ) {
        if let Err(e) = self.ctx.runtime.block_on(fut) {
            tracing::warn!(job = %self.job_id, error = %e, "could not record {what}");
        }
    }
}

impl Observer for JobObserver<'_> {
    fn recipe(&mut self, recipe: &Recipe) {
        self.run("recipe", self.ctx.queue.set_config(self.lease, recipe));
    }

    fn stage(&mut self, stage: Stage, message: &str) {
        self.stage = stage;
        tracing::info!(job = %self.job_id, stage = stage.as_str(), "{message}");
        self.run(
            "stage",
            self.ctx.queue.set_stage(self.lease, stage, message),
        );
    }

    fn progress(&mut self, epoch: u32, epochs: u32, fraction: f64) {
        if self.last_progress.elapsed() < Duration::from_millis(250) && fraction < 1.0 {
            return;
        }
        self.last_progress = Instant::now();
        self.run(
            "progress",
            self.ctx
                .queue
                .set_progress(self.lease, epoch, epochs, fraction, None),
        );
    }

    fn epoch(&mut self, stage: Stage, epoch: u32, epochs: u32, metrics: &EpochMetrics) {
        let q = &self.ctx.queue;
        let metrics = serde_json::to_value(metrics).expect("epoch metrics serialise");
        let fraction = epoch as f64 / epochs.max(1) as f64;
        self.run(
            "epoch",
            q.set_progress(self.lease, epoch, epochs, fraction, Some(&metrics)),
        );
        self.run(
            "epoch event",
            q.add_event(
                &self.job_id,
                NewEvent {
                    kind: EventKind::Epoch,
                    stage: Some(stage),
                    epoch: Some(epoch),
                    metrics: Some(&metrics),
                    message: None,
                },
            ),
        );
    }

    fn log(&mut self, message: &str) {
        tracing::info!(job = %self.job_id, "{message}");
        let event = NewEvent {
            kind: EventKind::Log,
            stage: Some(self.stage),
            epoch: None,
            metrics: None,
            message: Some(message),
        };
        self.run("log", self.ctx.queue.add_event(&self.job_id, event));
    }

    fn cancelled(&self) -> bool {
        self.ctx.queue.is_cancelled(&self.job_id)
            || self.ctx.queue.signal.is_shutdown()
            || self.heartbeat.stopped().is_some()
    }
}

/// Loads the job's dataset as training examples.
fn load_request(ctx: &WorkerContext, job: &JobRecord) -> Result<TrainRequest, JobFailure> {
    let spec: JobSpec =
        serde_json::from_value(job.request.clone()).map_err(JobFailure::InvalidJob)?;
    let dataset = ctx
        .runtime
        .block_on(ctx.queue.db.get_dataset(&job.tenant, &spec.dataset_id))
        .map_err(JobFailure::Store)?
        .ok_or_else(|| JobFailure::DatasetNotFound(spec.dataset_id.clone()))?;
    let dir = ctx
        .runtime
        .block_on(ctx.artifacts.local(Kind::Dataset, &dataset.id))
        .map_err(JobFailure::Store)?;
    let raw = read_examples(&dir).map_err(|source| JobFailure::DatasetUnreadable {
        id: dataset.id.clone(),
        source,
    })?;
    let (examples, targets) = training_examples(raw, &dataset.labels, dataset.task, &dir);
    Ok(TrainRequest {
        modality: dataset.modality,
        labels: dataset.labels.clone(),
        examples,
        targets,
        backbone: BackboneChoice {
            id: job.backbone.clone(),
            reason: job.backbone_reason.clone(),
        },
        hyperparameters: spec.hyperparameters,
        validation: spec.validation,
        seed: spec.seed,
        time_budget_s: spec.time_budget_s,
    })
}

/// The stored examples as training examples with their targets: classes by the dataset's
/// label list; a number (stratified by its quintile); or a label set (stratified by its
/// rarest label).
fn training_examples(
    raw: Vec<RawExample>,
    labels: &[String],
    task: Task,
    dir: &std::path::Path,
) -> (Vec<Example>, Targets) {
    let class_of: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let input = |e: &RawExample| match e {
        RawExample::Text { text, .. } | RawExample::TextLabels { text, .. } => {
            ExampleInput::Text(text.clone())
        }
        RawExample::Image { file, .. } | RawExample::ImageLabels { file, .. } => {
            ExampleInput::ImageFile(dir.join(file))
        }
    };
    let example = |(index, e): (usize, &RawExample), label| Example {
        input: input(e),
        label,
        index,
    };
    match task {
        Task::Classification => {
            let examples = raw
                .iter()
                .enumerate()
                .filter_map(|(index, e)| {
                    let label = *class_of.get(e.label())?;
                    Some(example((index, e), label))
                })
                .collect();
            (examples, Targets::Classes)
        }
        Task::Regression => {
            let kept: Vec<(usize, &RawExample, f64)> = raw
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Some((i, e, target_value(e.label())?)))
                .filter(|(_, _, v)| v.is_finite())
                .collect();
            let values: Vec<f64> = kept.iter().map(|k| k.2).collect();
            let strata = value_strata(&values);
            let examples = kept
                .iter()
                .zip(strata)
                .map(|(&(i, e, _), s)| example((i, e), s))
                .collect();
            (examples, Targets::Values(values))
        }
        Task::Multilabel => {
            let sets: Vec<Vec<bool>> = raw
                .iter()
                .map(|e| {
                    let mut set = vec![false; labels.len()];
                    for l in e.labels() {
                        if let Some(&j) = class_of.get(l.as_str()) {
                            set[j] = true;
                        }
                    }
                    set
                })
                .collect();
            let strata = dense(set_strata(&sets, labels.len()));
            let examples = raw
                .iter()
                .enumerate()
                .zip(strata)
                .map(|(ie, s)| example(ie, s))
                .collect();
            (examples, Targets::Sets(sets))
        }
    }
}

/// Strata renumbered 0.. in order of first use, so that none is empty.
fn dense(strata: Vec<usize>) -> Vec<usize> {
    let mut map: HashMap<usize, usize> = HashMap::new();
    strata
        .into_iter()
        .map(|s| {
            let next = map.len();
            *map.entry(s).or_insert(next)
        })
        .collect()
}

fn run_job(ctx: &WorkerContext, job: JobRecord, lease: &Lease, heartbeat: &Heartbeat) {
    let started = Instant::now();
    tracing::info!(job = %job.id, dataset = %job.dataset_id, "job started");
    let q = &ctx.queue;
    let fail = |failure: JobFailure| {
        let (code, message) = (failure.code(), failure.to_string());
        tracing::warn!(job = %job.id, code = code.name(), "job failed: {message}");
        if let Err(e) = ctx.runtime.block_on(q.fail(lease, code, &message)) {
            tracing::error!(job = %job.id, error = %e, "could not record the failure");
        }
    };
    let req = match load_request(ctx, &job) {
        Ok(r) => r,
        Err(failure) => return fail(failure),
    };
    let mut obs = JobObserver {
        ctx,
        lease,
        heartbeat,
        job_id: job.id.clone(),
        stage: Stage::Preparing,
        last_progress: Instant::now(),
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| ctx.engine.train(&req, &mut obs)));
    let outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(TrainError::Cancelled)) => {
            if heartbeat.stopped() == Some(Beat::Lost) {
                tracing::warn!(job = %job.id, "job stopped: its lease ran out and it went back to the queue");
                return;
            }
            let cancelled = q.is_cancelled(&job.id) || heartbeat.stopped() == Some(Beat::Cancelled);
            if q.signal.is_shutdown() && !cancelled {
                let msg = "the service is shutting down; the job was put back in the queue";
                if let Err(e) = ctx.runtime.block_on(q.requeue(lease, msg)) {
                    tracing::error!(job = %job.id, error = %e, "could not requeue");
                }
            }
            tracing::info!(job = %job.id, "job stopped (cancelled)");
            return;
        }
        Ok(Err(e)) => {
            if let TrainError::Candle(_) | TrainError::Io(_) = &e {
                tracing::error!(job = %job.id, error = %e, "training error");
            }
            return fail(JobFailure::Train(e));
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(job = %job.id, "training panicked: {what}");
            return fail(JobFailure::Panicked);
        }
    };

    // Files first, then the row that points at them.
    let model_id = Uuid::new_v4().to_string();
    let dest = ctx.artifacts.model_dir(&model_id);
    let saved = ctx.artifacts.staging_dir().and_then(|staging| {
        let written = outcome
            .artifact
            .save(&staging)
            .map_err(|source| crate::store::StoreError::Io {
                path: staging.clone(),
                source,
            })
            .and_then(|()| ctx.artifacts.commit_dir(&staging, &dest))
            // Every host must find the files before any host finds the row.
            .and_then(|()| {
                ctx.runtime
                    .block_on(ctx.artifacts.publish(Kind::Model, &model_id))
            });
        if written.is_err() {
            // Nothing half-written stays behind (the start-up sweep is the backstop).
            let _ = ctx.artifacts.remove_dir(&staging);
            let _ = ctx
                .runtime
                .block_on(ctx.artifacts.discard(Kind::Model, &model_id));
        }
        written
    });
    if let Err(e) = saved {
        tracing::error!(job = %job.id, error = %e, "saving the model failed");
        let cause = match &e {
            // The OS's reason ("no storage space", "read-only filesystem"), without paths.
            crate::store::StoreError::Io { source, .. } => match source.raw_os_error() {
                Some(_) => source.kind().to_string(),
                None => source.to_string(),
            },
            other => other.to_string(),
        };
        return fail(JobFailure::SaveFailed { cause });
    }
    let record = ModelRecord {
        id: model_id.clone(),
        tenant: job.tenant.clone(),
        job_id: job.id.clone(),
        dataset_id: job.dataset_id.clone(),
        backbone: outcome.recipe.backbone.clone(),
        modality: req.modality,
        task: req.targets.task(),
        labels: req.labels.clone(),
        metrics: serde_json::to_value(&outcome.report).expect("the report serialises"),
        created_at: now(),
    };
    match ctx.runtime.block_on(q.succeed(lease, &record)) {
        Ok(true) => tracing::info!(
            job = %job.id,
            model = %model_id,
            secs = started.elapsed().as_secs_f64(),
            "job succeeded"
        ),
        Ok(false) => {
            tracing::info!(job = %job.id, "job was cancelled (or its lease lost) while saving; model discarded");
            let _ = ctx
                .runtime
                .block_on(ctx.artifacts.discard(Kind::Model, &model_id));
        }
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "recording the model failed");
            let _ = ctx
                .runtime
                .block_on(ctx.artifacts.discard(Kind::Model, &model_id));
            fail(JobFailure::RecordFailed);
        }
    }
}

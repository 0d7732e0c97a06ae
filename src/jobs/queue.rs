//! Every change of a job's state, in one place. Each transition is one conditional SQL
//! statement (or transaction) so that two workers, a cancel request and a crash can never
//! leave a job in two states; each appends an event, stored and broadcast to live streams.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::webhook::Webhooks;
use super::{JobSpec, MAX_ATTEMPTS};
use crate::error_code::Code;
use crate::store::jobs::{EventKind, JobEvent, JobRecord, Stage, event_from_row, job_from_row};
use crate::store::models::ModelRecord;
use crate::store::{Db, StoreResult, now, to_json};
use crate::train::{BackboneChoice, Recipe};

/// Wakes idle workers when work arrives (or the service stops).
#[derive(Default)]
pub struct Signal {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

impl Signal {
    pub fn notify(&self) {
        self.state.lock().0 += 1;
        self.cv.notify_all();
    }

    pub fn shutdown(&self) {
        self.state.lock().1 = true;
        self.cv.notify_all();
    }

    pub fn is_shutdown(&self) -> bool {
        self.state.lock().1
    }

    /// Waits until notified, shut down, or `timeout` passes.
    pub fn wait(&self, seen: &mut u64, timeout: std::time::Duration) {
        let mut st = self.state.lock();
        if st.0 == *seen && !st.1 {
            self.cv.wait_for(&mut st, timeout);
        }
        *seen = st.0;
    }
}

/// What a cancel request found.
pub enum CancelOutcome {
    Cancelled(JobRecord),
    AlreadyFinished(JobRecord),
    NotFound,
}

/// The queue's handle: cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub db: Db,
    pub signal: Arc<Signal>,
    events: broadcast::Sender<JobEvent>,
    /// Running jobs whose cancellation the worker has not yet acted on.
    cancelled: Arc<Mutex<HashSet<String>>>,
    webhooks: Webhooks,
}

/// A new event to append.
pub struct NewEvent<'a> {
    pub kind: EventKind,
    pub stage: Option<Stage>,
    pub epoch: Option<u32>,
    pub metrics: Option<&'a Value>,
    pub message: Option<&'a str>,
}

impl<'a> NewEvent<'a> {
    pub fn message(kind: EventKind, message: &'a str) -> Self {
        NewEvent {
            kind,
            stage: None,
            epoch: None,
            metrics: None,
            message: Some(message),
        }
    }
}

impl Queue {
    pub fn new(db: Db, webhooks: Webhooks) -> Queue {
        let (events, _) = broadcast::channel(1024);
        Queue {
            db,
            signal: Arc::new(Signal::default()),
            events,
            cancelled: Arc::default(),
            webhooks,
        }
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// After a job ends: deliver its webhook, if it asked for one.
    async fn finished(&self, job_id: &str) -> StoreResult<()> {
        let Some(job) = self.db.get_job_any_tenant(job_id).await? else {
            return Ok(());
        };
        if let Some(url) = job.request["webhook_url"].as_str() {
            self.webhooks.notify(url.to_string(), job);
        }
        Ok(())
    }

    /// Live events of every job (filter by `job_id`).
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    pub async fn add_event(&self, job_id: &str, e: NewEvent<'_>) -> StoreResult<()> {
        let row = sqlx::query(
            "INSERT INTO job_events (job_id, at, kind, stage, epoch, metrics, message)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(job_id)
        .bind(now())
        .bind(e.kind.as_str())
        .bind(e.stage.map(Stage::as_str))
        .bind(e.epoch.map(|v| v as i64))
        .bind(e.metrics.map(to_json))
        .bind(e.message)
        .fetch_one(&self.db.pool)
        .await?;
        let _ = self.events.send(event_from_row(&row)?);
        Ok(())
    }

    /// Stores a new queued job and wakes a worker; `None` when the tenant's dataset is gone.
    pub async fn enqueue(
        &self,
        tenant: &str,
        spec: &JobSpec,
        backbone: &BackboneChoice,
    ) -> StoreResult<Option<JobRecord>> {
        let id = Uuid::new_v4().to_string();
        // Inserted only if the dataset (still) exists, in one statement, so it cannot
        // interleave with the dataset's deletion (which refuses while a job uses it).
        let row = sqlx::query(
            "INSERT INTO jobs (id, tenant, dataset_id, backbone, backbone_reason, status, request,
                 created_at)
             SELECT ?, ?, ?, ?, ?, 'queued', ?, ?
             WHERE EXISTS (SELECT 1 FROM datasets WHERE id = ? AND tenant = ?)
             RETURNING *",
        )
        .bind(&id)
        .bind(tenant)
        .bind(&spec.dataset_id)
        .bind(&backbone.id)
        .bind(&backbone.reason)
        .bind(to_json(spec))
        .bind(now())
        .bind(&spec.dataset_id)
        .bind(tenant)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        self.add_event(&id, NewEvent::message(EventKind::Queued, "job queued"))
            .await?;
        self.signal.notify();
        job_from_row(&row).map(Some)
    }

    /// Atomically takes the oldest queued job and marks it running.
    pub async fn claim_next(&self) -> StoreResult<Option<JobRecord>> {
        let row = sqlx::query(
            "UPDATE jobs SET status = 'running', stage = 'preparing', started_at = ?,
                 attempts = attempts + 1, epoch = 0, epochs = 0, fraction = 0
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1)
               AND status = 'queued'
             RETURNING *",
        )
        .bind(now())
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let job = job_from_row(&row)?;
        self.add_event(
            &job.id,
            NewEvent::message(EventKind::Started, "a worker started the job"),
        )
        .await?;
        Ok(Some(job))
    }

    /// Records the resolved recipe.
    pub async fn set_config(&self, job_id: &str, recipe: &Recipe) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET config = ? WHERE id = ? AND status = 'running'")
            .bind(to_json(recipe))
            .bind(job_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn set_stage(&self, job_id: &str, stage: Stage, message: &str) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE jobs SET stage = ?, epoch = 0, epochs = 0, fraction = 0
             WHERE id = ? AND status = 'running'",
        )
        .bind(stage.as_str())
        .bind(job_id)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() > 0 {
            self.add_event(
                job_id,
                NewEvent {
                    kind: EventKind::Stage,
                    stage: Some(stage),
                    epoch: None,
                    metrics: None,
                    message: Some(message),
                },
            )
            .await?;
        }
        Ok(())
    }

    pub async fn set_progress(
        &self,
        job_id: &str,
        epoch: u32,
        epochs: u32,
        fraction: f64,
        metrics: Option<&Value>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET epoch = ?, epochs = ?, fraction = ?, metrics = COALESCE(?, metrics)
             WHERE id = ? AND status = 'running'",
        )
        .bind(epoch as i64)
        .bind(epochs as i64)
        .bind(fraction)
        .bind(metrics.map(to_json))
        .bind(job_id)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Marks a running job succeeded and inserts its model row, in one transaction.
    /// Returns `false` (and writes nothing) if the job is no longer running — cancelled
    /// meanwhile — so the caller can remove the model's files.
    pub async fn succeed(&self, job_id: &str, model: &ModelRecord) -> StoreResult<bool> {
        let mut tx = self.db.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE jobs SET status = 'succeeded', model_id = ?, metrics = ?, fraction = 1,
                 finished_at = ?
             WHERE id = ? AND status = 'running'",
        )
        .bind(&model.id)
        .bind(to_json(&model.metrics))
        .bind(now())
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO models (id, tenant, job_id, dataset_id, backbone, modality, labels,
             metrics, created_at, task) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&model.id)
        .bind(&model.tenant)
        .bind(&model.job_id)
        .bind(&model.dataset_id)
        .bind(&model.backbone)
        .bind(model.modality.as_str())
        .bind(to_json(&model.labels))
        .bind(to_json(&model.metrics))
        .bind(&model.created_at)
        .bind(model.task.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.add_event(
            job_id,
            NewEvent {
                kind: EventKind::Succeeded,
                stage: Some(Stage::Evaluating),
                epoch: None,
                metrics: Some(&model.metrics),
                message: Some("training finished; the model is ready"),
            },
        )
        .await?;
        self.finished(job_id).await?;
        Ok(true)
    }

    /// Marks a running job failed with its code and a reason shown to the user.
    pub async fn fail(&self, job_id: &str, code: Code, message: &str) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'failed', error_code = ?, error_message = ?, finished_at = ?
             WHERE id = ? AND status = 'running'",
        )
        .bind(code.name())
        .bind(message)
        .bind(now())
        .bind(job_id)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() > 0 {
            self.add_event(job_id, NewEvent::message(EventKind::Failed, message))
                .await?;
            self.finished(job_id).await?;
        }
        Ok(())
    }

    /// Puts a running job back in the queue (shutdown while it ran).
    pub async fn requeue(&self, job_id: &str, message: &str) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', stage = NULL, epoch = 0, epochs = 0, fraction = 0
             WHERE id = ? AND status = 'running'",
        )
        .bind(job_id)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() > 0 {
            self.add_event(job_id, NewEvent::message(EventKind::Requeued, message))
                .await?;
            self.signal.notify();
        }
        Ok(())
    }

    /// Cancels a queued or running job. A running job's worker sees the new status at its
    /// next step and stops.
    pub async fn cancel(&self, tenant: &str, job_id: &str) -> StoreResult<CancelOutcome> {
        let row = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?
             WHERE id = ? AND tenant = ? AND status IN ('queued', 'running') RETURNING *",
        )
        .bind(now())
        .bind(job_id)
        .bind(tenant)
        .fetch_optional(&self.db.pool)
        .await?;
        if let Some(row) = row {
            self.cancelled.lock().insert(job_id.to_string());
            self.add_event(
                job_id,
                NewEvent::message(EventKind::Cancelled, "job cancelled on request"),
            )
            .await?;
            self.finished(job_id).await?;
            return Ok(CancelOutcome::Cancelled(job_from_row(&row)?));
        }
        Ok(match self.db.get_job(tenant, job_id).await? {
            Some(job) => CancelOutcome::AlreadyFinished(job),
            None => CancelOutcome::NotFound,
        })
    }

    /// Whether a cancel request arrived for this job (workers poll this between steps).
    pub fn is_cancelled(&self, job_id: &str) -> bool {
        self.cancelled.lock().contains(job_id)
    }

    /// The worker is done with the job: forget its cancellation flag.
    pub fn release(&self, job_id: &str) {
        self.cancelled.lock().remove(job_id);
    }

    /// At start-up: jobs left `running` by a dead process are queued again, or failed once
    /// they have died [`MAX_ATTEMPTS`] times. Returns how many were re-queued and failed.
    pub async fn recover(&self) -> StoreResult<(u64, u64)> {
        let stuck: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, attempts FROM jobs WHERE status = 'running'")
                .fetch_all(&self.db.pool)
                .await?;
        let (mut requeued, mut failed) = (0, 0);
        for (id, attempts) in stuck {
            if attempts as u32 >= MAX_ATTEMPTS {
                self.fail(
                    &id,
                    Code::Interrupted,
                    &format!(
                        "the service stopped {attempts} times while this job ran; giving up. Check the server's memory and logs, then submit the job again"
                    ),
                )
                .await?;
                failed += 1;
            } else {
                self.requeue(
                    &id,
                    "the service restarted while this job was running; it was queued again",
                )
                .await?;
                requeued += 1;
            }
        }
        Ok((requeued, failed))
    }
}

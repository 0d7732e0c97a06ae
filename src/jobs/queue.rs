//! Every change of a job's state, in one place. Each transition is one conditional SQL
//! statement (or transaction) so that two workers, a cancel request and a crash can never
//! leave a job in two states; each appends an event, stored and broadcast to live streams.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::JobSpec;
use super::lease::LeaseTimes;
use super::webhook::Webhooks;
use crate::error_code::Code;
use crate::store::jobs::{EventKind, JobEvent, JobRecord, Stage, event_from_row, job_from_row};
use crate::store::models::ModelRecord;
use crate::store::{Db, StoreResult, now, to_json};
use crate::train::{BackboneChoice, Recipe};

/// "Still this worker's": the job is running under the lease token bound as `$n`.
fn held(n: usize) -> String {
    format!("status = 'running' AND lease_owner = ${n}")
}
/// A finished job holds no lease.
const RELEASED: &str = "lease_owner = NULL, lease_expires_ms = NULL";
/// Back to the queue, its progress and lease cleared.
pub(crate) const REQUEUE: &str = "UPDATE jobs SET status = 'queued', stage = NULL, epoch = 0,
     epochs = 0, fraction = 0, lease_owner = NULL, lease_expires_ms = NULL";

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

/// A worker's hold on a running job: the job and the token its claim wrote. Every write
/// the worker makes is conditional on the row still carrying that token, so a worker whose
/// lease ran out (and whose job another worker now runs) changes nothing.
#[derive(Clone, Debug)]
pub struct Lease {
    pub job_id: String,
    pub token: String,
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
    pub(crate) lease_times: LeaseTimes,
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
    pub fn new(db: Db, webhooks: Webhooks, lease_times: LeaseTimes) -> Queue {
        let (events, _) = broadcast::channel(1024);
        Queue {
            db,
            signal: Arc::new(Signal::default()),
            events,
            cancelled: Arc::default(),
            webhooks,
            lease_times,
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
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
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
             SELECT $1, $2, $3, $4, $5, 'queued', $6, $7
             WHERE EXISTS (SELECT 1 FROM datasets WHERE id = $8 AND tenant = $9)
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

    /// Records the resolved recipe.
    pub async fn set_config(&self, lease: &Lease, recipe: &Recipe) -> StoreResult<()> {
        sqlx::query(&format!(
            "UPDATE jobs SET config = $1 WHERE id = $2 AND {}",
            held(3)
        ))
        .bind(to_json(recipe))
        .bind(&lease.job_id)
        .bind(&lease.token)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn set_stage(&self, lease: &Lease, stage: Stage, message: &str) -> StoreResult<()> {
        let done = sqlx::query(&format!(
            "UPDATE jobs SET stage = $1, epoch = 0, epochs = 0, fraction = 0
             WHERE id = $2 AND {}",
            held(3)
        ))
        .bind(stage.as_str())
        .bind(&lease.job_id)
        .bind(&lease.token)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() > 0 {
            self.add_event(
                &lease.job_id,
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
        lease: &Lease,
        epoch: u32,
        epochs: u32,
        fraction: f64,
        metrics: Option<&Value>,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "UPDATE jobs SET epoch = $1, epochs = $2, fraction = $3, metrics = COALESCE($4, metrics)
             WHERE id = $5 AND {}",
            held(6)
        ))
        .bind(epoch as i64)
        .bind(epochs as i64)
        .bind(fraction)
        .bind(metrics.map(to_json))
        .bind(&lease.job_id)
        .bind(&lease.token)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Marks a running job succeeded and inserts its model row, in one transaction.
    /// Returns `false` (and writes nothing) if the job is no longer this worker's — cancelled
    /// meanwhile, or its lease ran out — so the caller can remove the model's files.
    pub async fn succeed(&self, lease: &Lease, model: &ModelRecord) -> StoreResult<bool> {
        let job_id = lease.job_id.as_str();
        let mut tx = self.db.pool.begin().await?;
        let done = sqlx::query(&format!(
            "UPDATE jobs SET status = 'succeeded', model_id = $1, metrics = $2, fraction = 1,
                 finished_at = $3, {RELEASED}
             WHERE id = $4 AND {}",
            held(5)
        ))
        .bind(&model.id)
        .bind(to_json(&model.metrics))
        .bind(now())
        .bind(job_id)
        .bind(&lease.token)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO models (id, tenant, job_id, dataset_id, backbone, modality, labels,
             metrics, created_at, task) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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

    /// Marks the worker's running job failed with its code and a reason shown to the user.
    pub async fn fail(&self, lease: &Lease, code: Code, message: &str) -> StoreResult<()> {
        let done = sqlx::query(&format!(
            "UPDATE jobs SET status = 'failed', error_code = $1, error_message = $2,
                 finished_at = $3, {RELEASED}
             WHERE id = $4 AND {}",
            held(5)
        ))
        .bind(code.name())
        .bind(message)
        .bind(now())
        .bind(&lease.job_id)
        .bind(&lease.token)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() > 0 {
            self.failed(&lease.job_id, message).await?;
        }
        Ok(())
    }

    /// After a job was failed: its event and webhook.
    pub(crate) async fn failed(&self, job_id: &str, message: &str) -> StoreResult<()> {
        self.add_event(job_id, NewEvent::message(EventKind::Failed, message))
            .await?;
        self.finished(job_id).await
    }

    /// Puts the worker's running job back in the queue (shutdown while it ran).
    pub async fn requeue(&self, lease: &Lease, message: &str) -> StoreResult<()> {
        let done = sqlx::query(&format!("{REQUEUE} WHERE id = $1 AND {}", held(2)))
            .bind(&lease.job_id)
            .bind(&lease.token)
            .execute(&self.db.pool)
            .await?;
        if done.rows_affected() > 0 {
            self.requeued(&lease.job_id, message).await?;
        }
        Ok(())
    }

    /// After a job was put back in the queue: its event, and a worker woken.
    pub(crate) async fn requeued(&self, job_id: &str, message: &str) -> StoreResult<()> {
        self.add_event(job_id, NewEvent::message(EventKind::Requeued, message))
            .await?;
        self.signal.notify();
        Ok(())
    }

    /// Cancels a queued or running job. A running job's worker sees the new status at its
    /// next step (in this process) or its next heartbeat (on another host) and stops.
    pub async fn cancel(&self, tenant: &str, job_id: &str) -> StoreResult<CancelOutcome> {
        let row = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1, lease_owner = NULL,
                 lease_expires_ms = NULL
             WHERE id = $2 AND tenant = $3 AND status IN ('queued', 'running') RETURNING *",
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

    /// Whether a cancel request arrived in this process for this job (workers poll this
    /// between steps; a cancel made elsewhere reaches them through their heartbeat).
    pub fn is_cancelled(&self, job_id: &str) -> bool {
        self.cancelled.lock().contains(job_id)
    }

    /// The worker is done with the job: forget its cancellation flag.
    pub fn release(&self, job_id: &str) {
        self.cancelled.lock().remove(job_id);
    }
}

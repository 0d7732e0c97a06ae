//! Leases: how a job stays with exactly one worker when several processes, on several
//! hosts, share one database. A claim takes the oldest queued job in one statement
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and writes a fresh lease token with an expiry
//! on the database's clock; the worker's heartbeat pushes the expiry forward and notices a
//! cancel made on another host; any live process re-queues a job whose lease ran out (its
//! worker died), and every write a worker makes is conditional on still holding the token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::MAX_ATTEMPTS;
use super::queue::{Lease, NewEvent, Queue, REQUEUE};
use crate::error_code::Code;
use crate::store::jobs::{EventKind, JobRecord, JobStatus, job_from_row};
use crate::store::{StoreResult, now};

/// How long a lease lasts and how often it is renewed.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTimes {
    pub lease: Duration,
    pub heartbeat: Duration,
}

impl Default for LeaseTimes {
    fn default() -> Self {
        LeaseTimes {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
        }
    }
}

/// What a heartbeat found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Still this worker's; the lease is renewed.
    Held,
    /// Cancelled (on any host): stop.
    Cancelled,
    /// No longer this worker's (the lease ran out and the job went back to the queue, or
    /// it ended): stop without writing anything.
    Lost,
}

impl Queue {
    /// Atomically takes the oldest queued job for `worker`, marks it running and leases it.
    pub async fn claim_next(&self, worker: &str) -> StoreResult<Option<(JobRecord, Lease)>> {
        let backend = self.db.backend;
        let token = Uuid::new_v4().to_string();
        let sql = format!(
            "UPDATE jobs SET status = 'running', stage = 'preparing', started_at = $1,
                 attempts = attempts + 1, epoch = 0, epochs = 0, fraction = 0,
                 lease_owner = $2, lease_expires_ms = {now} + $3
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued'
                         ORDER BY created_at, id LIMIT 1 {lock})
               AND status = 'queued'
             RETURNING *",
            now = backend.now_ms(),
            lock = backend.skip_locked(),
        );
        let row = sqlx::query(&sql)
            .bind(now())
            .bind(&token)
            .bind(self.lease_times.lease.as_millis() as i64)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let job = job_from_row(&row)?;
        let message = format!("worker {worker} started the job");
        self.add_event(&job.id, NewEvent::message(EventKind::Started, &message))
            .await?;
        let lease = Lease {
            job_id: job.id.clone(),
            token,
        };
        Ok(Some((job, lease)))
    }

    /// Renews the lease, or says why the job is no longer this worker's.
    pub async fn heartbeat(&self, lease: &Lease) -> StoreResult<Beat> {
        let sql = format!(
            "UPDATE jobs SET lease_expires_ms = {} + $1
             WHERE id = $2 AND status = 'running' AND lease_owner = $3",
            self.db.backend.now_ms()
        );
        let done = sqlx::query(&sql)
            .bind(self.lease_times.lease.as_millis() as i64)
            .bind(&lease.job_id)
            .bind(&lease.token)
            .execute(&self.db.pool)
            .await?;
        if done.rows_affected() > 0 {
            return Ok(Beat::Held);
        }
        let job = self.db.get_job_any_tenant(&lease.job_id).await?;
        Ok(match job.map(|j| j.status) {
            Some(JobStatus::Cancelled) => Beat::Cancelled,
            _ => Beat::Lost,
        })
    }

    /// Jobs whose lease ran out (their worker died, on whatever host) are queued again, or
    /// failed once they have died [`MAX_ATTEMPTS`] times. Any live process runs this; each
    /// job is taken back by exactly one of them. Returns how many were re-queued and failed.
    pub async fn expire_leases(&self) -> StoreResult<(u64, u64)> {
        // A running job without an expiry was left by a version without leases.
        let expired = format!(
            "status = 'running' AND (lease_expires_ms IS NULL OR lease_expires_ms < {})",
            self.db.backend.now_ms()
        );
        let failed: Vec<(String, i64)> = sqlx::query_as(&format!(
            "UPDATE jobs SET status = 'failed', error_code = $1, error_message = $2,
                 finished_at = $3, lease_owner = NULL, lease_expires_ms = NULL
             WHERE {expired} AND attempts >= $4 RETURNING id, attempts"
        ))
        .bind(Code::Interrupted.name())
        .bind(gave_up_message())
        .bind(now())
        .bind(i64::from(MAX_ATTEMPTS))
        .fetch_all(&self.db.pool)
        .await?;
        for (id, _) in &failed {
            self.failed(id, &gave_up_message()).await?;
        }
        let requeued: Vec<String> =
            sqlx::query_scalar(&format!("{REQUEUE} WHERE {expired} RETURNING id"))
                .fetch_all(&self.db.pool)
                .await?;
        for id in &requeued {
            let msg = "the worker running this job stopped answering (its lease ran out); it was queued again";
            self.requeued(id, msg).await?;
        }
        Ok((requeued.len() as u64, failed.len() as u64))
    }
}

fn gave_up_message() -> String {
    format!(
        "the worker running this job died {MAX_ATTEMPTS} times; giving up. Check the workers' memory and logs, then submit the job again"
    )
}

/// Every heartbeat interval, until `stop`: re-queue jobs whose lease ran out.
pub async fn reap_expired(queue: Queue, stop: CancellationToken) {
    let every = queue.lease_times.heartbeat;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match queue.expire_leases().await {
            Ok((0, 0)) => {}
            Ok((requeued, failed)) => {
                tracing::warn!(
                    requeued,
                    failed,
                    "took back jobs whose worker stopped answering"
                )
            }
            Err(e) => tracing::warn!(error = %e, "could not look for expired leases"),
        }
    }
}

/// A running job's heartbeat, on the runtime, for as long as the worker holds it.
pub struct Heartbeat {
    /// The latest answer that is not [`Beat::Held`] (0 while held).
    state: Arc<AtomicU8>,
    task: JoinHandle<()>,
}

impl Heartbeat {
    pub fn start(runtime: &Handle, queue: Queue, lease: Lease) -> Heartbeat {
        let state = Arc::new(AtomicU8::new(0));
        let seen = state.clone();
        let task = runtime.spawn(async move {
            loop {
                tokio::time::sleep(queue.lease_times.heartbeat).await;
                let code = match queue.heartbeat(&lease).await {
                    Ok(Beat::Held) => continue,
                    Ok(Beat::Cancelled) => 1,
                    Ok(Beat::Lost) => 2,
                    Err(e) => {
                        // The database is away: keep trying; if it stays away the lease
                        // runs out and the finish is refused.
                        tracing::warn!(job = %lease.job_id, error = %e, "heartbeat failed");
                        continue;
                    }
                };
                seen.store(code, Ordering::Relaxed);
                return;
            }
        });
        Heartbeat { state, task }
    }

    /// Why the worker must stop, if it must.
    pub fn stopped(&self) -> Option<Beat> {
        match self.state.load(Ordering::Relaxed) {
            1 => Some(Beat::Cancelled),
            2 => Some(Beat::Lost),
            _ => None,
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

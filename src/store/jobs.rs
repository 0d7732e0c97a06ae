//! Job and job-event rows: their types and read queries. Every write that changes a job's
//! state lives in `crate::jobs::queue`, the one module that owns the state machine.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use utoipa::ToSchema;

use super::page::{Listing, Page, PageRequest};
use super::{Db, StoreResult, parse_json};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// What an entry in a job's history records (its `kind`, also the SSE event name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Queued,
    /// A worker claimed the job.
    Started,
    /// The job entered a new stage.
    Stage,
    /// The end of an epoch, with its metrics.
    Epoch,
    Log,
    /// Put back in the queue (shutdown or restart while it ran).
    Requeued,
    Succeeded,
    Failed,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Started => "started",
            EventKind::Stage => "stage",
            EventKind::Epoch => "epoch",
            EventKind::Log => "log",
            EventKind::Requeued => "requeued",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => EventKind::Queued,
            "started" => EventKind::Started,
            "stage" => EventKind::Stage,
            "epoch" => EventKind::Epoch,
            "log" => EventKind::Log,
            "requeued" => EventKind::Requeued,
            "succeeded" => EventKind::Succeeded,
            "failed" => EventKind::Failed,
            "cancelled" => EventKind::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job ends with this event (nothing follows it).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled
        )
    }
}

/// Which step of the recipe a running job is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Preparing,
    ExtractingFeatures,
    TrainingHead,
    Finetuning,
    Evaluating,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Preparing => "preparing",
            Stage::ExtractingFeatures => "extracting_features",
            Stage::TrainingHead => "training_head",
            Stage::Finetuning => "finetuning",
            Stage::Evaluating => "evaluating",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "preparing" => Stage::Preparing,
            "extracting_features" => Stage::ExtractingFeatures,
            "training_head" => Stage::TrainingHead,
            "finetuning" => Stage::Finetuning,
            "evaluating" => Stage::Evaluating,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Default, ToSchema)]
pub struct Progress {
    pub epoch: u32,
    pub epochs: u32,
    pub fraction: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

/// A stored job, as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct JobRecord {
    pub id: String,
    pub dataset_id: String,
    pub backbone: String,
    pub status: JobStatus,
    pub stage: Option<Stage>,
    pub progress: Progress,
    /// The latest metrics (an object; empty until the first epoch).
    #[schema(value_type = Object)]
    pub metrics: Value,
    pub model_id: Option<String>,
    pub error: Option<JobError>,
    /// The request as submitted.
    #[schema(value_type = Object)]
    pub request: Value,
    /// The resolved recipe, with the reason for each automatic choice (null until it starts).
    #[schema(value_type = Option<Object>)]
    pub config: Value,
    pub attempts: u32,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(skip)]
    pub tenant: String,
    /// Why `backbone` was chosen, when the request said `"auto"`.
    #[serde(skip)]
    pub backbone_reason: Option<String>,
}

/// One entry in a job's history.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct JobEvent {
    /// Increasing sequence number, also the SSE event id.
    pub seq: i64,
    #[serde(skip)]
    pub job_id: String,
    pub at: String,
    pub kind: EventKind,
    pub stage: Option<Stage>,
    pub epoch: Option<u32>,
    #[schema(value_type = Object)]
    pub metrics: Value,
    pub message: Option<String>,
}

pub(crate) fn job_from_row(row: &sqlx::any::AnyRow) -> StoreResult<JobRecord> {
    let status: String = row.try_get("status")?;
    let stage: Option<String> = row.try_get("stage")?;
    let code: Option<String> = row.try_get("error_code")?;
    let message: Option<String> = row.try_get("error_message")?;
    let json_or_null = |column: &'static str| -> StoreResult<Value> {
        match row.try_get::<Option<String>, _>(column)? {
            Some(text) => parse_json(column, &text),
            None => Ok(Value::Null),
        }
    };
    Ok(JobRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        dataset_id: row.try_get("dataset_id")?,
        backbone: row.try_get("backbone")?,
        backbone_reason: row.try_get("backbone_reason")?,
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Failed),
        stage: stage.as_deref().and_then(Stage::parse),
        progress: Progress {
            epoch: row.try_get::<i64, _>("epoch")? as u32,
            epochs: row.try_get::<i64, _>("epochs")? as u32,
            fraction: row.try_get("fraction")?,
        },
        metrics: match json_or_null("metrics")? {
            Value::Null => Value::Object(Default::default()),
            v => v,
        },
        model_id: row.try_get("model_id")?,
        error: code.map(|code| JobError {
            code,
            message: message.unwrap_or_default(),
        }),
        request: json_or_null("request")?,
        config: json_or_null("config")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(crate) fn event_from_row(row: &sqlx::any::AnyRow) -> StoreResult<JobEvent> {
    let kind: String = row.try_get("kind")?;
    let stage: Option<String> = row.try_get("stage")?;
    let metrics: Option<String> = row.try_get("metrics")?;
    Ok(JobEvent {
        seq: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        at: row.try_get("at")?,
        // Every kind is written by this code; an unknown one is shown as a log line.
        kind: EventKind::parse(&kind).unwrap_or(EventKind::Log),
        stage: stage.as_deref().and_then(Stage::parse),
        epoch: row.try_get::<Option<i64>, _>("epoch")?.map(|e| e as u32),
        metrics: match metrics {
            Some(text) => parse_json("metrics", &text)?,
            None => Value::Object(Default::default()),
        },
        message: row.try_get("message")?,
    })
}

impl Db {
    pub async fn get_job(&self, tenant: &str, id: &str) -> StoreResult<Option<JobRecord>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// A job whatever its tenant (for the workers).
    pub async fn get_job_any_tenant(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// A page of the tenant's jobs (only those on `dataset_id` when given), newest first;
    /// `None` when `after` is not one of the tenant's jobs.
    pub async fn list_jobs(
        &self,
        tenant: &str,
        dataset_id: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Option<Page<JobRecord>>> {
        let listing = Listing {
            table: "jobs",
            tenant,
            filter: dataset_id.map(|id| ("dataset_id", id)),
        };
        let rows = self.page_rows(&listing, page).await?;
        rows.map(|p| p.try_map(|r| job_from_row(&r))).transpose()
    }

    /// Events of a job with a sequence number above `after`, oldest first.
    pub async fn job_events(&self, job_id: &str, after: i64) -> StoreResult<Vec<JobEvent>> {
        let rows =
            sqlx::query("SELECT * FROM job_events WHERE job_id = $1 AND id > $2 ORDER BY id")
                .bind(job_id)
                .bind(after)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// A page of a job's events, newest first: at most `limit` with a sequence number below
    /// `before` (all when `None`).
    pub async fn job_events_page(
        &self,
        job_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Page<JobEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM job_events WHERE job_id = $1 AND ($2 IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(job_id)
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        Page::from_rows(rows, limit).try_map(|r| event_from_row(&r))
    }

    /// How many jobs that are not finished use this dataset.
    pub async fn active_jobs_on_dataset(&self, dataset_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE dataset_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(dataset_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Count of jobs per status, for `/metrics`.
    pub async fn job_status_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_keep_their_names() {
        let all = [
            EventKind::Queued,
            EventKind::Started,
            EventKind::Stage,
            EventKind::Epoch,
            EventKind::Log,
            EventKind::Requeued,
            EventKind::Succeeded,
            EventKind::Failed,
            EventKind::Cancelled,
        ];
        for kind in all {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let terminal: Vec<&str> = all
            .iter()
            .filter(|k| k.is_terminal())
            .map(|k| k.as_str())
            .collect();
        assert_eq!(terminal, ["succeeded", "failed", "cancelled"]);
    }
}

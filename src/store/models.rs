//! Trained-model rows. The weights and the preprocessing config live in the model's
//! artefact folder, written before the row.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::page::{Listing, Page, PageRequest};
use super::{Db, StoreResult, parse_json, to_json};
use crate::backbones::Modality;
use crate::datasets::Task;

/// A stored model, as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelRecord {
    pub id: String,
    pub job_id: String,
    pub dataset_id: String,
    pub backbone: String,
    pub modality: Modality,
    /// classification, regression or multilabel (from its dataset).
    pub task: Task,
    /// Class or label names, in output order (none for regression).
    pub labels: Vec<String>,
    /// Held-out metrics and how the model was chosen: classification — accuracy, macro-F1,
    /// per class, calibration, `selected`; regression — mae, rmse, r2, spearman, residuals,
    /// interval, the baseline and mean predictor; multi-label — micro_f1, macro_f1,
    /// subset_accuracy, per_label with thresholds; both: `selected` (head_only |
    /// finetuned) and `finetuning` (why).
    #[schema(value_type = Object)]
    pub metrics: Value,
    pub created_at: String,
    #[serde(skip)]
    pub tenant: String,
}

fn from_row(row: &sqlx::any::AnyRow) -> StoreResult<ModelRecord> {
    let modality: String = row.try_get("modality")?;
    Ok(ModelRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        job_id: row.try_get("job_id")?,
        dataset_id: row.try_get("dataset_id")?,
        backbone: row.try_get("backbone")?,
        modality: Modality::parse(&modality).unwrap_or(Modality::Text),
        task: Task::parse(&row.try_get::<String, _>("task")?).unwrap_or_default(),
        labels: parse_json("labels", &row.try_get::<String, _>("labels")?)?,
        metrics: parse_json("metrics", &row.try_get::<String, _>("metrics")?)?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    pub async fn insert_model(&self, m: &ModelRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO models (id, tenant, job_id, dataset_id, backbone, modality, labels,
             metrics, created_at, task) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&m.id)
        .bind(&m.tenant)
        .bind(&m.job_id)
        .bind(&m.dataset_id)
        .bind(&m.backbone)
        .bind(m.modality.as_str())
        .bind(to_json(&m.labels))
        .bind(to_json(&m.metrics))
        .bind(&m.created_at)
        .bind(m.task.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_model(&self, tenant: &str, id: &str) -> StoreResult<Option<ModelRecord>> {
        let row = sqlx::query("SELECT * FROM models WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A page of the tenant's models, newest first; `None` when `after` is not one of them.
    pub async fn list_models(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> StoreResult<Option<Page<ModelRecord>>> {
        let listing = Listing {
            table: "models",
            tenant,
            filter: None,
        };
        let rows = self.page_rows(&listing, page).await?;
        rows.map(|p| p.try_map(|r| from_row(&r))).transpose()
    }

    /// The newest model trained on a dataset.
    pub async fn latest_model_for_dataset(
        &self,
        tenant: &str,
        dataset_id: &str,
    ) -> StoreResult<Option<ModelRecord>> {
        let row = sqlx::query(
            "SELECT * FROM models WHERE tenant = $1 AND dataset_id = $2
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(dataset_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn delete_model(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM models WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn all_model_ids(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM models")
            .fetch_all(&self.pool)
            .await?)
    }
}

//! Dataset rows. The examples themselves live in the dataset's artefact folder.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::page::{Listing, Page, PageRequest};
use super::{Db, StoreResult, parse_json, to_json};
use crate::backbones::Modality;
use crate::datasets::{TargetSummary, Task};

/// A stored dataset, as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DatasetRecord {
    pub id: String,
    pub name: String,
    pub modality: Modality,
    /// What the labels ask for: decided at upload (guessed, or the `task` field).
    pub task: Task,
    pub num_examples: usize,
    /// Sorted distinct labels (empty for regression).
    pub labels: Vec<String>,
    /// Examples per label (multi-label: examples carrying it).
    pub label_counts: BTreeMap<String, usize>,
    /// Regression: the targets' range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_summary: Option<TargetSummary>,
    pub warnings: Vec<String>,
    pub format: String,
    pub created_at: String,
    #[serde(skip)]
    pub tenant: String,
}

fn from_row(row: &sqlx::any::AnyRow) -> StoreResult<DatasetRecord> {
    let modality: String = row.try_get("modality")?;
    Ok(DatasetRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        modality: Modality::parse(&modality).unwrap_or(Modality::Text),
        task: Task::parse(&row.try_get::<String, _>("task")?).unwrap_or_default(),
        num_examples: row.try_get::<i64, _>("num_examples")? as usize,
        labels: parse_json("labels", &row.try_get::<String, _>("labels")?)?,
        label_counts: parse_json("label_counts", &row.try_get::<String, _>("label_counts")?)?,
        target_summary: row
            .try_get::<Option<String>, _>("target_summary")?
            .map(|s| parse_json("target_summary", &s))
            .transpose()?,
        warnings: parse_json("warnings", &row.try_get::<String, _>("warnings")?)?,
        format: row.try_get("source_format")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    pub async fn insert_dataset(&self, d: &DatasetRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO datasets (id, tenant, name, modality, num_examples, labels, label_counts,
             warnings, source_format, created_at, task, target_summary)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&d.id)
        .bind(&d.tenant)
        .bind(&d.name)
        .bind(d.modality.as_str())
        .bind(d.num_examples as i64)
        .bind(to_json(&d.labels))
        .bind(to_json(&d.label_counts))
        .bind(to_json(&d.warnings))
        .bind(&d.format)
        .bind(&d.created_at)
        .bind(d.task.as_str())
        .bind(d.target_summary.as_ref().map(to_json))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_dataset(&self, tenant: &str, id: &str) -> StoreResult<Option<DatasetRecord>> {
        let row = sqlx::query("SELECT * FROM datasets WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A page of the tenant's datasets, newest first; `None` when `after` is not one of them.
    pub async fn list_datasets(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> StoreResult<Option<Page<DatasetRecord>>> {
        let listing = Listing {
            table: "datasets",
            tenant,
            filter: None,
        };
        let rows = self.page_rows(&listing, page).await?;
        rows.map(|p| p.try_map(|r| from_row(&r))).transpose()
    }

    /// Deletes the row unless a queued or running job uses the dataset, in one statement
    /// (so it cannot interleave with a job being created on it); returns whether it went.
    pub async fn delete_dataset(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM datasets WHERE id = $1 AND tenant = $2 AND NOT EXISTS
               (SELECT 1 FROM jobs WHERE dataset_id = $3 AND status IN ('queued', 'running'))",
        )
        .bind(id)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every dataset id, for the start-up sweep of orphaned artefacts.
    pub async fn all_dataset_ids(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM datasets")
            .fetch_all(&self.pool)
            .await?)
    }
}

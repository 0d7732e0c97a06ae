//! `/v1/datasets`: upload (multipart), list, show, delete.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::Tenant;
use super::upload::{TempUpload, read_form};
use crate::datasets::{self, DatasetError, ParsedDataset, stored};
use crate::store::datasets::DatasetRecord;
use crate::store::now;

pub(super) fn multipart_required(r: MultipartRejection) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "multipart_required",
        format!(
            "send the file as multipart/form-data in a part named `file` (curl -F file=@data.csv): {r}"
        ),
    )
}

fn parse_upload(
    upload: &TempUpload,
    limits: &datasets::Limits,
) -> Result<ParsedDataset, DatasetError> {
    if upload.size == 0 {
        return Err(DatasetError::invalid(
            "empty_file",
            "the uploaded file is empty; send a CSV, JSONL or ZIP file with labelled examples",
        ));
    }
    let format = datasets::detect_format(upload.file_name.as_deref(), &upload.head)?;
    let parsed = match format {
        "csv" => datasets::text::parse_csv(&upload.path, limits)?,
        "jsonl" => datasets::text::parse_jsonl(&upload.path, limits)?,
        _ => {
            return Err(DatasetError::UnsupportedFormat(
                "image datasets (ZIP) are not supported by this server yet; upload CSV or JSONL text".into(),
            ));
        }
    };
    parsed.finish(limits)
}

pub async fn create(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<DatasetRecord>)> {
    let multipart = multipart.map_err(multipart_required)?;
    let mut form = read_form(multipart, &st.artifacts, st.config.max_upload_bytes()).await?;
    let Some(upload) = form.file.take() else {
        return Err(ApiError::unprocessable(
            "missing_file",
            "the form has no `file` part; send the dataset as -F file=@data.csv",
        ));
    };
    let name = form
        .text("name")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| upload.file_name.clone())
        .unwrap_or_else(|| "dataset".into());
    if name.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "name_too_long",
            "the dataset name must be at most 200 characters",
        ));
    }

    // Parse and build the dataset folder off the async runtime.
    let artifacts = st.artifacts.clone();
    let limits = st.limits.clone();
    let id = Uuid::new_v4().to_string();
    let dir = artifacts.dataset_dir(&id);
    let parsed = tokio::task::spawn_blocking(move || -> Result<ParsedDataset, ApiError> {
        let parsed = parse_upload(&upload, &limits)?;
        let staging = artifacts.staging_dir()?;
        let built = (|| -> std::io::Result<()> {
            stored::write_examples(&staging, &parsed.examples)?;
            let ext = parsed.format;
            std::fs::rename(&upload.path, staging.join(format!("source.{ext}")))
        })();
        if let Err(e) = built {
            let _ = artifacts.remove_dir(&staging);
            return Err(ApiError::internal(e));
        }
        artifacts.commit_dir(&staging, &dir)?;
        Ok(parsed)
    })
    .await
    .map_err(ApiError::internal)??;

    let record = DatasetRecord {
        id: id.clone(),
        tenant,
        name,
        modality: parsed.modality,
        num_examples: parsed.examples.len(),
        labels: parsed.labels(),
        label_counts: parsed.label_counts(),
        warnings: parsed.warnings.clone(),
        format: parsed.format.to_string(),
        created_at: now(),
    };
    if let Err(e) = st.db.insert_dataset(&record).await {
        let _ = st.artifacts.remove_dir(&st.artifacts.dataset_dir(&id));
        return Err(e.into());
    }
    st.counters
        .uploads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(dataset = %id, examples = record.num_examples, "dataset created");
    Ok((StatusCode::CREATED, Json(record)))
}

pub async fn list(State(st): State<AppState>, Tenant(tenant): Tenant) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"data": st.db.list_datasets(&tenant).await?})))
}

pub async fn show(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<DatasetRecord>> {
    st.db
        .get_dataset(&tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("dataset", &id))
}

pub async fn delete(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if st.db.get_dataset(&tenant, &id).await?.is_none() {
        return Err(ApiError::not_found("dataset", &id));
    }
    if st.db.active_jobs_on_dataset(&id).await? > 0 {
        return Err(ApiError::conflict(
            "dataset_in_use",
            "a queued or running job uses this dataset; cancel it or wait for it to finish, then delete",
        ));
    }
    // Row first: a crash after it leaves only an orphan folder, swept at the next start.
    st.db.delete_dataset(&tenant, &id).await?;
    st.artifacts.remove_dir(&st.artifacts.dataset_dir(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

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

/// Parses an upload; image ZIPs unpack their images into `staging`.
fn parse_upload(
    upload: &TempUpload,
    staging: &std::path::Path,
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
        _ => datasets::image::parse_zip(&upload.path, staging, limits)?,
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
        // Nothing is written until the upload has been checked (image ZIPs are scanned
        // whole before their first image is unpacked into the staging folder).
        let staging = artifacts.tmp_path(".staging");
        let built = parse_upload(&upload, &staging, &limits)
            .map_err(ApiError::from)
            .and_then(|parsed| {
                std::fs::create_dir_all(&staging).map_err(ApiError::internal)?;
                stored::write_examples(&staging, &parsed.examples).map_err(ApiError::internal)?;
                if parsed.modality == crate::backbones::Modality::Text {
                    // Keep the original text file beside the parsed examples.
                    let source = staging.join(format!("source.{}", parsed.format));
                    std::fs::rename(&upload.path, source).map_err(ApiError::internal)?;
                }
                Ok(parsed)
            });
        match built {
            Ok(parsed) => {
                artifacts.commit_dir(&staging, &dir)?;
                Ok(parsed)
            }
            Err(e) => {
                let _ = artifacts.remove_dir(&staging);
                Err(e)
            }
        }
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

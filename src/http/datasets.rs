//! `/v1/datasets`: upload (multipart), list, show, delete.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::budget;
use super::error::{ApiError, ApiResult};
use super::extract::Tenant;
use super::upload::{TempUpload, read_form};
use crate::datasets::{self, DatasetError, ParsedDataset, stored};
use crate::error_code::Code;
use crate::store::datasets::DatasetRecord;
use crate::store::now;

pub(super) fn multipart_required(r: MultipartRejection) -> ApiError {
    ApiError::new(
        Code::MultipartRequired,
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
            Code::EmptyFile,
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
    // Memory while the body streams to disk, then for parsing what it turned out to be.
    let mut held = st.budget.reserve(budget::UPLOAD_STREAMING)?;
    let mut form = read_form(multipart, &st.artifacts, st.config.max_upload_bytes()).await?;
    let Some(upload) = form.file.take() else {
        return Err(ApiError::new(
            Code::MissingFile,
            "the form has no `file` part; send the dataset as -F file=@data.csv",
        ));
    };
    if let Ok(format) = datasets::detect_format(upload.file_name.as_deref(), &upload.head) {
        let need = budget::dataset_parse(format, upload.size, &st.limits);
        st.budget.grow(&mut held, need)?;
    }
    let name = form
        .text("name")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| upload.file_name.clone())
        .unwrap_or_else(|| "dataset".into());
    if name.chars().count() > 200 {
        return Err(ApiError::new(
            Code::NameTooLong,
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
                if parsed.modality == crate::backbones::catalog::Modality::Text {
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
    st.metrics.uploads.increment(1);
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
        .ok_or_else(|| ApiError::not_found(Code::DatasetNotFound, &id))
}

pub async fn delete(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if st.db.get_dataset(&tenant, &id).await?.is_none() {
        return Err(ApiError::not_found(Code::DatasetNotFound, &id));
    }
    if st.db.active_jobs_on_dataset(&id).await? > 0 {
        return Err(dataset_in_use());
    }
    // Row first: a crash after it leaves only an orphan folder, swept at the next start.
    // The row goes only if still no job uses it (one statement), so a job submitted at the
    // same moment either sees no dataset (404) or keeps it (409 here).
    if !st.db.delete_dataset(&tenant, &id).await? {
        if st.db.get_dataset(&tenant, &id).await?.is_none() {
            return Err(ApiError::not_found(Code::DatasetNotFound, &id));
        }
        return Err(dataset_in_use());
    }
    st.artifacts.discard_dir(&st.artifacts.dataset_dir(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

fn dataset_in_use() -> ApiError {
    ApiError::new(
        Code::DatasetInUse,
        "a queued or running job uses this dataset; cancel it or wait for it to finish, then delete",
    )
}

#[derive(serde::Deserialize)]
pub struct SuspectsQuery {
    model_id: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/datasets/{id}/suspects?model_id=...`: the examples whose given label a model
/// trained on this dataset finds least likely (judged on held-out predictions), with the
/// label it prefers — the first places to look for labelling mistakes.
pub async fn suspects(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<SuspectsQuery>,
) -> ApiResult<Json<Value>> {
    let dataset = st
        .db
        .get_dataset(&tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(Code::DatasetNotFound, &id))?;
    let model = match &q.model_id {
        Some(mid) => st
            .db
            .get_model(&tenant, mid)
            .await?
            .ok_or_else(|| ApiError::not_found(Code::ModelNotFound, mid))?,
        None => st
            .db
            .list_models(&tenant)
            .await?
            .into_iter()
            .find(|m| m.dataset_id == dataset.id)
            .ok_or_else(|| {
                ApiError::new(
                    Code::NoModelForDataset,
                    "no model has been trained on this dataset yet; run a job on it first",
                )
            })?,
    };
    if model.dataset_id != dataset.id {
        return Err(ApiError::new(
            Code::ModelNotTrainedOnDataset,
            format!(
                "model {} was trained on dataset {:?}, not {}; pass a model trained on this dataset",
                model.id, model.dataset_id, dataset.id
            ),
        ));
    }
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let model_dir = st.artifacts.model_dir(&model.id);
    let dataset_dir = st.artifacts.dataset_dir(&dataset.id);
    let data = tokio::task::spawn_blocking(move || -> ApiResult<Vec<Value>> {
        let bytes = std::fs::read(model_dir.join(crate::train::artifact::SUSPECTS_FILE))
            .map_err(ApiError::internal)?;
        let list: Vec<crate::train::suspects::Suspect> =
            serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        let examples = stored::read_examples(&dataset_dir).map_err(ApiError::internal)?;
        Ok(list
            .into_iter()
            .take(limit)
            .map(|s| {
                let mut v = serde_json::to_value(&s).expect("serialises");
                match examples.get(s.index) {
                    Some(datasets::RawExample::Text { text, .. }) => v["text"] = json!(text),
                    Some(datasets::RawExample::Image { file, .. }) => v["file"] = json!(file),
                    None => {}
                }
                v
            })
            .collect())
    })
    .await
    .map_err(ApiError::internal)??;
    let method = match model.metrics["validation"]["strategy"].as_str() {
        Some("kfold") => {
            "out-of-fold predictions: every example judged by a model that did not train on it"
        }
        _ => {
            "predictions on the validation split (only those examples are judged; use k-fold validation to check every example)"
        }
    };
    Ok(Json(json!({
        "dataset_id": dataset.id,
        "model_id": model.id,
        "method": method,
        "data": data,
    })))
}

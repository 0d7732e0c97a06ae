//! `/v1/datasets`: upload (multipart), list, show, delete.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::budget;
use super::error::{ApiError, ApiResult};
use super::extract::Tenant;
use super::list::{List, ListQuery, QueryParams, unknown_cursor};
use super::schema::{ApiErrors, DatasetUpload, SuspectDoc};
use super::upload::{TempUpload, read_form};
use crate::datasets::{self, DatasetError, ParsedDataset, stored};
use crate::error_code::Code;
use crate::store::datasets::DatasetRecord;
use crate::store::{Kind, now};

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
    task: Option<datasets::Task>,
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
    parsed.finish(limits, task)
}

/// Upload a labelled dataset; it is parsed and checked before it is stored.
#[utoipa::path(post, path = "/datasets", tag = "datasets",
    request_body(content = DatasetUpload, content_type = "multipart/form-data"),
    responses((status = 201, description = "The dataset, with its labels and warnings", body = DatasetRecord), ApiErrors))]
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

    let task = datasets::Task::from_form(form.text("task"))?;

    // Parse and build the dataset folder off the async runtime.
    let artifacts = st.artifacts.clone();
    let limits = st.limits.clone();
    let id = Uuid::new_v4().to_string();
    let dir = artifacts.dataset_dir(&id);
    let parsed = tokio::task::spawn_blocking(move || -> Result<ParsedDataset, ApiError> {
        // Nothing is written until the upload has been checked (image ZIPs are scanned
        // whole before their first image is unpacked into the staging folder).
        let staging = artifacts.tmp_path(".staging");
        let built = parse_upload(&upload, &staging, &limits, task)
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
    // Every host must find the files before any host finds the row.
    if let Err(e) = st.artifacts.publish(Kind::Dataset, &id).await {
        let _ = st.artifacts.discard(Kind::Dataset, &id).await;
        return Err(e.into());
    }

    let record = DatasetRecord {
        id: id.clone(),
        tenant,
        name,
        modality: parsed.modality,
        task: parsed.task,
        num_examples: parsed.examples.len(),
        labels: parsed.labels(),
        label_counts: parsed.label_counts(),
        target_summary: parsed.targets,
        warnings: parsed.warnings.clone(),
        format: parsed.format.to_string(),
        created_at: now(),
    };
    if let Err(e) = st.db.insert_dataset(&record).await {
        let _ = st.artifacts.discard(Kind::Dataset, &id).await;
        return Err(e.into());
    }
    st.metrics.uploads.increment(1);
    tracing::info!(dataset = %id, examples = record.num_examples, "dataset created");
    Ok((StatusCode::CREATED, Json(record)))
}

/// The datasets, newest first.
#[utoipa::path(get, path = "/datasets", tag = "datasets", params(ListQuery),
    responses((status = 200, body = List<DatasetRecord>), ApiErrors))]
pub async fn list(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    query: QueryParams,
) -> ApiResult<Json<List<DatasetRecord>>> {
    let page = query.page()?;
    let found = st.db.list_datasets(&tenant, &page).await?;
    let page = found.ok_or_else(|| unknown_cursor("dataset", page.after.as_deref()))?;
    Ok(Json(List::new(page, |d| d.id.clone())))
}

/// One dataset.
#[utoipa::path(get, path = "/datasets/{id}", tag = "datasets",
    params(("id" = String, Path, description = "The dataset's id")),
    responses((status = 200, body = DatasetRecord), ApiErrors))]
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

/// Delete a dataset (refused while a queued or running job uses it); its models stay.
#[utoipa::path(delete, path = "/datasets/{id}", tag = "datasets",
    params(("id" = String, Path, description = "The dataset's id")),
    responses((status = 204, description = "Deleted"), ApiErrors))]
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
    st.artifacts.discard(Kind::Dataset, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn dataset_in_use() -> ApiError {
    ApiError::new(
        Code::DatasetInUse,
        "a queued or running job uses this dataset; cancel it or wait for it to finish, then delete",
    )
}

/// `GET /v1/datasets/{id}/suspects`: the examples to check first for labelling mistakes.
#[derive(Serialize, ToSchema)]
pub struct Suspects {
    pub dataset_id: String,
    pub model_id: String,
    /// How the examples were judged (out-of-fold, or the validation split only).
    pub method: &'static str,
    /// Least likely given label first.
    #[schema(value_type = Vec<SuspectDoc>)]
    pub data: Vec<SuspectRow>,
}

/// A suspect with the example it is about.
#[derive(Serialize)]
pub struct SuspectRow {
    #[serde(flatten)]
    pub suspect: crate::train::suspects::Suspect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The query of the suspects, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuspectsQuery {
    /// A model trained on this dataset (default: the newest).
    pub model_id: Option<String>,
    /// How many examples, from 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
}

/// The model named by `model_id`, or the newest trained on the dataset.
async fn suspects_model(
    st: &AppState,
    tenant: &str,
    dataset: &DatasetRecord,
    model_id: Option<&str>,
) -> ApiResult<crate::store::models::ModelRecord> {
    let model = match model_id {
        Some(mid) => st
            .db
            .get_model(tenant, mid)
            .await?
            .ok_or_else(|| ApiError::not_found(Code::ModelNotFound, mid))?,
        None => st
            .db
            .latest_model_for_dataset(tenant, &dataset.id)
            .await?
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
    Ok(model)
}

/// The examples whose given label a model trained on this dataset finds least likely
/// (judged on held-out predictions), with the label it prefers: the first places to look
/// for labelling mistakes.
#[utoipa::path(get, path = "/datasets/{id}/suspects", tag = "datasets",
    params(("id" = String, Path, description = "The dataset's id"), SuspectsQuery),
    responses((status = 200, body = Suspects), ApiErrors))]
pub async fn suspects(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Json<Suspects>> {
    let limit = query.limit()? as usize;
    let dataset = st
        .db
        .get_dataset(&tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(Code::DatasetNotFound, &id))?;
    let model = suspects_model(&st, &tenant, &dataset, query.get("model_id")).await?;
    let model_dir = st.artifacts.local(Kind::Model, &model.id).await?;
    let dataset_dir = st.artifacts.local(Kind::Dataset, &dataset.id).await?;
    let data = tokio::task::spawn_blocking(move || -> ApiResult<Vec<SuspectRow>> {
        let bytes = std::fs::read(model_dir.join(crate::train::artifact::SUSPECTS_FILE))
            .map_err(ApiError::internal)?;
        let list: Vec<crate::train::suspects::Suspect> =
            serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        let examples = stored::read_examples(&dataset_dir).map_err(ApiError::internal)?;
        Ok(list
            .into_iter()
            .take(limit)
            .map(|suspect| {
                let (text, file) = match examples.get(suspect.index) {
                    Some(
                        datasets::RawExample::Text { text, .. }
                        | datasets::RawExample::TextLabels { text, .. },
                    ) => (Some(text.clone()), None),
                    Some(
                        datasets::RawExample::Image { file, .. }
                        | datasets::RawExample::ImageLabels { file, .. },
                    ) => (None, Some(file.clone())),
                    None => (None, None),
                };
                SuspectRow {
                    suspect,
                    text,
                    file,
                }
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
    Ok(Json(Suspects {
        dataset_id: dataset.id,
        model_id: model.id,
        method,
        data,
    }))
}

//! `/v1/models`: list, show, delete, download as a self-contained archive, and import an
//! archive downloaded earlier (predict is in `super::predict`; the archive itself is
//! `crate::export`).

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio_util::io::ReaderStream;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::budget;
use super::datasets::multipart_required;
use super::error::{ApiError, ApiResult};
use super::extract::Tenant;
use super::list::{List, ListQuery, QueryParams, unknown_cursor};
use super::schema::{ApiErrors, FileUpload};
use super::upload::read_form;
use crate::backbones::BackboneError;
use crate::error_code::Code;
use crate::export::archive::{self, ArchiveParts};
use crate::export::card::{self, CardFacts};
use crate::serve::ServeError;
use crate::store::datasets::DatasetRecord;
use crate::store::models::ModelRecord;
use crate::store::{Kind, now};
use crate::train::tasks::report::TaskReport;
use crate::train::{Recipe, Report};

pub(super) async fn find(st: &AppState, tenant: &str, id: &str) -> ApiResult<ModelRecord> {
    st.db
        .get_model(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(Code::ModelNotFound, id))
}

/// The models, newest first.
#[utoipa::path(get, path = "/models", tag = "models", params(ListQuery),
    responses((status = 200, body = List<ModelRecord>), ApiErrors))]
pub async fn list(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    query: QueryParams,
) -> ApiResult<Json<List<ModelRecord>>> {
    let page = query.page()?;
    let found = st.db.list_models(&tenant, &page).await?;
    let page = found.ok_or_else(|| unknown_cursor("model", page.after.as_deref()))?;
    Ok(Json(List::new(page, |m| m.id.clone())))
}

/// One model, with its held-out metrics.
#[utoipa::path(get, path = "/models/{id}", tag = "models",
    params(("id" = String, Path, description = "The model's id")),
    responses((status = 200, body = ModelRecord), ApiErrors))]
pub async fn show(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelRecord>> {
    Ok(Json(find(&st, &tenant, &id).await?))
}

/// Delete a model and its files.
#[utoipa::path(delete, path = "/models/{id}", tag = "models",
    params(("id" = String, Path, description = "The model's id")),
    responses((status = 204, description = "Deleted"), ApiErrors))]
pub async fn delete(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !st.db.delete_model(&tenant, &id).await? {
        return Err(ApiError::not_found(Code::ModelNotFound, &id));
    }
    // Row first (new requests get 404), then the cache, then the folder, whole; evicted
    // again in case a request in flight loaded the model meanwhile.
    st.models.evict(&id);
    st.artifacts.discard(Kind::Model, &id).await?;
    st.models.evict(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Whether model `id` is gone: a request whose files vanished under it answers 404 then.
pub(super) async fn deleted(st: &AppState, tenant: &str, id: &str) -> bool {
    matches!(st.db.get_model(tenant, id).await, Ok(None))
}

/// A model archive (ZIP).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Archive(#[allow(dead_code)] Vec<u8>);

/// The model as a self-contained ZIP archive, to keep or to import into another Warmstart,
/// even one with an empty models folder: `model.json`, `model.safetensors` (head and
/// feature standardisation), the backbone as a folder of its own
/// (`backbone/config.json`, `backbone/tokenizer.json` for text, `backbone/model.safetensors`:
/// the fine-tuned or the frozen original weights), `metrics.json` and `MODEL_CARD.md` (data,
/// recipe, held-out metrics, calibration). Streamed from a temp file; uncompressed.
#[utoipa::path(get, path = "/models/{id}/download", tag = "models",
    params(("id" = String, Path, description = "The model's id")),
    responses((status = 200, description = "The archive", content_type = "application/zip", body = Archive), ApiErrors))]
pub async fn download(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let record = find(&st, &tenant, &id).await?;
    let sources = CardSources::gather(&st, &tenant, &record).await?;
    let dir = st.artifacts.local(Kind::Model, &id).await?;
    let tmp = st.artifacts.tmp_path(".zip");
    let (tmp2, models, catalog) = (tmp.clone(), st.models.clone(), st.catalog.clone());
    let file = tokio::task::spawn_blocking(move || -> ApiResult<std::fs::File> {
        let (config, backbone) = models.bundle(&dir)?;
        let card = card::render(&CardFacts {
            model: &record,
            config: &config,
            backbone: catalog.info(&config.backbone).as_ref(),
            dataset: sources.dataset.as_ref(),
            recipe: sources.recipe.as_ref(),
            report: sources.report.as_ref(),
            task_report: sources.task_report.as_ref(),
            exported_at: &now(),
        });
        let parts = ArchiveParts {
            model_dir: &dir,
            backbone: &backbone,
            metrics: &record.metrics,
            card: &card,
        };
        archive::write(&tmp2, &parts).map_err(ApiError::internal)?;
        let f = std::fs::File::open(&tmp2).map_err(ApiError::internal)?;
        // The open handle keeps the data readable; the name goes now.
        std::fs::remove_file(&tmp2).map_err(ApiError::internal)?;
        Ok(f)
    })
    .await
    .map_err(ApiError::internal)?;
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            // A model deleted meanwhile is a 404, not an archive without its files.
            if deleted(&st, &tenant, &id).await {
                return Err(ApiError::not_found(Code::ModelNotFound, &id));
            }
            return Err(e);
        }
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(file)));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"warmstart-model-{id}.zip\""),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// The records a model card is rendered from besides the model's own, each typed; missing
/// when deleted (or, for an imported model, never here).
struct CardSources {
    dataset: Option<DatasetRecord>,
    recipe: Option<Recipe>,
    report: Option<Report>,
    task_report: Option<TaskReport>,
}

impl CardSources {
    async fn gather(st: &AppState, tenant: &str, m: &ModelRecord) -> ApiResult<CardSources> {
        let dataset = st.db.get_dataset(tenant, &m.dataset_id).await?;
        let job = st.db.get_job(tenant, &m.job_id).await?;
        Ok(CardSources {
            dataset,
            recipe: job.and_then(|j| serde_json::from_value(j.config).ok()),
            report: serde_json::from_value(m.metrics.clone()).ok(),
            task_report: serde_json::from_value(m.metrics.clone()).ok(),
        })
    }
}

/// Why an unpacked archive does not load: an old archive without its backbone, where that
/// backbone is not installed, is told how to fix it.
fn not_loadable(e: ServeError) -> ApiError {
    match e {
        ServeError::Backbone(BackboneError::Unavailable { id, models_dir, .. }) => ApiError::new(
            Code::BackboneNotBundled,
            format!(
                "this archive predates self-contained archives and does not carry its backbone {id:?}, which is not installed here; install it (scripts/fetch-backbones.sh {models_dir}) and import again, or download the model anew from a Warmstart that bundles the backbone"
            ),
        ),
        other => ApiError::new(
            Code::InvalidModelArchive,
            format!("the archive does not hold a loadable model: {other}"),
        ),
    }
}

/// Import a model archive from `GET /v1/models/{id}/download` (a `file` part): the model is
/// checked by loading it, then stored under a new id. A self-contained archive (with its
/// `backbone/` folder) predicts with its own backbone, whatever this server's models folder
/// holds; an older archive without one needs its backbone installed here
/// (`backbone_not_bundled` otherwise).
#[utoipa::path(post, path = "/models", tag = "models",
    request_body(content = FileUpload, content_type = "multipart/form-data"),
    responses((status = 201, description = "The imported model", body = ModelRecord), ApiErrors))]
pub async fn import(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<ModelRecord>)> {
    let multipart = multipart.map_err(multipart_required)?;
    let mut held = st.budget.reserve(budget::UPLOAD_STREAMING)?;
    let form = read_form(multipart, &st.artifacts, st.config.max_upload_bytes()).await?;
    let Some(upload) = form.file else {
        return Err(ApiError::new(
            Code::MissingFile,
            "the form has no `file` part; send the archive as -F file=@model.zip",
        ));
    };
    st.budget
        .grow(&mut held, budget::model_import(upload.size))?;
    let artifacts = st.artifacts.clone();
    let models = st.models.clone();
    let limit = st.config.max_upload_bytes() * 4;
    let id = Uuid::new_v4().to_string();
    let dest = artifacts.model_dir(&id);
    let (config, metrics) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let staging = artifacts.staging_dir()?;
        let result = archive::unpack(&upload.path, &staging, limit)
            .map_err(ApiError::from)
            .and_then(|unpacked| {
                let config = models.verify(&staging).map_err(not_loadable)?;
                Ok((config, Value::Object(unpacked.metrics)))
            });
        match result {
            Ok(v) => {
                artifacts.commit_dir(&staging, &dest)?;
                Ok(v)
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
    if let Err(e) = st.artifacts.publish(Kind::Model, &id).await {
        let _ = st.artifacts.discard(Kind::Model, &id).await;
        return Err(e.into());
    }
    let record = ModelRecord {
        id: id.clone(),
        tenant,
        job_id: String::new(),
        dataset_id: String::new(),
        backbone: config.backbone,
        modality: config.modality,
        task: config.task,
        labels: config.labels,
        metrics,
        created_at: now(),
    };
    if let Err(e) = st.db.insert_model(&record).await {
        let _ = st.artifacts.discard(Kind::Model, &id).await;
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(record)))
}

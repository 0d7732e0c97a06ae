//! `/v1/models`: list, show, delete, download as an archive, and import an archive
//! downloaded earlier (predict is in `super::predict`).

use std::io::{Read, Write};

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
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
use crate::error_code::Code;
use crate::store::models::ModelRecord;
use crate::store::now;
use crate::train::artifact::{
    ARCHIVE_FILES, BACKBONE_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE,
};

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
    st.artifacts.discard_dir(&st.artifacts.model_dir(&id))?;
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

/// The model as a ZIP archive (model.json, model.safetensors, backbone.safetensors when
/// fine-tuned, metrics.json), to keep or to import into another Warmstart.
#[utoipa::path(get, path = "/models/{id}/download", tag = "models",
    params(("id" = String, Path, description = "The model's id")),
    responses((status = 200, description = "The archive", content_type = "application/zip", body = Archive), ApiErrors))]
pub async fn download(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let record = find(&st, &tenant, &id).await?;
    let dir = st.artifacts.model_dir(&id);
    let tmp = st.artifacts.tmp_path(".zip");
    let tmp2 = tmp.clone();
    let metrics = serde_json::to_vec_pretty(&record.metrics).map_err(ApiError::internal)?;
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let out = std::fs::File::create(&tmp2)?;
        let mut zip = zip::ZipWriter::new(out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        for name in [CONFIG_FILE, WEIGHTS_FILE, BACKBONE_FILE] {
            let path = dir.join(name);
            // Only a fine-tuned model has its own backbone; the others must be there (a
            // model deleted meanwhile is a 404 below, not an archive without them).
            if name == BACKBONE_FILE && !path.exists() {
                continue;
            }
            zip.start_file(name, opts).map_err(std::io::Error::other)?;
            std::io::copy(&mut std::fs::File::open(&path)?, &mut zip)?;
        }
        zip.start_file(METRICS_FILE, opts)
            .map_err(std::io::Error::other)?;
        zip.write_all(&metrics)?;
        zip.finish().map_err(std::io::Error::other)?;
        let f = std::fs::File::open(&tmp2)?;
        // The open handle keeps the data readable; the name goes now.
        std::fs::remove_file(&tmp2)?;
        Ok(f)
    })
    .await
    .map_err(ApiError::internal)?;
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if deleted(&st, &tenant, &id).await {
                return Err(ApiError::not_found(Code::ModelNotFound, &id));
            }
            return Err(ApiError::internal(e));
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

/// Unpacks a model archive into `staging`, accepting only the known file names.
fn unpack_model_archive(
    archive: &std::path::Path,
    staging: &std::path::Path,
    limit: u64,
) -> Result<Value, ApiError> {
    let bad = |m: String| ApiError::new(Code::InvalidModelArchive, m);
    let file = std::fs::File::open(archive).map_err(ApiError::internal)?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        bad(format!(
            "not a readable ZIP archive ({e}); upload a file from GET /v1/models/{{id}}/download"
        ))
    })?;
    let mut metrics = json!({});
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("damaged archive entry: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| bad(format!("unreadable file name in the archive: {e}")))?
            .to_string();
        if !ARCHIVE_FILES.contains(&name.as_str()) {
            return Err(bad(format!(
                "unexpected file {name:?} in the archive; a model archive holds only {CONFIG_FILE}, {WEIGHTS_FILE}, {BACKBONE_FILE} and {METRICS_FILE}"
            )));
        }
        total = total.saturating_add(entry.size());
        if total > limit {
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                "the archive unpacks to more than the upload limit",
            ));
        }
        if name == METRICS_FILE {
            let mut text = String::new();
            entry
                .by_ref()
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| bad(e.to_string()))?;
            metrics = serde_json::from_str(&text).map_err(|e| bad(format!("metrics.json: {e}")))?;
            if !metrics.is_object() {
                return Err(bad("metrics.json must hold a JSON object".into()));
            }
        }
        let mut out = std::fs::File::create(staging.join(&name)).map_err(ApiError::internal)?;
        // A damaged entry (bad checksum, broken deflate stream) is the client's problem; a
        // failed write is ours.
        let mut buf = vec![0u8; 64 << 10];
        let mut reader = entry.by_ref().take(limit);
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| bad(format!("cannot unpack {name} from the archive: {e}")))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(ApiError::internal)?;
        }
    }
    Ok(metrics)
}

/// Import a model archive from `GET /v1/models/{id}/download` (a `file` part): the model is
/// checked by loading it, then stored under a new id.
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
        let result = unpack_model_archive(&upload.path, &staging, limit).and_then(|metrics| {
            let config = models.verify(&staging).map_err(|e| {
                ApiError::new(
                    Code::InvalidModelArchive,
                    format!("the archive does not hold a loadable model: {e}"),
                )
            })?;
            Ok((config, metrics))
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
        let _ = st.artifacts.remove_dir(&st.artifacts.model_dir(&id));
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(record)))
}

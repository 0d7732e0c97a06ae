//! `/v1/models`: list, show, delete, predict, download as an archive, and import an
//! archive downloaded earlier.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::AppState;
use super::datasets::multipart_required;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Tenant};
use super::upload::read_form;
use crate::backbones::Modality;
use crate::serve::{LoadedModel, Prediction};
use crate::store::models::ModelRecord;
use crate::store::now;
use crate::train::artifact::{BACKBONE_FILE, CONFIG_FILE, WEIGHTS_FILE};

/// Most inputs in one predict request.
pub const MAX_PREDICT_INPUTS: usize = 256;
const METRICS_FILE: &str = "metrics.json";

async fn find(st: &AppState, tenant: &str, id: &str) -> ApiResult<ModelRecord> {
    st.db
        .get_model(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", id))
}

pub async fn list(State(st): State<AppState>, Tenant(tenant): Tenant) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"data": st.db.list_models(&tenant).await?})))
}

pub async fn show(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelRecord>> {
    Ok(Json(find(&st, &tenant, &id).await?))
}

pub async fn delete(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !st.db.delete_model(&tenant, &id).await? {
        return Err(ApiError::not_found("model", &id));
    }
    st.models.evict(&id);
    st.artifacts.remove_dir(&st.artifacts.model_dir(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    pub inputs: Vec<Value>,
    #[serde(default)]
    pub top_k: Option<usize>,
}

fn check_top_k(top_k: Option<usize>, labels: usize) -> ApiResult<usize> {
    match top_k {
        None => Ok(labels.min(3)),
        Some(0) => Err(ApiError::unprocessable(
            "invalid_top_k",
            "top_k must be at least 1",
        )),
        Some(k) => Ok(k.min(labels)),
    }
}

fn text_inputs(inputs: Vec<Value>, max_chars: usize) -> ApiResult<Vec<String>> {
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if s.chars().count() > max_chars => Err(ApiError::unprocessable(
                "input_too_long",
                format!("inputs[{i}] has more than {max_chars} characters (WARMSTART_MAX_TEXT_CHARS)"),
            )),
            Value::String(s) => Ok(s),
            _ => Err(ApiError::unprocessable(
                "invalid_input",
                format!("inputs[{i}] must be a string: this is a text model, send {{\"inputs\": [\"some text\", ...]}}"),
            )),
        })
        .collect()
}

pub async fn predict(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PredictRequest>,
) -> ApiResult<Json<Value>> {
    let record = find(&st, &tenant, &id).await?;
    if req.inputs.is_empty() {
        return Err(ApiError::unprocessable(
            "no_inputs",
            "`inputs` is empty; send at least one input",
        ));
    }
    if req.inputs.len() > MAX_PREDICT_INPUTS {
        return Err(ApiError::too_large(format!(
            "{} inputs in one request; send at most {MAX_PREDICT_INPUTS} per request",
            req.inputs.len()
        )));
    }
    let top_k = check_top_k(req.top_k, record.labels.len())?;
    let texts = match record.modality {
        Modality::Text => text_inputs(req.inputs, st.limits.max_text_chars)?,
        Modality::Image => {
            return Err(ApiError::unprocessable(
                "invalid_input",
                "this is an image model; send images as multipart `file` parts",
            ));
        }
    };
    let Ok(_admitted) = st.predict_admission.clone().try_acquire_owned() else {
        st.counters.predict_rejected.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::overloaded(
            "too many predict requests are waiting; retry shortly",
            1,
        ));
    };
    let _computing = st
        .predict_compute
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    st.counters.predict_requests.fetch_add(1, Ordering::Relaxed);
    st.counters
        .predict_inputs
        .fetch_add(texts.len() as u64, Ordering::Relaxed);
    let models = st.models.clone();
    let dir = st.artifacts.model_dir(&id);
    let predictions: Vec<Prediction> = tokio::task::spawn_blocking(move || {
        let model = models.get(&id, &dir)?;
        model.predict_texts(&texts, top_k)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(json!({"predictions": predictions})))
}

/// The model folder zipped: model.json, model.safetensors, backbone.safetensors (when
/// fine-tuned), metrics.json.
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
            if !path.exists() {
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
    .map_err(ApiError::internal)?
    .map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ApiError::internal(e)
    })?;
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
    let bad = |m: String| ApiError::unprocessable("invalid_model_archive", m);
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
        if ![CONFIG_FILE, WEIGHTS_FILE, BACKBONE_FILE, METRICS_FILE].contains(&name.as_str()) {
            return Err(bad(format!(
                "unexpected file {name:?} in the archive; a model archive holds only {CONFIG_FILE}, {WEIGHTS_FILE}, {BACKBONE_FILE} and {METRICS_FILE}"
            )));
        }
        total = total.saturating_add(entry.size());
        if total > limit {
            return Err(ApiError::too_large(
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
        }
        let mut out = std::fs::File::create(staging.join(&name)).map_err(ApiError::internal)?;
        std::io::copy(&mut entry.by_ref().take(limit), &mut out).map_err(ApiError::internal)?;
    }
    Ok(metrics)
}

/// `POST /v1/models` with a `file` part holding a model archive: the model is checked by
/// loading it, then stored under a new id.
pub async fn import(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<ModelRecord>)> {
    let multipart = multipart.map_err(multipart_required)?;
    let form = read_form(multipart, &st.artifacts, st.config.max_upload_bytes()).await?;
    let Some(upload) = form.file else {
        return Err(ApiError::unprocessable(
            "missing_file",
            "the form has no `file` part; send the archive as -F file=@model.zip",
        ));
    };
    let artifacts = st.artifacts.clone();
    let registry = st.registry.clone();
    let limit = st.config.max_upload_bytes() * 4;
    let id = Uuid::new_v4().to_string();
    let dest = artifacts.model_dir(&id);
    let (config, metrics) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let staging = artifacts.staging_dir()?;
        let result = unpack_model_archive(&upload.path, &staging, limit).and_then(|metrics| {
            let model = LoadedModel::load(&staging, &registry).map_err(|e| {
                ApiError::unprocessable(
                    "invalid_model_archive",
                    format!("the archive does not hold a loadable model: {e}"),
                )
            })?;
            Ok((model.config.clone(), metrics))
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

//! `/v1/models`: list, show, delete, predict, download as an archive, and import an
//! archive downloaded earlier.

use std::io::{Read, Write};

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::AppState;
use super::budget;
use super::datasets::multipart_required;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Tenant};
use super::upload::read_form;
use crate::backbones::catalog::Modality;
use crate::error_code::Code;
use crate::serve::{Inputs, Prediction, ServeError};
use crate::store::models::ModelRecord;
use crate::store::now;
use crate::train::artifact::{
    ARCHIVE_FILES, BACKBONE_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE,
};

/// Most inputs in one predict request.
pub const MAX_PREDICT_INPUTS: usize = 256;

async fn find(st: &AppState, tenant: &str, id: &str) -> ApiResult<ModelRecord> {
    st.db
        .get_model(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(Code::ModelNotFound, id))
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
async fn deleted(st: &AppState, tenant: &str, id: &str) -> bool {
    matches!(st.db.get_model(tenant, id).await, Ok(None))
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
        Some(0) => Err(ApiError::new(Code::InvalidTopK, "top_k must be at least 1")),
        Some(k) => Ok(k.min(labels)),
    }
}

fn text_inputs(inputs: Vec<Value>, max_chars: usize) -> ApiResult<Vec<String>> {
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if s.chars().count() > max_chars => Err(ApiError::new(
                Code::InputTooLong,
                format!("inputs[{i}] has more than {max_chars} characters (WARMSTART_MAX_TEXT_CHARS)"),
            )),
            Value::String(s) => Ok(s),
            _ => Err(ApiError::new(
                Code::InvalidInput,
                format!("inputs[{i}] must be a string: this is a text model, send {{\"inputs\": [\"some text\", ...]}}"),
            )),
        })
        .collect()
}

fn image_inputs(inputs: Vec<Value>) -> ApiResult<Vec<Vec<u8>>> {
    use base64::Engine;
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let b64 = v.get("image_base64").and_then(Value::as_str).ok_or_else(|| {
                ApiError::new(
                    Code::InvalidInput,
                    format!("inputs[{i}] must be {{\"image_base64\": \"...\"}}: this is an image model (or send multipart `file` parts)"),
                )
            })?;
            // Accept data URLs too (`data:image/png;base64,...`).
            let b64 = b64.split_once("base64,").map_or(b64, |(_, rest)| rest);
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    ApiError::new(
                        Code::InvalidInput,
                        format!("inputs[{i}].image_base64 is not valid base64 ({e})"),
                    )
                })
        })
        .collect()
}

/// Reads `file` parts (and an optional `top_k` field) of a multipart predict request.
async fn multipart_inputs(mut mp: Multipart) -> ApiResult<(Vec<Vec<u8>>, Option<usize>)> {
    let mut files = Vec::new();
    let mut top_k = None;
    while let Some(field) = mp.next_field().await.map_err(|e| {
        ApiError::new(
            Code::MalformedMultipart,
            format!("cannot read the multipart body: {e}"),
        )
    })? {
        let name = field.name().unwrap_or("").to_string();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    Code::PayloadTooLarge,
                    "the request is larger than the limit (WARMSTART_MAX_BODY_MB)",
                )
            } else {
                ApiError::new(
                    Code::MalformedMultipart,
                    format!("cannot read part {name:?}: {e}"),
                )
            }
        })?;
        match name.as_str() {
            "file" => files.push(bytes.to_vec()),
            "top_k" => {
                let text = String::from_utf8_lossy(&bytes);
                top_k = Some(text.trim().parse().map_err(|_| {
                    ApiError::new(Code::InvalidTopK, "top_k must be a positive integer")
                })?);
            }
            other => {
                return Err(ApiError::new(
                    Code::UnexpectedField,
                    format!(
                        "unexpected form field {other:?}; send images as `file` parts and optionally `top_k`"
                    ),
                ));
            }
        }
    }
    Ok((files, top_k))
}

/// `POST /v1/models/{id}/predict`: JSON `{"inputs": [...], "top_k": k}` (texts, or
/// `{"image_base64": ...}` objects), or multipart `file` parts for image models.
pub async fn predict(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let started = std::time::Instant::now();
    let record = find(&st, &tenant, &id).await?;
    // Memory for the body before it is read; for the decoding once the images are known.
    let body_need = budget::predict_request(request.headers(), st.config.max_body_mb << 20);
    let mut held = st.budget.reserve(body_need)?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (inputs, top_k) = if is_multipart {
        let mp = Multipart::from_request(request, &st)
            .await
            .map_err(multipart_required)?;
        let (files, top_k) = multipart_inputs(mp).await?;
        if record.modality == Modality::Text {
            return Err(ApiError::new(
                Code::InvalidInput,
                "this is a text model; send JSON {\"inputs\": [\"some text\", ...]}",
            ));
        }
        (Inputs::Images(files), top_k)
    } else {
        let ApiJson(req) = ApiJson::<PredictRequest>::from_request(request, &st).await?;
        let inputs = match record.modality {
            Modality::Text => Inputs::Texts(text_inputs(req.inputs, st.limits.max_text_chars)?),
            Modality::Image => Inputs::Images(image_inputs(req.inputs)?),
        };
        (inputs, req.top_k)
    };
    if inputs.is_empty() {
        return Err(ApiError::new(
            Code::NoInputs,
            "no inputs: send at least one (JSON `inputs`, or multipart `file` parts)",
        ));
    }
    if inputs.len() > MAX_PREDICT_INPUTS {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "{} inputs in one request; send at most {MAX_PREDICT_INPUTS} per request",
                inputs.len()
            ),
        ));
    }
    let top_k = check_top_k(top_k, record.labels.len())?;
    if let Inputs::Images(images) = &inputs {
        let decode_need = budget::image_decode(images, st.limits.max_image_pixels);
        st.budget.grow(&mut held, body_need + decode_need)?;
    }
    let Ok(_admitted) = st.predict_admission.clone().try_acquire_owned() else {
        st.metrics.predict_rejected.increment(1);
        return Err(ApiError::new(
            Code::Overloaded,
            "too many predict requests are waiting; retry shortly",
        )
        .retry_after(1));
    };
    let _computing = st
        .predict_compute
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    let batch = inputs.len();
    let models = st.models.clone();
    let dir = st.artifacts.model_dir(&id);
    let max_pixels = st.limits.max_image_pixels;
    let model_id = id.clone();
    let predicted = tokio::task::spawn_blocking(move || {
        models.predict(&model_id, &dir, &inputs, top_k, max_pixels)
    })
    .await
    .map_err(ApiError::internal)?;
    let predictions: Vec<Prediction> = match predicted {
        Ok(p) => p,
        // Its files went while it was loading: the model was deleted under this request.
        Err(ServeError::Corrupt(_)) if deleted(&st, &tenant, &id).await => {
            return Err(ApiError::not_found(Code::ModelNotFound, &id));
        }
        Err(e) => return Err(e.into()),
    };
    st.metrics
        .predicted(record.modality.as_str(), batch, started.elapsed());
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

/// `POST /v1/models` with a `file` part holding a model archive: the model is checked by
/// loading it, then stored under a new id.
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

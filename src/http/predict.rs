//! `POST /v1/models/{id}/predict`: JSON inputs (texts, or base64 images) or multipart image
//! files, checked, admitted under the predict limits, and answered in input order.

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::budget;
use super::datasets::multipart_required;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Tenant};
use super::models::{deleted, find};
use super::schema::{ApiErrors, ImagePredictUpload, PredictionDoc};
use crate::backbones::catalog::Modality;
use crate::error_code::Code;
use crate::serve::{Inputs, Prediction, ServeError};
use crate::store::Kind;

/// Most inputs in one predict request.
pub const MAX_PREDICT_INPUTS: usize = 256;

/// `POST /v1/models/{id}/predict` as JSON.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Texts for a text model; `{"image_base64": "..."}` objects (or data URLs) for an image
    /// model. At most 256.
    #[schema(value_type = Vec<PredictInput>, max_items = 256)]
    pub inputs: Vec<Value>,
    /// How many labels to rank per input (default 3, at most the number of labels).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub top_k: Option<usize>,
}

/// One input: a text, or an image as base64.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PredictInput {
    Text(String),
    Image(ImageInput),
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ImageInput {
    /// The image file's bytes in base64, or a `data:image/...;base64,` URL.
    image_base64: String,
}

/// The predictions, in the order of the inputs.
#[derive(Serialize, ToSchema)]
pub struct Predictions {
    #[schema(value_type = Vec<PredictionDoc>)]
    pub predictions: Vec<Prediction>,
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

/// Predict: JSON `{"inputs": [...], "top_k": k}` (texts, or `{"image_base64": ...}`
/// objects), or multipart `file` parts for image models.
#[utoipa::path(post, path = "/models/{id}/predict", tag = "models",
    params(("id" = String, Path, description = "The model's id")),
    request_body(content((PredictRequest = "application/json"), (ImagePredictUpload = "multipart/form-data"))),
    responses((status = 200, body = Predictions), ApiErrors))]
pub async fn predict(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<Json<Predictions>> {
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
    let batch = inputs.len();
    let dir = st.artifacts.local(Kind::Model, &id).await?;
    let predicted = st.batcher.predict(&id, dir, inputs, top_k).await;
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
    Ok(Json(Predictions { predictions }))
}

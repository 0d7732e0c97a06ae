//! Receiving multipart uploads: the `file` part is streamed to a temp file in the data
//! folder's scratch space (never held in memory), counting bytes against the limit.

use std::path::PathBuf;

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use tokio::io::AsyncWriteExt;

use super::error::{ApiError, ApiResult};
use crate::error_code::Code;
use crate::store::Artifacts;

/// A received file, deleted when dropped unless moved away first.
pub struct TempUpload {
    pub path: PathBuf,
    pub file_name: Option<String>,
    pub size: u64,
    /// The first bytes, to sniff the format.
    pub head: Vec<u8>,
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The parts of an upload form.
pub struct UploadForm {
    pub file: Option<TempUpload>,
    pub text_fields: Vec<(String, String)>,
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            Code::PayloadTooLarge,
            "the upload is larger than the limit (WARMSTART_MAX_UPLOAD_MB)",
        )
    } else {
        ApiError::new(
            Code::MalformedMultipart,
            format!(
                "cannot read the multipart body ({e}); send multipart/form-data, e.g. curl -F file=@data.csv"
            ),
        )
    }
}

async fn save_field(
    mut field: Field<'_>,
    artifacts: &Artifacts,
    limit: u64,
) -> ApiResult<TempUpload> {
    let file_name = field.file_name().map(|s| s.to_string());
    let path = artifacts.tmp_path(".upload");
    let mut upload = TempUpload {
        path,
        file_name,
        size: 0,
        head: Vec::new(),
    };
    let mut out = tokio::fs::File::create(&upload.path)
        .await
        .map_err(ApiError::internal)?;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        upload.size += chunk.len() as u64;
        if upload.size > limit {
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "the upload is larger than the limit of {} MB (WARMSTART_MAX_UPLOAD_MB); upload a smaller file",
                    limit >> 20
                ),
            ));
        }
        if upload.head.len() < 4096 {
            let take = (4096 - upload.head.len()).min(chunk.len());
            upload.head.extend_from_slice(&chunk[..take]);
        }
        out.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    out.flush().await.map_err(ApiError::internal)?;
    out.sync_all().await.map_err(ApiError::internal)?;
    Ok(upload)
}

/// Reads the whole form: the one `file` part to a temp file, other parts as text.
pub async fn read_form(
    mut multipart: Multipart,
    artifacts: &Artifacts,
    limit: u64,
) -> ApiResult<UploadForm> {
    let mut form = UploadForm {
        file: None,
        text_fields: Vec::new(),
    };
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            if form.file.is_some() {
                return Err(ApiError::new(
                    Code::TooManyFiles,
                    "send exactly one `file` part per upload",
                ));
            }
            form.file = Some(save_field(field, artifacts, limit).await?);
        } else {
            let value = field.text().await.map_err(multipart_error)?;
            if value.len() > 10_000 {
                return Err(ApiError::new(
                    Code::FieldTooLong,
                    format!("the form field {name:?} is longer than 10000 bytes"),
                ));
            }
            form.text_fields.push((name, value));
        }
    }
    Ok(form)
}

impl UploadForm {
    pub fn text(&self, name: &str) -> Option<&str> {
        self.text_fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

//! The model archive's layout, and writing and unpacking one.
//!
//! ```text
//! model.json              labels, backbone id, preprocessing, head shape, temperature
//! model.safetensors       head, feature standardisation (and a text model's lexical part)
//! metrics.json            the held-out report
//! MODEL_CARD.md           data, recipe, metrics, calibration, in words
//! backbone/config.json    the backbone's architecture (image: with its input resolution)
//! backbone/tokenizer.json text backbones: the tokenizer
//! backbone/model.safetensors  the backbone weights the model predicts with
//! ```
//!
//! Archives from before the backbone travelled along hold no `backbone/` folder (and a
//! fine-tuned model's weights as `backbone.safetensors`); they still import where that
//! backbone is installed. Unpacking accepts only these names (no path from the archive ever
//! reaches the file system) and stops at a size limit counted on the bytes really unpacked.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::{Map, Value};

use super::ExportError;
use crate::backbones::bundle::{self, BundleData, BundleFile};
use crate::train::artifact::{
    BACKBONE_FILE, BUNDLED_BACKBONE_DIR, CARD_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE,
};

/// What goes into an archive besides the model folder's own files.
pub struct ArchiveParts<'a> {
    /// The model's folder (`model.json`, `model.safetensors`, maybe a card of its own).
    pub model_dir: &'a Path,
    /// The backbone's files, as [`crate::serve::ModelCache::bundle`] lists them.
    pub backbone: &'a [BundleFile],
    /// `metrics.json`.
    pub metrics: &'a Value,
    /// `MODEL_CARD.md`, unless the model folder holds the card it was imported with.
    pub card: &'a str,
}

/// The archive name of a bundled backbone file.
fn backbone_entry(name: &str) -> String {
    format!("{BUNDLED_BACKBONE_DIR}/{name}")
}

/// Writes the archive to `out` (uncompressed: safetensors barely compress).
pub fn write(out: &Path, parts: &ArchiveParts) -> std::io::Result<()> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(out)?);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let start = |zip: &mut zip::ZipWriter<_>, name: &str| {
        zip.start_file(name, opts).map_err(std::io::Error::other)
    };
    for name in [CONFIG_FILE, WEIGHTS_FILE] {
        start(&mut zip, name)?;
        std::io::copy(
            &mut std::fs::File::open(parts.model_dir.join(name))?,
            &mut zip,
        )?;
    }
    for file in parts.backbone {
        start(&mut zip, &backbone_entry(file.name))?;
        match &file.data {
            BundleData::File(path) => {
                std::io::copy(&mut std::fs::File::open(path)?, &mut zip)?;
            }
            BundleData::Bytes(bytes) => zip.write_all(bytes)?,
        }
    }
    start(&mut zip, METRICS_FILE)?;
    zip.write_all(&serde_json::to_vec_pretty(parts.metrics)?)?;
    start(&mut zip, CARD_FILE)?;
    match std::fs::read(parts.model_dir.join(CARD_FILE)) {
        Ok(own) => zip.write_all(&own)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            zip.write_all(parts.card.as_bytes())?
        }
        Err(e) => return Err(e),
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}

/// Every name an archive may hold.
fn known_names() -> Vec<String> {
    let top = [
        CONFIG_FILE,
        WEIGHTS_FILE,
        BACKBONE_FILE,
        METRICS_FILE,
        CARD_FILE,
    ];
    let mut names: Vec<String> = top.iter().map(|n| n.to_string()).collect();
    names.extend(bundle::ALL_FILES.iter().map(|n| backbone_entry(n)));
    names
}

/// What an unpacked archive said besides its files.
pub struct Unpacked {
    /// `metrics.json` (empty when the archive has none).
    pub metrics: Map<String, Value>,
}

fn bad(message: String) -> ExportError {
    ExportError::InvalidArchive(message)
}

/// Unpacks the model archive `archive` into the folder `staging`, accepting only the known
/// names and at most `limit` unpacked bytes.
pub fn unpack(archive: &Path, staging: &Path, limit: u64) -> Result<Unpacked, ExportError> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(archive)?).map_err(|e| {
        bad(format!(
            "not a readable ZIP archive ({e}); upload a file from GET /v1/models/{{id}}/download"
        ))
    })?;
    let known = known_names();
    let mut metrics = Map::new();
    let mut left = limit;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("damaged archive entry: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| bad(format!("unreadable file name in the archive: {e}")))?
            .to_string();
        if !known.contains(&name) {
            return Err(bad(format!(
                "unexpected file {name:?} in the archive; a model archive holds only {}",
                known.join(", ")
            )));
        }
        if entry.size() > left {
            return Err(ExportError::TooLarge { limit });
        }
        let path = staging.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        left -= copy_entry(&mut entry, &name, &path, left, limit)?;
        if name == METRICS_FILE {
            metrics = read_metrics(&path)?;
        }
    }
    if staging.join(BACKBONE_FILE).exists() && staging.join(BUNDLED_BACKBONE_DIR).exists() {
        return Err(bad(format!(
            "the archive holds both {BACKBONE_FILE} and a {BUNDLED_BACKBONE_DIR}/ folder; a self-contained archive keeps the backbone weights in {}",
            backbone_entry(bundle::WEIGHTS)
        )));
    }
    Ok(Unpacked { metrics })
}

/// Copies one entry to `path`, at most `left` bytes whatever its header claims; returns
/// how many it wrote.
fn copy_entry(
    entry: &mut impl Read,
    name: &str,
    path: &Path,
    left: u64,
    limit: u64,
) -> Result<u64, ExportError> {
    let mut out = std::fs::File::create(path)?;
    let mut reader = entry.take(left + 1);
    let mut buf = vec![0u8; 64 << 10];
    let mut written = 0u64;
    loop {
        // A damaged entry (bad checksum, broken deflate stream) is the client's problem; a
        // failed write is ours.
        let n = reader
            .read(&mut buf)
            .map_err(|e| bad(format!("cannot unpack {name} from the archive: {e}")))?;
        if n == 0 {
            return Ok(written);
        }
        written += n as u64;
        if written > left {
            return Err(ExportError::TooLarge { limit });
        }
        out.write_all(&buf[..n])?;
    }
}

fn read_metrics(path: &Path) -> Result<Map<String, Value>, ExportError> {
    if std::fs::metadata(path)?.len() > 1 << 20 {
        return Err(bad(format!("{METRICS_FILE} is larger than 1 MiB")));
    }
    match serde_json::from_slice(&std::fs::read(path)?) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad(format!("{METRICS_FILE} must hold a JSON object"))),
        Err(e) => Err(bad(format!("{METRICS_FILE}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(f.reopen().unwrap());
        for (name, bytes) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        f
    }

    #[test]
    fn only_known_names_unpack_and_nothing_leaves_the_staging_folder() {
        let staging = tempfile::tempdir().unwrap();
        for name in [
            "../evil",
            "backbone/../../evil",
            "/etc/x",
            "backbone/weights.pth",
        ] {
            let z = zip_of(&[(name, b"x")]);
            let err = unpack(z.path(), staging.path(), 1 << 20).err().unwrap();
            assert!(
                matches!(err, ExportError::InvalidArchive(_)),
                "{name}: {err}"
            );
        }
        assert!(!staging.path().parent().unwrap().join("evil").exists());
        let z = zip_of(&[("backbone/tokenizer.json", b"{}"), ("metrics.json", b"{}")]);
        unpack(z.path(), staging.path(), 1 << 20).unwrap();
        assert!(staging.path().join("backbone/tokenizer.json").is_file());
    }

    #[test]
    fn the_limit_counts_unpacked_bytes() {
        let staging = tempfile::tempdir().unwrap();
        let z = zip_of(&[
            ("model.safetensors", &[0u8; 600]),
            ("model.json", &[0u8; 600]),
        ]);
        let err = unpack(z.path(), staging.path(), 1000).err().unwrap();
        assert!(
            matches!(err, ExportError::TooLarge { limit: 1000 }),
            "{err}"
        );
    }

    #[test]
    fn an_old_overlay_and_a_bundled_folder_do_not_mix() {
        let staging = tempfile::tempdir().unwrap();
        let z = zip_of(&[
            ("backbone.safetensors", b"x"),
            ("backbone/model.safetensors", b"x"),
        ]);
        let err = unpack(z.path(), staging.path(), 1 << 20).err().unwrap();
        assert!(err.to_string().contains("both"), "{err}");
    }
}

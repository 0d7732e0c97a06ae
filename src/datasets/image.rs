//! Image uploads: a ZIP whose top-level folders are the labels (`cat/001.jpg`), or a ZIP
//! holding `labels.csv` (`filename,label`, or `filename,labels` with `a|b|c` for multi-label)
//! beside the images. The whole archive is checked
//! (entry count, declared sizes, unsafe paths) before anything is written; each image is
//! then streamed to its file with bounded memory and decoded once to prove it is readable
//! (see [`super::unzip`]; unreadable ones are skipped with a warning naming them) and stored
//! under a name we choose, so no user path ever reaches the disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use zip::ZipArchive;

use super::row_label::RowLabel;
use super::unzip::{Unpacked, repeated_names, unpack_image};
use super::{DatasetError, Limits, ParsedDataset, RawExample};
use crate::backbones::Modality;
use crate::error_code::Code;

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp"];

fn invalid(code: Code, message: String) -> DatasetError {
    DatasetError::invalid(code, message)
}

/// An entry worth looking at: its index in the archive and its normalised path.
struct Entry {
    index: usize,
    path: String,
    size: u64,
}

fn is_ignored(path: &str) -> bool {
    path.split('/').any(|part| {
        part.starts_with('.') || part == "__MACOSX" || part.eq_ignore_ascii_case("thumbs.db")
    })
}

fn extension(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let (_, ext) = name.rsplit_once('.')?;
    Some(ext.to_ascii_lowercase())
}

/// Checks every entry's path and size before anything is extracted.
fn scan(zip: &mut ZipArchive<File>, limits: &Limits) -> Result<Vec<Entry>, DatasetError> {
    if zip.len() > limits.max_zip_entries {
        return Err(DatasetError::TooLarge(format!(
            "the ZIP has {} entries, more than the limit of {} (WARMSTART_MAX_ZIP_ENTRIES); split the dataset",
            zip.len(),
            limits.max_zip_entries
        )));
    }
    let mut entries = Vec::new();
    let mut total = 0u64;
    for index in 0..zip.len() {
        let entry = zip.by_index_raw(index).map_err(|e| {
            invalid(
                Code::MalformedZip,
                format!("cannot read ZIP entry {index}: {e}; re-create the archive"),
            )
        })?;
        let raw = String::from_utf8_lossy(entry.name_raw()).replace('\\', "/");
        let unsafe_path = entry.enclosed_name().is_none()
            || raw.starts_with('/')
            || raw.split('/').any(|p| p == "..")
            || raw.chars().nth(1) == Some(':');
        if unsafe_path {
            return Err(invalid(
                Code::UnsafeZipPath,
                format!(
                    "the ZIP entry {raw:?} points outside the archive (absolute path or `..`); re-create the ZIP from the dataset folder"
                ),
            ));
        }
        total = total.saturating_add(entry.size());
        if total > limits.max_uncompressed_bytes {
            return Err(DatasetError::TooLarge(format!(
                "the ZIP unpacks to more than {} MB (WARMSTART_MAX_UNZIPPED_MB); upload a smaller dataset",
                limits.max_uncompressed_bytes >> 20
            )));
        }
        if entry.is_dir() || is_ignored(&raw) {
            continue;
        }
        entries.push(Entry {
            index,
            path: raw.trim_start_matches("./").to_string(),
            size: entry.size(),
        });
    }
    Ok(entries)
}

/// Drops one top-level folder that holds everything (a zipped dataset folder).
fn strip_common_root(entries: &mut [Entry]) {
    loop {
        let Some(first) = entries.first() else { return };
        let Some((root, _)) = first.path.split_once('/') else {
            return;
        };
        let prefix = format!("{root}/");
        if !entries.iter().all(|e| e.path.starts_with(&prefix)) {
            return;
        }
        // Only unwrap if something below still has a folder (the labels) or labels.csv.
        let below_has_labels = entries.iter().any(|e| {
            let rest = &e.path[prefix.len()..];
            rest.contains('/') || rest.eq_ignore_ascii_case("labels.csv")
        });
        if !below_has_labels {
            return;
        }
        for e in entries.iter_mut() {
            e.path = e.path[prefix.len()..].to_string();
        }
    }
}

fn read_entry(zip: &mut ZipArchive<File>, e: &Entry, cap: u64) -> Result<Vec<u8>, DatasetError> {
    let mut file = zip.by_index(e.index).map_err(|err| {
        invalid(
            Code::MalformedZip,
            format!("cannot read {:?} from the ZIP: {err}", e.path),
        )
    })?;
    let mut bytes = Vec::with_capacity(e.size.min(cap) as usize);
    // Never trust the declared size: stop one byte past the cap.
    file.by_ref()
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| {
            invalid(
                Code::MalformedZip,
                format!("cannot unpack {:?}: {err}", e.path),
            )
        })?;
    if bytes.len() as u64 > cap {
        return Err(DatasetError::TooLarge(format!(
            "{:?} unpacks to more than its declared size or the limit; the archive looks malicious",
            e.path
        )));
    }
    Ok(bytes)
}

/// `filename,label` rows of labels.csv (or `filename,labels` with `a|b|c`: multi-label),
/// keyed by file name (paths relative to the csv).
fn read_labels_csv(bytes: &[u8]) -> Result<HashMap<String, RowLabel>, DatasetError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| invalid(Code::MalformedLabelsCsv, format!("labels.csv: {e}")))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    for want in ["filename", "label", "labels"] {
        if headers.iter().filter(|h| *h == want).count() > 1 {
            return Err(invalid(
                Code::DuplicateColumns,
                format!(
                    "labels.csv has more than one `{want}` column; keep one and rename or remove the others"
                ),
            ));
        }
    }
    let multi = col("label").is_none() && col("labels").is_some();
    let (Some(f), Some(l)) = (col("filename"), col("label").or(col("labels"))) else {
        return Err(invalid(
            Code::MissingColumns,
            format!("labels.csv must have a `filename` and a `label` column; found {headers:?}"),
        ));
    };
    let mut out = HashMap::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| {
            invalid(
                Code::MalformedLabelsCsv,
                format!("labels.csv line {line}: {e}"),
            )
        })?;
        let file = row
            .get(f)
            .unwrap_or("")
            .trim()
            .trim_start_matches("./")
            .to_string();
        let label = row.get(l).unwrap_or("").trim().to_string();
        if file.is_empty() {
            continue;
        }
        if label.contains('\0') {
            return Err(invalid(
                Code::NulByte,
                format!("labels.csv line {line}: the label contains a NUL byte (\\0); remove it"),
            ));
        }
        if label.is_empty() {
            return Err(invalid(
                Code::EmptyLabel,
                format!(
                    "labels.csv line {line}: {file:?} has an empty label; label every image or remove the row"
                ),
            ));
        }
        let label = match multi {
            true => RowLabel::split(&label),
            false => RowLabel::One(label),
        };
        if label == RowLabel::Many(Vec::new()) {
            return Err(invalid(
                Code::EmptyLabel,
                format!(
                    "labels.csv line {line}: {file:?} has an empty label list; give it at least one label (a|b) or remove the row"
                ),
            ));
        }
        out.insert(file, label);
    }
    Ok(out)
}

/// Parses an image ZIP, writing the readable images into `out_dir/images/`.
pub fn parse_zip(
    path: &Path,
    out_dir: &Path,
    limits: &Limits,
) -> Result<ParsedDataset, DatasetError> {
    let file = File::open(path)?;
    let mut zip = ZipArchive::new(file).map_err(|e| {
        invalid(
            Code::MalformedZip,
            format!("the upload is not a readable ZIP archive ({e}); re-create it"),
        )
    })?;
    let mut entries = scan(&mut zip, limits)?;
    let repeated = repeated_names(&zip, path, limits.max_zip_entries)?;
    strip_common_root(&mut entries);

    let mut unlabelled = 0usize;
    let labels_csv = entries
        .iter()
        .position(|e| e.path.eq_ignore_ascii_case("labels.csv"));
    let labelled: Vec<(Entry, RowLabel)> = if let Some(pos) = labels_csv {
        let csv_entry = entries.remove(pos);
        let map = read_labels_csv(&read_entry(&mut zip, &csv_entry, 64 << 20)?)?;
        let mut found = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in entries {
            if let Some(label) = map.get(&e.path) {
                seen.insert(e.path.clone());
                found.push((e, label.clone()));
            } else {
                unlabelled += 1;
            }
        }
        let missing: Vec<&String> = map.keys().filter(|k| !seen.contains(*k)).take(5).collect();
        if !missing.is_empty() && found.is_empty() {
            return Err(invalid(
                Code::LabelsCsvMismatch,
                format!(
                    "none of the files named in labels.csv are in the ZIP (e.g. {missing:?}); filenames must be paths relative to labels.csv"
                ),
            ));
        }
        found
    } else {
        let mut found = Vec::new();
        for e in entries {
            match e.path.split_once('/') {
                Some((label, rest)) if !rest.is_empty() && !label.trim().is_empty() => {
                    let label = RowLabel::One(label.trim().to_string());
                    found.push((e, label));
                }
                _ => unlabelled += 1,
            }
        }
        if found.is_empty() {
            return Err(invalid(
                Code::NoLabelledImages,
                "the ZIP has no labelled images: put each class's images in a top-level folder named after the label (cat/001.jpg), or add labels.csv with filename,label".into(),
            ));
        }
        found
    };

    let images_dir = out_dir.join("images");
    std::fs::create_dir_all(&images_dir)?;
    let mut examples = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut not_images = 0usize;
    let mut duplicates = 0usize;
    let mut hashes: HashMap<[u8; 32], String> = HashMap::new();
    let mut written = 0u64;
    for (entry, label) in labelled {
        let ext = extension(&entry.path).unwrap_or_default();
        if !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            not_images += 1;
            continue;
        }
        if examples.len() >= limits.max_examples {
            return Err(DatasetError::TooLarge(format!(
                "the ZIP holds more than {} images (WARMSTART_MAX_EXAMPLES); upload a sample or raise the limit",
                limits.max_examples
            )));
        }
        let remaining = limits.max_uncompressed_bytes.saturating_sub(written);
        let name = format!("images/{:06}.{ext}", examples.len());
        let dest = out_dir.join(&name);
        let unpacked = unpack_image(
            &mut zip,
            entry.index,
            &entry.path,
            entry.size,
            remaining,
            &dest,
            limits.max_image_pixels,
        )?;
        let hash = match unpacked {
            Unpacked::Image { sha256, bytes } => {
                written += bytes;
                sha256
            }
            Unpacked::Skipped { reason, bytes } => {
                written += bytes;
                skipped.push(format!("{} ({reason})", entry.path));
                continue;
            }
        };
        if hashes.get(&hash) == Some(&label.key()) {
            duplicates += 1;
            std::fs::remove_file(&dest)?;
            continue;
        }
        hashes.insert(hash, label.key());
        examples.push(match label {
            RowLabel::One(label) => RawExample::Image { file: name, label },
            RowLabel::Many(labels) => RawExample::ImageLabels { file: name, labels },
        });
    }

    let mut warnings = Vec::new();
    if !repeated.is_empty() {
        let shown: Vec<String> = repeated.iter().take(5).map(|n| format!("{n:?}")).collect();
        warnings.push(format!(
            "{} names are used by more than one entry of the ZIP ({}{}); only the last entry of each name was read: rename the others and upload again",
            repeated.len(),
            shown.join(", "),
            if repeated.len() > 5 { ", ..." } else { "" }
        ));
    }
    if !skipped.is_empty() {
        warnings.push(format!(
            "skipped {} unreadable images: {}",
            skipped.len(),
            skipped.join("; ")
        ));
    }
    if not_images > 0 {
        warnings.push(format!(
            "ignored {not_images} files that are not JPEG, PNG or WebP images"
        ));
    }
    if unlabelled > 0 {
        warnings.push(format!(
            "ignored {unlabelled} files without a label (outside a label folder, or not listed in labels.csv)"
        ));
    }
    if duplicates > 0 {
        warnings.push(format!(
            "removed {duplicates} duplicate images (identical bytes and label)"
        ));
    }
    Ok(ParsedDataset {
        modality: Modality::Image,
        format: "zip",
        examples,
        lines: Vec::new(),
        warnings,
        task: super::Task::Classification,
        targets: None,
    })
}

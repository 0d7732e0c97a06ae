//! Streaming the images out of an uploaded ZIP with bounded memory: each entry's header is
//! read and checked (format, pixel limit, declared size against what an image of that size
//! can take) before the rest of it is unpacked; the rest is streamed to its file with a
//! running byte cap and hashed on the way; the file is then decoded once, under the pixel
//! limit, to prove it readable. Also: naming entries whose names repeat (the ZIP reader
//! keeps only the last of each).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::ZipArchive;

use super::DatasetError;
use super::decode::{self, ImageError};
use crate::error_code::Code;

/// How much of an entry is read to find its header: a PNG or WebP header is at the start, a
/// JPEG's follows its metadata blocks (EXIF, ICC profile), which can be large.
const HEAD_STEPS: [u64; 2] = [64 << 10, 4 << 20];

/// What became of one image entry.
pub enum Unpacked {
    /// Written to its file: the SHA-256 of its bytes.
    Image { sha256: [u8; 32], bytes: u64 },
    /// Not an image we can use (the reason names the problem); nothing was written.
    Skipped { reason: String, bytes: u64 },
}

fn malformed(path: &str, err: impl std::fmt::Display) -> DatasetError {
    DatasetError::invalid(
        Code::MalformedZip,
        format!("cannot unpack {path:?} from the ZIP: {err}; re-create the archive"),
    )
}

fn lies_about_size(path: &str) -> DatasetError {
    DatasetError::TooLarge(format!(
        "{path:?} unpacks to more than its declared size or the limit; the archive looks malicious"
    ))
}

fn skipped(e: ImageError, bytes: u64) -> Unpacked {
    let hint = match e {
        ImageError::TooLarge { .. } => ", WARMSTART_MAX_IMAGE_PIXELS",
        _ => "",
    };
    Unpacked::Skipped {
        reason: format!("{e}{hint}"),
        bytes,
    }
}

/// Streams entry `index` (declared to unpack to `declared` bytes, at most `cap` of which the
/// upload may still use) to `dest`. A skipped entry leaves no file.
pub fn unpack_image(
    zip: &mut ZipArchive<File>,
    index: usize,
    path: &str,
    declared: u64,
    cap: u64,
    dest: &Path,
    max_pixels: u64,
) -> Result<Unpacked, DatasetError> {
    let cap = declared.min(cap);
    let mut entry = zip.by_index(index).map_err(|e| malformed(path, e))?;
    let mut head = Vec::new();
    let mut header = None;
    for step in HEAD_STEPS {
        let want = step - head.len() as u64;
        let got = entry
            .by_ref()
            .take(want)
            .read_to_end(&mut head)
            .map_err(|e| malformed(path, e))? as u64;
        if head.len() as u64 > cap {
            return Err(lies_about_size(path));
        }
        match decode::probe(Cursor::new(&head), max_pixels) {
            Ok(h) => {
                header = Some(h);
                break;
            }
            // Read whole, or refused from what is there already: nothing more to learn.
            Err(e @ (ImageError::TooLarge { .. } | ImageError::UnsupportedFormat(_))) => {
                return Ok(skipped(e, head.len() as u64));
            }
            Err(e) if got < want => return Ok(skipped(e, head.len() as u64)),
            Err(_) => {}
        }
    }
    let Some(header) = header else {
        return Ok(Unpacked::Skipped {
            reason: format!(
                "no readable image header in its first {} MB",
                HEAD_STEPS[1] >> 20
            ),
            bytes: head.len() as u64,
        });
    };
    if declared > header.max_encoded_bytes() {
        return Ok(Unpacked::Skipped {
            reason: format!(
                "unpacks to {} MB, more than a {}x{} image can take; it looks like a decompression bomb",
                declared >> 20,
                header.width,
                header.height
            ),
            bytes: head.len() as u64,
        });
    }

    let mut out = File::create(dest)?;
    let result = (|| -> Result<(u64, [u8; 32]), DatasetError> {
        let mut hasher = Sha256::new();
        hasher.update(&head);
        out.write_all(&head)?;
        let mut total = head.len() as u64;
        let mut rest = entry.by_ref().take(cap + 1 - total);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = rest.read(&mut buf).map_err(|e| malformed(path, e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > cap {
                return Err(lies_about_size(path));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        out.flush()?;
        Ok((total, hasher.finalize().into()))
    })();
    drop(out);
    let verdict = result.and_then(|(bytes, sha256)| {
        let file = BufReader::new(File::open(dest)?);
        Ok(match decode::verify(file, max_pixels) {
            Ok(_) => Unpacked::Image { sha256, bytes },
            Err(e) => skipped(e, bytes),
        })
    });
    if !matches!(verdict, Ok(Unpacked::Image { .. })) {
        let _ = std::fs::remove_file(dest);
    }
    verdict
}

/// Names used by more than one entry of the ZIP's central directory (the ZIP reader keeps
/// only the last entry of each name), read from the directory itself (its first
/// `max_entries` entries).
pub fn repeated_names(
    zip: &ZipArchive<File>,
    archive: &Path,
    max_entries: usize,
) -> std::io::Result<Vec<String>> {
    if !zip.has_duplicate_names() {
        return Ok(Vec::new());
    }
    let mut reader = BufReader::new(File::open(archive)?);
    reader.seek(SeekFrom::Start(zip.central_directory_start()))?;
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut fixed = [0u8; 46];
    for _ in 0..=max_entries {
        if reader.read_exact(&mut fixed).is_err() || fixed[..4] != [0x50, 0x4b, 0x01, 0x02] {
            break;
        }
        let len = |at: usize| u16::from_le_bytes([fixed[at], fixed[at + 1]]) as usize;
        let (name_len, extra_len, comment_len) = (len(28), len(30), len(32));
        let mut name = vec![0u8; name_len];
        reader.read_exact(&mut name)?;
        reader.seek_relative((extra_len + comment_len) as i64)?;
        *seen.entry(name).or_insert(0) += 1;
    }
    let mut repeated: Vec<String> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| String::from_utf8_lossy(&name).into_owned())
        .collect();
    repeated.sort();
    Ok(repeated)
}

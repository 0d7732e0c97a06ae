//! A dataset as stored in its artefact folder: `examples.jsonl` (one [`RawExample`] per
//! line, in upload order) beside any image files it references.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use super::RawExample;

pub const EXAMPLES_FILE: &str = "examples.jsonl";

/// Writes the example list into a (staging) dataset folder.
pub fn write_examples(dir: &Path, examples: &[RawExample]) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(dir.join(EXAMPLES_FILE))?);
    for e in examples {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Reads the example list back.
pub fn read_examples(dir: &Path) -> std::io::Result<Vec<RawExample>> {
    let reader = BufReader::new(File::open(dir.join(EXAMPLES_FILE))?);
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(std::io::Error::other)?);
    }
    Ok(out)
}

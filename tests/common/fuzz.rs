//! Shared pieces of the property tests: bounded runners (case counts printed by each test,
//! `WARMSTART_FUZZ_CASES` overrides), byte mutations, and seed files (CSV, JSONL, ZIP,
//! images) to mutate.

use std::io::Write;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::topic_csv;

pub fn cases(default: u32) -> u32 {
    std::env::var("WARMSTART_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub fn runner(n: u32) -> TestRunner {
    // Internal errors are logged; show them with the failing case.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warmstart=error")
        .try_init();
    TestRunner::new(Config {
        cases: cases(n),
        failure_persistence: None,
        ..Config::default()
    })
}

/// One edit of a byte string: flip, insert, delete, truncate, or duplicate a span.
pub fn mutate(seed: &[u8], ops: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(op, pos, byte) in ops {
        let at = if out.is_empty() { 0 } else { pos % out.len() };
        match op % 5 {
            0 if !out.is_empty() => out[at] ^= byte | 1,
            1 => out.insert(at, byte),
            2 if !out.is_empty() => {
                out.remove(at);
            }
            3 => out.truncate(at.max(1)),
            _ => {
                let end = (at + byte as usize).min(out.len());
                let span = out[at..end].to_vec();
                out.splice(at..at, span);
            }
        }
    }
    out
}

/// Random bytes, or a seed with a few random edits.
pub fn hostile_bytes(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..600),
        3 => (0..n, prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6))
            .prop_map(move |(i, ops)| mutate(&seeds[i], &ops)),
    ]
}

/// Text files assembled from the tokens that matter to the parsers.
pub fn tokenised_text() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("text".to_string()),
        Just("label".to_string()),
        Just(",".to_string()),
        Just(";".to_string()),
        Just("\t".to_string()),
        Just("\"".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("{\"text\":".to_string()),
        Just("\"label\":".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("\u{feff}".to_string()),
        "[a-z ]{0,8}",
        ".{0,4}",
    ];
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat().into_bytes())
}

pub fn text_seeds() -> Vec<Vec<u8>> {
    vec![
        topic_csv(3).into_bytes(),
        b"label;text\na;\"x; y\"\nb;z\n".to_vec(),
        b"{\"text\":\"a b\",\"label\":\"x\"}\n{\"text\":\"c\",\"label\":2}\n".to_vec(),
        b"[{\"text\":\"a\",\"label\":\"p\"},{\"text\":\"b\",\"label\":\"q\"}]".to_vec(),
    ]
}

pub fn png(side: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(side, side, |x, y| image::Rgb([shade, x as u8, y as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn jpeg(side: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(side, side, |x, y| image::Rgb([x as u8, shade, y as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

pub fn zip_of(files: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    for (name, bytes) in files {
        zip.start_file(
            *name,
            zip::write::SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A name no legitimate file has, to look for escapes by.
pub const ESCAPE: &str = "warmstart-fuzz-escape";

pub fn zip_seeds() -> Vec<Vec<u8>> {
    let (a, b) = (png(12, 10), jpeg(12, 200));
    let escape = format!("../../{ESCAPE}.png");
    let abs = format!("/tmp/{ESCAPE}.png");
    vec![
        zip_of(
            &[("cat/1.png", &a), ("dog/1.jpg", &b), ("cat/2.png", &b)],
            true,
        ),
        zip_of(
            &[
                ("labels.csv", b"filename,label\n1.png,x\n2.jpg,y\n"),
                ("1.png", &a),
                ("2.jpg", &b),
            ],
            false,
        ),
        zip_of(&[("cat/1.png", &a), (&escape, &b), (&abs, &a)], false),
    ]
}

//! Hostile input to the dataset parsers, fuzzed with proptest: random and mutated CSV,
//! JSONL, ZIP and image bytes. Never a panic, never an error that would be a 500, and a ZIP
//! never writes outside its output folder. Case counts are bounded and printed.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fuzz::{hostile_bytes, jpeg, png, runner, text_seeds, tokenised_text, zip_seeds};
use common::server::files_under;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use warmstart::datasets::{self, DatasetError, Limits};

fn assert_not_internal(
    result: &Result<datasets::ParsedDataset, DatasetError>,
) -> Result<(), TestCaseError> {
    if let Err(DatasetError::Io(e)) = result {
        return Err(TestCaseError::fail(format!(
            "an I/O error (500) from bad input: {e}"
        )));
    }
    Ok(())
}

#[test]
fn text_parsers_never_panic_and_refuse_bad_files_as_client_errors() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_examples: 200,
        max_text_chars: 300,
        ..Limits::default()
    };
    let count = AtomicUsize::new(0);
    let strategy = prop_oneof![hostile_bytes(text_seeds()), tokenised_text()];
    runner(3000)
        .run(&strategy, |bytes| {
            count.fetch_add(1, Ordering::Relaxed);
            let path = dir.path().join("upload");
            std::fs::write(&path, &bytes).unwrap();
            let _ = datasets::detect_format(Some("x.txt"), &bytes);
            let _ = datasets::detect_format(None, &bytes);
            for parse in [datasets::text::parse_csv, datasets::text::parse_jsonl] {
                let result = parse(&path, &limits).and_then(|p| p.finish(&limits, None));
                assert_not_internal(&result)?;
                if let Ok(parsed) = result {
                    prop_assert!(parsed.examples.len() <= limits.max_examples);
                    prop_assert!(parsed.labels().len() >= 2);
                }
            }
            Ok(())
        })
        .unwrap();
    println!("fuzz: {} CSV/JSONL parser cases", count.into_inner());
}

#[test]
fn zip_and_image_parsers_never_panic_nor_write_outside_their_folder() {
    let root = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_examples: 200,
        max_image_pixels: 200 * 200,
        max_zip_entries: 50,
        max_uncompressed_bytes: 4 << 20,
        ..Limits::default()
    };
    let image_seeds = vec![png(16, 3), jpeg(16, 9), png(1, 0)];
    let count = AtomicUsize::new(0);
    let strategy = (hostile_bytes(zip_seeds()), hostile_bytes(image_seeds));
    runner(1500)
        .run(&strategy, |(zip_bytes, image_bytes)| {
            count.fetch_add(1, Ordering::Relaxed);
            // Images alone: decode refuses or decodes, within the pixel limit.
            if let Ok(img) =
                warmstart::backbones::image::decode(&image_bytes, limits.max_image_pixels)
            {
                prop_assert!(
                    u64::from(img.width()) * u64::from(img.height()) <= limits.max_image_pixels
                );
            }
            // ZIPs: everything written lands in the output folder's images/.
            let case = root.path().join("case");
            let out = case.join("out");
            std::fs::create_dir_all(&out).unwrap();
            let upload = case.join("upload.zip");
            std::fs::write(&upload, &zip_bytes).unwrap();
            let result = datasets::image::parse_zip(&upload, &out, &limits)
                .and_then(|p| p.finish(&limits, None));
            assert_not_internal(&result)?;
            for file in files_under(root.path()) {
                let ok =
                    file == Path::new("case/upload.zip") || file.starts_with("case/out/images");
                prop_assert!(ok, "written outside the output folder: {}", file.display());
            }
            if let Ok(parsed) = &result {
                for e in &parsed.examples {
                    if let datasets::RawExample::Image { file, .. } = e {
                        prop_assert!(out.join(file).is_file());
                    }
                }
            }
            std::fs::remove_dir_all(&case).unwrap();
            Ok(())
        })
        .unwrap();
    println!("fuzz: {} ZIP + image parser cases", count.into_inner());
}

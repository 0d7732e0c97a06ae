//! Texture patches cut from scikit-image's brick, grass and gravel photos (fetched by
//! scripts/fetch-test-data.sh), used by the real-backbone image tests and benches: training
//! patches come from the top half of each photo, unseen ones from the bottom half, each with
//! a random brightness and contrast so average grey level alone does not give the class away.
#![allow(dead_code)]

use std::io::{Cursor, Write};
use std::path::Path;

use image::imageops;
use image::{GrayImage, ImageFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const TEXTURES: [&str; 3] = ["brick", "grass", "gravel"];
const PATCH: u32 = 128;

/// One patch: PNG bytes and the grey image.
pub struct Patch {
    pub png: Vec<u8>,
    pub image: GrayImage,
    pub class: usize,
}

fn patch(img: &GrayImage, y0: u32, y1: u32, class: usize, rng: &mut StdRng) -> Patch {
    let x = rng.random_range(0..=img.width() - PATCH);
    let y = rng.random_range(y0..=y1 - PATCH);
    let mut p = imageops::crop_imm(img, x, y, PATCH, PATCH).to_image();
    let gain: f32 = rng.random_range(0.6..1.4);
    let offset: f32 = rng.random_range(-40.0..40.0);
    for px in p.pixels_mut() {
        px[0] = (px[0] as f32 * gain + offset).clamp(0.0, 255.0) as u8;
    }
    let mut out = Cursor::new(Vec::new());
    p.write_to(&mut out, ImageFormat::Png).unwrap();
    Patch {
        png: out.into_inner(),
        image: p,
        class,
    }
}

/// `train_per_class` patches per texture from the top halves, `test_per_class` from the
/// bottom halves.
pub fn patches(
    dir: &Path,
    train_per_class: usize,
    test_per_class: usize,
    seed: u64,
) -> (Vec<Patch>, Vec<Patch>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (c, name) in TEXTURES.iter().enumerate() {
        let img = image::open(dir.join(format!("{name}.png")))
            .unwrap()
            .to_luma8();
        let half = img.height() / 2;
        for _ in 0..train_per_class {
            train.push(patch(&img, 0, half, c, &mut rng));
        }
        for _ in 0..test_per_class {
            test.push(patch(&img, half, img.height(), c, &mut rng));
        }
    }
    (train, test)
}

/// The training patches as a ZIP of class folders.
pub fn zip(train: &[Patch]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (i, p) in train.iter().enumerate() {
        zip.start_file(format!("{}/{i:03}.png", TEXTURES[p.class]), opts)
            .unwrap();
        zip.write_all(&p.png).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

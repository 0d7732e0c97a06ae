//! EfficientNet-Lite's input preprocessing, shared by training and prediction, so both see
//! pixels exactly the way the network was pre-trained (DESIGN §3.1): resize the shorter side
//! and centre-crop, normalise `(p - 127) / 128` to a `[3, H, W]` tensor; and the
//! training-time augmentation (random resized crop, flip, colour jitter) from a seeded RNG.
//! Decoding the uploaded bytes comes before, in [`crate::backbones::image`].

use candle_core::{Device, Tensor};
use image::RgbImage;
use image::imageops::{self, FilterType};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Python's `round` on a half-integer (banker's rounding), as torchvision's centre crop uses.
fn half_to_even(twice: u32) -> u32 {
    let (q, odd) = (twice / 2, twice % 2 == 1);
    if odd && q % 2 == 1 { q + 1 } else { q }
}

/// Inference preprocessing: resize the shorter side to `resolution` (bilinear with
/// antialiasing, like PIL), centre-crop `resolution x resolution`, normalise to
/// `(p - 127) / 128`. Returns `[3, resolution, resolution]` `f32` on the CPU.
pub fn to_tensor(img: &RgbImage, resolution: usize) -> candle_core::Result<Tensor> {
    let res = resolution as u32;
    // Beyond 4:1, only a centre part survives the crop anyway: cut it out first so a
    // 10000x10 strip is not resized to 224000x224 on the way.
    let (w, h) = img.dimensions();
    if w > 4 * h || h > 4 * w {
        let (cw, ch) = (w.min(4 * h), h.min(4 * w));
        let strip = imageops::crop_imm(img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
        return to_tensor(&strip, resolution);
    }
    // torchvision Resize(int): the long side becomes int(res * long / short).
    let (nw, nh) = if w <= h {
        (res, ((res as u64 * h as u64) / w as u64) as u32)
    } else {
        (((res as u64 * w as u64) / h as u64) as u32, res)
    };
    let resized;
    let src = if (nw, nh) == (w, h) {
        img
    } else {
        resized = imageops::resize(img, nw, nh, FilterType::Triangle);
        &resized
    };
    let top = half_to_even(nh - res);
    let left = half_to_even(nw - res);
    let crop = imageops::crop_imm(src, left, top, res, res).to_image();
    normalise(&crop)
}

/// `(p - 127) / 128`, HWC bytes → CHW `f32` tensor.
fn normalise(img: &RgbImage) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let raw = img.as_raw();
    let mut out = vec![0f32; 3 * h * w];
    for (i, px) in raw.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * h * w + i] = (px[c] as f32 - 127.0) / 128.0;
        }
    }
    Tensor::from_vec(out, (3, h, w), &Device::Cpu)
}

/// Training-time augmentation (DESIGN §3.5), torchvision-style. `Default` is a moderate
/// setting suited to fine-tuning on small datasets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Random resized crop: range of the crop's area as a fraction of the image.
    pub crop_scale: (f32, f32),
    /// Random resized crop: range of the crop's aspect ratio (width / height), log-uniform.
    pub crop_ratio: (f32, f32),
    /// Flip left-right with probability 1/2.
    pub hflip: bool,
    /// Brightness factor drawn from `[1 - b, 1 + b]`.
    pub brightness: f32,
    /// Contrast factor drawn from `[1 - c, 1 + c]` (blend with the mean grey level).
    pub contrast: f32,
    /// Saturation factor drawn from `[1 - s, 1 + s]` (blend with each pixel's grey).
    pub saturation: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            crop_scale: (0.6, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: true,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
        }
    }
}

impl Augment {
    /// One random view of `img` as a normalised `[3, resolution, resolution]` tensor, every
    /// random choice drawn from `rng` (so a seeded RNG reproduces the same views).
    pub fn apply<R: Rng + ?Sized>(
        &self,
        img: &RgbImage,
        resolution: usize,
        rng: &mut R,
    ) -> candle_core::Result<Tensor> {
        let res = resolution as u32;
        let (x, y, cw, ch) = self.crop_box(img.width(), img.height(), rng);
        let view = imageops::crop_imm(img, x, y, cw, ch);
        let mut out = imageops::resize(&*view, res, res, FilterType::Triangle);
        if self.hflip && rng.random_bool(0.5) {
            imageops::flip_horizontal_in_place(&mut out);
        }
        let factor = |rng: &mut R, amount: f32| {
            if amount > 0.0 {
                rng.random_range((1.0 - amount).max(0.0)..=1.0 + amount)
            } else {
                1.0
            }
        };
        let (b, c, s) = (
            factor(rng, self.brightness),
            factor(rng, self.contrast),
            factor(rng, self.saturation),
        );
        if (b, c, s) != (1.0, 1.0, 1.0) {
            jitter(&mut out, b, c, s);
        }
        normalise(&out)
    }

    /// torchvision `RandomResizedCrop.get_params`: ten tries at a random area and aspect
    /// ratio, then a centre crop with the ratio clamped into range.
    fn crop_box<R: Rng + ?Sized>(&self, w: u32, h: u32, rng: &mut R) -> (u32, u32, u32, u32) {
        let area = w as f32 * h as f32;
        let (lo, hi) = (
            self.crop_scale.0.min(self.crop_scale.1),
            self.crop_scale.0.max(self.crop_scale.1),
        );
        let (rlo, rhi) = (
            self.crop_ratio.0.min(self.crop_ratio.1).ln(),
            self.crop_ratio.0.max(self.crop_ratio.1).ln(),
        );
        for _ in 0..10 {
            let target = area
                * if hi > lo {
                    rng.random_range(lo..hi)
                } else {
                    lo
                };
            let ratio = (if rhi > rlo {
                rng.random_range(rlo..rhi)
            } else {
                rlo
            })
            .exp();
            let cw = (target * ratio).sqrt().round() as u32;
            let ch = (target / ratio).sqrt().round() as u32;
            if cw > 0 && ch > 0 && cw <= w && ch <= h {
                return (
                    rng.random_range(0..=w - cw),
                    rng.random_range(0..=h - ch),
                    cw,
                    ch,
                );
            }
        }
        let in_ratio = w as f32 / h as f32;
        let (cw, ch) = if in_ratio < rlo.exp() {
            (w, ((w as f32 / rlo.exp()).round() as u32).clamp(1, h))
        } else if in_ratio > rhi.exp() {
            (((h as f32 * rhi.exp()).round() as u32).clamp(1, w), h)
        } else {
            (w, h)
        };
        ((w - cw) / 2, (h - ch) / 2, cw, ch)
    }
}

/// Brightness, contrast, saturation, in that order, on 0-255 values.
fn jitter(img: &mut RgbImage, brightness: f32, contrast: f32, saturation: f32) {
    let grey = |p: &[f32]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let mut px: Vec<f32> = img
        .as_raw()
        .iter()
        .map(|&v| (v as f32 * brightness).clamp(0.0, 255.0))
        .collect();
    let n = (px.len() / 3).max(1) as f32;
    let mean = px.chunks_exact(3).map(grey).sum::<f32>() / n;
    px.iter_mut()
        .for_each(|v| *v = ((*v - mean) * contrast + mean).clamp(0.0, 255.0));
    for p in px.chunks_exact_mut(3) {
        let g = grey(p);
        p.iter_mut()
            .for_each(|v| *v = ((*v - g) * saturation + g).clamp(0.0, 255.0));
    }
    for (dst, v) in img.iter_mut().zip(px) {
        *dst = v.round() as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::{SeedableRng, rngs::StdRng};

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w.max(2)) as u8, (y * 255 / h.max(2)) as u8, 77])
        })
    }

    #[test]
    fn to_tensor_resizes_shorter_side_and_centre_crops() {
        let t = to_tensor(&gradient(64, 32), 16).unwrap();
        assert_eq!(t.dims(), [3, 16, 16]);
        // A constant image stays constant and is normalised with (p - 127) / 128.
        let flat = RgbImage::from_pixel(50, 30, Rgb([255, 127, 0]));
        let v = to_tensor(&flat, 24).unwrap().to_vec3::<f32>().unwrap();
        assert!((v[0][5][5] - 1.0).abs() < 1e-6 && v[1][0][23].abs() < 1e-6);
        assert!((v[2][23][0] + 127.0 / 128.0).abs() < 1e-6);
        // Already at resolution: pixels pass through unchanged; odd crops round half to even.
        let img = gradient(25, 24);
        let t = to_tensor(&img, 24).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(t[0][0][0], (img.get_pixel(0, 0)[0] as f32 - 127.0) / 128.0);
        assert_eq!(
            (
                half_to_even(1),
                half_to_even(3),
                half_to_even(5),
                half_to_even(4)
            ),
            (0, 2, 2, 2)
        );
        // Extreme strips and single pixels still give the requested shape.
        assert_eq!(
            to_tensor(&gradient(5000, 3), 32).unwrap().dims(),
            [3, 32, 32]
        );
        assert_eq!(to_tensor(&gradient(1, 1), 32).unwrap().dims(), [3, 32, 32]);
    }

    #[test]
    fn augment_is_seeded_and_keeps_the_shape() {
        let img = gradient(80, 60);
        let aug = Augment::default();
        let a = aug.apply(&img, 32, &mut StdRng::seed_from_u64(7)).unwrap();
        let b = aug.apply(&img, 32, &mut StdRng::seed_from_u64(7)).unwrap();
        let c = aug.apply(&img, 32, &mut StdRng::seed_from_u64(8)).unwrap();
        assert_eq!(a.dims(), [3, 32, 32]);
        let diff = |x: &Tensor, y: &Tensor| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(diff(&a, &b), 0.0);
        assert!(diff(&a, &c) > 0.0);
        let v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)));
        // Crops stay inside the image and respect the area range (or fall back to centre).
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let (x, y, w, h) = aug.crop_box(80, 60, &mut rng);
            assert!(x + w <= 80 && y + h <= 60 && w > 0 && h > 0);
            assert!((w * h) as f32 >= 0.55 * 4800.0);
        }
        // Everything off: the same as a plain resize of the whole (square) image.
        let none = Augment {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            hflip: false,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
        };
        let sq = gradient(48, 48);
        let t = none.apply(&sq, 48, &mut rng).unwrap();
        assert_eq!(diff(&t, &to_tensor(&sq, 48).unwrap()), 0.0);
    }
}

//! Bounded image decoding for uploads and predict requests. An image's header (format, size,
//! colour type) is read before any pixel is, and refused when it is over the pixel limit;
//! decoding then runs under `image::Limits` sized from that limit; and an image headed for a
//! model is shrunk to the backbone's input size at once, so the full-size pixels of only one
//! image exist at a time. The pixels a model sees are exactly those of
//! [`crate::backbones::image::decode`] followed by [`crate::backbones::efficientnet::preprocess::to_tensor`].

use std::io::{BufRead, Cursor, Seek};

use image::imageops::{self, FilterType};
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

pub use crate::backbones::image::ImageError;

/// The most bytes per pixel any accepted image decodes to (16-bit RGBA).
const MAX_BYTES_PER_PIXEL: u64 = 8;
/// Room beyond the pixels for a decoder's own tables and metadata (EXIF, ICC profiles).
const DECODER_SLACK: u64 = 16 << 20;

/// What an image's header says, before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub color: ColorType,
}

impl Header {
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }

    /// Bytes of the decoded pixels in their own colour type.
    pub fn decoded_bytes(&self) -> u64 {
        self.pixels() * self.color.bytes_per_pixel() as u64
    }

    /// Peak bytes of [`decode_for_model`] on this image: the decoded pixels plus one 8-bit RGB
    /// copy (the colour conversion, or the EXIF rotation).
    pub fn decode_peak(&self) -> u64 {
        self.decoded_bytes() + self.pixels() * 3
    }

    /// The most bytes an encoded file of this size can plausibly take: its raw pixels plus
    /// metadata. A ZIP entry that unpacks to more is a decompression bomb.
    pub fn max_encoded_bytes(&self) -> u64 {
        self.decoded_bytes() + self.height as u64 + DECODER_SLACK
    }

    fn check(self, max_pixels: u64) -> Result<Header, ImageError> {
        if self.pixels() > max_pixels {
            return Err(ImageError::TooLarge {
                width: self.width,
                height: self.height,
                max: max_pixels,
            });
        }
        if self.pixels() == 0 {
            return Err(ImageError::Decode("image has no pixels".into()));
        }
        Ok(self)
    }
}

/// Decoder limits for images of at most `max_pixels` pixels.
fn limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(
        max_pixels
            .saturating_mul(MAX_BYTES_PER_PIXEL)
            .saturating_add(DECODER_SLACK),
    );
    limits
}

fn decode_error(e: impl std::fmt::Display) -> ImageError {
    ImageError::Decode(e.to_string())
}

/// A decoder for JPEG, PNG or WebP input, under the limits for `max_pixels`, with its
/// header checked against `max_pixels`. No pixel is decoded yet.
fn open<'a, R: BufRead + Seek + 'a>(
    input: R,
    max_pixels: u64,
) -> Result<(impl ImageDecoder + 'a, Header, Limits), ImageError> {
    let mut reader = ImageReader::new(input)
        .with_guessed_format()
        .map_err(decode_error)?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => f,
        other => return Err(ImageError::UnsupportedFormat(other)),
    };
    let limits = limits(max_pixels);
    reader.limits(limits.clone());
    let decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    let header = Header {
        format,
        width,
        height,
        color: decoder.color_type(),
    }
    .check(max_pixels)?;
    Ok((decoder, header, limits))
}

/// Reads the header of an encoded image; nothing else is decoded. `input` may be only the
/// first bytes of the file (a PNG or WebP header is at its start; a JPEG's follows its
/// metadata blocks): a truncated header is an [`ImageError::Decode`].
pub fn probe<R: BufRead + Seek>(input: R, max_pixels: u64) -> Result<Header, ImageError> {
    open(input, max_pixels).map(|(_, header, _)| header)
}

/// Decodes `input` fully into its own colour type (to prove it is readable), under the
/// pixel limit; the pixels are dropped at once.
pub fn verify<R: BufRead + Seek>(input: R, max_pixels: u64) -> Result<Header, ImageError> {
    let (decoder, header, mut limits) = open(input, max_pixels)?;
    limits
        .reserve(decoder.total_bytes())
        .map_err(decode_error)?;
    DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    Ok(header)
}

/// Decodes an image for a model whose input is `resolution` pixels square: to RGB with its
/// EXIF orientation applied (like [`crate::backbones::image::decode`]), then shrunk at once
/// with [`shrink_for_model`]; the full-size pixels are dropped before this returns.
pub fn decode_for_model(
    bytes: &[u8],
    max_pixels: u64,
    resolution: usize,
) -> Result<RgbImage, ImageError> {
    let (mut decoder, _, mut limits) = open(Cursor::new(bytes), max_pixels)?;
    limits
        .reserve(decoder.total_bytes())
        .map_err(decode_error)?;
    // A broken EXIF block is no reason to refuse an otherwise good picture.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    let full = img.into_rgb8();
    Ok(shrink_for_model(&full, resolution as u32))
}

/// The resize step of the evaluation view ([`crate::backbones::efficientnet::preprocess::to_tensor`]), done
/// early: extreme strips are first cut to 4:1 around their centre, then the shorter side
/// becomes `resolution` (bilinear with antialiasing). `to_tensor` on the result only
/// crops, and sees exactly the pixels it would have computed from the full image.
pub fn shrink_for_model(img: &RgbImage, resolution: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w > 4 * h || h > 4 * w {
        let (cw, ch) = (w.min(4 * h), h.min(4 * w));
        let strip = imageops::crop_imm(img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
        return shrink_for_model(&strip, resolution);
    }
    let res = resolution;
    let (nw, nh) = if w <= h {
        (res, ((res as u64 * h as u64) / w as u64) as u32)
    } else {
        (((res as u64 * w as u64) / h as u64) as u32, res)
    };
    if (nw, nh) == (w, h) {
        img.clone()
    } else {
        imageops::resize(img, nw, nh, FilterType::Triangle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbones::efficientnet::preprocess::to_tensor;
    use crate::backbones::image::decode;
    use image::Rgb;

    fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 13 + y) as u8, (y * 7) as u8, ((x ^ y) * 3) as u8])
        })
    }

    #[test]
    fn the_model_sees_the_same_pixels_as_from_the_full_image() {
        for (w, h) in [
            (640, 480),
            (300, 1000),
            (5000, 40),
            (37, 23),
            (224, 224),
            (10, 90),
        ] {
            let bytes = encode(&pattern(w, h), ImageFormat::Png);
            let full = to_tensor(&decode(&bytes, 1 << 30).unwrap(), 32).unwrap();
            let small = decode_for_model(&bytes, 1 << 30, 32).unwrap();
            assert!(small.width().min(small.height()) == 32, "{w}x{h}");
            let early = to_tensor(&small, 32).unwrap();
            let (a, b) = (
                full.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                early.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(a, b, "{w}x{h}");
        }
    }

    #[test]
    fn headers_are_read_without_decoding_and_checked_against_the_limit() {
        let bytes = encode(&pattern(300, 200), ImageFormat::Png);
        let h = probe(Cursor::new(&bytes[..64]), 60_000).unwrap();
        assert_eq!((h.width, h.height, h.format), (300, 200, ImageFormat::Png));
        assert_eq!(h.decode_peak(), 300 * 200 * 6);
        assert!(matches!(
            probe(Cursor::new(&bytes[..64]), 59_999),
            Err(ImageError::TooLarge { width: 300, .. })
        ));
        assert!(matches!(
            decode_for_model(&bytes, 59_999, 32),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            probe(Cursor::new(b"GIF89a\x01\0\x01\0\0\0\0"), 100),
            Err(ImageError::UnsupportedFormat(Some(_)))
        ));
        assert!(verify(Cursor::new(&bytes), 60_000).is_ok());
        assert!(matches!(
            verify(Cursor::new(&bytes[..bytes.len() / 2]), 60_000),
            Err(ImageError::Decode(_))
        ));
        let jpeg = encode(&pattern(64, 48), ImageFormat::Jpeg);
        assert_eq!(probe(Cursor::new(&jpeg), 1 << 20).unwrap().width, 64);
    }
}

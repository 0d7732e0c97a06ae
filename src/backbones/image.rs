//! Decoding uploaded images, shared by dataset uploads, training and prediction: JPEG, PNG
//! or WebP, EXIF orientation applied, any colour type to RGB, oversized images refused
//! before a pixel is decoded. What a backbone then does with the pixels is its own
//! preprocessing (e.g. [`super::efficientnet::preprocess`]).

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::io::Cursor;

/// A sensible default for [`decode`]'s pixel limit: 40 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Why an uploaded image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("unsupported image format{}: expected JPEG, PNG or WebP", .0.map(|f| format!(" ({f:?})")).unwrap_or_default())]
    UnsupportedFormat(Option<ImageFormat>),
    #[error("image is {width}x{height} pixels, more than the limit of {max} pixels")]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("corrupt or unreadable image: {0}")]
    Decode(String),
}

/// Decodes JPEG, PNG or WebP bytes into RGB (grey, alpha and 16-bit converted like PIL's
/// `convert("RGB")`: alpha dropped), with its EXIF orientation applied. Images with more than
/// `max_pixels` pixels are refused from their header, before any pixel is decoded.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        other => return Err(ImageError::UnsupportedFormat(other)),
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > max_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            max: max_pixels,
        });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Decode("image has no pixels".into()));
    }
    // A broken EXIF block is no reason to refuse an otherwise good picture.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Decode(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb};

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w.max(2)) as u8, (y * 255 / h.max(2)) as u8, 77])
        })
    }

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    /// A baseline JPEG with an APP1 EXIF block holding only `Orientation = orientation`.
    fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec(); // little-endian, IFD at 8, 1 entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes()); // count
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, next IFD = 0
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn decodes_png_webp_and_converts_colour_types() {
        let rgb = gradient(20, 10);
        assert_eq!(
            decode(
                &png(&DynamicImage::ImageRgb8(rgb.clone())),
                DEFAULT_MAX_PIXELS
            )
            .unwrap(),
            rgb
        );
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 3, image::Luma([200])));
        assert_eq!(
            decode(&png(&grey), DEFAULT_MAX_PIXELS)
                .unwrap()
                .get_pixel(1, 1),
            &Rgb([200, 200, 200])
        );
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            4,
            3,
            image::Rgba([10, 20, 30, 0]),
        ));
        assert_eq!(
            decode(&png(&rgba), DEFAULT_MAX_PIXELS)
                .unwrap()
                .get_pixel(3, 2),
            &Rgb([10, 20, 30])
        );
        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .write_image(rgb.as_raw(), 20, 10, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(decode(&webp, DEFAULT_MAX_PIXELS).unwrap(), rgb);
    }

    #[test]
    fn honours_exif_orientation() {
        let img = gradient(40, 16);
        let plain = decode(&jpeg_with_orientation(&img, 1), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(plain.dimensions(), (40, 16));
        // 6 = rotate 90 degrees clockwise to display: the top-left (dark red) moves top-right.
        let rotated = decode(&jpeg_with_orientation(&img, 6), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(rotated.dimensions(), (16, 40));
        let (tl, tr) = (rotated.get_pixel(0, 0)[1], rotated.get_pixel(15, 0)[1]);
        assert!(
            tl > 150 && tr < 60,
            "green along the original y axis: tl {tl}, tr {tr}"
        );
    }

    #[test]
    fn refuses_oversized_corrupt_and_other_formats() {
        let big = png(&DynamicImage::ImageRgb8(gradient(300, 200)));
        assert!(matches!(
            decode(&big, 59_999),
            Err(ImageError::TooLarge {
                width: 300,
                height: 200,
                ..
            })
        ));
        assert!(decode(&big, 60_000).is_ok());
        assert!(matches!(
            decode(&big[..big.len() / 2], DEFAULT_MAX_PIXELS),
            Err(ImageError::Decode(_))
        ));
        assert!(matches!(
            decode(b"just some text", DEFAULT_MAX_PIXELS),
            Err(ImageError::UnsupportedFormat(None))
        ));
        assert!(matches!(
            decode(b"GIF89a\x01\0\x01\0\0\0\0", DEFAULT_MAX_PIXELS),
            Err(ImageError::UnsupportedFormat(Some(_)))
        ));
    }
}

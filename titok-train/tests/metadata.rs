//! What the user sees is what the model sees: EXIF orientation applied before any resize or
//! crop (all eight orientations, JPEG and PNG), ICC-tagged images converted to sRGB (sRGB-tagged
//! ones left bit-identical), animated files reduced to their first frame with a notice, the
//! batcher (training and evaluation data) seeing the same pixels, and the notices and FID
//! warnings it collects. Every file is generated here; nothing is read from `../shared`.

mod common;
use common::scratch;

use std::io::Cursor;

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::metadata::Orientation;
use image::{Delay, DynamicImage, Frame, ImageEncoder, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use moxcms::ColorProfile;
use titok_train::data::image_io::{DecodeLimits, decode_image_with, decode_rgb};
use titok_train::data::{IccHandling, ImageBatcher, ImageFolder, Transform};

/// An image whose every pixel differs from its neighbours and that no flip or rotation maps
/// onto itself: a gradient with a marked top-left corner.
fn marked(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if x < 3 && y < 2 { Rgb([255, 0, 0]) } else { Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128]) }
    })
}

/// A minimal big-endian TIFF/EXIF block holding one tag: Orientation (0x0112) = `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut v = b"MM\0\x2a".to_vec();
    v.extend(8u32.to_be_bytes()); // offset of IFD0
    v.extend(1u16.to_be_bytes()); // one entry
    v.extend(0x0112u16.to_be_bytes()); // Orientation
    v.extend(3u16.to_be_bytes()); // SHORT
    v.extend(1u32.to_be_bytes()); // count
    v.extend(value.to_be_bytes());
    v.extend([0, 0]); // value padded to 4 bytes
    v.extend(0u32.to_be_bytes()); // no next IFD
    v
}

fn png_with(image: &RgbImage, exif: Option<Vec<u8>>, icc: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_with(PngEncoder::new(&mut out), image, exif, icc);
    out
}

fn jpeg_with(image: &RgbImage, exif: Option<Vec<u8>>, icc: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_with(JpegEncoder::new_with_quality(&mut out, 95), image, exif, icc);
    out
}

/// Writes `image` with `enc`, embedding the EXIF block and ICC profile when given.
fn encode_with(mut enc: impl ImageEncoder, image: &RgbImage, exif: Option<Vec<u8>>, icc: Option<Vec<u8>>) {
    if let Some(e) = exif {
        enc.set_exif_metadata(e).unwrap();
    }
    if let Some(p) = icc {
        enc.set_icc_profile(p).unwrap();
    }
    enc.write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8).unwrap();
}

/// The stored image that an EXIF `orientation` turns into `upright`: the inverse transform.
fn stored_for(upright: &RgbImage, orientation: Orientation) -> RgbImage {
    let inverse = match orientation {
        Orientation::Rotate90 => Orientation::Rotate270,
        Orientation::Rotate270 => Orientation::Rotate90,
        other => other, // flips, 180 and the two transposes are their own inverses
    };
    let mut d = DynamicImage::ImageRgb8(upright.clone());
    d.apply_orientation(inverse);
    d.into_rgb8()
}

#[test]
fn every_exif_orientation_is_applied_before_the_transform() {
    let upright = marked(20, 12);
    for value in 1..=8u8 {
        let orientation = Orientation::from_exif(value).unwrap();
        let stored = stored_for(&upright, orientation);
        let bytes = png_with(&stored, Some(exif_orientation(value.into())), None);
        let d = decode_image_with(&bytes, "o.png", DecodeLimits::default()).unwrap();
        assert_eq!(d.orientation, orientation, "orientation {value}");
        assert_eq!(d.stored, stored.dimensions(), "orientation {value}: stored size");
        assert_eq!(d.image, upright, "orientation {value}: the decoded image is not upright");
        let notes = d.notes();
        if value == 1 {
            assert!(notes.is_empty(), "{notes:?}");
        } else {
            assert_eq!(notes.len(), 1, "{notes:?}");
            assert!(notes[0].starts_with(&format!("EXIF orientation {value} applied")), "{notes:?}");
        }
    }
    // The common phone case, 6 = rotated 90 degrees clockwise, states both sizes.
    let stored = stored_for(&upright, Orientation::Rotate90);
    let d = decode_image_with(&png_with(&stored, Some(exif_orientation(6)), None), "p.png", DecodeLimits::default())
        .unwrap();
    assert_eq!(d.notes(), ["EXIF orientation 6 applied (rotated 90 degrees clockwise; stored 12x20, shown 20x12)"]);
}

#[test]
fn an_upright_phone_jpeg_is_read_upright() {
    // Same JPEG bitstream with and without the EXIF block: the oriented decode must be exactly
    // the rotated plain decode (what a viewer shows), and the eval transform sees a landscape.
    let upright = marked(48, 32);
    let stored = stored_for(&upright, Orientation::Rotate90);
    let plain = decode_rgb(&jpeg_with(&stored, None, None), "plain.jpg").unwrap();
    let phone =
        decode_image_with(&jpeg_with(&stored, Some(exif_orientation(6)), None), "phone.jpg", DecodeLimits::default())
            .unwrap();
    assert_eq!(phone.stored, (32, 48));
    assert_eq!(phone.image.dimensions(), (48, 32));
    assert_eq!(phone.image, image::imageops::rotate90(&plain));
    // Close to the upright original, far from the stored (sideways) pixels.
    let diff = |a: &RgbImage, b: &RgbImage| {
        a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>()
            / a.as_raw().len() as f64
    };
    assert!(diff(&phone.image, &upright) < 3.0, "mean |diff| {}", diff(&phone.image, &upright));

    // An unreadable EXIF block loses nothing: the image decodes as stored.
    let broken = jpeg_with(&stored, Some(b"MM\0\x2a\xff\xff\xff\xff".to_vec()), None);
    let d = decode_image_with(&broken, "broken-exif.jpg", DecodeLimits::default()).unwrap();
    assert_eq!((d.orientation, d.image.dimensions()), (Orientation::NoTransforms, (32, 48)));
}

#[test]
fn icc_tagged_images_are_converted_and_srgb_ones_left_alone() {
    let image = marked(16, 16);
    let srgb = ColorProfile::new_srgb().encode().unwrap();
    let adobe = ColorProfile::new_adobe_rgb().encode().unwrap();
    let p3 = ColorProfile::new_display_p3().encode().unwrap();

    let tagged = decode_image_with(&png_with(&image, None, Some(srgb)), "srgb.png", DecodeLimits::default()).unwrap();
    assert_eq!(tagged.icc, IccHandling::Srgb);
    assert_eq!(tagged.image, image, "an sRGB-tagged file is read exactly as stored");
    assert!(tagged.notes().is_empty());
    let untagged = decode_image_with(&png_with(&image, None, None), "plain.png", DecodeLimits::default()).unwrap();
    assert_eq!((untagged.icc, untagged.image), (IccHandling::Untagged, image.clone()));

    for (name, profile) in [("adobe.png", adobe.clone()), ("p3.png", p3)] {
        let d = decode_image_with(&png_with(&image, None, Some(profile)), name, DecodeLimits::default()).unwrap();
        assert!(matches!(d.icc, IccHandling::Converted { .. }), "{name}: {:?}", d.icc);
        assert_ne!(d.image, image, "{name}: wide-gamut pixels must change");
        assert!(d.notes()[0].contains("to sRGB"), "{:?}", d.notes());
        // Wide gamut -> sRGB makes saturated colours more saturated in sRGB numbers: the red
        // corner stays pure red, the gradient's greens and blues spread apart.
        assert_eq!(d.image.get_pixel(0, 0).0, [255, 0, 0], "{name}");
    }
    // JPEG carries the profile in APP2 segments: the same conversion.
    let jpeg = decode_image_with(&jpeg_with(&image, None, Some(adobe)), "adobe.jpg", DecodeLimits::default()).unwrap();
    assert!(matches!(jpeg.icc, IccHandling::Converted { .. }), "{:?}", jpeg.icc);
    // A corrupt profile is reported and the pixels kept.
    let junk =
        decode_image_with(&png_with(&image, None, Some(vec![7; 200])), "junk.png", DecodeLimits::default()).unwrap();
    assert!(matches!(junk.icc, IccHandling::NotApplied { .. }), "{:?}", junk.icc);
    assert_eq!(junk.image, image);
    assert!(junk.notes()[0].contains("read as sRGB"), "{:?}", junk.notes());
}

fn gif(frames: &[[u8; 3]]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        let frames = frames.iter().map(|&c| {
            Frame::from_parts(
                RgbaImage::from_pixel(8, 6, Rgba([c[0], c[1], c[2], 255])),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            )
        });
        enc.encode_frames(frames).unwrap();
    }
    out
}

#[test]
fn animations_give_their_first_frame_with_a_notice() {
    let animated = decode_image_with(&gif(&[[250, 0, 0], [0, 0, 250]]), "anim.gif", DecodeLimits::default()).unwrap();
    assert!(animated.animated);
    let p = animated.image.get_pixel(3, 3).0;
    assert!(p[0] > 200 && p[2] < 50, "first frame (red) expected, got {p:?}");
    assert_eq!(animated.notes(), ["animated GIF: only the first frame is used"]);
    let still = decode_image_with(&gif(&[[0, 250, 0]]), "still.gif", DecodeLimits::default()).unwrap();
    assert!(!still.animated && still.notes().is_empty(), "{:?}", still.notes());
}

#[test]
fn the_batcher_sees_oriented_converted_pixels_and_notes_them_once() {
    let guard = scratch("metadata-batcher");
    let dir = guard.path();
    let upright = marked(40, 40);
    let stored = stored_for(&upright, Orientation::Rotate270);
    std::fs::write(dir.join("a_upright.png"), png_with(&upright, None, None)).unwrap();
    std::fs::write(dir.join("b_phone.png"), png_with(&stored, Some(exif_orientation(8)), None)).unwrap();
    std::fs::write(dir.join("c_lossy.jpg"), jpeg_with(&marked(40, 24), None, None)).unwrap();
    let folder = ImageFolder::open(dir).unwrap();
    let records = folder.list().records().to_vec();
    let batcher = ImageBatcher::new(Transform::eval(40));
    let device = Device::flex();
    for _ in 0..2 {
        let batch = batcher.batch(records.clone(), &device);
        assert_eq!(batch.len(), 3);
        let values = batch.images.try_into_vec_as::<f32>().unwrap();
        let plane = 3 * 40 * 40;
        assert_eq!(values[..plane], values[plane..2 * plane], "the EXIF-rotated file must equal the upright one");
    }
    let summary = batcher.notice_log().summary();
    assert_eq!(summary.files, 3, "each file counts once over two passes");
    assert_eq!(summary.noted.len(), 1, "{:?}", summary.noted);
    assert!(summary.noted[0].0.ends_with("b_phone.png") && summary.noted[0].1[0].starts_with("EXIF orientation 8"));
    assert_eq!(summary.lossy.0, 1);
    let warnings = summary.fid_warnings("samples", 40);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("1 of 3 samples are JPEG"), "{warnings:?}");
    assert!(warnings[1].contains("1 of 3 samples are not 40x40") && warnings[1].contains("40x24"), "{warnings:?}");
}

#[test]
fn formats_survive_a_round_trip_through_the_detector() {
    // The signature decides the decoder even when the extension lies (a PNG named .jpg).
    let bytes = png_with(&marked(8, 8), Some(exif_orientation(3)), None);
    let d = decode_image_with(&bytes, "liar.jpg", DecodeLimits::default()).unwrap();
    assert_eq!(d.format, ImageFormat::Png);
    assert!(!d.is_lossy());
    assert_eq!(d.image, image::imageops::rotate180(&marked(8, 8)));
    assert_eq!(
        image::load(Cursor::new(&bytes), ImageFormat::Png).unwrap().to_rgb8(),
        marked(8, 8),
        "stored as written"
    );
}

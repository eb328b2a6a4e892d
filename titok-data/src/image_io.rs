//! Image files in and out: decoding to 8-bit RGB with limits against decompression bombs, the
//! tensor conversions, and atomic PNG writing (single images and grids).
//!
//! Decoding matches what the official pipeline gets from `PIL.Image.open(f).convert("RGB")`:
//! - grayscale (with or without alpha) is replicated to the three channels;
//! - **alpha is dropped, not composited** (PIL's `RGBA -> RGB` conversion drops it too), so a
//!   transparent pixel keeps whatever colour it stores;
//! - 16-bit images are scaled to 8 bits (`v * 255 / 65535`, rounded); float images are clamped.
//!   Pillow differs slightly here: it keeps the high byte of 16-bit RGB (at most 1 level off)
//!   and clips 16-bit grayscale (`I;16`) to 255 instead of scaling it, a quirk not copied;
//! - CMYK and YCCK JPEGs are converted by the `image` 0.25 / zune-jpeg decoder itself
//!   (Adobe-inverted storage, `R = C' * K' / 255`, the same values as Pillow's conversion),
//!   checked by a test with a generated CMYK JPEG;
//!
//! Where Pillow's default would show the model something other than what the user sees, the
//! decoder follows the user ([`DecodedImage::notes`] says what was done, so reports can name it):
//! - **EXIF orientation** (JPEG, PNG, WebP, TIFF) is applied before any resize or crop, so a
//!   phone photo held upright is tokenized upright ([`Orientation`]; PIL needs
//!   `ImageOps.exif_transpose` for this);
//! - **ICC profiles** other than sRGB (Adobe RGB, Display P3, ...) are converted to sRGB
//!   ([`super::color`]); sRGB-tagged and untagged files are left exactly as stored;
//! - **animated** GIF, APNG and WebP files give their first frame, with a notice.
//!
//! zune-jpeg, as configured by `image`, decodes a truncated JPEG *successfully* and fills the
//! missing part with grey. [`decode_rgb`] therefore walks the JPEG marker structure first and
//! rejects a stream that ends before its end-of-image marker ([`DataError::TruncatedJpeg`]).

use std::io::Cursor;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::metadata::Orientation;
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};

use super::color::{IccHandling, convert_to_srgb};
use super::error::{DataError, Result};

/// Limits applied while decoding an image file.
///
/// The defaults accept every real photograph (up to 16384 px a side, 512 MiB of decoder
/// allocations, the `image` crate's default) and reject decompression bombs, which declare huge
/// dimensions in a few bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width in pixels.
    pub max_width: u32,
    /// Largest accepted height in pixels.
    pub max_height: u32,
    /// Largest total allocation by the decoder in bytes (the decoded buffer counts).
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_width: 16_384, max_height: 16_384, max_alloc: 512 * 1024 * 1024 }
    }
}

impl DecodeLimits {
    fn to_image_limits(self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_width);
        limits.max_image_height = Some(self.max_height);
        limits.max_alloc = Some(self.max_alloc);
        limits
    }
}

/// Reads an image file and decodes it to 8-bit RGB with the default [`DecodeLimits`].
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read, otherwise as [`decode_rgb`].
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    load_rgb_with(path, DecodeLimits::default())
}

/// [`load_rgb`] with explicit limits.
///
/// # Errors
/// As [`load_rgb`].
pub fn load_rgb_with(path: &Path, limits: DecodeLimits) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    decode_rgb_with(&bytes, &path.display().to_string(), limits)
}

/// Decodes encoded image bytes (JPEG, PNG, WebP, GIF, BMP, TIFF, ... as enabled in `image`) to
/// 8-bit RGB with the default [`DecodeLimits`]. `name` is used in error messages and, for
/// formats without a signature (TGA), its extension picks the decoder.
///
/// # Errors
/// [`DataError::EmptyFile`], [`DataError::UnknownFormat`], [`DataError::TruncatedJpeg`],
/// [`DataError::TooLarge`] or [`DataError::Decode`].
pub fn decode_rgb(bytes: &[u8], name: &str) -> Result<RgbImage> {
    decode_rgb_with(bytes, name, DecodeLimits::default())
}

/// [`decode_rgb`] with explicit limits.
///
/// # Errors
/// As [`decode_rgb`].
pub fn decode_rgb_with(bytes: &[u8], name: &str, limits: DecodeLimits) -> Result<RgbImage> {
    decode_image_with(bytes, name, limits).map(|d| d.image)
}

/// A decoded image with what the decoder did to show it as intended.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// The image as displayed: orientation applied, sRGB, 8-bit RGB.
    pub image: RgbImage,
    /// The container format.
    pub format: ImageFormat,
    /// Width and height as stored in the file (before the orientation was applied).
    pub stored: (u32, u32),
    /// The EXIF orientation applied (`NoTransforms` when none or absent).
    pub orientation: Orientation,
    /// What was done with the embedded ICC profile.
    pub icc: IccHandling,
    /// Whether the file is animated (GIF, APNG, WebP): only its first frame is used.
    pub animated: bool,
}

impl DecodedImage {
    /// Notes for reports, one per thing worth saying: the orientation applied, the colour
    /// conversion (or why the profile was not applied), the first frame of an animation.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.orientation != Orientation::NoTransforms {
            let (w, h) = self.stored;
            let (dw, dh) = self.image.dimensions();
            notes.push(format!(
                "EXIF orientation {} applied ({}; stored {w}x{h}, shown {dw}x{dh})",
                self.orientation.to_exif(),
                describe_orientation(self.orientation)
            ));
        }
        notes.extend(self.icc.note());
        if self.animated {
            notes.push(format!("animated {}: only the first frame is used", format_name(self.format)));
        }
        notes
    }

    /// Whether the container is lossy (JPEG; WebP may be either and is not counted).
    pub fn is_lossy(&self) -> bool {
        self.format == ImageFormat::Jpeg
    }
}

/// What an EXIF orientation does to the stored image, in words.
pub fn describe_orientation(o: Orientation) -> &'static str {
    match o {
        Orientation::NoTransforms => "as stored",
        Orientation::Rotate90 => "rotated 90 degrees clockwise",
        Orientation::Rotate180 => "rotated 180 degrees",
        Orientation::Rotate270 => "rotated 90 degrees counter-clockwise",
        Orientation::FlipHorizontal => "mirrored left-right",
        Orientation::FlipVertical => "mirrored top-bottom",
        Orientation::Rotate90FlipH => "rotated 90 degrees clockwise and mirrored",
        Orientation::Rotate270FlipH => "rotated 90 degrees counter-clockwise and mirrored",
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Gif => "GIF",
        ImageFormat::Png => "PNG (APNG)",
        ImageFormat::WebP => "WebP",
        _ => "image",
    }
}

/// Decodes encoded image bytes as [`decode_rgb_with`] does and says what was done to them.
///
/// # Errors
/// As [`decode_rgb`].
pub fn decode_image_with(bytes: &[u8], name: &str, limits: DecodeLimits) -> Result<DecodedImage> {
    let format = detect_format(bytes, name)?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DataError::TruncatedJpeg { name: name.to_string() });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let image_limits = limits.to_image_limits();
    reader.limits(image_limits.clone());
    let mut decoder = reader.into_decoder().map_err(|e| image_error(e, name))?;
    // As `ImageReader::decode`: the output buffer counts against the allocation limit.
    let mut remaining = image_limits;
    remaining.reserve(decoder.total_bytes()).map_err(|e| image_error(e, name))?;
    decoder.set_limits(remaining).map_err(|e| image_error(e, name))?;
    // Metadata problems never lose the image: a broken EXIF block means no rotation, a broken
    // profile is reported by `convert_to_srgb`.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let icc = decoder.icc_profile().ok().flatten();
    let dynamic = DynamicImage::from_decoder(decoder).map_err(|e| image_error(e, name))?;
    let stored = (dynamic.width(), dynamic.height());
    let mut image = dynamic.into_rgb8();
    let icc = match icc {
        Some(profile) => convert_to_srgb(&mut image, &profile),
        None => IccHandling::Untagged,
    };
    let image = orient(image, orientation);
    Ok(DecodedImage { image, format, stored, orientation, icc, animated: is_animated(bytes, format) })
}

/// Applies an EXIF orientation to an RGB image.
fn orient(image: RgbImage, orientation: Orientation) -> RgbImage {
    if orientation == Orientation::NoTransforms {
        return image;
    }
    let mut dynamic = DynamicImage::ImageRgb8(image);
    dynamic.apply_orientation(orientation);
    dynamic.into_rgb8()
}

/// Whether an image file holds more than one frame (an animated GIF, an APNG, an animated
/// WebP). Decoding errors count as "not animated": the first frame was already decoded.
fn is_animated(bytes: &[u8], format: ImageFormat) -> bool {
    match format {
        ImageFormat::Gif => image::codecs::gif::GifDecoder::new(Cursor::new(bytes))
            .map(|d| d.into_frames().take(2).filter(|f| f.is_ok()).count() > 1)
            .unwrap_or(false),
        ImageFormat::Png => {
            image::codecs::png::PngDecoder::new(Cursor::new(bytes)).is_ok_and(|d| d.is_apng().unwrap_or(false))
        }
        ImageFormat::WebP => image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).is_ok_and(|d| d.has_animation()),
        _ => false,
    }
}

/// The format of encoded image bytes: from the file signature, else (for formats without one,
/// such as TGA) from the extension of `name`.
///
/// # Errors
/// [`DataError::EmptyFile`] for no bytes, [`DataError::UnknownFormat`] when neither the
/// signature nor the extension names a format that this build can read.
pub fn detect_format(bytes: &[u8], name: &str) -> Result<ImageFormat> {
    if bytes.is_empty() {
        return Err(DataError::EmptyFile { name: name.to_string() });
    }
    let from_signature = image::guess_format(bytes).ok();
    let from_extension = ImageFormat::from_path(name).ok().filter(|f| !has_signature(*f));
    from_signature
        .or(from_extension)
        .filter(ImageFormat::reading_enabled)
        .ok_or_else(|| DataError::UnknownFormat { name: name.to_string() })
}

/// Whether `image::guess_format` can recognise this format from its first bytes (TGA cannot).
fn has_signature(format: ImageFormat) -> bool {
    !matches!(format, ImageFormat::Tga)
}

/// Whether a file name has the extension of an image format this build can read.
pub fn has_image_extension(name: &str) -> bool {
    ImageFormat::from_path(name).is_ok_and(|f| f.reading_enabled())
}

/// Whether a JPEG stream reaches its end-of-image marker.
///
/// Walks the marker segments (skipping each by its length, so thumbnails inside APP1 are not
/// mistaken for the main image), then the entropy-coded data of each scan (where `FF 00` is a
/// stuffed byte and `FF D0..D7` are restart markers), until `FF D9`. Bytes after the EOI are
/// allowed. Returns `false` for a stream that ends early or does not start with SOI.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return false;
    }
    let segment_len =
        |i: usize| -> Option<usize> { (i + 2 <= n).then(|| usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]))) };
    let mut i = 2;
    loop {
        // Next marker: skip stray bytes, then fill bytes (FF FF ...).
        while i < n && bytes[i] != 0xFF {
            i += 1;
        }
        while i < n && bytes[i] == 0xFF {
            i += 1;
        }
        if i >= n {
            return false;
        }
        let marker = bytes[i];
        i += 1;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => {}
            0xDA => {
                // Start of scan: header, then entropy-coded data up to the next real marker.
                let Some(len) = segment_len(i).filter(|&l| l >= 2) else { return false };
                i += len;
                loop {
                    while i < n && bytes[i] != 0xFF {
                        i += 1;
                    }
                    if i + 1 >= n {
                        return false;
                    }
                    match bytes[i + 1] {
                        0x00 | 0xD0..=0xD7 => i += 2,
                        0xFF => i += 1,
                        _ => break,
                    }
                }
            }
            _ => {
                let Some(len) = segment_len(i).filter(|&l| l >= 2) else { return false };
                i += len;
            }
        }
    }
}

fn image_error(error: ImageError, name: &str) -> DataError {
    let name = name.to_string();
    match error {
        ImageError::Limits(e) => DataError::TooLarge { name, reason: e.to_string() },
        ImageError::Unsupported(e) => DataError::Decode { name, reason: format!("unsupported: {e}") },
        other => DataError::Decode { name, reason: other.to_string() },
    }
}

/// Appends an image as planar `[3, H, W]` values in `[0, 1]` (`v / 255`) to `out`.
pub fn extend_chw(image: &RgbImage, out: &mut Vec<f32>) {
    let raw = image.as_raw();
    out.reserve(raw.len());
    for channel in 0..3 {
        out.extend(raw.iter().skip(channel).step_by(3).map(|&v| f32::from(v) / 255.0));
    }
}

/// Stacks same-sized RGB images into a tensor `[N, 3, H, W]` with values in `[0, 1]`.
///
/// # Errors
/// [`DataError::Input`] for no images or images of different sizes.
pub fn images_to_tensor(images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
    let first = images.first().ok_or_else(|| DataError::Input("no images to stack".into()))?;
    let (w, h) = first.dimensions();
    let mut values = Vec::with_capacity(images.len() * 3 * (w * h) as usize);
    for (i, image) in images.iter().enumerate() {
        if image.dimensions() != (w, h) {
            return Err(DataError::Input(format!(
                "image {i} is {}x{}, image 0 is {w}x{h}",
                image.width(),
                image.height()
            )));
        }
        extend_chw(image, &mut values);
    }
    let shape = [images.len(), 3, h as usize, w as usize];
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Converts a tensor `[N, 3, H, W]` of values in `[0, 1]` to 8-bit RGB images: values are
/// clamped to `[0, 1]` and rounded to the nearest 1/255 step (the official evaluation's
/// quantisation); NaN becomes 0.
///
/// # Errors
/// [`DataError::Input`] for a tensor that is not `[N, 3, H, W]` or cannot be read as f32.
pub fn tensor_to_images(images: Tensor<4>) -> Result<Vec<RgbImage>> {
    let [n, c, h, w] = images.dims();
    if c != 3 {
        return Err(DataError::Input(format!("expected [N, 3, H, W] images, got [{n}, {c}, {h}, {w}]")));
    }
    let values = images
        .try_into_vec_as::<f32>()
        .map_err(|e| DataError::Input(format!("cannot read the image tensor: {e:?}")))?;
    let to_u8 = |v: f32| if v.is_nan() { 0 } else { (v.clamp(0.0, 1.0) * 255.0).round() as u8 };
    let plane = h * w;
    let images = values
        .chunks_exact(3 * plane)
        .map(|chw| {
            let mut raw = Vec::with_capacity(3 * plane);
            for p in 0..plane {
                raw.extend([to_u8(chw[p]), to_u8(chw[plane + p]), to_u8(chw[2 * plane + p])]);
            }
            RgbImage::from_raw(w as u32, h as u32, raw).expect("buffer sized from the dims")
        })
        .collect();
    Ok(images)
}

/// Lays same-sized images out on a grid with `columns` columns, row by row, separated and
/// framed by `padding` black pixels (torchvision's `make_grid`/`save_image` layout).
///
/// # Errors
/// [`DataError::Input`] for no images, zero columns or images of different sizes.
pub fn image_grid(images: &[RgbImage], columns: usize, padding: u32) -> Result<RgbImage> {
    let first = images.first().ok_or_else(|| DataError::Input("no images for the grid".into()))?;
    if columns == 0 {
        return Err(DataError::Input("a grid needs at least one column".into()));
    }
    let (w, h) = first.dimensions();
    if let Some(i) = images.iter().position(|im| im.dimensions() != (w, h)) {
        return Err(DataError::Input(format!("grid image {i} is not {w}x{h}")));
    }
    let columns = columns.min(images.len());
    let rows = images.len().div_ceil(columns);
    let width = (w + padding) * columns as u32 + padding;
    let height = (h + padding) * rows as u32 + padding;
    let mut grid = RgbImage::new(width, height);
    for (k, image) in images.iter().enumerate() {
        let x = padding + (k % columns) as u32 * (w + padding);
        let y = padding + (k / columns) as u32 * (h + padding);
        image::imageops::replace(&mut grid, image, i64::from(x), i64::from(y));
    }
    Ok(grid)
}

/// Writes an RGB image as PNG, atomically (a temporary file renamed into place, via
/// `titok_model::checkpoint::write_atomically`), creating parent folders.
///
/// # Errors
/// [`DataError::Write`].
pub fn save_png(path: &Path, image: &RgbImage) -> Result<()> {
    titok_model::checkpoint::write_atomically(path, |tmp| {
        image.save_with_format(tmp, ImageFormat::Png).map_err(|e| e.to_string())
    })
    .map_err(|e| write_error(path, e))
}

/// Writes a tensor of images `[N, 3, H, W]` in `[0, 1]` as one PNG grid with `columns` columns
/// and 2 px black padding (see [`image_grid`]), atomically.
///
/// # Errors
/// [`DataError::Input`] for a bad tensor or `columns == 0`, [`DataError::Write`].
pub fn save_png_grid(path: &Path, images: Tensor<4>, columns: usize) -> Result<()> {
    let images = tensor_to_images(images)?;
    let grid = image_grid(&images, columns, 2)?;
    save_png(path, &grid)
}

fn write_error(path: &Path, error: titok_model::TitokError) -> DataError {
    let reason = match error {
        titok_model::TitokError::Write { reason, .. } => reason,
        other => other.to_string(),
    };
    DataError::Write { path: path.to_path_buf(), reason }
}

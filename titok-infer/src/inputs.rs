//! Input images: collecting the files named on the command line (folders are searched
//! recursively), decoding them with limits against decompression bombs
//! (`titok_data::image_io`: grayscale, alpha, 16-bit and CMYK handled, EXIF orientation
//! applied, ICC profiles converted to sRGB, animations cut to their first frame) and the eval
//! transform (shorter side resized with antialiased bicubic, centre crop to the model
//! resolution), in batches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use burn::tensor::{Device, Tensor};
use image::RgbImage;
use titok_data::image_io::{DecodeLimits, decode_image_with, has_image_extension, images_to_tensor};
use titok_data::{DataError, Transform};

/// The files to process and the arguments that could not be used.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Files in command-line order (folder contents sorted), without duplicates.
    pub files: Vec<PathBuf>,
    /// One message per unusable argument (missing path, folder without images).
    pub errors: Vec<String>,
}

impl Inputs {
    /// Canonical paths of the files, to refuse outputs that would overwrite one.
    pub fn canonical(&self) -> HashSet<PathBuf> {
        self.files.iter().filter_map(|f| f.canonicalize().ok()).collect()
    }
}

/// Expands files and folders. Files named explicitly are always tried (a non-image file gives
/// its own error later); inside folders only files with an image extension are taken, hidden
/// entries (`.name`) are skipped.
pub fn collect(args: &[PathBuf]) -> Inputs {
    let mut inputs = Inputs::default();
    let mut seen = HashSet::new();
    for arg in args {
        if arg.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = walk(arg, 0, &mut found) {
                inputs.errors.push(format!("{}: {e}", arg.display()));
                continue;
            }
            if found.is_empty() {
                inputs.errors.push(format!("{}: no image files in this folder", arg.display()));
            }
            for f in found {
                if seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())) {
                    inputs.files.push(f);
                }
            }
        } else if arg.exists() {
            if seen.insert(arg.canonicalize().unwrap_or_else(|_| arg.clone())) {
                inputs.files.push(arg.clone());
            }
        } else {
            inputs.errors.push(format!("{}: no such file or folder", arg.display()));
        }
    }
    inputs
}

/// Deepest folder nesting followed (guards against symlink loops).
const MAX_DEPTH: usize = 32;

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if has_image_extension(&path.to_string_lossy()) {
            out.push(path);
        }
    }
    Ok(())
}

/// One decoded input image, transformed to the model resolution.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The file.
    pub path: PathBuf,
    /// The image, `size x size` RGB.
    pub image: RgbImage,
    /// Width and height of the image as shown (after its EXIF orientation).
    pub original: (u32, u32),
    /// What decoding did to show the file as intended: EXIF orientation, ICC conversion,
    /// first frame of an animation (see `DecodedImage::notes`).
    pub notes: Vec<String>,
    /// Size after resizing the shorter side (before the centre crop).
    pub resized: (u32, u32),
}

impl Prepared {
    /// What the transform did, e.g. `451x300 -> resized to 48x32, centre crop 32x32`, followed
    /// by the decoding notes (`EXIF orientation 6 applied (...)`), separated by `; `.
    pub fn describe(&self) -> String {
        let (w, h) = self.original;
        let s = self.image.width();
        let mut text = if (w, h) == (s, s) {
            format!("{w}x{h} (model size)")
        } else if self.resized == (w, h) {
            format!("{w}x{h} -> centre crop {s}x{s}")
        } else {
            let (rw, rh) = self.resized;
            format!("{w}x{h} -> resized to {rw}x{rh}, centre crop {s}x{s}")
        };
        for note in &self.notes {
            text.push_str("; ");
            text.push_str(note);
        }
        text
    }
}

/// Decodes an image file (with the default decoding limits; EXIF orientation applied, ICC
/// profiles converted to sRGB) and applies the eval transform.
///
/// # Errors
/// A [`DataError`] naming the file (unreadable, empty, unknown format, truncated, too large,
/// corrupt, extreme aspect ratio).
pub fn prepare(path: &Path, size: u32) -> Result<Prepared, DataError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let decoded = decode_image_with(&bytes, &name, DecodeLimits::default())?;
    let transform = Transform::eval(size);
    let (w, h) = decoded.image.dimensions();
    let out = transform.apply(&decoded.image, 0, 0).map_err(|e| match e {
        DataError::TooLarge { reason, .. } => DataError::TooLarge { name: name.clone(), reason },
        DataError::Input(reason) => DataError::Decode { name: name.clone(), reason },
        other => other,
    })?;
    Ok(Prepared {
        path: path.to_path_buf(),
        image: out,
        original: (w, h),
        notes: decoded.notes(),
        resized: transform.resized_dims(w, h),
    })
}

/// A batch of prepared images and their tensor `[B, 3, S, S]` in `[0, 1]`.
#[derive(Debug)]
pub struct Batch {
    /// The images, in order.
    pub items: Vec<Prepared>,
    /// `[B, 3, S, S]`, values `v / 255`.
    pub pixels: Tensor<4>,
}

/// Loads `files` (one chunk of the inputs), reporting each failure through `on_error` (one
/// line naming the file); `None` when every file failed.
pub fn load_batch(files: &[PathBuf], size: u32, device: &Device, on_error: &mut dyn FnMut(String)) -> Option<Batch> {
    let mut items = Vec::with_capacity(files.len());
    for f in files {
        match prepare(f, size) {
            Ok(p) => items.push(p),
            Err(e) => on_error(one_line(&e.to_string())),
        }
    }
    if items.is_empty() {
        return None;
    }
    let images: Vec<RgbImage> = items.iter().map(|p| p.image.clone()).collect();
    match images_to_tensor(&images, device) {
        Ok(pixels) => Some(Batch { items, pixels }),
        Err(e) => {
            on_error(format!("cannot stack the batch: {e}"));
            None
        }
    }
}

/// Joins a multi-line message into one line.
pub fn one_line(message: &str) -> String {
    message.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// An error for a model that cannot reconstruct pixels.
pub fn no_pixels_error(what: &str) -> anyhow::Error {
    anyhow!(
        "{what}: this tokenizer is a two-stage stage-1 model, it decodes to proxy codes, not pixels; use a \
         stage-2 (finetune_decoder) or single-stage model"
    )
}

//! Output files: never overwrite an input, unique names per output folder, atomic writes
//! (a temporary file renamed into place, `titok_model::checkpoint::write_atomically`; devices
//! and pipes such as `/dev/null` are written in place instead, since a rename would replace
//! them), and the upscaled previews.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use image::RgbImage;
use image::imageops::{FilterType, resize};

/// Refuses outputs that would replace one of the inputs.
#[derive(Debug, Default)]
pub struct OutputGuard {
    inputs: HashSet<PathBuf>,
}

impl OutputGuard {
    /// A guard over the given input files (canonical paths).
    pub fn new(inputs: HashSet<PathBuf>) -> Self {
        Self { inputs }
    }

    /// Adds an input file.
    pub fn protect(&mut self, path: &Path) {
        if let Ok(c) = path.canonicalize() {
            self.inputs.insert(c);
        }
    }

    /// Errors when `output` is one of the inputs (a file that does not exist yet never is).
    ///
    /// # Errors
    /// `refusing to overwrite the input file ...`.
    pub fn check(&self, output: &Path) -> Result<()> {
        if let Ok(c) = output.canonicalize()
            && self.inputs.contains(&c)
        {
            bail!("refusing to overwrite the input file {} (choose another output)", output.display());
        }
        Ok(())
    }
}

/// Gives each input a distinct output stem: `photo`, then `photo-2`, `photo-3`, ... for other
/// inputs with the same file stem.
#[derive(Debug, Default)]
pub struct UniqueStems {
    used: HashMap<String, usize>,
}

impl UniqueStems {
    /// The stem for `name` (a file name or path; the stem of its last component is used).
    pub fn stem(&mut self, name: &str) -> String {
        let base = Path::new(name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "image".into());
        let count = self.used.entry(base.clone()).or_insert(0);
        *count += 1;
        if *count == 1 { base } else { format!("{base}-{count}") }
    }
}

/// How an output file is written.
enum Destination {
    /// A temporary file beside the (resolved) path, renamed into place.
    Atomic(PathBuf),
    /// Written in place: an existing device or pipe such as `/dev/null` or `/dev/stdout`, which
    /// a rename would replace by a regular file.
    InPlace,
}

/// Decides how `path` is written: symlinks are followed (the file they point to is replaced,
/// not the link), special files are written in place, folders are refused.
fn destination(path: &Path) -> Result<Destination> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(Destination::Atomic(path.to_path_buf()));
    };
    if meta.is_dir() {
        bail!("{} is a folder, expected a file name", path.display());
    }
    if !meta.is_file() {
        return Ok(Destination::InPlace);
    }
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    Ok(Destination::Atomic(if is_link { path.canonicalize()? } else { path.to_path_buf() }))
}

/// Errors when `path` exists and is neither a regular file nor absent: for outputs written by
/// library code that always renames a temporary file into place.
///
/// # Errors
/// `... is not a regular file`.
pub fn refuse_special(path: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        bail!("{} is not a regular file: give a file name for this output", path.display());
    }
    Ok(())
}

/// Writes bytes after checking the path is not an input: atomically for files, in place for
/// devices and pipes.
///
/// # Errors
/// When `path` is an input or a folder, or the file cannot be written.
pub fn write_bytes(guard: &OutputGuard, path: &Path, bytes: &[u8]) -> Result<()> {
    guard.check(path)?;
    match destination(path)? {
        Destination::Atomic(p) => titok_model::checkpoint::write_bytes_atomically(&p, bytes)?,
        Destination::InPlace => {
            std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?
        }
    }
    Ok(())
}

/// Writes a PNG (see [`write_bytes`]).
///
/// # Errors
/// As [`write_bytes`]; an image that cannot be encoded.
pub fn write_png(guard: &OutputGuard, path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    write_bytes(guard, path, &bytes)
}

/// The default enlargement of previews: enough for `size`-pixel images to be 128 px tall.
pub fn default_zoom(size: u32) -> u32 {
    (128 / size.max(1)).max(1)
}

/// Enlarges an image by an integer factor with nearest-neighbour sampling (pixels stay sharp).
pub fn zoom(image: &RgbImage, factor: u32) -> RgbImage {
    if factor <= 1 {
        return image.clone();
    }
    resize(image, image.width() * factor, image.height() * factor, FilterType::Nearest)
}

/// `path` with `suffix` replacing its extension: `grid.png` + `json` -> `grid.json`.
pub fn sibling(path: &Path, extension: &str) -> PathBuf {
    path.with_extension(extension)
}

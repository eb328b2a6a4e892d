//! A folder of image files: class subfolders (labels in sorted folder order, as torchvision's
//! `ImageFolder`) or a flat folder (no labels).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

use super::error::{DataError, Result};
use super::image_list::{ImageList, IndexOptions, SIGNATURE_BYTES, Skipped, precheck};
use super::record::{ImageRecord, ImageSource};

/// Deepest folder nesting followed below the root (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// An image folder indexed once at construction; items are read from disk when batched.
///
/// Layout and labels follow [`LabelSource`](super::LabelSource) (default: class subfolders,
/// or unlabelled when flat). Hidden files and folders (`.name`) are ignored, symlinks are
/// followed, and files that are not images are left out and listed in [`Self::skipped`].
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    list: ImageList,
}

impl ImageFolder {
    /// Indexes `root` with the default [`IndexOptions`].
    ///
    /// # Errors
    /// [`DataError::NotFound`], [`DataError::Input`] (not a folder),
    /// [`DataError::EmptyFolder`] (no files at all),
    /// [`DataError::NoImages`] (files, but no usable image), [`DataError::Io`].
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(root, &IndexOptions::default())
    }

    /// Indexes `root` with explicit options.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with(root: impl AsRef<Path>, options: &IndexOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.exists() {
            return Err(DataError::NotFound { path: root });
        }
        if !root.is_dir() {
            return Err(DataError::Input(format!("{} is not a folder", root.display())));
        }
        let mut files = Vec::new();
        walk(&root, "", 0, &mut files)?;
        let found = files
            .into_iter()
            .map(|(rel, path)| {
                let checked = check_file(&rel, &path, options.check_signatures);
                (rel, checked.map(|()| ImageSource::File(Arc::from(path.as_path()))))
            })
            .collect();
        let list = ImageList::build(&root, found, &options.labels)?;
        Ok(Self { root, list })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The indexed list (records, class names, skipped files).
    pub fn list(&self) -> &ImageList {
        &self.list
    }

    /// Class names in label order (empty when unlabelled).
    pub fn class_names(&self) -> &[String] {
        self.list.class_names()
    }

    /// Files left out while indexing, with the reasons.
    pub fn skipped(&self) -> &[Skipped] {
        self.list.skipped()
    }
}

impl Dataset<ImageRecord> for ImageFolder {
    fn get(&self, index: usize) -> std::result::Result<ImageRecord, DatasetError> {
        self.list.get(index)
    }

    fn len(&self) -> usize {
        self.list.len()
    }
}

/// Collects every regular file below `dir` as (`/`-separated path relative to the root, path).
/// Hidden folders are not entered; hidden files are kept (and skipped later with a reason).
fn walk(dir: &Path, rel: &str, depth: usize, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        // `metadata` follows symlinks; a dangling link is reported as a skipped file.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if name.starts_with('.') {
                    continue;
                }
                if depth + 1 >= MAX_DEPTH {
                    tracing::warn!(folder = %path.display(), "not descending: more than {MAX_DEPTH} levels deep");
                    continue;
                }
                walk(&path, &child, depth + 1, out)?;
            }
            _ => out.push((child, path)),
        }
    }
    Ok(())
}

/// The indexing checks for one file on disk.
fn check_file(rel: &str, path: &Path, read_signature: bool) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    // Cheap checks (name, size) first, so that non-images are never opened.
    precheck(rel, meta.len(), None)?;
    if !read_signature {
        return Ok(());
    }
    let mut head = Vec::with_capacity(SIGNATURE_BYTES as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(SIGNATURE_BYTES).read_to_end(&mut head))
        .map_err(|e| format!("cannot read: {e}"))?;
    precheck(rel, head.len() as u64, Some(&head))
}

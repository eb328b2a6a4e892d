//! The indexed list of images shared by [`ImageFolder`](super::ImageFolder) and
//! [`TarImages`](super::TarImages): the file checks done while indexing, the folder layout
//! (class subfolders or flat), the labels and the sort order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

use super::error::{DataError, Result};
use super::image_io::has_image_extension;
use super::record::{ImageRecord, ImageSource};

/// How images get their labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LabelSource {
    /// torchvision `ImageFolder` rule: when the root has subfolders with images, each
    /// subfolder is a class (everything below it, recursively, belongs to it), labels are the
    /// class positions in sorted name order, and files directly in the root are skipped; a
    /// flat folder gives unlabelled images. Classes are the folders that hold at least one
    /// image: compare `class_names()` of the train and test splits, or use [`Self::Classes`].
    #[default]
    Folders,
    /// A fixed class list: the label is the position of the image's class folder in this
    /// list; images in other folders are skipped. Use the training split's class list to open
    /// the evaluation split.
    Classes(Vec<String>),
    /// The decimal number that starts the file name (`386_n02504458_African_elephant.jpg` ->
    /// 386), for flat folders named by class index such as the ImageNet samples; files without
    /// one are skipped. No class names.
    FileNameIndex,
    /// No labels; every image below the root, recursively.
    Unlabelled,
}

/// Options for indexing an image folder or archive.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// How labels are assigned (default: class folders).
    pub labels: LabelSource,
    /// Read the first bytes of every image file while indexing and skip files that are empty
    /// or whose signature is not an image (default `true`). For a folder this opens every file
    /// once (about 20 s per million files on a local SSD); with `false` only the extension is
    /// checked and bad files are skipped later, by the batcher.
    pub check_signatures: bool,
    /// `.tar.gz` only: the most bytes of encoded images held in memory (default 8 GiB).
    pub max_in_memory_bytes: u64,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self { labels: LabelSource::Folders, check_signatures: true, max_in_memory_bytes: 8 << 30 }
    }
}

/// A file left out while indexing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Path relative to the root (or member path).
    pub name: String,
    /// Why it was left out.
    pub reason: String,
}

/// Number of leading bytes read to check a file's signature.
pub(crate) const SIGNATURE_BYTES: u64 = 64;

/// Checks one file found while indexing, from its relative path, size and (if read) first
/// bytes. `Err` holds the reason to skip it.
pub(crate) fn precheck(rel: &str, size: u64, head: Option<&[u8]>) -> std::result::Result<(), String> {
    if rel.split('/').any(|part| part.starts_with('.')) {
        return Err("hidden file".into());
    }
    if !has_image_extension(rel) {
        return Err("not an image file name (extension)".into());
    }
    if size == 0 {
        return Err("empty file".into());
    }
    if let Some(head) = head {
        super::image_io::detect_format(head, rel).map_err(|e| match e {
            DataError::UnknownFormat { .. } => "content is not an image (unknown signature)".to_string(),
            other => other.to_string(),
        })?;
    }
    Ok(())
}

/// An indexed list of images with labels; a burn [`Dataset`] of [`ImageRecord`]s.
///
/// Records are sorted by path (component by component) and `records[i].index == i`.
#[derive(Debug, Clone)]
pub struct ImageList {
    records: Vec<ImageRecord>,
    class_names: Vec<String>,
    skipped: Vec<Skipped>,
}

impl ImageList {
    /// Builds a list from files found below a root: `found` holds each file's relative path
    /// (`/`-separated) and its source, or the reason it was already skipped.
    ///
    /// # Errors
    /// [`DataError::EmptyFolder`] when nothing was found, [`DataError::NoImages`] when every
    /// file was skipped.
    pub(crate) fn build(
        root: &Path,
        found: Vec<(String, std::result::Result<ImageSource, String>)>,
        labels: &LabelSource,
    ) -> Result<Self> {
        if found.is_empty() {
            return Err(DataError::EmptyFolder { path: root.to_path_buf() });
        }
        let files = found.len();
        let mut skipped = Vec::new();
        let mut kept = Vec::new();
        for (name, source) in found {
            match source {
                Ok(source) => kept.push((name, source)),
                Err(reason) => skipped.push(Skipped { name, reason }),
            }
        }
        let in_class_folders = match labels {
            LabelSource::Folders => kept.iter().any(|(name, _)| name.contains('/')),
            LabelSource::Classes(_) => true,
            LabelSource::FileNameIndex | LabelSource::Unlabelled => false,
        };
        let class_names: Vec<String> = match labels {
            LabelSource::Classes(list) => list.clone(),
            LabelSource::Folders if in_class_folders => {
                let mut names: Vec<String> =
                    kept.iter().filter_map(|(name, _)| name.split_once('/')).map(|(c, _)| c.to_string()).collect();
                names.sort();
                names.dedup();
                names
            }
            _ => Vec::new(),
        };

        let class_index: HashMap<&str, usize> =
            class_names.iter().enumerate().rev().map(|(i, c)| (c.as_str(), i)).collect();
        let mut labelled = Vec::with_capacity(kept.len());
        for (name, source) in kept {
            let label = match labels {
                LabelSource::Folders | LabelSource::Classes(_) if in_class_folders => {
                    let Some((class, _)) = name.split_once('/') else {
                        skipped.push(Skipped { name, reason: "not inside a class folder".into() });
                        continue;
                    };
                    match class_index.get(class) {
                        Some(&label) => Some(label),
                        None => {
                            let reason = format!("class folder '{class}' is not in the class list");
                            skipped.push(Skipped { name, reason });
                            continue;
                        }
                    }
                }
                LabelSource::FileNameIndex => match file_name_index(&name) {
                    Some(label) => Some(label),
                    None => {
                        skipped
                            .push(Skipped { name, reason: "the file name does not start with a class index".into() });
                        continue;
                    }
                },
                _ => None,
            };
            labelled.push((name, source, label));
        }

        log_skipped(root, &skipped);
        if labelled.is_empty() {
            let example = skipped.first().map(|s| format!("{}: {}", s.name, s.reason)).unwrap_or_default();
            return Err(DataError::NoImages { path: root.to_path_buf(), files, skipped: skipped.len(), example });
        }
        labelled.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
        let records = labelled
            .into_iter()
            .enumerate()
            .map(|(index, (name, source, label))| ImageRecord { source, label, name: Arc::from(name), index })
            .collect();
        Ok(Self { records, class_names, skipped })
    }

    /// Builds a list from records made elsewhere (re-indexed in the given order).
    pub fn from_records(records: Vec<ImageRecord>, class_names: Vec<String>) -> Self {
        let records = records.into_iter().enumerate().map(|(index, r)| ImageRecord { index, ..r }).collect();
        Self { records, class_names, skipped: Vec::new() }
    }

    /// Prepends `prefix` to every record and skipped-file name (a split folder of an archive).
    pub(crate) fn prefix_names(&mut self, prefix: &str) {
        if prefix.is_empty() {
            return;
        }
        for r in &mut self.records {
            r.name = Arc::from(format!("{prefix}{}", r.name));
        }
        for s in &mut self.skipped {
            s.name = format!("{prefix}{}", s.name);
        }
    }

    /// The records, in dataset order.
    pub fn records(&self) -> &[ImageRecord] {
        &self.records
    }

    /// Class names in label order (empty for unlabelled data and [`LabelSource::FileNameIndex`]).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Files left out while indexing, with the reasons.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The record with this display name, if any.
    pub fn find(&self, name: &str) -> Option<&ImageRecord> {
        self.records.iter().find(|r| &*r.name == name)
    }
}

impl Dataset<ImageRecord> for ImageList {
    fn get(&self, index: usize) -> std::result::Result<ImageRecord, DatasetError> {
        Ok(self.records[index].clone())
    }

    fn len(&self) -> usize {
        self.records.len()
    }
}

/// The decimal number before the first `_` (or the extension) of a path's file name.
fn file_name_index(rel: &str) -> Option<usize> {
    let file = rel.rsplit('/').next()?;
    let digits: &str = &file[..file.find(|c: char| !c.is_ascii_digit()).unwrap_or(file.len())];
    digits.parse().ok()
}

fn log_skipped(root: &Path, skipped: &[Skipped]) {
    for s in skipped {
        // Non-image files (READMEs, label files) are normal; broken images are worth a warning.
        if s.reason.starts_with("empty") || s.reason.starts_with("content") {
            tracing::warn!(root = %root.display(), file = %s.name, reason = %s.reason, "skipping unreadable image");
        } else {
            tracing::debug!(root = %root.display(), file = %s.name, reason = %s.reason, "skipping file");
        }
    }
    if !skipped.is_empty() {
        tracing::info!(root = %root.display(), skipped = skipped.len(), "files left out while indexing");
    }
}

//! A `.tar` or `.tar.gz` archive of an image folder, read without unpacking to disk.
//!
//! - `.tar`: the member headers are indexed once (seeking over the data); an item holds the
//!   member's byte range and is read from the archive when batched. Suits archives of any size.
//! - `.tar.gz` (detected by the gzip signature, not the name): a gzip stream cannot be seeked,
//!   so the archive is decompressed once at construction and the selected images' encoded
//!   bytes are kept in one shared buffer (CIFAR-10: 60,000 JPEGs, about 60 MB). Capped by
//!   [`IndexOptions::max_in_memory_bytes`]; decompress bigger archives to a plain `.tar`.
//!
//! The split selector picks a folder inside the archive (`train`, `test`, or any prefix such as
//! `imagenet-samples-256jpg`); below it the folder rules of [`ImageList`] apply.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};
use flate2::read::MultiGzDecoder;
use tar::{Archive, EntryType};

use super::error::{DataError, Result};
use super::image_list::{ImageList, IndexOptions, SIGNATURE_BYTES, Skipped, precheck};
use super::record::{ImageRecord, ImageSource};

/// The images of one split of a tar archive.
#[derive(Debug, Clone)]
pub struct TarImages {
    archive: PathBuf,
    split: Option<String>,
    list: ImageList,
}

/// What the indexing pass saw: the files under the split and the archive's top-level folders.
struct Scan<S> {
    found: Vec<(String, std::result::Result<S, String>)>,
    top_level: BTreeSet<String>,
    /// Whether any member (file or folder) lies in the split.
    split_seen: bool,
}

impl TarImages {
    /// Indexes the images under `split` (a folder inside the archive; `None` = the archive
    /// root) with the default [`IndexOptions`].
    ///
    /// # Errors
    /// [`DataError::NotFound`], [`DataError::Input`] (not a file), [`DataError::SplitNotFound`],
    /// [`DataError::EmptyFolder`],
    /// [`DataError::NoImages`], [`DataError::Archive`] (not a tar, corrupt gzip),
    /// [`DataError::ArchiveTooLarge`] (`.tar.gz` over the memory budget).
    pub fn open(archive: impl AsRef<Path>, split: Option<&str>) -> Result<Self> {
        Self::open_with(archive, split, &IndexOptions::default())
    }

    /// Indexes with explicit options.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with(archive: impl AsRef<Path>, split: Option<&str>, options: &IndexOptions) -> Result<Self> {
        let archive = archive.as_ref().to_path_buf();
        if !archive.exists() {
            return Err(DataError::NotFound { path: archive });
        }
        if !archive.is_file() {
            return Err(DataError::Input(format!("{} is not an archive file", archive.display())));
        }
        let split = split.map(|s| s.trim_matches('/').to_string()).filter(|s| !s.is_empty());
        let prefix = split.as_ref().map(|s| format!("{s}/"));
        let found = if is_gzip(&archive)? {
            let scan = scan_gz(&archive, prefix.as_deref(), options)?;
            check_split(&archive, split.as_deref(), &scan)?;
            scan.found
        } else {
            let scan = scan_tar(&archive, prefix.as_deref(), options.check_signatures)?;
            check_split(&archive, split.as_deref(), &scan)?;
            scan.found
        };
        let root = match &split {
            Some(s) => PathBuf::from(format!("{}:{s}", archive.display())),
            None => archive.clone(),
        };
        // Records are named by their full member path (`train/bird/0338.jpg`), while the
        // layout is decided on the path below the split.
        let strip = prefix.as_deref().unwrap_or("");
        let found = found.into_iter().map(|(name, s)| (name[strip.len()..].to_string(), s)).collect();
        let mut list = ImageList::build(&root, found, &options.labels)?;
        list.prefix_names(strip);
        Ok(Self { archive, split, list })
    }

    /// The archive.
    pub fn archive(&self) -> &Path {
        &self.archive
    }

    /// The split (folder inside the archive), if one was selected.
    pub fn split(&self) -> Option<&str> {
        self.split.as_deref()
    }

    /// The indexed list (records, class names, skipped files).
    pub fn list(&self) -> &ImageList {
        &self.list
    }

    /// Class names in label order (empty when unlabelled).
    pub fn class_names(&self) -> &[String] {
        self.list.class_names()
    }

    /// Members left out while indexing, with the reasons.
    pub fn skipped(&self) -> &[Skipped] {
        self.list.skipped()
    }
}

impl Dataset<ImageRecord> for TarImages {
    fn get(&self, index: usize) -> std::result::Result<ImageRecord, DatasetError> {
        self.list.get(index)
    }

    fn len(&self) -> usize {
        self.list.len()
    }
}

fn archive_error(archive: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Archive { path: archive.to_path_buf(), reason: e.to_string() }
}

fn is_gzip(archive: &Path) -> Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = File::open(archive).map_err(|source| DataError::Io { path: archive.to_path_buf(), source })?;
    let n = file.read(&mut magic).map_err(|source| DataError::Io { path: archive.to_path_buf(), source })?;
    Ok(n == 2 && magic == [0x1F, 0x8B])
}

/// A member path as `/`-separated normal components (no leading `./` or `/`); `None` for
/// paths that climb out (`..`).
fn member_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Whether a member only carries metadata for the archive or the next member (pax headers).
fn is_metadata(kind: EntryType) -> bool {
    matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink)
}

/// Whether a member is a plain file whose data is stored contiguously.
fn is_plain_file(kind: EntryType) -> bool {
    matches!(kind, EntryType::Regular | EntryType::Continuous)
}

impl<S> Scan<S> {
    fn new() -> Self {
        Self { found: Vec::new(), top_level: BTreeSet::new(), split_seen: false }
    }

    /// Notes the member's top-level folder; returns its name if it is a file under the split
    /// prefix (folders are only noted).
    fn select(&mut self, name: String, prefix: Option<&str>, is_dir: bool) -> Option<String> {
        if let Some((top, _)) = name.split_once('/') {
            self.top_level.insert(top.to_string());
        } else if is_dir {
            self.top_level.insert(name.clone());
        }
        let under = prefix.is_none_or(|p| name.starts_with(p));
        self.split_seen |= under || (is_dir && prefix.is_some_and(|p| p.strip_suffix('/') == Some(name.as_str())));
        (under && !is_dir).then_some(name)
    }
}

/// Indexes a plain `.tar`, seeking over member data.
fn scan_tar(archive: &Path, prefix: Option<&str>, read_signature: bool) -> Result<Scan<ImageSource>> {
    let file = File::open(archive).map_err(|source| DataError::Io { path: archive.to_path_buf(), source })?;
    let mut tar = Archive::new(BufReader::new(file));
    let shared: Arc<Path> = Arc::from(archive);
    let mut scan = Scan::new();
    for entry in tar.entries_with_seek().map_err(|e| archive_error(archive, e))? {
        let mut entry = entry.map_err(|e| archive_error(archive, e))?;
        let kind = entry.header().entry_type();
        if is_metadata(kind) {
            continue;
        }
        let Some(name) = entry.path().ok().and_then(|p| member_path(&p)) else { continue };
        let Some(name) = scan.select(name, prefix, kind.is_dir()) else { continue };
        let rel = &name[prefix.map_or(0, str::len)..];
        let size = entry.size();
        let checked =
            if is_plain_file(kind) { precheck(rel, size, None) } else { Err("not a plain file member".into()) };
        let checked = checked.and_then(|()| {
            if !read_signature {
                return Ok(());
            }
            let mut head = Vec::with_capacity(SIGNATURE_BYTES as usize);
            (&mut entry).take(SIGNATURE_BYTES).read_to_end(&mut head).map_err(|e| format!("cannot read: {e}"))?;
            precheck(rel, size, Some(&head))
        });
        let source = ImageSource::TarMember { archive: shared.clone(), offset: entry.raw_file_position(), len: size };
        scan.found.push((name, checked.map(|()| source)));
    }
    Ok(scan)
}

/// Decompresses a `.tar.gz` once, keeping the selected images' bytes in one shared buffer.
fn scan_gz(archive: &Path, prefix: Option<&str>, options: &IndexOptions) -> Result<Scan<ImageSource>> {
    let file = File::open(archive).map_err(|source| DataError::Io { path: archive.to_path_buf(), source })?;
    let mut tar = Archive::new(MultiGzDecoder::new(BufReader::new(file)));
    let mut buffer: Vec<u8> = Vec::new();
    let mut scan: Scan<Range<usize>> = Scan::new();
    for entry in tar.entries().map_err(|e| archive_error(archive, e))? {
        let mut entry = entry.map_err(|e| archive_error(archive, e))?;
        let kind = entry.header().entry_type();
        if is_metadata(kind) {
            continue;
        }
        let Some(name) = entry.path().ok().and_then(|p| member_path(&p)) else { continue };
        let Some(name) = scan.select(name, prefix, kind.is_dir()) else { continue };
        let rel = &name[prefix.map_or(0, str::len)..];
        let size = entry.size();
        let checked = if kind.is_file() { precheck(rel, size, None) } else { Err("not a file member".into()) };
        let checked = match checked {
            Ok(()) => {
                if (buffer.len() as u64).saturating_add(size) > options.max_in_memory_bytes {
                    return Err(DataError::ArchiveTooLarge {
                        path: archive.to_path_buf(),
                        limit: options.max_in_memory_bytes,
                    });
                }
                let start = buffer.len();
                entry.read_to_end(&mut buffer).map_err(|e| archive_error(archive, e))?;
                let range = start..buffer.len();
                let head = &buffer[range.start..range.end.min(range.start + SIGNATURE_BYTES as usize)];
                if options.check_signatures {
                    precheck(rel, range.len() as u64, Some(head)).map(|()| range)
                } else {
                    Ok(range)
                }
            }
            Err(reason) => Err(reason),
        };
        scan.found.push((name, checked));
    }
    let buffer: Arc<[u8]> = buffer.into();
    let origin: Arc<Path> = Arc::from(archive);
    let found = scan
        .found
        .into_iter()
        .map(|(name, range)| {
            let source =
                range.map(|range| ImageSource::Memory { buffer: buffer.clone(), range, origin: Some(origin.clone()) });
            (name, source)
        })
        .collect();
    Ok(Scan { found, top_level: scan.top_level, split_seen: scan.split_seen })
}

/// A missing split is an error of its own, listing the archive's top-level folders.
fn check_split<S>(archive: &Path, split: Option<&str>, scan: &Scan<S>) -> Result<()> {
    match split {
        Some(split) if !scan.split_seen => Err(DataError::SplitNotFound {
            archive: archive.to_path_buf(),
            split: split.to_string(),
            available: scan.top_level.iter().cloned().collect(),
        }),
        _ => Ok(()),
    }
}

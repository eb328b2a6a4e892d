//! One dataset item: where its encoded bytes are, its label and a display name. Cheap to clone
//! (shared pointers only); decoding happens later, in the batcher's worker threads.

use std::borrow::Cow;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::error::{DataError, Result};

/// Where an image's encoded bytes live.
#[derive(Clone)]
pub enum ImageSource {
    /// In memory: `buffer[range]` (members of a `.tar.gz` share one buffer).
    Memory {
        /// The shared buffer.
        buffer: Arc<[u8]>,
        /// This image's bytes in it.
        range: Range<usize>,
        /// The archive the bytes were read from, if any (for messages).
        origin: Option<Arc<Path>>,
    },
    /// A file on disk, read when the item is batched.
    File(Arc<Path>),
    /// A member of an uncompressed `.tar`: `len` bytes at byte `offset` of `archive`.
    TarMember {
        /// The archive.
        archive: Arc<Path>,
        /// Offset of the member's data in the archive.
        offset: u64,
        /// Length of the member's data.
        len: u64,
    },
}

/// Largest encoded image read into memory (1 GiB): a bigger file is refused rather than read.
pub const MAX_ENCODED_BYTES: u64 = 1 << 30;

impl ImageSource {
    /// Wraps owned bytes (e.g. an image built in a test) as an in-memory source.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Self::Memory { buffer: bytes.into(), range: 0..len, origin: None }
    }

    /// The encoded bytes: borrowed for in-memory sources, read from disk otherwise.
    ///
    /// # Errors
    /// [`DataError::Io`] when the file or archive cannot be read, [`DataError::TooLarge`] for
    /// more than [`MAX_ENCODED_BYTES`].
    pub fn read(&self) -> Result<Cow<'_, [u8]>> {
        let too_large = |name: &Path, len: u64| DataError::TooLarge {
            name: name.display().to_string(),
            reason: format!("{len} encoded bytes, above {MAX_ENCODED_BYTES}"),
        };
        match self {
            Self::Memory { buffer, range, .. } => Ok(Cow::Borrowed(&buffer[range.clone()])),
            Self::File(path) => {
                let io = |source| DataError::Io { path: path.to_path_buf(), source };
                let file = std::fs::File::open(path).map_err(io)?;
                let len = file.metadata().map_err(io)?.len();
                if len > MAX_ENCODED_BYTES {
                    return Err(too_large(path, len));
                }
                let mut bytes = Vec::with_capacity(len as usize);
                file.take(MAX_ENCODED_BYTES).read_to_end(&mut bytes).map_err(io)?;
                Ok(Cow::Owned(bytes))
            }
            Self::TarMember { archive, offset, len } => {
                if *len > MAX_ENCODED_BYTES {
                    return Err(too_large(archive, *len));
                }
                let io = |source| DataError::Io { path: archive.to_path_buf(), source };
                let mut file = std::fs::File::open(archive).map_err(io)?;
                file.seek(SeekFrom::Start(*offset)).map_err(io)?;
                let mut bytes = vec![0; *len as usize];
                file.read_exact(&mut bytes).map_err(io)?;
                Ok(Cow::Owned(bytes))
            }
        }
    }
}

impl fmt::Debug for ImageSource {
    // Never print the bytes themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { range, .. } => write!(f, "Memory({} bytes)", range.len()),
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::TarMember { archive, offset, len } => {
                write!(f, "TarMember({}@{offset}+{len})", archive.display())
            }
        }
    }
}

/// One image of a dataset, before decoding.
///
/// `index` is the item's position in its dataset (the `Dataset::get` index). Random
/// augmentations are drawn from `(seed, epoch, index)`, so the index travels with the record
/// through burn's shuffling/splitting wrappers, which remap indices but return the inner
/// record unchanged.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// The encoded bytes.
    pub source: ImageSource,
    /// Class index (position of the class folder in sorted order), `None` for unlabelled data.
    pub label: Option<usize>,
    /// Display name: the path relative to the folder root, or the member path in the archive
    /// (`train/bird/0338.jpg`).
    pub name: Arc<str>,
    /// Position in the dataset.
    pub index: usize,
}

impl ImageRecord {
    /// Where the image is, for messages: the file path, `archive.tar:member`, or the name of an
    /// in-memory image.
    pub fn location(&self) -> String {
        match &self.source {
            ImageSource::Memory { origin: None, .. } => self.name.to_string(),
            ImageSource::Memory { origin: Some(archive), .. } => format!("{}:{}", archive.display(), self.name),
            ImageSource::File(path) => path.display().to_string(),
            ImageSource::TarMember { archive, .. } => format!("{}:{}", archive.display(), self.name),
        }
    }
}

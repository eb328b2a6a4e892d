//! The data pipeline's error type.

use std::path::PathBuf;

/// Errors from building datasets, reading and decoding images, and writing PNGs.
///
/// Decoding errors carry the image's display name (a path, or `archive.tar:member`) so that a
/// report says which file is bad and why.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset root (folder or archive) does not exist.
    #[error("{path} does not exist")]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A folder (or archive split) without a single file in it.
    #[error("{path} is empty: no files found")]
    EmptyFolder {
        /// The folder, or `archive:split`.
        path: PathBuf,
    },
    /// A folder (or archive split) with files, none of which is a usable image.
    #[error(
        "no images in {path}: {files} files seen, all {skipped} skipped (e.g. {example}); \
         expected .jpg/.png/... files in class subfolders or directly in the folder"
    )]
    NoImages {
        /// The folder, or `archive:split`.
        path: PathBuf,
        /// Number of files seen.
        files: usize,
        /// Number of files skipped (equal to `files`).
        skipped: usize,
        /// One skipped file and the reason, for the message.
        example: String,
    },
    /// The requested split (top-level folder such as `train/`) is not in the archive.
    #[error("split '{split}' not found in {archive}; its top-level folders are: [{}]", available.join(", "))]
    SplitNotFound {
        /// The archive.
        archive: PathBuf,
        /// The requested split.
        split: String,
        /// The top-level folders the archive does have.
        available: Vec<String>,
    },
    /// An archive that cannot be read (not a tar, corrupt gzip stream, truncated).
    #[error("cannot read archive {path}: {reason}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A `.tar.gz` whose selected images would not fit the in-memory budget.
    #[error(
        "{path}: the selected images of this compressed archive need more than {limit} bytes in \
         memory; decompress it to a plain .tar (read lazily from disk) or raise the limit"
    )]
    ArchiveTooLarge {
        /// The archive.
        path: PathBuf,
        /// The in-memory budget in bytes.
        limit: u64,
    },
    /// An I/O error on a named file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A zero-byte image file.
    #[error("{name}: empty file")]
    EmptyFile {
        /// The image's display name.
        name: String,
    },
    /// Bytes that do not start with the signature of any supported image format.
    #[error("{name}: unknown image format (no known file signature)")]
    UnknownFormat {
        /// The image's display name.
        name: String,
    },
    /// A JPEG whose data ends before its end-of-image marker (a cut download or copy).
    #[error("{name}: truncated JPEG (the data ends before the end-of-image marker)")]
    TruncatedJpeg {
        /// The image's display name.
        name: String,
    },
    /// An image larger than the decoding limits (a decompression bomb or a huge scan).
    #[error("{name}: image exceeds the decoding limits: {reason}")]
    TooLarge {
        /// The image's display name.
        name: String,
        /// The limit that was hit.
        reason: String,
    },
    /// The decoder rejected the image (corrupt data, unsupported variant).
    #[error("{name}: cannot decode: {reason}")]
    Decode {
        /// The image's display name.
        name: String,
        /// The decoder's message.
        reason: String,
    },
    /// Bad arguments to a helper (tensor shape, grid columns, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// A token cache that cannot be built or used (unreadable, corrupt, out-of-range values,
    /// built by another tokenizer or from other data); the message names the file and the fix.
    #[error("{0}")]
    TokenCache(String),
    /// From the model crate (encoding with a tokenizer, atomic writes).
    #[error(transparent)]
    Model(#[from] titok_model::TitokError),
    /// Writing an output file failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Shorthand result type of the data pipeline.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

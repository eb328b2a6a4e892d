//! The crate's error type.

use std::path::PathBuf;

/// Errors returned by model construction, checkpoint loading/saving and the public API.
#[derive(Debug, thiserror::Error)]
pub enum TitokError {
    /// A configuration that does not fit together (sizes, names, modes).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An official `config.json` that cannot be read or understood.
    #[error("bad config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint whose tensors do not match the model: every problem is listed.
    #[error("checkpoint {path} does not match the model:\n{problems}")]
    CheckpointMismatch {
        /// The weights file.
        path: PathBuf,
        /// One line per missing, unexpected or mis-shaped tensor.
        problems: String,
    },
    /// A weights file that cannot be read (missing, truncated, corrupt).
    #[error("cannot read checkpoint {path}: {reason}")]
    CheckpointRead {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file in place of weights that is something else: a Git LFS pointer or an HTML page
    /// (see `checkpoint::refuse_stand_in`).
    #[error("{path} is {what} instead of the real file: {fix}")]
    NotWeights {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        what: String,
        /// How to get the real file.
        fix: String,
    },
    /// Writing a checkpoint or output failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Invalid input to a model call (shape, range, token id).
    #[error("invalid input: {0}")]
    Input(String),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Shorthand result type.
pub type Result<T, E = TitokError> = std::result::Result<T, E>;

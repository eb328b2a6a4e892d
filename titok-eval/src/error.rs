//! The error type of the evaluation module.

use std::path::PathBuf;

/// Errors of the evaluation metrics: bad input, unreadable statistics files, weights that do not
/// fit the FID network, numerical failures.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Input that a metric cannot use (shape, range, sizes that do not match, too few samples).
    #[error("invalid input: {0}")]
    Input(String),
    /// A `.npy` / `.npz` file that cannot be read or written as asked.
    #[error("{path}: {reason}")]
    Npz {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Loading the FID InceptionV3 weights failed (missing, corrupt or mismatched tensors).
    #[error(transparent)]
    Checkpoint(#[from] titok_model::TitokError),
    /// A linear-algebra step failed (non-finite statistics, no eigen-decomposition).
    #[error("linear algebra: {0}")]
    Numerical(String),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Shorthand result type of the evaluation module.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

//! Training machinery shared by every stage: deterministic data streaming, the official
//! optimizer groups and schedule, EMA, the shared optimisation step of every trainee and the
//! generator/discriminator step on one optimizer, metrics, the run directory with atomic checkpoints, and
//! the step-based burn-train strategy.

pub mod ema;
pub mod metrics;
pub mod optim;
pub mod renderer;
pub mod run;
pub mod schedule;
pub mod strategy;
pub mod stream;
pub mod trainee;
pub mod two_sides;

use std::path::Path;

/// Errors of training runs.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration that cannot be used.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// A run that cannot be resumed.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// File-system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// From the model crate (checkpoints, configs).
    #[error(transparent)]
    Model(#[from] titok_model::TitokError),
    /// From the data pipeline.
    #[error("data: {0}")]
    Data(String),
    /// A multi-process job that cannot start or go on (launcher, MPI/NCCL, ranks that
    /// disagree or whose replicas diverged).
    #[error("distributed training: {0}")]
    Distributed(String),
}

impl From<titok_data::DataError> for TrainError {
    /// Model and I/O errors keep their variant; the rest of the data pipeline's errors (datasets,
    /// images, token caches) become [`TrainError::Data`].
    fn from(e: titok_data::DataError) -> Self {
        match e {
            titok_data::DataError::Model(m) => Self::Model(m),
            titok_data::DataError::Io { path, source } => Self::Io { path, source },
            other => Self::Data(other.to_string()),
        }
    }
}

impl TrainError {
    /// An I/O error about `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

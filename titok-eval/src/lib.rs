//! Evaluation metrics: FID InceptionV3, Frechet distance, PSNR, SSIM, LPIPS, codebook statistics.
//!
//! Building blocks for `titok eval` (TiTok paper §4, Tables 1-2; official
//! `evaluator/evaluator.py`, ADM `guided-diffusion/evaluations/evaluator.py`):
//! - [`InceptionV3`]: the FID network ("inception-2015-12-05", pool3, 2048-d features) with its
//!   preprocessing ([`InceptionV3::features`]: images in `[0, 1]` -> `[N, 2048]`);
//! - [`FeatureAccumulator`] -> [`FidStats`] (`mu`, `sigma`, `n`; `.fid(&other)`,
//!   `.save_npz` / `.load_npz`) and [`frechet_distance`], all in f64;
//! - [`rfid_round`], [`psnr`], [`ssim`] for reconstructions;
//! - [`npz`]: `.npy`/`.npz` files, and [`AdmNpzWriter`] for the ADM evaluator's sample batches;
//! - [`MetricsReport`]: terminal table and JSON, image counts next to FID, warnings below
//!   [`FID_MIN_IMAGES`].
//!
//! A typical rFID loop: `acc_real.push(inception.features(x)?)` and
//! `acc_recon.push(inception.features(rfid_round(recon))?)` per batch, then
//! `acc_real.stats()?.fid(&acc_recon.stats()?)`. [`Lpips`] is the perceptual metric (and, in
//! `titok-train`, the perceptual loss); codebook statistics are [`titok_model::CodebookStats`].

pub mod dataset;
mod error;
pub mod frechet;
pub mod image_metrics;
pub mod inception;
mod loss_error;
pub mod lpips;
pub mod npz;
pub mod report;
pub mod resize;

pub use dataset::{
    DatasetEval, EvalImages, EvalOptions, GenerationPlan, ImageStats, ReconMetrics, Reference, as_saved_samples,
    evaluate_generation, evaluate_reconstruction, evaluate_samples, image_stats, load_inception_stats,
};
pub use error::{EvalError, Result};
pub use frechet::{FeatureAccumulator, FidStats, frechet_distance};
pub use image_metrics::{psnr, rfid_round, ssim};
pub use inception::{FEATURE_DIM, INCEPTION_KEYS, InceptionV3};
pub use loss_error::LossError;
pub use lpips::{Lpips, LpipsNet, LpipsOutput};
pub use npz::{AdmNpzWriter, NpyArray, NpyData, NpzReader, read_npz, write_npz};
pub use report::{CodebookReport, FID_MIN_IMAGES, FidKind, FidScore, MetricsReport, RunningMean};
pub use resize::{Filter, resize};

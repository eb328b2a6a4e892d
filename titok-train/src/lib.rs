//! Training for TiTok tokenizers and MaskGIT generators on Burn: the losses (proxy codes,
//! perceptual, GAN), the discriminator and the training stages. The data pipeline
//! (`titok-data`), the evaluation metrics (`titok-eval`: rFID/gFID, PSNR, SSIM, LPIPS) and device
//! selection (`titok-model`) live below it and are re-exported here as [`data`], [`eval`] and
//! [`device`].

pub mod config;
pub mod discriminator;
pub mod distributed;
pub mod losses;
pub mod stages;
pub mod train;

// The layers below training, under the names the training code has always used.
pub use titok_data as data;
pub use titok_eval as eval;
pub use titok_model::device;

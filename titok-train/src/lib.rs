//! Training and evaluation for TiTok tokenizers and MaskGIT generators on Burn: the data
//! pipeline, the losses (proxy codes, LPIPS, GAN), the discriminator, the training stages and
//! the evaluation metrics (rFID/gFID, PSNR, SSIM, LPIPS, codebook statistics).

pub mod config;
pub mod data;
pub mod device;
pub mod discriminator;
pub mod eval;
pub mod losses;
pub mod stages;
pub mod train;

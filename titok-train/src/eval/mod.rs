//! Evaluation metrics: FID InceptionV3, Frechet distance, PSNR, SSIM, codebook statistics.

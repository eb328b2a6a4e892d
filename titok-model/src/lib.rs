//! TiTok ("An Image is Worth 32 Tokens for Reconstruction and Generation", Yu et al., 2024)
//! on Burn: the 1D tokenizer, the MaskGIT-VQGAN teacher / pixel decoder, and loading and
//! saving of the official Hugging Face checkpoints.
//!
//! No backend is chosen here: pass a `burn::tensor::Device` (`Device::flex()`,
//! `Device::wgpu(..)`, `Device::cuda(0)`, ...) and everything runs there.
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor};
//! let device = Device::flex();
//! let model = titok_model::checkpoint::load_titok("tokenizer_titok_l32_imagenet".as_ref(), &device)?;
//! let images = Tensor::<4>::zeros([1, 3, 256, 256], &device); // RGB in [0, 1]
//! let enc = model.encode(images)?;
//! let tokens = enc.tokens.unwrap(); // [1, 32] codebook ids
//! let pixels = model.decode_tokens(tokens)?.clamp(0.0, 1.0); // [1, 3, 256, 256]
//! # Ok::<(), titok_model::TitokError>(())
//! ```

pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod device;
pub mod encoder;
pub mod error;
pub mod generator;
#[cfg(feature = "golden")]
pub mod golden;
pub mod loss;
pub mod quantizer;
pub mod titok;
pub mod vae;
pub mod vit;
pub mod vqgan;

pub use config::{QuantizeMode, TitokConfig, VitSize, VqganConfig};
pub use error::{Result, TitokError};
pub use quantizer::{CodebookStats, QuantizerLosses, QuantizerOutput, VectorQuantizer, straight_through};
pub use titok::{Decoding, Encoding, Titok};
pub use vae::DiagonalGaussian;
pub use vqgan::MaskgitVqgan;

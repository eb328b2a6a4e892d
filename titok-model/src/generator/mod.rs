//! MaskGIT generators over TiTok tokens: the class-conditional bidirectional transformers
//! `ImageBert` (BERT, TiTok-L-32 / B-64) and `UViTBert` (U-ViT, TiTok-S-128), the official
//! parallel-decoding sampler with classifier-free guidance (plus inpainting), and the masked
//! token modelling loss with its masking for training.
//!
//! Token layout for a codebook of `N` codes and `C` classes: codes `0..N`, mask `N`, class
//! `c` ↦ `N + 1 + c`, drop label `N + 1 + C`; the model input is `[condition, K tokens]`.
//!
//! ```no_run
//! use burn::tensor::{Device, Int, Tensor};
//! use titok_model::generator::{SamplerConfig, SeededUniform, generate};
//! let device = Device::flex();
//! let generator = titok_model::checkpoint::load_generator("generator_titok_l32_imagenet".as_ref(), &device)?;
//! let labels = Tensor::<1, Int>::from_ints([207, 360], &device);
//! let ids = generate(&generator, labels, &SamplerConfig::l32(), &mut SeededUniform::new(42))?; // [2, 32]
//! # Ok::<(), titok_model::TitokError>(())
//! ```
//!
//! Source: `modeling/maskgit.py`, `modeling/modules/losses.py::MLMLoss` (official TiTok);
//! REFERENCE §6, §7e, §8.

pub mod bert;
pub mod config;
pub mod init;
pub mod loss;
pub mod model;
pub mod predictor;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod uvit;

pub use bert::ImageBert;
pub use config::{GeneratorConfig, GeneratorKind, TokenLayout};
pub use loss::{Masking, MlmLoss, MlmLossConfig, class_dropout_mask, mask_tokens, mlm_loss, random_masking};
pub use model::Generator;
pub use predictor::{TokenPredictor, check_image_ids, check_labels, condition_tokens, model_input};
pub use rng::{ReplayUniform, SeededUniform, UniformSource};
pub use sampler::{GenerateOptions, Generation, GivenTokens, StepTrace, generate, generate_with, inpaint};
pub use schedule::{
    GuidanceDecay, MaskSchedule, SamplerConfig, StepGuidance, training_mask_ratio, training_num_masked,
};
pub use uvit::UViTBert;

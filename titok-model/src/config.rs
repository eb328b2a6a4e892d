//! Model configuration: [`TitokConfig`] with a named preset for every released TiTok model,
//! the ViT size table and the MaskGIT-VQGAN configuration.
//!
//! Source: `modeling/titok.py`, `modeling/modules/blocks.py` (size table) and
//! `configs/infer/TiTok/*.yaml` of the official code; `../shared/REFERENCE.md` §1-5.

use serde::{Deserialize, Serialize};

use crate::error::TitokError;

/// Width, depth and heads of a ViT encoder or decoder (the official `vit_*_model_size` table).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VitSize {
    /// Token width `W`.
    pub width: usize,
    /// Number of residual attention blocks.
    pub num_layers: usize,
    /// Attention heads (`W` must be divisible by it).
    pub num_heads: usize,
    /// MLP hidden width as a multiple of `W` (4.0 for every official size).
    pub mlp_ratio: f64,
}

impl VitSize {
    /// `small`: 512 wide, 8 layers, 8 heads.
    pub const SMALL: Self = Self::new(512, 8, 8);
    /// `base`: 768 wide, 12 layers, 12 heads.
    pub const BASE: Self = Self::new(768, 12, 12);
    /// `large`: 1024 wide, 24 layers, 16 heads.
    pub const LARGE: Self = Self::new(1024, 24, 16);
    /// `tiny` (fixture size): 64 wide, 2 layers, 4 heads.
    pub const TINY: Self = Self::new(64, 2, 4);
    /// `mini` (fixture size): 96 wide, 3 layers, 6 heads.
    pub const MINI: Self = Self::new(96, 3, 6);

    /// A size with the official MLP ratio 4.0.
    pub const fn new(width: usize, num_layers: usize, num_heads: usize) -> Self {
        Self { width, num_layers, num_heads, mlp_ratio: 4.0 }
    }

    /// The built-in size of an official (or fixture) size name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "small" => Some(Self::SMALL),
            "base" => Some(Self::BASE),
            "large" => Some(Self::LARGE),
            "tiny" => Some(Self::TINY),
            "mini" => Some(Self::MINI),
            _ => None,
        }
    }

    /// The official name of this size, if it has one.
    pub fn name(&self) -> Option<&'static str> {
        [
            ("small", Self::SMALL),
            ("base", Self::BASE),
            ("large", Self::LARGE),
            ("tiny", Self::TINY),
            ("mini", Self::MINI),
        ]
        .into_iter()
        .find(|(_, s)| s == self)
        .map(|(n, _)| n)
    }

    /// MLP hidden width.
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }

    pub(crate) fn validate(&self, what: &str) -> Result<(), TitokError> {
        if self.width == 0 || self.num_heads == 0 || !self.width.is_multiple_of(self.num_heads) {
            return Err(TitokError::Config(format!(
                "{what}: width {} is not divisible by {} heads",
                self.width, self.num_heads
            )));
        }
        Ok(())
    }
}

/// How the encoder output becomes latent tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantizeMode {
    /// Vector quantization against a codebook (`quantize.embedding.weight`).
    Vq,
    /// Diagonal Gaussian posterior (KL-regularised continuous tokens); no codebook.
    Vae,
}

/// MaskGIT-VQGAN configuration (the stage-1 teacher and the pixel decoder of two-stage TiTok).
///
/// The official code hard-codes every number (`modeling/titok.py`); the golden fixtures change
/// `hidden_channels` only. Source: `modeling/modules/maskgit_vqgan.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqganConfig {
    /// Base channel count (128 in the official model).
    pub hidden_channels: usize,
    /// Channel multiplier per resolution level (`[1, 1, 2, 2, 4]`).
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level (2).
    pub num_res_blocks: usize,
    /// Latent channels `z_channels` (256) = codebook width.
    pub z_channels: usize,
    /// Number of codebook entries (1024).
    pub codebook_size: usize,
    /// Commitment cost β of the teacher's quantizer (0.25).
    pub commitment_cost: f64,
    /// GroupNorm groups (32).
    pub norm_groups: usize,
}

impl Default for VqganConfig {
    fn default() -> Self {
        Self::official()
    }
}

impl VqganConfig {
    /// The official `maskgit-vqgan-imagenet-f16-256` configuration (f = 16, 1024 x 256 codebook).
    pub fn official() -> Self {
        Self {
            hidden_channels: 128,
            channel_mult: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            z_channels: 256,
            codebook_size: 1024,
            commitment_cost: 0.25,
            norm_groups: 32,
        }
    }

    /// The official layout with another base width (the fixtures use 32).
    pub fn with_hidden_channels(mut self, hidden: usize) -> Self {
        self.hidden_channels = hidden;
        self
    }

    /// Spatial down-sampling factor (`2^(levels - 1)`, 16 for the official model).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.channel_mult.len().saturating_sub(1))
    }

    /// Channels at level `i`.
    pub fn level_channels(&self, i: usize) -> usize {
        self.hidden_channels * self.channel_mult[i]
    }

    /// Checks that every level's width is a positive multiple of the GroupNorm groups.
    ///
    /// # Errors
    /// [`TitokError::Config`] naming the level.
    pub fn validate(&self) -> Result<(), TitokError> {
        if self.channel_mult.is_empty() {
            return Err(TitokError::Config("MaskGIT-VQGAN channel_mult is empty".into()));
        }
        for i in 0..self.channel_mult.len() {
            let c = self.level_channels(i);
            if c == 0 || !c.is_multiple_of(self.norm_groups) {
                return Err(TitokError::Config(format!(
                    "MaskGIT-VQGAN level {i} has {c} channels, not a multiple of {} GroupNorm groups",
                    self.norm_groups
                )));
            }
        }
        Ok(())
    }
}

/// Configuration of a TiTok tokenizer (encoder + quantizer + decoder).
///
/// Build one from a named preset ([`TitokConfig::preset`], e.g. `"l32"`), from an official
/// `config.json` ([`crate::checkpoint::hf_config`]) or field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TitokConfig {
    /// Input / output resolution in pixels (square), `dataset.preprocessing.crop_size`.
    pub image_size: usize,
    /// Patch size of the encoder and decoder (16 in every official model).
    pub patch_size: usize,
    /// Encoder size (`vit_enc_model_size`).
    pub encoder: VitSize,
    /// Decoder size (`vit_dec_model_size`).
    pub decoder: VitSize,
    /// Number of latent tokens `K` (`num_latent_tokens`).
    pub num_latent_tokens: usize,
    /// Channels per latent token `C` (`token_size`); for VAE the encoder emits `2C`.
    pub token_size: usize,
    /// Codebook entries (`codebook_size`); ignored for VAE.
    pub codebook_size: usize,
    /// L2-normalise latents and codebook before the nearest-code search (`use_l2_norm`).
    pub use_l2_norm: bool,
    /// Commitment cost β (`commitment_cost`).
    pub commitment_cost: f64,
    /// VQ or VAE (`quantize_mode`).
    pub quantize_mode: QuantizeMode,
    /// Two-stage ("legacy") model: scrambled reshape before the encoder's `conv_out` and a
    /// proxy-code head in the decoder (`is_legacy`, absent in the official config ⇒ true).
    pub is_legacy: bool,
    /// Two-stage stage-2 model: decode proxy-code logits to pixels through the MaskGIT-VQGAN
    /// pixel decoder (`finetune_decoder`).
    pub finetune_decoder: bool,
    /// The MaskGIT-VQGAN whose codes are the proxy codes (legacy models only): its codebook size
    /// is the width of the proxy-code head, and with `finetune_decoder` it is the pixel decoder.
    pub pixel_vqgan: VqganConfig,
}

impl TitokConfig {
    /// Names of every built-in preset, for `--help` texts and error messages.
    pub const PRESETS: &'static [&'static str] = &[
        "s128",
        "b64",
        "l32",
        "bl64_vq8k",
        "bl128_vq8k",
        "sl256_vq8k",
        "ll32_vae",
        "bl64_vae",
        "bl128_vae",
        "l64_512",
        "b128_512",
    ];

    /// A two-stage model as released (`yucornetto/tokenizer_titok_{l32,b64,s128}_imagenet`):
    /// 256 px, patch 16, 4096 x 12 codebook with l2-normalisation, stage-2 pixel decoder.
    pub fn two_stage(size: VitSize, num_latent_tokens: usize) -> Self {
        Self {
            image_size: 256,
            patch_size: 16,
            encoder: size,
            decoder: size,
            num_latent_tokens,
            token_size: 12,
            codebook_size: 4096,
            use_l2_norm: true,
            commitment_cost: 0.25,
            quantize_mode: QuantizeMode::Vq,
            is_legacy: true,
            finetune_decoder: true,
            pixel_vqgan: VqganConfig::official(),
        }
    }

    /// A single-stage VQ model (`titok_*_vq8k_imagenet`): 8192 x 64 codebook, no l2.
    pub fn single_stage_vq(encoder: VitSize, decoder: VitSize, num_latent_tokens: usize) -> Self {
        Self {
            encoder,
            decoder,
            token_size: 64,
            codebook_size: 8192,
            use_l2_norm: false,
            is_legacy: false,
            finetune_decoder: false,
            ..Self::two_stage(encoder, num_latent_tokens)
        }
    }

    /// A single-stage VAE model (`titok_*_vae_c16_imagenet`): 16 channels per token.
    pub fn single_stage_vae(encoder: VitSize, decoder: VitSize, num_latent_tokens: usize) -> Self {
        Self {
            token_size: 16,
            codebook_size: 0,
            quantize_mode: QuantizeMode::Vae,
            ..Self::single_stage_vq(encoder, decoder, num_latent_tokens)
        }
    }

    /// TiTok-S-128 (two-stage, rFID 1.71).
    pub fn s128() -> Self {
        Self::two_stage(VitSize::SMALL, 128)
    }
    /// TiTok-B-64 (two-stage, rFID 1.70).
    pub fn b64() -> Self {
        Self::two_stage(VitSize::BASE, 64)
    }
    /// TiTok-L-32 (two-stage, rFID 2.21).
    pub fn l32() -> Self {
        Self::two_stage(VitSize::LARGE, 32)
    }
    /// TiTok-BL-64 VQ 8k (single-stage, rFID 2.06).
    pub fn bl64_vq8k() -> Self {
        Self::single_stage_vq(VitSize::BASE, VitSize::LARGE, 64)
    }
    /// TiTok-BL-128 VQ 8k (single-stage, rFID 1.49).
    pub fn bl128_vq8k() -> Self {
        Self::single_stage_vq(VitSize::BASE, VitSize::LARGE, 128)
    }
    /// TiTok-SL-256 VQ 8k (single-stage, rFID 1.03).
    pub fn sl256_vq8k() -> Self {
        Self::single_stage_vq(VitSize::SMALL, VitSize::LARGE, 256)
    }
    /// TiTok-LL-32 VAE c16 (single-stage, rFID 1.61).
    pub fn ll32_vae() -> Self {
        Self::single_stage_vae(VitSize::LARGE, VitSize::LARGE, 32)
    }
    /// TiTok-BL-64 VAE c16 (single-stage, rFID 1.25).
    pub fn bl64_vae() -> Self {
        Self::single_stage_vae(VitSize::BASE, VitSize::LARGE, 64)
    }
    /// TiTok-BL-128 VAE c16 (single-stage, rFID 0.84).
    pub fn bl128_vae() -> Self {
        Self::single_stage_vae(VitSize::BASE, VitSize::LARGE, 128)
    }
    /// The paper's TiTok-L-64 at 512 px (never released; paper Table 2).
    pub fn l64_512() -> Self {
        Self { image_size: 512, ..Self::two_stage(VitSize::LARGE, 64) }
    }
    /// The paper's TiTok-B-128 at 512 px (never released; paper Table 2).
    pub fn b128_512() -> Self {
        Self { image_size: 512, ..Self::two_stage(VitSize::BASE, 128) }
    }

    /// A preset by name (see [`TitokConfig::PRESETS`]).
    ///
    /// # Errors
    /// [`TitokError::Config`] naming the known presets when `name` is not one of them.
    pub fn preset(name: &str) -> Result<Self, TitokError> {
        Ok(match name {
            "s128" => Self::s128(),
            "b64" => Self::b64(),
            "l32" => Self::l32(),
            "bl64_vq8k" => Self::bl64_vq8k(),
            "bl128_vq8k" => Self::bl128_vq8k(),
            "sl256_vq8k" => Self::sl256_vq8k(),
            "ll32_vae" => Self::ll32_vae(),
            "bl64_vae" => Self::bl64_vae(),
            "bl128_vae" => Self::bl128_vae(),
            "l64_512" => Self::l64_512(),
            "b128_512" => Self::b128_512(),
            other => {
                return Err(TitokError::Config(format!(
                    "unknown TiTok preset '{other}'; known: {}",
                    Self::PRESETS.join(", ")
                )));
            }
        })
    }

    /// Patches per side `image_size / patch_size`.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of patch tokens `(image_size / patch_size)²`.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Channels the encoder's `conv_out` emits (`2C` for VAE: mean ‖ logvar).
    pub fn encoder_out_channels(&self) -> usize {
        match self.quantize_mode {
            QuantizeMode::Vq => self.token_size,
            QuantizeMode::Vae => 2 * self.token_size,
        }
    }

    /// True for a discrete (VQ) tokenizer whose tokens are codebook ids.
    pub fn is_discrete(&self) -> bool {
        self.quantize_mode == QuantizeMode::Vq
    }

    /// What `decode` returns: proxy-code logits (two-stage, stage 1) or pixels.
    pub fn decodes_to_pixels(&self) -> bool {
        !self.is_legacy || self.finetune_decoder
    }

    /// Checks that the numbers fit together.
    ///
    /// # Errors
    /// [`TitokError::Config`] describing the first inconsistency.
    pub fn validate(&self) -> Result<(), TitokError> {
        let err = |m: String| Err(TitokError::Config(m));
        self.encoder.validate("encoder")?;
        self.decoder.validate("decoder")?;
        if self.patch_size == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return err(format!("image size {} is not a multiple of patch size {}", self.image_size, self.patch_size));
        }
        if self.num_latent_tokens == 0 || self.token_size == 0 {
            return err("num_latent_tokens and token_size must be positive".into());
        }
        if self.quantize_mode == QuantizeMode::Vq && self.codebook_size == 0 {
            return err("codebook_size must be positive".into());
        }
        if self.is_legacy {
            if self.quantize_mode == QuantizeMode::Vae {
                return err("a legacy (two-stage) model must use VQ".into());
            }
            // The legacy reshape reinterprets [K, W] as [W, K]: any W, K work, but the proxy
            // head predicts one code per patch, so the teacher grid must equal the patch grid.
            self.pixel_vqgan.validate()?;
            let f = self.pixel_vqgan.downsample_factor();
            if self.image_size / f != self.grid_size() {
                return err(format!(
                    "two-stage model: patch grid {} != MaskGIT-VQGAN code grid {} (image {} / f {f})",
                    self.grid_size(),
                    self.image_size / f,
                    self.image_size
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_named() {
        for name in TitokConfig::PRESETS {
            let c = TitokConfig::preset(name).unwrap();
            c.validate().unwrap();
        }
        assert!(TitokConfig::preset("xl99").is_err());
    }

    #[test]
    fn presets_match_the_released_models() {
        let l32 = TitokConfig::l32();
        assert_eq!((l32.encoder.width, l32.num_latent_tokens, l32.codebook_size), (1024, 32, 4096));
        let sl = TitokConfig::sl256_vq8k();
        assert_eq!((sl.encoder, sl.decoder, sl.num_latent_tokens), (VitSize::SMALL, VitSize::LARGE, 256));
        assert_eq!(TitokConfig::bl64_vae().encoder_out_channels(), 32);
        assert_eq!(TitokConfig::l64_512().grid_size(), 32);
    }
}

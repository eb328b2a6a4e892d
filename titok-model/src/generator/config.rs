//! Generator configuration: [`GeneratorConfig`] (architecture + token layout) with presets for
//! the released MaskGIT generators, and [`TokenLayout`], the official id layout of the
//! generator's vocabulary.
//!
//! Source: `modeling/maskgit.py::{ImageBert, UViTBert}`, `configs/infer/TiTok/*.yaml`;
//! REFERENCE §6 (generator keys), §7e, §8.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TitokError};
use crate::generator::schedule::SamplerConfig;

/// Which transformer predicts the tokens (`model.generator.model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GeneratorKind {
    /// `ImageBert`: Hugging Face `BertModel` (post-LN), official name `"ViT"`.
    Bert,
    /// `UViTBert`: pre-LN U-ViT with long skips, official name `"UViT"`.
    UVit,
}

impl GeneratorKind {
    /// The official `model_type` string.
    pub fn official_name(self) -> &'static str {
        match self {
            Self::Bert => "ViT",
            Self::UVit => "UViT",
        }
    }

    /// Parses an official `model_type` (`"ViT"` or `"UViT"`).
    ///
    /// # Errors
    /// [`TitokError::Config`] for any other name.
    pub fn from_official(name: &str) -> Result<Self> {
        match name {
            "ViT" => Ok(Self::Bert),
            "UViT" => Ok(Self::UVit),
            other => Err(TitokError::Config(format!("unknown generator model_type `{other}` (expected ViT or UViT)"))),
        }
    }
}

/// The official layout of the generator vocabulary for a codebook of `N` codes and `C`
/// classes: image codes `0..N`, the mask token `N`, class `c` ↦ `N + 1 + c`, and the
/// "drop label" (unconditional) `N + 1 + C`; `N + C + 2` ids in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLayout {
    /// Codebook size `N` of the tokenizer (the number of image codes).
    pub codebook_size: usize,
    /// Number of classes `C`.
    pub num_classes: usize,
    /// Image tokens per sample `K` (the model input has `K + 1` positions: condition first).
    pub seq_len: usize,
}

impl TokenLayout {
    /// The mask token id `N`.
    pub fn mask_id(&self) -> i64 {
        self.codebook_size as i64
    }

    /// The condition token of class `c` (`N + 1 + c`).
    pub fn class_id(&self, class: usize) -> i64 {
        (self.codebook_size + 1 + class) as i64
    }

    /// The "drop label" token of unconditional passes (`N + 1 + C`).
    pub fn drop_label_id(&self) -> i64 {
        (self.codebook_size + 1 + self.num_classes) as i64
    }

    /// Size of the embedding table, `N + C + 2`.
    pub fn vocab_size(&self) -> usize {
        self.codebook_size + self.num_classes + 2
    }

    /// Number of model input positions, `K + 1`.
    pub fn input_len(&self) -> usize {
        self.seq_len + 1
    }
}

/// Configuration of a MaskGIT generator (the `model.generator` section of the official config,
/// plus the tokenizer's codebook size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// BERT or U-ViT.
    pub kind: GeneratorKind,
    /// Hidden width `D` (`hidden_size`).
    pub hidden_size: usize,
    /// Transformer depth (`num_hidden_layers`); a U-ViT has `L/2` in-blocks, one mid-block and
    /// `L/2` out-blocks.
    pub num_hidden_layers: usize,
    /// Attention heads (`num_attention_heads`, `D` must be divisible by it).
    pub num_attention_heads: usize,
    /// MLP hidden width (`intermediate_size`).
    pub intermediate_size: usize,
    /// Hidden dropout of the BERT (`dropout`); active only on an autodiff device.
    pub dropout: f64,
    /// Attention-probability dropout of the BERT (`attn_drop`); active only on an autodiff device.
    pub attn_drop: f64,
    /// Image tokens `K` (`image_seq_len`, in the official file an interpolation of
    /// `model.vq_model.num_latent_tokens`).
    pub image_seq_len: usize,
    /// Codebook size of the tokenizer (`model.vq_model.codebook_size`).
    pub codebook_size: usize,
    /// Number of classes (`condition_num_classes`).
    pub condition_num_classes: usize,
    /// Training probability of replacing the class by the drop label (`class_label_dropout`).
    pub class_label_dropout: f64,
    /// Default sampling settings (`num_steps`, `randomize_temperature`, `guidance_scale`,
    /// `guidance_decay` in the official file).
    pub sampling: SamplerConfig,
}

impl GeneratorConfig {
    /// Names of the built-in presets.
    pub const PRESETS: &'static [&'static str] = &["l32", "b64", "s128", "small", "tiny"];

    /// The released BERT generator (768-d, 24 layers, 16 heads, MLP 3072, 177 M parameters)
    /// for a tokenizer with `k` tokens and a 4096-code codebook, with the given eval sampling.
    fn released_bert(k: usize, sampling: SamplerConfig) -> Self {
        Self {
            kind: GeneratorKind::Bert,
            hidden_size: 768,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            intermediate_size: 3072,
            dropout: 0.1,
            attn_drop: 0.1,
            image_seq_len: k,
            codebook_size: 4096,
            condition_num_classes: 1000,
            class_label_dropout: 0.1,
            sampling,
        }
    }

    /// `generator_titok_l32_imagenet`: BERT for TiTok-L-32 (K = 32); eval sampling 8 steps,
    /// τ 9.5, guidance 4.5 linear (gFID 2.77).
    pub fn l32() -> Self {
        Self::released_bert(32, SamplerConfig::l32())
    }

    /// `generator_titok_b64_imagenet`: BERT for TiTok-B-64 (K = 64); eval sampling 8 steps,
    /// τ 11.0, guidance 3.0 linear (gFID 2.48).
    pub fn b64() -> Self {
        Self::released_bert(64, SamplerConfig::b64())
    }

    /// `generator_titok_s128_imagenet`: U-ViT 1024-d, 20 layers, 16 heads, MLP 4096 (295 M
    /// parameters) for TiTok-S-128; eval sampling 64 steps, τ 2.8, guidance 6.9 power-cosine
    /// (gFID 1.97).
    pub fn s128() -> Self {
        Self {
            kind: GeneratorKind::UVit,
            hidden_size: 1024,
            num_hidden_layers: 20,
            intermediate_size: 4096,
            ..Self::released_bert(128, SamplerConfig::s128())
        }
    }

    /// A small BERT for CPU training and tests on the L-32 token layout: 256-d, 4 layers,
    /// 4 heads, MLP 1024, K = 32, 4096 codes, 1000 classes (5.5 M parameters).
    pub fn small() -> Self {
        Self { hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4, intermediate_size: 1024, ..Self::l32() }
    }

    /// The golden fixtures' tiny BERT: 64-d, 2 layers, 4 heads, MLP 128, K = 8, 64 codes,
    /// 1000 classes.
    pub fn tiny() -> Self {
        Self {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            image_seq_len: 8,
            codebook_size: 64,
            sampling: SamplerConfig::default(),
            ..Self::l32()
        }
    }

    /// A preset by name (see [`GeneratorConfig::PRESETS`]).
    ///
    /// # Errors
    /// [`TitokError::Config`] naming the known presets.
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "l32" => Self::l32(),
            "b64" => Self::b64(),
            "s128" => Self::s128(),
            "small" => Self::small(),
            "tiny" => Self::tiny(),
            other => {
                return Err(TitokError::Config(format!(
                    "unknown generator preset '{other}'; known: {}",
                    Self::PRESETS.join(", ")
                )));
            }
        })
    }

    /// The token layout of this generator.
    pub fn layout(&self) -> TokenLayout {
        TokenLayout {
            codebook_size: self.codebook_size,
            num_classes: self.condition_num_classes,
            seq_len: self.image_seq_len,
        }
    }

    /// Per-head width `D / heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// U-ViT MLP width exactly as the official code computes it:
    /// `int(D * (intermediate_size / D))`.
    pub fn uvit_mlp_width(&self) -> usize {
        (self.hidden_size as f64 * (self.intermediate_size as f64 / self.hidden_size as f64)) as usize
    }

    /// Checks that the numbers fit together.
    ///
    /// # Errors
    /// [`TitokError::Config`] describing the first problem.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(TitokError::Config(format!("generator: {m}")));
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return err(format!(
                "hidden_size {} is not divisible by {} attention heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.intermediate_size == 0 {
            return err("intermediate_size must be positive".into());
        }
        if self.num_hidden_layers == 0 {
            return err("num_hidden_layers must be positive".into());
        }
        if self.kind == GeneratorKind::UVit && self.uvit_mlp_width() == 0 {
            return err("the U-ViT MLP width rounds to zero".into());
        }
        if self.image_seq_len == 0 {
            return err("image_seq_len must be positive".into());
        }
        if self.codebook_size == 0 || self.condition_num_classes == 0 {
            return err("codebook_size and condition_num_classes must be positive".into());
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attn_drop", self.attn_drop),
            ("class_label_dropout", self.class_label_dropout),
        ] {
            let allowed = (0.0..1.0).contains(&p) || (name == "class_label_dropout" && p == 1.0);
            if !allowed {
                return err(format!("{name} = {p} is not a probability in [0, 1)"));
            }
        }
        self.sampling.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_have_the_released_sizes() {
        for name in GeneratorConfig::PRESETS {
            GeneratorConfig::preset(name).unwrap().validate().unwrap();
        }
        assert!(GeneratorConfig::preset("xl").is_err());
        let l32 = GeneratorConfig::l32();
        assert_eq!((l32.hidden_size, l32.num_hidden_layers, l32.head_dim()), (768, 24, 48));
        assert_eq!(l32.layout().vocab_size(), 5098);
        assert_eq!(GeneratorConfig::b64().image_seq_len, 64);
        let s = GeneratorConfig::s128();
        assert_eq!(
            (s.kind, s.hidden_size, s.uvit_mlp_width(), s.image_seq_len),
            (GeneratorKind::UVit, 1024, 4096, 128)
        );
    }

    #[test]
    fn token_layout_is_the_official_one() {
        let t = GeneratorConfig::tiny().layout();
        assert_eq!((t.mask_id(), t.class_id(0), t.class_id(999), t.drop_label_id()), (64, 65, 1064, 1065));
        assert_eq!(t.vocab_size(), 1066);
        let l = GeneratorConfig::l32().layout();
        assert_eq!((l.mask_id(), l.class_id(0), l.drop_label_id()), (4096, 4097, 5097));
    }

    #[test]
    fn bad_configs_are_rejected_with_a_reason() {
        let mut c = GeneratorConfig::tiny();
        c.num_attention_heads = 5;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("not divisible by 5"), "{e}");
        let mut c = GeneratorConfig::tiny();
        c.dropout = 1.5;
        assert!(c.validate().unwrap_err().to_string().contains("dropout"));
        let mut c = GeneratorConfig::tiny();
        c.image_seq_len = 0;
        assert!(c.validate().is_err());
        assert!(GeneratorKind::from_official("GPT").is_err());
        assert_eq!(GeneratorKind::from_official("UViT").unwrap(), GeneratorKind::UVit);
    }
}

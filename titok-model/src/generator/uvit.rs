//! `UViTBert`: the MaskGIT generator of TiTok-S-128, a pre-LN U-ViT (Bao et al., "All are
//! Worth Words: A ViT Backbone for Diffusion Models", 2023) over `[condition, K image tokens]`.
//!
//! `embeddings[ids] + pos_embed` (no LayerNorm), `L/2` in-blocks whose outputs go on a skip
//! stack, a mid-block, `L/2` out-blocks that pop the stack (last in, first out) and first apply
//! `skip_linear(concat[x, skip])`, a final LayerNorm and the `lm_head` on positions 1..K.
//! Blocks are pre-LN (eps 1e-5): `x += proj(attn(norm1 x)); x += fc2(gelu(fc1(norm2 x)))`;
//! `qkv` has no bias and splits its `3D` outputs as (3, heads, head_dim). No dropout.
//! Module names equal the official state-dict keys (no prefix).
//!
//! Source: `modeling/maskgit.py::UViTBert`, `modeling/modules/blocks.py::UViTBlock`;
//! REFERENCE §6.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution, Int, Tensor};
use titok_kernels::gelu;

use crate::error::Result;
use crate::generator::config::{GeneratorConfig, GeneratorKind, TokenLayout};
use crate::generator::init::{BERT_INIT_STD, init_embedding, init_linear};
use crate::generator::predictor::TokenPredictor;
use crate::vit::layer_norm;

/// The U-ViT generator.
#[derive(Module, Debug)]
pub struct UViTBert {
    /// `[vocab, D]` token table.
    pub embeddings: Embedding,
    /// `[1, K + 1, D]` learned positions.
    pub pos_embed: Param<Tensor<3>>,
    /// `L/2` blocks whose outputs are pushed on the skip stack.
    pub in_blocks: Vec<UViTBlock>,
    /// The middle block.
    pub mid_block: UViTBlock,
    /// `L/2` blocks with `skip_linear`, popping the stack.
    pub out_blocks: Vec<UViTBlock>,
    /// Final LayerNorm (eps 1e-5).
    pub norm: LayerNorm,
    /// `D -> N` code logits (positions 1..K).
    pub lm_head: Linear,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: GeneratorConfig,
}

/// A pre-LN U-ViT block, optionally with a long-skip input projection.
#[derive(Module, Debug)]
pub struct UViTBlock {
    /// LayerNorm before attention.
    pub norm1: LayerNorm,
    /// Self-attention with fused bias-free `qkv`.
    pub attn: UViTAttention,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm,
    /// MLP `fc1` -> GELU -> `fc2`.
    pub mlp: UViTMlp,
    /// `2D -> D` projection of `concat[x, skip]` (out-blocks only).
    pub skip_linear: Option<Linear>,
}

impl UViTBlock {
    fn new(config: &GeneratorConfig, skip: bool, device: &Device) -> Self {
        let d = config.hidden_size;
        let hidden = config.uvit_mlp_width();
        Self {
            norm1: layer_norm(d, device),
            attn: UViTAttention {
                qkv: init_linear(d, 3 * d, false, device),
                proj: init_linear(d, d, true, device),
                num_heads: config.num_attention_heads,
            },
            norm2: layer_norm(d, device),
            mlp: UViTMlp { fc1: init_linear(d, hidden, true, device), fc2: init_linear(hidden, d, true, device) },
            skip_linear: skip.then(|| init_linear(2 * d, d, true, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, L, D]`, `skip`: `[batch, L, D]` for out-blocks -> `[batch, L, D]`
    pub fn forward(&self, x: Tensor<3>, skip: Option<Tensor<3>>) -> Tensor<3> {
        let x = match (&self.skip_linear, skip) {
            (Some(lin), Some(s)) => lin.forward(Tensor::cat(vec![x, s], 2)), // [b, l, 2d] -> [b, l, d]
            _ => x,
        };
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// Multi-head self-attention with a fused `qkv` Linear without bias (outputs ordered
/// q | k | v, then heads) and an output `proj`.
#[derive(Module, Debug)]
pub struct UViTAttention {
    /// `D -> 3D`, no bias.
    pub qkv: Linear,
    /// `D -> D`.
    pub proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl UViTAttention {
    /// # Shapes
    /// - `x`: `[batch, L, D]` -> `[batch, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let h = self.num_heads;
        // 'B L (K H D) -> K B H L D'
        let qkv = self.qkv.forward(x).reshape([b, l, 3, h, d / h]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().slice_dim(0, i..i + 1).squeeze_dim::<4>(0); // [b, h, l, dh]
        let out = attention(part(0), part(1), part(2), None, None, AttentionModuleOptions::default());
        self.proj.forward(out.swap_dims(1, 2).reshape([b, l, d]))
    }
}

/// The block MLP.
#[derive(Module, Debug)]
pub struct UViTMlp {
    /// `D -> hidden`.
    pub fc1: Linear,
    /// `hidden -> D`.
    pub fc2: Linear,
}

impl UViTMlp {
    /// # Shapes
    /// - `x`: `[batch, L, D]` -> `[batch, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

impl UViTBert {
    /// A randomly initialised generator with the official init (normal 0.02 for linears,
    /// embeddings and `pos_embed`, zero biases, LayerNorm 1/0; the official truncation at ±2
    /// never triggers at std 0.02).
    ///
    /// # Errors
    /// [`crate::TitokError::Config`] when `config` does not validate or is not a U-ViT config.
    pub fn new(config: &GeneratorConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        if config.kind != GeneratorKind::UVit {
            return Err(crate::TitokError::Config("UViTBert needs a config of kind UVit".into()));
        }
        let d = config.hidden_size;
        let layout = config.layout();
        let half = config.num_hidden_layers / 2;
        Ok(Self {
            embeddings: init_embedding(layout.vocab_size(), d, device),
            pos_embed: Param::from_tensor(Tensor::random(
                [1, layout.input_len(), d],
                Distribution::Normal(0.0, BERT_INIT_STD),
                device,
            )),
            in_blocks: (0..half).map(|_| UViTBlock::new(config, false, device)).collect(),
            mid_block: UViTBlock::new(config, false, device),
            out_blocks: (0..half).map(|_| UViTBlock::new(config, true, device)).collect(),
            norm: layer_norm(d, device),
            lm_head: init_linear(d, config.codebook_size, true, device),
            config: config.clone(),
        })
    }

    /// The final-normed hidden states of all `K + 1` positions.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, K + 1]` (condition token first) -> `[batch, K + 1, D]`
    pub fn hidden_states(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, l] = input_ids.dims();
        let [_, _, d] = self.pos_embed.dims();
        // Stage 1: token + position embeddings.
        let mut x = self.embeddings.forward(input_ids) + self.pos_embed.val().slice([0..1, 0..l, 0..d]); // [b, l, d]
        // Stage 2: in-blocks, pushing the skips.
        let mut skips = Vec::with_capacity(self.in_blocks.len());
        for block in &self.in_blocks {
            x = block.forward(x, None);
            skips.push(x.clone());
        }
        // Stage 3: mid-block, then out-blocks popping the skips (LIFO).
        x = self.mid_block.forward(x, None);
        for block in &self.out_blocks {
            x = block.forward(x, skips.pop());
        }
        self.norm.forward(x)
    }
}

impl TokenPredictor for UViTBert {
    fn layout(&self) -> TokenLayout {
        self.config.layout()
    }

    fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    fn logits(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let x = self.hidden_states(input_ids); // [b, K+1, d]
        let [b, l, d] = x.dims();
        self.lm_head.forward(x.slice([0..b, 1..l, 0..d])) // [b, K, N]
    }
}

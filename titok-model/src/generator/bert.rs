//! `ImageBert`: the MaskGIT generator of TiTok-L-32 / B-64, a Hugging Face `BertModel`
//! (no pooler) over `[condition, K image tokens]` with an `lm_head` on the image positions.
//!
//! BERT semantics (HF `modeling_bert.py`): embeddings = LN(word + position + token-type row 0),
//! **post-LN** blocks `x = LN(x + Attn(x)); x = LN(x + FFN(x))`, LayerNorm eps 1e-12, exact
//! GELU, no attention mask. Dropout (hidden and attention) acts only on an autodiff device, so
//! inference is deterministic. Module names mirror the official state dict
//! (`model.embeddings.*`, `model.encoder.layer.{i}.*`, `model.lm_head.*`); the two renames
//! (`self` -> `self_attn`, `LayerNorm` -> `layer_norm`) are in
//! [`crate::checkpoint::keymap::IMAGEBERT`].
//!
//! Source: `modeling/maskgit.py::ImageBert`; REFERENCE §6, §8.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor};
use titok_kernels::gelu;

use crate::error::Result;
use crate::generator::config::{GeneratorConfig, GeneratorKind, TokenLayout};
use crate::generator::init::{init_embedding, init_linear};
use crate::generator::predictor::TokenPredictor;

/// LayerNorm epsilon of the HF BERT (`layer_norm_eps`).
pub const BERT_LN_EPS: f64 = 1e-12;
fn bert_layer_norm(d: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(BERT_LN_EPS).init(device)
}

/// Whether a dropout layer would act on `x` (autodiff device, training flag, p > 0).
fn dropout_active<const D: usize>(dropout: &Dropout, x: &Tensor<D>) -> bool {
    dropout.prob > 0.0 && dropout.training.is_enabled() && x.device().is_autodiff()
}

/// The generator: `model` holds the HF `BertModel` and the `lm_head` (official nesting).
#[derive(Module, Debug)]
pub struct ImageBert {
    /// The BERT and its head (`model.*` keys).
    pub model: BertModel,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: GeneratorConfig,
}

/// HF `BertModel` without pooler, plus the `lm_head` the official code attaches to it.
#[derive(Module, Debug)]
pub struct BertModel {
    /// Word, position and token-type embeddings + LayerNorm.
    pub embeddings: BertEmbeddings,
    /// The post-LN transformer.
    pub encoder: BertEncoder,
    /// `D -> N` code logits (applied to positions 1..K).
    pub lm_head: Linear,
}

/// `BertEmbeddings`: `LN(word[ids] + position[0..L] + token_type[0])`, then dropout.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `[vocab, D]`, vocab = codebook + classes + 2.
    pub word_embeddings: Embedding,
    /// `[K + 1, D]`.
    pub position_embeddings: Embedding,
    /// `[2, D]`; only row 0 is used.
    pub token_type_embeddings: Embedding,
    /// LayerNorm eps 1e-12 (official name `LayerNorm`).
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
}

impl BertEmbeddings {
    /// # Shapes
    /// - `input_ids`: `[batch, L]` ids in `0..vocab` -> `[batch, L, D]`
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, l] = input_ids.dims();
        let words = self.word_embeddings.forward(input_ids); // [b, l, d]
        let positions = self.position_embeddings.weight.val().slice(0..l).unsqueeze::<3>(); // [1, l, d]
        let token_type = self.token_type_embeddings.weight.val().slice(0..1).unsqueeze::<3>(); // [1, 1, d]
        let x = words + token_type + positions;
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

/// The stack of post-LN layers (`encoder.layer.{i}`).
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// The layers.
    pub layer: Vec<BertLayer>,
}

/// One post-LN BERT layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Self-attention + output projection + residual LayerNorm.
    pub attention: BertAttention,
    /// `D -> intermediate`, exact GELU.
    pub intermediate: BertIntermediate,
    /// `intermediate -> D` + residual LayerNorm.
    pub output: BertOutput,
}

impl BertLayer {
    /// # Shapes
    /// - `x`: `[batch, L, D]` -> `[batch, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.attention.forward(x); // LN(x + attn(x))
        let h = self.intermediate.forward(x.clone()); // [b, l, inter]
        self.output.forward(h, x) // LN(x + ffn(x))
    }
}

/// `BertAttention`: self-attention then `LN(x + dense(ctx))`.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// q, k, v projections (official name `self`).
    pub self_attn: BertSelfAttention,
    /// Output projection and residual LayerNorm.
    pub output: BertSelfOutput,
}

impl BertAttention {
    /// # Shapes
    /// - `x`: `[batch, L, D]` -> `[batch, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let ctx = self.self_attn.forward(x.clone());
        self.output.forward(ctx, x)
    }
}

/// Multi-head scaled-dot-product self-attention with separate q, k, v projections.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// `D -> D`.
    pub query: Linear,
    /// `D -> D`.
    pub key: Linear,
    /// `D -> D`.
    pub value: Linear,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
}

impl BertSelfAttention {
    /// # Shapes
    /// - `x`: `[batch, L, D]` -> context `[batch, L, D]` (heads concatenated)
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let h = self.num_heads;
        let heads = |t: Tensor<3>| t.reshape([b, l, h, d / h]).swap_dims(1, 2); // [b, h, l, dh]
        let q = heads(self.query.forward(x.clone()));
        let k = heads(self.key.forward(x.clone()));
        let v = heads(self.value.forward(x.clone()));
        let ctx = if dropout_active(&self.dropout, &x) {
            // Training with attention dropout: the explicit formulation.
            let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / ((d / h) as f64).sqrt()); // [b, h, l, l]
            self.dropout.forward(softmax(scores, 3)).matmul(v)
        } else {
            attention(q, k, v, None, None, AttentionModuleOptions::default())
        }; // [b, h, l, dh]
        ctx.swap_dims(1, 2).reshape([b, l, d])
    }
}

/// `BertSelfOutput`: `LN(residual + dropout(dense(ctx)))`.
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    /// `D -> D`.
    pub dense: Linear,
    /// LayerNorm eps 1e-12 (official name `LayerNorm`).
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
}

impl BertSelfOutput {
    /// # Shapes
    /// - `ctx`, `residual`: `[batch, L, D]` -> `[batch, L, D]`
    pub fn forward(&self, ctx: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(self.dropout.forward(self.dense.forward(ctx)) + residual)
    }
}

/// `BertIntermediate`: `gelu(dense(x))` (exact erf GELU).
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `D -> intermediate`.
    pub dense: Linear,
}

impl BertIntermediate {
    /// # Shapes
    /// - `x`: `[batch, L, D]` -> `[batch, L, intermediate]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        gelu(self.dense.forward(x))
    }
}

/// `BertOutput`: `LN(residual + dropout(dense(h)))`.
#[derive(Module, Debug)]
pub struct BertOutput {
    /// `intermediate -> D`.
    pub dense: Linear,
    /// LayerNorm eps 1e-12 (official name `LayerNorm`).
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
}

impl BertOutput {
    /// # Shapes
    /// - `h`: `[batch, L, intermediate]`, `residual`: `[batch, L, D]` -> `[batch, L, D]`
    pub fn forward(&self, h: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(self.dropout.forward(self.dense.forward(h)) + residual)
    }
}

impl ImageBert {
    /// A randomly initialised generator with the HF BERT init (normal 0.02, zero biases,
    /// LayerNorm 1/0).
    ///
    /// # Errors
    /// [`crate::TitokError::Config`] when `config` does not validate or is not a BERT config.
    pub fn new(config: &GeneratorConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        if config.kind != GeneratorKind::Bert {
            return Err(crate::TitokError::Config("ImageBert needs a config of kind Bert".into()));
        }
        let d = config.hidden_size;
        let layout = config.layout();
        let hidden_dropout = || DropoutConfig::new(config.dropout).init();
        let layer = (0..config.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attn: BertSelfAttention {
                        query: init_linear(d, d, true, device),
                        key: init_linear(d, d, true, device),
                        value: init_linear(d, d, true, device),
                        dropout: DropoutConfig::new(config.attn_drop).init(),
                        num_heads: config.num_attention_heads,
                    },
                    output: BertSelfOutput {
                        dense: init_linear(d, d, true, device),
                        layer_norm: bert_layer_norm(d, device),
                        dropout: hidden_dropout(),
                    },
                },
                intermediate: BertIntermediate { dense: init_linear(d, config.intermediate_size, true, device) },
                output: BertOutput {
                    dense: init_linear(config.intermediate_size, d, true, device),
                    layer_norm: bert_layer_norm(d, device),
                    dropout: hidden_dropout(),
                },
            })
            .collect();
        Ok(Self {
            model: BertModel {
                embeddings: BertEmbeddings {
                    word_embeddings: init_embedding(layout.vocab_size(), d, device),
                    position_embeddings: init_embedding(layout.input_len(), d, device),
                    token_type_embeddings: init_embedding(2, d, device),
                    layer_norm: bert_layer_norm(d, device),
                    dropout: hidden_dropout(),
                },
                encoder: BertEncoder { layer },
                lm_head: init_linear(d, config.codebook_size, true, device),
            },
            config: config.clone(),
        })
    }

    /// The last hidden states of all `K + 1` positions.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, K + 1]` (condition token first) -> `[batch, K + 1, D]`
    pub fn hidden_states(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let mut x = self.model.embeddings.forward(input_ids); // [b, K+1, d]
        for layer in &self.model.encoder.layer {
            x = layer.forward(x);
        }
        x
    }
}

impl TokenPredictor for ImageBert {
    fn layout(&self) -> TokenLayout {
        self.config.layout()
    }

    fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    fn logits(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let x = self.hidden_states(input_ids); // [b, K+1, d]
        let [b, l, d] = x.dims();
        self.model.lm_head.forward(x.slice([0..b, 1..l, 0..d])) // [b, K, N]
    }
}

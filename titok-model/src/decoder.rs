//! The TiTok ViT decoder: K quantized latent tokens + G² mask tokens -> proxy-code logits
//! (two-stage models) or pixels (single-stage models).
//!
//! Source: `modeling/modules/blocks.py::TiTokDecoder`; REFERENCE §3.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::config::TitokConfig;
use crate::vit::{ResidualAttentionBlock, embedding_param, layer_norm};

/// The decoder's named intermediate outputs.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// Mask-token outputs after `ln_post`, `[batch, G², W]` (fixture `dec_ln_post`).
    pub ln_post: Tensor<3>,
    /// Single-stage only: the pixel-shuffled `ffn` output before `conv_out`, `[batch, 3, H, W]`
    /// (fixture `dec_pixel_shuffled`).
    pub pixel_shuffled: Option<Tensor<4>>,
    /// Legacy: proxy-code logits `[batch, N_pixel_codes, G, G]`; single-stage: pixels
    /// `[batch, 3, H, W]` (unclamped, target `[0, 1]`).
    pub out: Tensor<4>,
}

/// ViT decoder over `[class, G² mask tokens, K latents]`.
#[derive(Module, Debug)]
pub struct TitokDecoder {
    /// Linear `C -> W` applied to each quantized latent token.
    pub decoder_embed: Linear,
    /// Class token `[1, W]`.
    pub class_embedding: Param<Tensor<2>>,
    /// Positional embedding of class + mask tokens, `[1 + G², W]`.
    pub positional_embedding: Param<Tensor<2>>,
    /// Mask token `[1, 1, W]`, repeated G² times.
    pub mask_token: Param<Tensor<3>>,
    /// Positional embedding of the latent tokens, `[K, W]`.
    pub latent_token_positional_embedding: Param<Tensor<2>>,
    /// LayerNorm over the input sequence.
    pub ln_pre: LayerNorm,
    /// Residual attention blocks.
    pub transformer: Vec<ResidualAttentionBlock>,
    /// LayerNorm over the kept mask tokens.
    pub ln_post: LayerNorm,
    /// `ffn.0`: 1x1 conv `W -> 2W` (legacy) or `W -> p²·3` (single-stage).
    pub ffn_in: Conv2d,
    /// `ffn.2`: 1x1 conv `2W -> N_pixel_codes` after a tanh (legacy only).
    pub ffn_out: Option<Conv2d>,
    /// 3x3 conv `3 -> 3` after the pixel shuffle (single-stage only).
    pub conv_out: Option<Conv2d>,
    /// Patch size `p` (pixel shuffle factor).
    pub patch_size: usize,
}

impl TitokDecoder {
    /// A randomly initialised decoder for `config`.
    pub fn new(config: &TitokConfig, device: &Device) -> Self {
        let s = &config.decoder;
        let w = s.width;
        let p = config.patch_size;
        let (ffn_in, ffn_out, conv_out) = if config.is_legacy {
            (
                Conv2dConfig::new([w, 2 * w], [1, 1]).init(device),
                Some(Conv2dConfig::new([2 * w, config.pixel_vqgan.codebook_size], [1, 1]).init(device)),
                None,
            )
        } else {
            (
                Conv2dConfig::new([w, p * p * 3], [1, 1]).init(device),
                None,
                Some(
                    Conv2dConfig::new([3, 3], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device),
                ),
            )
        };
        Self {
            decoder_embed: LinearConfig::new(config.token_size, w).init(device),
            class_embedding: embedding_param([1, w], w, device),
            positional_embedding: embedding_param([config.num_patches() + 1, w], w, device),
            mask_token: embedding_param([1, 1, w], w, device),
            latent_token_positional_embedding: embedding_param([config.num_latent_tokens, w], w, device),
            ln_pre: layer_norm(w, device),
            transformer: (0..s.num_layers).map(|_| ResidualAttentionBlock::new(s, device)).collect(),
            ln_post: layer_norm(w, device),
            ffn_in,
            ffn_out,
            conv_out,
            patch_size: p,
        }
    }

    /// Decodes quantized latents.
    ///
    /// # Shapes
    /// - `z_quantized`: `[batch, C, 1, K]` (official layout)
    /// - output: see [`DecoderOutput::out`]
    pub fn forward(&self, z_quantized: Tensor<4>) -> DecoderOutput {
        let [b, c, _, k] = z_quantized.dims();
        let n_mask = self.positional_embedding.dims()[0] - 1; // G²
        let w = self.class_embedding.dims()[1];
        // Stage 1: latent tokens [b, C, 1, K] -> [b, K, W] (proper permute).
        let latents = self.decoder_embed.forward(z_quantized.reshape([b, c, k]).swap_dims(1, 2))
            + self.latent_token_positional_embedding.val().unsqueeze::<3>(); // [b, k, w]
        // Stage 2: [class, mask tokens] with positional embedding, then the latents.
        let cls = self.class_embedding.val().unsqueeze::<3>().expand([b, 1, w]);
        let masks = self.mask_token.val().expand([b, n_mask, w]);
        let x = Tensor::cat(vec![cls, masks], 1) + self.positional_embedding.val().unsqueeze::<3>();
        let x = Tensor::cat(vec![x, latents], 1); // [b, 1 + G² + k, w]
        // Stage 3: transformer, keep the mask-token positions 1..=G².
        let mut x = self.ln_pre.forward(x);
        for block in &self.transformer {
            x = block.forward(x);
        }
        let ln_post = self.ln_post.forward(x.slice_dim(1, 1..1 + n_mask)); // [b, G², w]
        // Stage 4: head on the [b, W, G, G] map.
        let g = (n_mask as f64).sqrt().round() as usize;
        let map = ln_post.clone().swap_dims(1, 2).reshape([b, w, g, g]);
        let hidden = conv1x1(&self.ffn_in, map);
        let (pixel_shuffled, out) = match (&self.ffn_out, &self.conv_out) {
            (Some(ffn_out), _) => (None, conv1x1(ffn_out, hidden.tanh())),
            (None, Some(conv_out)) => {
                let shuffled = pixel_shuffle(hidden, self.patch_size);
                (Some(shuffled.clone()), conv_out.forward(shuffled))
            }
            (None, None) => (None, hidden),
        };
        DecoderOutput { ln_post, pixel_shuffled, out }
    }
}

/// A 1x1 conv applied as a matmul over channels: `[b, cin, h, w] -> [b, cout, h, w]`.
pub(crate) fn conv1x1(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [b, cin, h, w] = x.dims();
    let weight = conv.weight.val();
    let cout = weight.dims()[0];
    let mut y = weight.reshape([1, cout, cin]).matmul(x.reshape([b, cin, h * w]));
    if let Some(bias) = &conv.bias {
        y = y + bias.val().reshape([1, cout, 1]);
    }
    y.reshape([b, cout, h, w])
}

/// einops `b (p1 p2 c) h w -> b c (h p1) (w p2)`: channel order row offset `p1`, then column
/// offset `p2`, then RGB. `[b, p²·3, g, g] -> [b, 3, g·p, g·p]`.
pub fn pixel_shuffle(x: Tensor<4>, p: usize) -> Tensor<4> {
    let [b, ch, h, w] = x.dims();
    let c = ch / (p * p);
    x.reshape([b, p, p, c, h, w])
        .permute([0, 3, 4, 1, 5, 2]) // [b, c, h, p1, w, p2]
        .reshape([b, c, h * p, w * p])
}

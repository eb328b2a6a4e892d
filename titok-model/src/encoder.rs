//! The TiTok ViT encoder: image patches + K latent tokens -> K token vectors.
//!
//! Source: `modeling/modules/blocks.py::TiTokEncoder`; REFERENCE §2 (including the legacy
//! reshape quirk of the two-stage checkpoints).

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use crate::config::TitokConfig;
use crate::vit::{ResidualAttentionBlock, embedding_param, layer_norm};

/// The encoder's named intermediate outputs.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// Latent-token outputs after `ln_post`, `[batch, K, W]` (fixture `enc_ln_post`).
    pub ln_post: Tensor<3>,
    /// Output of `conv_out` in the official layout `[batch, C_out, 1, K]` (fixture `z_pre_quant`);
    /// `C_out` is `token_size` (VQ) or `2 * token_size` (VAE: mean ‖ logvar).
    pub z: Tensor<4>,
}

/// ViT encoder over `[class, patches..., latent tokens...]`.
#[derive(Module, Debug)]
pub struct TitokEncoder {
    /// Patch embedding, `[W, 3, p, p]` conv with stride `p` (applied as a matmul over patches).
    pub patch_embed: Conv2d,
    /// Class token `[1, W]` (its output is discarded, but it takes part in attention).
    pub class_embedding: Param<Tensor<2>>,
    /// Positional embedding of class + patches, `[1 + G², W]`.
    pub positional_embedding: Param<Tensor<2>>,
    /// Positional embedding of the latent tokens, `[K, W]`.
    pub latent_token_positional_embedding: Param<Tensor<2>>,
    /// LayerNorm over the whole input sequence.
    pub ln_pre: LayerNorm,
    /// Residual attention blocks.
    pub transformer: Vec<ResidualAttentionBlock>,
    /// LayerNorm over the kept latent tokens.
    pub ln_post: LayerNorm,
    /// 1x1 conv `W -> C_out`, `[C_out, W, 1, 1]` (applied as a matmul).
    pub conv_out: Conv2d,
    /// Apply the two-stage checkpoints' scrambled reshape before `conv_out`.
    pub is_legacy: bool,
    /// Patch size `p`.
    pub patch_size: usize,
}

impl TitokEncoder {
    /// A randomly initialised encoder for `config`.
    pub fn new(config: &TitokConfig, device: &Device) -> Self {
        let s = &config.encoder;
        let w = s.width;
        let p = config.patch_size;
        Self {
            patch_embed: Conv2dConfig::new([3, w], [p, p]).with_stride([p, p]).init(device),
            class_embedding: embedding_param([1, w], w, device),
            positional_embedding: embedding_param([config.num_patches() + 1, w], w, device),
            latent_token_positional_embedding: embedding_param([config.num_latent_tokens, w], w, device),
            ln_pre: layer_norm(w, device),
            transformer: (0..s.num_layers).map(|_| ResidualAttentionBlock::new(s, device)).collect(),
            ln_post: layer_norm(w, device),
            conv_out: Conv2dConfig::new([w, config.encoder_out_channels()], [1, 1]).init(device),
            is_legacy: config.is_legacy,
            patch_size: p,
        }
    }

    /// Encodes images with the given latent tokens.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, H, W_img]`, values in `[0, 1]`, `H = W_img = image_size`
    /// - `latent_tokens`: `[K, W]` (the model-level `latent_tokens` parameter)
    pub fn forward(&self, pixels: Tensor<4>, latent_tokens: Tensor<2>) -> EncoderOutput {
        let [b, _, _, _] = pixels.dims();
        let [k, w] = latent_tokens.dims();
        // Stage 1: patches and class token with positional embedding.
        let patches = self.embed_patches(pixels); // [b, G², w]
        let cls = self.class_embedding.val().unsqueeze::<3>().expand([b, 1, w]);
        let x = Tensor::cat(vec![cls, patches], 1) + self.positional_embedding.val().unsqueeze::<3>();
        // Stage 2: latent tokens appended after the patches.
        let latents = (latent_tokens + self.latent_token_positional_embedding.val()).unsqueeze::<3>().expand([b, k, w]);
        let x = Tensor::cat(vec![x, latents], 1); // [b, 1 + G² + k, w]
        // Stage 3: transformer; the last block computes the latent-token rows only, the rows
        // stage 4 keeps (the official code computes all rows and slices them).
        let mut x = self.ln_pre.forward(x);
        let Some((last, blocks)) = self.transformer.split_last() else {
            let len = x.dims()[1];
            return self.finish(x.slice_dim(1, len - k..len));
        };
        for block in blocks {
            x = block.forward(x);
        }
        self.finish(last.forward_last(x, k)) // [b, k, w]
    }

    /// Stage 4: `ln_post` and the output projection of the latent-token rows `[b, k, w]`.
    fn finish(&self, latents: Tensor<3>) -> EncoderOutput {
        let ln_post = self.ln_post.forward(latents); // [b, k, w]
        let z = self.project_out(ln_post.clone());
        EncoderOutput { ln_post, z }
    }

    /// Patch embedding as a matmul: `[b, 3, H, W] -> [b, G², W]`, patches in row-major order.
    fn embed_patches(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w_img] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w_img / p);
        let weight = self.patch_embed.weight.val(); // [W, 3, p, p]
        let width = weight.dims()[0];
        let patches = pixels.reshape([b, c, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b, gh * gw, c * p * p]);
        let weight = weight.reshape([width, c * p * p]).transpose().unsqueeze::<3>();
        let mut x = patches.matmul(weight);
        if let Some(bias) = &self.patch_embed.bias {
            x = x + bias.val().unsqueeze::<3>();
        }
        x
    }

    /// `conv_out` (1x1) from `[b, K, W]` to the official `[b, C_out, 1, K]`.
    ///
    /// Legacy: the contiguous `[b, K, W]` buffer is *reinterpreted* as `[b, W, K]` (reshape, not
    /// transpose) before the conv, so output slot `k` mixes strided dims of all tokens.
    /// Non-legacy: the proper permute `[b, K, W] -> [b, W, K]`.
    fn project_out(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, k, w] = x.dims();
        let weight = self.conv_out.weight.val(); // [C, W, 1, 1]
        let c = weight.dims()[0];
        let weight = weight.reshape([1, c, w]);
        let x_wk = if self.is_legacy {
            x.reshape([b, w, k]) // legacy reshape quirk
        } else {
            x.swap_dims(1, 2)
        };
        let mut z = weight.matmul(x_wk); // [b, c, k]
        if let Some(bias) = &self.conv_out.bias {
            z = z + bias.val().reshape([1, c, 1]);
        }
        z.reshape([b, c, 1, k])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    /// The legacy reshape: channel `w'` at slot `k'` reads flat element `w'·K + k'` of the
    /// token-major `[K, W]` buffer, i.e. token `⌊w'/(W/K)⌋`, dimension `K·(w' mod (W/K)) + k'`.
    #[test]
    fn legacy_reshape_reads_strided_dims_of_all_tokens() {
        let device = Device::flex();
        let (k, w, c) = (4usize, 8usize, 3usize);
        let mut config = TitokConfig::s128();
        config.encoder = crate::VitSize::new(w, 1, 2);
        config.num_latent_tokens = k;
        config.token_size = c;
        let mut enc = TitokEncoder::new(&config, &device);
        enc.is_legacy = true;
        let x = Tensor::<3>::random([1, k, w], Distribution::Normal(0.0, 1.0), &device);
        let z = enc.project_out(x.clone()).try_into_vec_as::<f32>().unwrap(); // [1, c, 1, k]
        let xv = x.try_into_vec_as::<f32>().unwrap(); // token-major [k, w]
        let wt = enc.conv_out.weight.val().try_into_vec_as::<f32>().unwrap(); // [c, w]
        let bias = enc.conv_out.bias.as_ref().unwrap().val().try_into_vec_as::<f32>().unwrap();
        for ci in 0..c {
            for kk in 0..k {
                let mut acc = bias[ci];
                for wp in 0..w {
                    let (token, dim) = (wp / (w / k), k * (wp % (w / k)) + kk);
                    acc += wt[ci * w + wp] * xv[token * w + dim];
                }
                assert!((z[ci * k + kk] - acc).abs() < 1e-5, "c {ci} k {kk}: {} vs {acc}", z[ci * k + kk]);
            }
        }
        // The non-legacy path is the proper per-token projection.
        enc.is_legacy = false;
        let x = Tensor::<3>::from_data(TensorData::new(xv.clone(), [1, k, w]), &device);
        let z = enc.project_out(x).try_into_vec_as::<f32>().unwrap();
        let acc: f32 = bias[1] + (0..w).map(|wp| wt[w + wp] * xv[2 * w + wp]).sum::<f32>();
        assert!((z[k + 2] - acc).abs() < 1e-5);
    }
}

//! ViT building blocks shared by the TiTok encoder and decoder: open_clip-style pre-LN
//! residual attention blocks with a fused `in_proj` attention (`nn.MultiheadAttention` layout).
//!
//! Source: `modeling/modules/blocks.py::ResidualAttentionBlock`; REFERENCE §2.5.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Distribution};
use titok_kernels::gelu;

use crate::config::VitSize;

/// LayerNorm epsilon used everywhere in TiTok (PyTorch default).
pub const TITOK_LN_EPS: f64 = 1e-5;

/// Multi-head self-attention with the fused PyTorch `nn.MultiheadAttention` parameters:
/// `in_proj_weight` `[3W, W]` (rows q | k | v, PyTorch `[out, in]` layout) and `in_proj_bias`
/// `[3W]`, then `out_proj`. Scale `1/sqrt(head_dim)`, no mask, no dropout.
#[derive(Module, Debug)]
pub struct FusedAttention {
    /// `[3W, W]`, rows q | k | v.
    pub in_proj_weight: Param<Tensor<2>>,
    /// `[3W]`.
    pub in_proj_bias: Param<Tensor<1>>,
    /// Output projection `W -> W`.
    pub out_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl FusedAttention {
    /// A new attention layer with PyTorch's default init (xavier-uniform `in_proj_weight`,
    /// zero biases).
    pub fn new(width: usize, num_heads: usize, device: &Device) -> Self {
        let bound = (6.0 / (width + 3 * width) as f64).sqrt();
        Self {
            in_proj_weight: Param::from_tensor(Tensor::random(
                [3 * width, width],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            in_proj_bias: Param::from_tensor(Tensor::zeros([3 * width], device)),
            out_proj: LinearConfig::new(width, width).init(device),
            num_heads,
        }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, W]` -> `[batch, seq, W]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, l, w] = x.dims();
        let h = self.num_heads;
        let qkv =
            x.matmul(self.in_proj_weight.val().transpose().unsqueeze::<3>()) + self.in_proj_bias.val().unsqueeze::<3>(); // [b, l, 3w]
        // [b, l, 3, h, d] -> [3, b, h, l, d]
        let qkv = qkv.reshape([b, l, 3, h, w / h]).permute([2, 0, 3, 1, 4]);
        let q = qkv.clone().slice_dim(0, 0..1).squeeze_dim::<4>(0);
        let k = qkv.clone().slice_dim(0, 1..2).squeeze_dim::<4>(0);
        let v = qkv.slice_dim(0, 2..3).squeeze_dim::<4>(0);
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default()); // [b, h, l, d]
        let out = out.swap_dims(1, 2).reshape([b, l, w]);
        self.out_proj.forward(out)
    }

    /// The attention outputs of the last `n` rows only: their queries against the keys and
    /// values of every row; equal to `forward(x)` sliced to those rows, without the projections
    /// and attention rows of the others.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, W]` -> `[batch, n, W]`, `n <= seq`
    pub fn forward_last(&self, x: Tensor<3>, n: usize) -> Tensor<3> {
        let [b, l, w] = x.dims();
        let h = self.num_heads;
        let (weight, bias) = (self.in_proj_weight.val(), self.in_proj_bias.val());
        let project = |x: Tensor<3>, rows: std::ops::Range<usize>| {
            x.matmul(weight.clone().slice_dim(0, rows.clone()).transpose().unsqueeze::<3>())
                + bias.clone().slice_dim(0, rows).unsqueeze::<3>()
        };
        // Queries of the last n rows [b, n, w] -> [b, h, n, d]; keys and values of all rows
        // [b, l, 2w] -> [2, b, h, l, d].
        let q = project(x.clone().slice_dim(1, l - n..l), 0..w).reshape([b, n, h, w / h]).swap_dims(1, 2);
        let kv = project(x, w..3 * w).reshape([b, l, 2, h, w / h]).permute([2, 0, 3, 1, 4]);
        let k = kv.clone().slice_dim(0, 0..1).squeeze_dim::<4>(0);
        let v = kv.slice_dim(0, 1..2).squeeze_dim::<4>(0);
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default()); // [b, h, n, d]
        self.out_proj.forward(out.swap_dims(1, 2).reshape([b, n, w]))
    }
}

/// The MLP of a block: `c_fc` (W -> 4W), exact GELU, `c_proj` (4W -> W).
#[derive(Module, Debug)]
pub struct Mlp {
    /// `W -> hidden`.
    pub c_fc: Linear,
    /// `hidden -> W`.
    pub c_proj: Linear,
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[..., W]` -> `[..., W]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.c_proj.forward(gelu(self.c_fc.forward(x)))
    }
}

/// Pre-LN residual attention block: `x += attn(ln_1(x)); x += mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct ResidualAttentionBlock {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Self-attention.
    pub attn: FusedAttention,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP.
    pub mlp: Mlp,
}

impl ResidualAttentionBlock {
    /// A block of the given size.
    pub fn new(size: &VitSize, device: &Device) -> Self {
        let w = size.width;
        Self {
            ln_1: layer_norm(w, device),
            attn: FusedAttention::new(w, size.num_heads, device),
            ln_2: layer_norm(w, device),
            mlp: Mlp {
                c_fc: LinearConfig::new(w, size.mlp_width()).init(device),
                c_proj: LinearConfig::new(size.mlp_width(), w).init(device),
            },
        }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, W]` -> `[batch, seq, W]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x));
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }

    /// The block's output at the last `n` rows only (`forward(x)` sliced to them): for a last
    /// block whose other rows are discarded, such as the TiTok encoder's (only the latent
    /// tokens are kept), it skips their queries, attention rows, output projection and MLP.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, W]` -> `[batch, n, W]`, `n <= seq`
    pub fn forward_last(&self, x: Tensor<3>, n: usize) -> Tensor<3> {
        let l = x.dims()[1];
        let rows = x.clone().slice_dim(1, l - n..l);
        let x = rows + self.attn.forward_last(self.ln_1.forward(x), n);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// A LayerNorm of width `w` with TiTok's epsilon 1e-5.
pub fn layer_norm(w: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(w).with_epsilon(TITOK_LN_EPS).init(device)
}

/// A learnable embedding parameter initialised `width^-0.5 · N(0, 1)` (official init for
/// class/positional/latent/mask embeddings).
pub fn embedding_param<const D: usize>(shape: [usize; D], width: usize, device: &Device) -> Param<Tensor<D>> {
    let scale = (width as f64).powf(-0.5);
    Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, scale), device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_last_is_forward_sliced_to_the_last_rows() {
        let device = Device::flex();
        device.seed(3);
        let block = ResidualAttentionBlock::new(&VitSize::new(32, 2, 4), &device);
        let x = Tensor::<3>::random([2, 9, 32], Distribution::Normal(0.0, 1.0), &device);
        for n in [1, 4, 9] {
            let full = block.forward(x.clone()).slice_dim(1, 9 - n..9);
            let last = block.forward_last(x.clone(), n);
            assert_eq!(last.dims(), [2, n, 32]);
            let diff = (full - last).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "n = {n}: max |difference| {diff}");
        }
    }
}

//! MaskGIT-VQGAN: the 2D conv tokenizer whose codes are TiTok's proxy codes (stage-1 teacher)
//! and whose decoder is the pixel decoder of the two-stage TiTok models.
//!
//! Source: `modeling/modules/maskgit_vqgan.py` (a port of google-research/maskgit's
//! `vqgan_tokenizer.py`); REFERENCE §4. Quirks kept for the weights to work: TF "SAME" padding,
//! GroupNorm eps 1e-6, and the `nin_shortcut` applied to the residual block's *output*.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Int, Tensor};

use crate::config::VqganConfig;
use crate::quantizer::{QuantizerOutput, VectorQuantizer};

/// GroupNorm epsilon of the MaskGIT-VQGAN.
pub const VQGAN_GN_EPS: f64 = 1e-6;

/// A stride-1 conv with TF "SAME" padding (`(k - 1) / 2` each side for odd `k`).
pub(crate) fn conv_same(cin: usize, cout: usize, k: usize, bias: bool, device: &Device) -> Conv2d {
    let p = (k - 1) / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, k - 1 - p, k - 1 - p))
        .with_bias(bias)
        .init(device)
}

/// `conv.forward(x)` for a [`conv_same`] conv: the 3x3 ones go through
/// [`titok_kernels::conv3x3_same`] (Winograd on the CPU for inference, Burn's `conv2d`
/// otherwise); 1x1 and other convs through Burn.
///
/// # Shapes
/// - `x`: `[batch, in, h, w]` -> `[batch, out, h, w]`
pub(crate) fn conv_same_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let same3x3 = conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.padding == PaddingConfig2d::Explicit(1, 1, 1, 1);
    if same3x3 {
        titok_kernels::conv3x3_same(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()))
    } else {
        conv.forward(x)
    }
}

fn group_norm(groups: usize, channels: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels).with_epsilon(VQGAN_GN_EPS).init(device)
}

/// Residual block: `h = conv2(silu(norm2(conv1(silu(norm1(x))))))`; output `x + h`, or
/// `h + nin_shortcut(h)` when the channel count changes (the JAX original's shortcut placement).
#[derive(Module, Debug)]
pub struct ResBlock {
    /// GroupNorm on the input.
    pub norm1: GroupNorm,
    /// 3x3 conv, no bias, `in -> out`.
    pub conv1: Conv2d,
    /// GroupNorm after `conv1`.
    pub norm2: GroupNorm,
    /// 3x3 conv, no bias, `out -> out`.
    pub conv2: Conv2d,
    /// 1x1 conv, no bias, `out -> out`, present when `in != out`.
    pub nin_shortcut: Option<Conv2d>,
}

impl ResBlock {
    /// A block mapping `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, groups: usize, device: &Device) -> Self {
        Self {
            norm1: group_norm(groups, cin, device),
            conv1: conv_same(cin, cout, 3, false, device),
            norm2: group_norm(groups, cout, device),
            conv2: conv_same(cout, cout, 3, false, device),
            nin_shortcut: (cin != cout).then(|| conv_same(cout, cout, 1, false, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in, h, w]` -> `[batch, out, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // The input comes back beside the activation: it is the residual, and holding a clone
        // instead would make the CPU fast path copy it.
        let (x, a) = titok_kernels::group_norm_silu_keep_input(&self.norm1, x, true);
        let h = conv_same_forward(&self.conv1, a);
        let h = conv_same_forward(&self.conv2, titok_kernels::group_norm_silu(&self.norm2, h, true));
        match &self.nin_shortcut {
            // The shortcut conv reads the block output, not its input (REFERENCE §4).
            Some(nin) => h.clone() + nin.forward(h),
            None => x + h,
        }
    }
}

/// One resolution level of the encoder (key `encoder.down.{i}`).
#[derive(Module, Debug)]
pub struct DownLevel {
    /// Residual blocks (`block.{j}`).
    pub block: Vec<ResBlock>,
}

/// One resolution level of the decoder (key `decoder.up.{i}`).
#[derive(Module, Debug)]
pub struct UpLevel {
    /// Residual blocks (`block.{j}`).
    pub block: Vec<ResBlock>,
    /// 3x3 conv after nearest x2 up-sampling; levels `1..` only.
    pub upsample_conv: Option<Conv2d>,
}

/// Named intermediate outputs of the encoder (for parity tests).
#[derive(Debug, Clone)]
pub struct VqganEncoderOutput {
    /// Output of every down level, after its pooling (`enc_down{i}_out`).
    pub down: Vec<Tensor<4>>,
    /// After the mid blocks (`enc_mid_out`).
    pub mid: Tensor<4>,
    /// Latents `[batch, z_channels, H/f, W/f]` (`encoder_out`).
    pub out: Tensor<4>,
}

/// MaskGIT-VQGAN encoder: `[batch, 3, H, W]` in `[0, 1]` -> `[batch, z_channels, H/f, W/f]`.
#[derive(Module, Debug)]
pub struct VqganEncoder {
    /// 3x3 conv, no bias, `3 -> hidden`.
    pub conv_in: Conv2d,
    /// Resolution levels, 2x2 average pooling after every level but the last.
    pub down: Vec<DownLevel>,
    /// Two residual blocks at the deepest width.
    pub mid: Vec<ResBlock>,
    /// Final GroupNorm.
    pub norm_out: GroupNorm,
    /// 1x1 conv with bias to `z_channels`.
    pub conv_out: Conv2d,
}

impl VqganEncoder {
    /// A randomly initialised encoder.
    pub fn new(c: &VqganConfig, device: &Device) -> Self {
        let g = c.norm_groups;
        let levels = c.channel_mult.len();
        let mut cin = c.hidden_channels;
        let down = (0..levels)
            .map(|i| {
                let cout = c.level_channels(i);
                let block = (0..c.num_res_blocks)
                    .map(|j| ResBlock::new(if j == 0 { cin } else { cout }, cout, g, device))
                    .collect();
                cin = cout;
                DownLevel { block }
            })
            .collect();
        let top = c.level_channels(levels - 1);
        Self {
            conv_in: conv_same(3, c.hidden_channels, 3, false, device),
            down,
            mid: (0..c.num_res_blocks).map(|_| ResBlock::new(top, top, g, device)).collect(),
            norm_out: group_norm(g, top, device),
            conv_out: conv_same(top, c.z_channels, 1, true, device),
        }
    }

    /// Encodes images, keeping the intermediates.
    pub fn forward_with_intermediates(&self, pixels: Tensor<4>) -> VqganEncoderOutput {
        let mut x = conv_same_forward(&self.conv_in, pixels);
        let mut down = Vec::with_capacity(self.down.len());
        for (i, level) in self.down.iter().enumerate() {
            for block in &level.block {
                x = block.forward(x);
            }
            if i + 1 < self.down.len() {
                x = avg_pool2d(x, AvgPoolOptions::new([2, 2]));
            }
            down.push(x.clone());
        }
        for block in &self.mid {
            x = block.forward(x);
        }
        let mid = x.clone();
        let out = conv_same_forward(&self.conv_out, titok_kernels::group_norm_silu(&self.norm_out, x, true));
        VqganEncoderOutput { down, mid, out }
    }

    /// # Shapes
    /// - `pixels`: `[batch, 3, H, W]` in `[0, 1]` -> `[batch, z_channels, H/f, W/f]`
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<4> {
        self.forward_with_intermediates(pixels).out
    }
}

/// Named intermediate outputs of the decoder (for parity tests).
#[derive(Debug, Clone)]
pub struct VqganDecoderOutput {
    /// After the mid blocks (`dec_mid_out`).
    pub mid: Tensor<4>,
    /// Output of every up level in execution order (deepest first), after its up-sampling.
    pub up: Vec<Tensor<4>>,
    /// Pixels `[batch, 3, H, W]`, unclamped (`decoded`).
    pub out: Tensor<4>,
}

/// MaskGIT-VQGAN decoder: `[batch, z_channels, h, w]` -> `[batch, 3, h·f, w·f]` (unclamped).
#[derive(Module, Debug)]
pub struct VqganDecoder {
    /// 3x3 conv with bias, `z_channels -> deepest width`.
    pub conv_in: Conv2d,
    /// Two residual blocks at the deepest width.
    pub mid: Vec<ResBlock>,
    /// Levels indexed like the encoder's; executed from the deepest (`up.{L-1}`) to `up.0`.
    pub up: Vec<UpLevel>,
    /// Final GroupNorm.
    pub norm_out: GroupNorm,
    /// 3x3 conv with bias, `hidden -> 3`.
    pub conv_out: Conv2d,
}

impl VqganDecoder {
    /// A randomly initialised decoder.
    pub fn new(c: &VqganConfig, device: &Device) -> Self {
        let g = c.norm_groups;
        let levels = c.channel_mult.len();
        let top = c.level_channels(levels - 1);
        let up = (0..levels)
            .map(|i| {
                let cin = if i + 1 == levels { top } else { c.level_channels(i + 1) };
                let cout = c.level_channels(i);
                UpLevel {
                    block: (0..c.num_res_blocks)
                        .map(|j| ResBlock::new(if j == 0 { cin } else { cout }, cout, g, device))
                        .collect(),
                    upsample_conv: (i > 0).then(|| conv_same(cout, cout, 3, true, device)),
                }
            })
            .collect();
        Self {
            conv_in: conv_same(c.z_channels, top, 3, true, device),
            mid: (0..c.num_res_blocks).map(|_| ResBlock::new(top, top, g, device)).collect(),
            up,
            norm_out: group_norm(g, c.hidden_channels * c.channel_mult[0], device),
            conv_out: conv_same(c.level_channels(0), 3, 3, true, device),
        }
    }

    /// Decodes latents, keeping the intermediates.
    pub fn forward_with_intermediates(&self, z: Tensor<4>) -> VqganDecoderOutput {
        let mut x = conv_same_forward(&self.conv_in, z);
        for block in &self.mid {
            x = block.forward(x);
        }
        let mid = x.clone();
        let mut up = Vec::with_capacity(self.up.len());
        for level in self.up.iter().rev() {
            for block in &level.block {
                x = block.forward(x);
            }
            if let Some(conv) = &level.upsample_conv {
                x = conv_same_forward(conv, upsample_nearest2x(x));
            }
            up.push(x.clone());
        }
        let out = conv_same_forward(&self.conv_out, titok_kernels::group_norm_silu(&self.norm_out, x, true));
        VqganDecoderOutput { mid, up, out }
    }

    /// # Shapes
    /// - `z`: `[batch, z_channels, h, w]` -> `[batch, 3, h·f, w·f]`, unclamped (target `[0, 1]`)
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        self.forward_with_intermediates(z).out
    }
}

/// Nearest-neighbour x2 up-sampling, `[b, c, h, w] -> [b, c, 2h, 2w]`.
pub fn upsample_nearest2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
}

/// The MaskGIT-VQGAN as a standalone model (`PretrainedTokenizer`): encoder, quantizer and
/// decoder with the official teacher keys (`encoder.*`, `decoder.*`, `quantize.embedding.weight`).
#[derive(Module, Debug)]
pub struct MaskgitVqgan {
    /// Conv encoder.
    pub encoder: VqganEncoder,
    /// Plain squared-L2 codebook (no normalisation).
    pub quantize: VectorQuantizer,
    /// Conv decoder.
    pub decoder: VqganDecoder,
}

impl MaskgitVqgan {
    /// A randomly initialised model.
    pub fn new(c: &VqganConfig, device: &Device) -> Self {
        Self {
            encoder: VqganEncoder::new(c, device),
            quantize: VectorQuantizer::new(c.codebook_size, c.z_channels, false, c.commitment_cost, device),
            decoder: VqganDecoder::new(c, device),
        }
    }

    /// Encodes and quantizes: `[batch, 3, H, W]` in `[0, 1]` -> hard codes
    /// `[batch, z_channels, h, w]` (straight-through) and ids `[batch, h·w]` (row-major).
    pub fn quantize_latents(&self, latents: Tensor<4>) -> (Tensor<4>, QuantizerOutput) {
        let [b, c, h, w] = latents.dims();
        // The quantizer works on the official token layout [b, c, 1, n].
        let q = self.quantize.forward(latents.reshape([b, c, 1, h * w]));
        (q.z_quantized.clone().reshape([b, c, h, w]), q)
    }

    /// Code ids of images, `[batch, 3, H, W]` in `[0, 1]` -> `[batch, (H/f)·(W/f)]`, row-major.
    pub fn encode(&self, pixels: Tensor<4>) -> Tensor<2, Int> {
        let latents = self.encoder.forward(pixels);
        self.quantize_latents(latents).1.indices
    }

    /// Codes of ids as a latent map: `[batch, n]` with `n` a square -> `[batch, z, √n, √n]`.
    pub fn codes_to_latents(&self, ids: Tensor<2, Int>) -> Tensor<4> {
        let [b, n] = ids.dims();
        let side = (n as f64).sqrt().round() as usize;
        self.quantize.decode_tokens(ids).reshape([b, self.quantize.token_size(), side, side])
    }

    /// Pixels of code ids, `[batch, n]` -> `[batch, 3, √n·f, √n·f]` clamped to `[0, 1]`.
    pub fn decode_codes(&self, ids: Tensor<2, Int>) -> Tensor<4> {
        self.decoder.forward(self.codes_to_latents(ids)).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::silu;

    /// With `in != out` the shortcut conv reads the block's own output: `y = h + nin(h)`, and
    /// the input is not added back.
    #[test]
    fn nin_shortcut_applies_to_the_block_output() {
        let device = Device::flex();
        let block = ResBlock::new(32, 64, 32, &device);
        let x = Tensor::<4>::random([1, 32, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let h = block.conv1.forward(silu(block.norm1.forward(x.clone())));
        let h = block.conv2.forward(silu(block.norm2.forward(h)));
        let nin = block.nin_shortcut.as_ref().expect("channels change");
        let expected = h.clone() + nin.forward(h);
        let diff = (block.forward(x) - expected).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "max diff {diff}");
        assert!(ResBlock::new(32, 32, 32, &device).nin_shortcut.is_none());
    }

    #[test]
    fn nearest_upsampling_repeats_pixels() {
        let device = Device::flex();
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device);
        let y = upsample_nearest2x(x).try_into_vec_as::<f32>().unwrap();
        assert_eq!(y, vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]);
    }
}

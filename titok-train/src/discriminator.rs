//! The MaskBit-style blur-pool discriminator of the official stage-2 / single-stage recipes.
//!
//! Source: `modeling/modules/discriminator.py::NLayerDiscriminator` (official TiTok code);
//! `../shared/REFERENCE.md` §7b, fixture README §8 (`discriminator_tiny`).
//!
//! `block_in` = 5x5 conv + LeakyReLU(0.1); `num_stages` stages of 3x3 conv -> BlurPool
//! (depthwise fixed `outer(t, t) / Σ` kernel, stride 2) -> GroupNorm(32, eps 1e-5) ->
//! LeakyReLU(0.1), channels `hidden · [1, 1, 2, 4, ..]`; AdaptiveMaxPool2d to 16x16;
//! `to_logits` = 1x1 conv + LeakyReLU(0.1) + 5x5 conv -> `[batch, 1, 16, 16]`. Every conv has a
//! bias and TF "SAME" padding. The blur padding is always computed for a 4-tap kernel (as in
//! the official code, whatever `blur_kernel_size` is).

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::leaky_relu;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use titok_model::checkpoint::{KeyMap, KeyRule, load_safetensors};
use titok_model::{Result, TitokError};

/// LeakyReLU slope of every activation.
pub const LEAKY_SLOPE: f64 = 0.1;
/// GroupNorm groups of every stage.
pub const GN_GROUPS: usize = 32;
/// GroupNorm epsilon (PyTorch's default; the VQGAN uses 1e-6).
pub const GN_EPS: f64 = 1e-5;
/// Side of the adaptive max pool output and of the logit map.
pub const LOGIT_SIZE: usize = 16;

/// Discriminator hyper-parameters (the official constructor's arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscriminatorConfig {
    /// Input image channels (3).
    pub num_channels: usize,
    /// Width of the stem; stage `i` outputs `hidden · 2^i` channels. A multiple of 32.
    pub hidden_channels: usize,
    /// Number of down-sampling stages (≥ 1).
    pub num_stages: usize,
    /// BlurPool down-sampling (official) instead of 2x2 average pooling.
    pub blur_resample: bool,
    /// Taps of the binomial blur kernel: 3 `[1,2,1]`, 4 `[1,3,3,1]` or 5 `[1,4,6,4,1]`.
    pub blur_kernel_size: usize,
}

impl DiscriminatorConfig {
    /// The official discriminator: hidden 128, 3 stages, 4-tap blur (REFERENCE §7b).
    pub fn official() -> Self {
        Self { num_channels: 3, hidden_channels: 128, num_stages: 3, blur_resample: true, blur_kernel_size: 4 }
    }

    /// The fixture size (`discriminator_tiny`): hidden 32, otherwise official.
    pub fn tiny() -> Self {
        Self { hidden_channels: 32, ..Self::official() }
    }

    /// Output channels of stage `i`.
    pub fn stage_channels(&self, i: usize) -> usize {
        self.hidden_channels << i
    }

    /// # Errors
    /// [`TitokError::Config`] for zero stages/channels, a width that 32 groups cannot split,
    /// or a blur kernel outside 3..=5.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TitokError::Config(format!("discriminator: {m}")));
        if self.num_stages == 0 || self.num_channels == 0 {
            return bad(format!("needs ≥ 1 stage and ≥ 1 input channel, got {self:?}"));
        }
        if self.hidden_channels == 0 || !self.hidden_channels.is_multiple_of(GN_GROUPS) {
            return bad(format!(
                "hidden_channels {} must be a positive multiple of the {GN_GROUPS} GroupNorm groups",
                self.hidden_channels
            ));
        }
        if self.blur_resample && !(3..=5).contains(&self.blur_kernel_size) {
            return bad(format!("blur_kernel_size {} must be 3, 4 or 5", self.blur_kernel_size));
        }
        Ok(())
    }
}

/// Official key <-> Burn path table of discriminator state dicts (`nn.Sequential` indices
/// become field names).
pub const DISCRIMINATOR_KEYS: KeyMap = KeyMap {
    family: "NLayerDiscriminator",
    rules: &[
        // Stem `block_in = Sequential(conv, leaky_relu)`.
        KeyRule { official: "block_in.0", burn: "block_in" },
        // Head `to_logits = Sequential(conv1x1, leaky_relu, conv5x5)`.
        KeyRule { official: "to_logits.0", burn: "to_logits_hidden" },
        KeyRule { official: "to_logits.2", burn: "to_logits_out" },
        // Stages `blocks.{i} = Sequential(conv, blur, group_norm, leaky_relu)`; these run after
        // the two rules above so only stage keys are left with a bare index.
        KeyRule { official: "0.weight", burn: "conv.weight" },
        KeyRule { official: "0.bias", burn: "conv.bias" },
        // The blur kernel buffer `[1, 1, k, k]`.
        KeyRule { official: "1.kernel", burn: "blur.kernel" },
        KeyRule { official: "2.weight", burn: "norm.weight" },
        KeyRule { official: "2.bias", burn: "norm.bias" },
    ],
    ignored: &[],
};

/// A stride-1 conv with bias and TF "SAME" padding (`k − 1` split as `⌊(k−1)/2⌋` before).
fn conv_same(cin: usize, cout: usize, k: usize, device: &Device) -> Conv2d {
    let before = (k - 1) / 2;
    let after = k - 1 - before;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(before, before, after, after))
        .init(device)
}

/// The normalised binomial kernel `outer(t, t) / Σ` of `taps` taps, `[1, 1, taps, taps]`.
///
/// # Panics
/// For `taps` outside 3..=5 (validated by [`DiscriminatorConfig::validate`]).
pub fn blur_kernel(taps: usize, device: &Device) -> Tensor<4> {
    let t: &[f32] = match taps {
        3 => &[1.0, 2.0, 1.0],
        4 => &[1.0, 3.0, 3.0, 1.0],
        5 => &[1.0, 4.0, 6.0, 4.0, 1.0],
        _ => panic!("blur kernel size {taps} not in 3..=5"),
    };
    let sum: f32 = t.iter().sum::<f32>().powi(2);
    let values: Vec<f32> = t.iter().flat_map(|a| t.iter().map(move |b| a * b / sum)).collect();
    Tensor::from_data(TensorData::new(values, [1, 1, taps, taps]), device)
}

/// TF "SAME" padding `(before, after)` of a stride-2, 4-tap window over `size` pixels (the
/// official `BlurBlock.calc_same_pad(i, k=4, s=2)`).
fn blur_same_pad(size: usize) -> (usize, usize) {
    let total = ((size.div_ceil(2) - 1) * 2 + 4).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Depthwise blur + stride-2 down-sampling with a fixed kernel (official `BlurBlock`).
#[derive(Module, Debug)]
pub struct BlurPool {
    /// The fixed kernel `[1, 1, k, k]` (official buffer `kernel`): loaded with the weights but
    /// never trained (it does not require gradients, so optimizers leave it alone).
    pub kernel: Param<Tensor<4>>,
}

impl BlurPool {
    /// A blur with the official `taps`-tap binomial kernel.
    pub fn new(taps: usize, device: &Device) -> Self {
        Self { kernel: Param::from_tensor(blur_kernel(taps, device)).set_require_grad(false) }
    }

    /// # Shapes
    /// - `x`: `[batch, C, H, W]` -> `[batch, C, ⌈H/2⌉, ⌈W/2⌉]` (4 taps)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, c, h, w] = x.dims();
        let kernel = self.kernel.val(); // [1, 1, k, k]
        let [_, _, kh, kw] = kernel.dims();
        let weight = kernel.expand([c, 1, kh, kw]); // [C, 1, k, k]
        let options = ConvOptions::new_with_padding([2, 2], [blur_same_pad(h), blur_same_pad(w)], [1, 1], c);
        conv2d(x, weight, None, options)
    }
}

/// One down-sampling stage (official `blocks.{i}`).
#[derive(Module, Debug)]
pub struct DiscriminatorStage {
    /// 3x3 conv `in -> out` (official `blocks.{i}.0`).
    pub conv: Conv2d,
    /// BlurPool (official `blocks.{i}.1`); `None` means 2x2 average pooling.
    pub blur: Option<BlurPool>,
    /// GroupNorm(32, out, eps 1e-5) (official `blocks.{i}.2`).
    pub norm: GroupNorm,
}

impl DiscriminatorStage {
    /// # Shapes
    /// - `x`: `[batch, in, H, W]` -> `[batch, out, ⌈H/2⌉, ⌈W/2⌉]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.conv.forward(x);
        let h = match &self.blur {
            Some(blur) => blur.forward(h),
            None => avg_pool2d(h, AvgPoolOptions::new([2, 2]).with_stride([2, 2])),
        };
        leaky_relu(self.norm.forward(h), LEAKY_SLOPE)
    }
}

/// Named intermediate outputs of a discriminator pass (for parity tests and diagnostics).
#[derive(Debug, Clone)]
pub struct DiscriminatorOutput {
    /// Output of every stage, `[batch, hidden·2^i, H/2^(i+1), W/2^(i+1)]` (rounded up).
    pub stages: Vec<Tensor<4>>,
    /// After the adaptive max pool, `[batch, C_last, 16, 16]`.
    pub pooled: Tensor<4>,
    /// Logits `[batch, 1, 16, 16]` (unbounded; > 0 means "real").
    pub logits: Tensor<4>,
}

/// The blur-pool discriminator; parameter names follow the official state dict through
/// [`DISCRIMINATOR_KEYS`].
#[derive(Module, Debug)]
pub struct Discriminator {
    /// 5x5 stem conv `channels -> hidden` (official `block_in.0`).
    pub block_in: Conv2d,
    /// The down-sampling stages (official `blocks.{i}`).
    pub blocks: Vec<DiscriminatorStage>,
    /// 1x1 head conv `C_last -> C_last` (official `to_logits.0`).
    pub to_logits_hidden: Conv2d,
    /// 5x5 head conv `C_last -> 1` (official `to_logits.2`).
    pub to_logits_out: Conv2d,
    /// The configuration it was built from.
    #[module(skip)]
    pub config: DiscriminatorConfig,
}

impl Discriminator {
    /// A randomly initialised discriminator (Burn's default init; the official code uses
    /// PyTorch's defaults as well).
    ///
    /// # Errors
    /// [`TitokError::Config`] when the configuration does not validate.
    pub fn new(config: &DiscriminatorConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let blocks = (0..config.num_stages)
            .map(|i| {
                let cin = if i == 0 { config.hidden_channels } else { config.stage_channels(i - 1) };
                let cout = config.stage_channels(i);
                DiscriminatorStage {
                    conv: conv_same(cin, cout, 3, device),
                    blur: config.blur_resample.then(|| BlurPool::new(config.blur_kernel_size, device)),
                    norm: GroupNormConfig::new(GN_GROUPS, cout).with_epsilon(GN_EPS).init(device),
                }
            })
            .collect();
        let last = config.stage_channels(config.num_stages - 1);
        Ok(Self {
            block_in: conv_same(config.num_channels, config.hidden_channels, 5, device),
            blocks,
            to_logits_hidden: conv_same(last, last, 1, device),
            to_logits_out: conv_same(last, 1, 5, device),
            config: config.clone(),
        })
    }

    /// Loads an official state dict (safetensors with the plain `state_dict` keys) strictly.
    ///
    /// # Errors
    /// [`TitokError::Config`] for a bad configuration, [`TitokError::CheckpointRead`] /
    /// [`TitokError::CheckpointMismatch`] when the file does not fit it.
    pub fn load(config: &DiscriminatorConfig, path: &Path, device: &Device) -> Result<Self> {
        load_safetensors(Self::new(config, device)?, path, &DISCRIMINATOR_KEYS)
    }

    /// Logits of images.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, H, W]`, images in `[0, 1]` -> `[batch, 1, 16, 16]`
    ///
    /// # Errors
    /// [`TitokError::Input`] when the channel count differs from the configuration.
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        Ok(self.forward_with_intermediates(x)?.logits)
    }

    /// Logits of images, keeping the intermediates.
    ///
    /// # Errors
    /// As [`Discriminator::forward`].
    pub fn forward_with_intermediates(&self, x: Tensor<4>) -> Result<DiscriminatorOutput> {
        let [b, c, h, w] = x.dims();
        if c != self.config.num_channels || b == 0 || h == 0 || w == 0 {
            return Err(TitokError::Input(format!(
                "discriminator expects [batch, {}, H, W] images, got {:?}",
                self.config.num_channels,
                x.dims()
            )));
        }
        let mut hidden = leaky_relu(self.block_in.forward(x), LEAKY_SLOPE); // [b, hidden, H, W]
        let mut stages = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            hidden = block.forward(hidden); // [b, hidden·2^i, H/2^(i+1), W/2^(i+1)]
            stages.push(hidden.clone());
        }
        let pooled = adaptive_max_pool2d(hidden, [LOGIT_SIZE, LOGIT_SIZE]); // [b, C, 16, 16]
        let logits = leaky_relu(self.to_logits_hidden.forward(pooled.clone()), LEAKY_SLOPE);
        let logits = self.to_logits_out.forward(logits); // [b, 1, 16, 16]
        Ok(DiscriminatorOutput { stages, pooled, logits })
    }
}

/// PyTorch's `AdaptiveMaxPool2d`: output cell `i` of an axis of length `n` takes the max over
/// input indices `⌊i·n/out⌋ .. ⌈(i+1)·n/out⌉`. Smaller inputs are up-sampled by repetition,
/// others get overlapping bins unless `out` divides `n` (then it is a plain max pool).
///
/// # Shapes
/// - `x`: `[batch, C, H, W]` -> `[batch, C, out[0], out[1]]`
pub fn adaptive_max_pool2d(x: Tensor<4>, out: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if h >= out[0] && w >= out[1] && h % out[0] == 0 && w % out[1] == 0 {
        let k = [h / out[0], w / out[1]];
        return max_pool2d(x, MaxPoolOptions::new(k).with_stride(k));
    }
    let x = adaptive_max_pool_axis(x, 2, out[0]);
    adaptive_max_pool_axis(x, 3, out[1])
}

/// Adaptive max pooling along one axis: the max over `width` gathers, where gather `j` takes
/// index `min(start_i + j, end_i − 1)` for every output cell `i`.
fn adaptive_max_pool_axis(x: Tensor<4>, dim: usize, out: usize) -> Tensor<4> {
    let n = x.dims()[dim];
    let bins: Vec<(usize, usize)> = (0..out).map(|i| (i * n / out, ((i + 1) * n).div_ceil(out))).collect();
    let width = bins.iter().map(|(s, e)| e - s).max().unwrap_or(1);
    let device = x.device();
    (0..width)
        .map(|j| {
            let idx: Vec<i64> = bins.iter().map(|&(s, e)| (s + j).min(e - 1) as i64).collect();
            x.clone().select(dim, Tensor::<1, Int>::from_data(TensorData::new(idx, [out]), &device))
        })
        .reduce(Tensor::max_pair)
        .expect("at least one gather")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn keymap_names_every_parameter_officially() {
        let device = Device::flex();
        let d = Discriminator::new(&DiscriminatorConfig::tiny(), &device).unwrap();
        let expected = titok_model::checkpoint::expected_tensors(&d, &DISCRIMINATOR_KEYS);
        let names: Vec<&str> = expected.keys().map(String::as_str).collect();
        let mut want = vec!["block_in.0.bias", "block_in.0.weight"];
        let stage: Vec<String> = (0..3)
            .flat_map(|i| ["0.bias", "0.weight", "1.kernel", "2.bias", "2.weight"].map(|s| format!("blocks.{i}.{s}")))
            .collect();
        want.extend(stage.iter().map(String::as_str));
        want.extend(["to_logits.0.bias", "to_logits.0.weight", "to_logits.2.bias", "to_logits.2.weight"]);
        want.sort();
        assert_eq!(names, want);
        assert_eq!(expected["blocks.2.0.weight"], [128, 64, 3, 3]);
        assert_eq!(expected["blocks.1.1.kernel"], [1, 1, 4, 4]);
    }

    #[test]
    fn blur_kernels_are_normalised_binomials() {
        let device = Device::flex();
        let k = blur_kernel(4, &device).try_into_vec_as::<f32>().unwrap();
        assert_eq!(k[0], 1.0 / 64.0);
        assert_eq!(k[5], 9.0 / 64.0);
        for taps in 3..=5 {
            let s = blur_kernel(taps, &device).sum().into_scalar::<f32>();
            assert!((s - 1.0).abs() < 1e-6);
        }
        assert_eq!(blur_same_pad(64), (1, 1));
        assert_eq!(blur_same_pad(5), (1, 2));
    }

    #[test]
    fn adaptive_max_pool_matches_the_bin_formula() {
        let device = Device::flex();
        for (h, w) in [(5usize, 7usize), (8, 3), (20, 20), (32, 32), (16, 40), (8, 12), (24, 36)] {
            let x = Tensor::<4>::random([1, 2, h, w], Distribution::Normal(0.0, 1.0), &device);
            let got = adaptive_max_pool2d(x.clone(), [4, 6]).try_into_vec_as::<f32>().unwrap();
            let v = x.try_into_vec_as::<f32>().unwrap();
            let mut want = Vec::new();
            for c in 0..2 {
                for i in 0..4 {
                    for j in 0..6 {
                        let (r0, r1) = (i * h / 4, ((i + 1) * h).div_ceil(4));
                        let (c0, c1) = (j * w / 6, ((j + 1) * w).div_ceil(6));
                        let mut m = f32::NEG_INFINITY;
                        for r in r0..r1 {
                            for q in c0..c1 {
                                m = m.max(v[(c * h + r) * w + q]);
                            }
                        }
                        want.push(m);
                    }
                }
            }
            assert_eq!(got, want, "{h}x{w}");
        }
    }

    #[test]
    fn shapes_and_errors() {
        let device = Device::flex();
        let d = Discriminator::new(&DiscriminatorConfig::tiny(), &device).unwrap();
        let x = Tensor::<4>::random([2, 3, 37, 50], Distribution::Uniform(0.0, 1.0), &device);
        let out = d.forward_with_intermediates(x).unwrap();
        assert_eq!(out.stages[0].dims(), [2, 32, 19, 25]);
        assert_eq!(out.stages[2].dims(), [2, 128, 5, 7]);
        assert_eq!(out.logits.dims(), [2, 1, 16, 16]);
        assert!(d.forward(Tensor::<4>::zeros([1, 1, 16, 16], &device)).is_err());
        let avg = DiscriminatorConfig { blur_resample: false, ..DiscriminatorConfig::tiny() };
        let d = Discriminator::new(&avg, &device).unwrap();
        assert_eq!(d.forward(Tensor::<4>::zeros([1, 3, 32, 32], &device)).unwrap().dims(), [1, 1, 16, 16]);
        for bad in [
            DiscriminatorConfig { hidden_channels: 48, ..DiscriminatorConfig::tiny() },
            DiscriminatorConfig { num_stages: 0, ..DiscriminatorConfig::tiny() },
            DiscriminatorConfig { blur_kernel_size: 6, ..DiscriminatorConfig::tiny() },
        ] {
            assert!(matches!(Discriminator::new(&bad, &device), Err(TitokError::Config(_))), "{bad:?}");
        }
    }
}

//! LPIPS v0.1 ("The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
//! Zhang et al., 2018) with an AlexNet or VGG16 backbone: a frozen network usable both as a
//! differentiable training loss (gradients flow to the images) and as an evaluation metric.
//!
//! Source: `richzhang/PerceptualSimilarity` (`lpips` 0.1.4, AlexNet) and the official TiTok
//! `modeling/modules/lpips.py` (VGG16, the stage-2 / single-stage perceptual loss);
//! `../shared/REFERENCE.md` §7b, fixture `../shared/golden/lpips`.
//!
//! Pipeline for images `x` in `[0, 1]`: `x ↦ 2x − 1`, the LPIPS scaling layer
//! `(x − shift) / scale`, the backbone tapped at five ReLUs, per-tap channel unit
//! normalisation `f / (‖f‖₂ + 1e-10)`, squared difference, a learned 1x1 conv to one channel
//! (no bias), spatial mean, sum over the five taps.
//!
//! Weights: safetensors with torchvision names, `features.{N}.{weight,bias}` for the backbone
//! convs and `lin{i}.model.1.weight` `[1, C_i, 1, 1]` for the linear heads
//! (`../shared/weights/lpips_alexnet.safetensors`; a VGG16 file has VGG's 13 convs).

use std::ops::Range;
use std::path::Path;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};
use titok_model::TitokError;
use titok_model::checkpoint::{KeyMap, KeyRule, load_safetensors, read_safetensors_header};

use crate::LossError;

/// LPIPS input shift (applied after mapping `[0, 1]` to `[-1, 1]`).
pub const LPIPS_SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
/// LPIPS input scale.
pub const LPIPS_SCALE: [f32; 3] = [0.458, 0.448, 0.450];
/// Epsilon of the channel unit normalisation.
pub const NORMALIZE_EPS: f64 = 1e-10;

/// The backbone of an LPIPS model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    /// torchvision AlexNet `features`, taps relu1..relu5 (after `features` 1, 4, 7, 9, 11).
    AlexNet,
    /// torchvision VGG16 `features`, taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    /// (after `features` 3, 8, 15, 22, 29).
    Vgg16,
}

/// One backbone conv: torchvision `features` index, channels, kernel, stride, padding.
#[derive(Debug, Clone, Copy)]
struct ConvSpec {
    index: usize,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
}

const fn spec(index: usize, cin: usize, cout: usize, kernel: usize, stride: usize, pad: usize) -> ConvSpec {
    ConvSpec { index, cin, cout, kernel, stride, pad }
}

const fn vgg(index: usize, cin: usize, cout: usize) -> ConvSpec {
    spec(index, cin, cout, 3, 1, 1)
}

const ALEXNET_CONVS: [ConvSpec; 5] = [
    spec(0, 3, 64, 11, 4, 2),
    spec(3, 64, 192, 5, 1, 2),
    spec(6, 192, 384, 3, 1, 1),
    spec(8, 384, 256, 3, 1, 1),
    spec(10, 256, 256, 3, 1, 1),
];

const VGG16_CONVS: [ConvSpec; 13] = [
    vgg(0, 3, 64),
    vgg(2, 64, 64),
    vgg(5, 64, 128),
    vgg(7, 128, 128),
    vgg(10, 128, 256),
    vgg(12, 256, 256),
    vgg(14, 256, 256),
    vgg(17, 256, 512),
    vgg(19, 512, 512),
    vgg(21, 512, 512),
    vgg(24, 512, 512),
    vgg(26, 512, 512),
    vgg(28, 512, 512),
];

/// One tap stage: an optional max pool `(kernel, stride)` first, then the convs (each followed
/// by a ReLU); the stage output is the tapped feature map.
type Stage = (Option<(usize, usize)>, Range<usize>);

const ALEXNET_STAGES: [Stage; 5] =
    [(None, 0..1), (Some((3, 2)), 1..2), (Some((3, 2)), 2..3), (None, 3..4), (None, 4..5)];

const VGG16_STAGES: [Stage; 5] =
    [(None, 0..2), (Some((2, 2)), 2..4), (Some((2, 2)), 4..7), (Some((2, 2)), 7..10), (Some((2, 2)), 10..13)];

/// Official key <-> Burn path table of LPIPS-AlexNet files.
pub const LPIPS_ALEXNET_KEYS: KeyMap = KeyMap {
    family: "LPIPS AlexNet",
    rules: &[
        // torchvision `features.N` convs (ReLUs and pools in between have no parameters) ...
        KeyRule { official: "features.0", burn: "convs.0" },
        KeyRule { official: "features.3", burn: "convs.1" },
        KeyRule { official: "features.6", burn: "convs.2" },
        KeyRule { official: "features.8", burn: "convs.3" },
        KeyRule { official: "features.10", burn: "convs.4" },
        // ... and the 1x1 heads `lin{i}.model.1` (`model.0` is the inactive dropout).
        KeyRule { official: "lin0.model.1", burn: "lin.0" },
        KeyRule { official: "lin1.model.1", burn: "lin.1" },
        KeyRule { official: "lin2.model.1", burn: "lin.2" },
        KeyRule { official: "lin3.model.1", burn: "lin.3" },
        KeyRule { official: "lin4.model.1", burn: "lin.4" },
    ],
    ignored: &[],
};

/// Official key <-> Burn path table of LPIPS-VGG16 files (torchvision layout).
pub const LPIPS_VGG16_KEYS: KeyMap = KeyMap {
    family: "LPIPS VGG16",
    rules: &[
        // torchvision `features.N`: the 13 convs of VGG16 ...
        KeyRule { official: "features.0", burn: "convs.0" },
        KeyRule { official: "features.2", burn: "convs.1" },
        KeyRule { official: "features.5", burn: "convs.2" },
        KeyRule { official: "features.7", burn: "convs.3" },
        KeyRule { official: "features.10", burn: "convs.4" },
        KeyRule { official: "features.12", burn: "convs.5" },
        KeyRule { official: "features.14", burn: "convs.6" },
        KeyRule { official: "features.17", burn: "convs.7" },
        KeyRule { official: "features.19", burn: "convs.8" },
        KeyRule { official: "features.21", burn: "convs.9" },
        KeyRule { official: "features.24", burn: "convs.10" },
        KeyRule { official: "features.26", burn: "convs.11" },
        KeyRule { official: "features.28", burn: "convs.12" },
        // ... and the 1x1 heads `lin{i}.model.1` (`model.0` is the inactive dropout).
        KeyRule { official: "lin0.model.1", burn: "lin.0" },
        KeyRule { official: "lin1.model.1", burn: "lin.1" },
        KeyRule { official: "lin2.model.1", burn: "lin.2" },
        KeyRule { official: "lin3.model.1", burn: "lin.3" },
        KeyRule { official: "lin4.model.1", burn: "lin.4" },
    ],
    ignored: &[],
};

impl LpipsNet {
    /// Channels of the five tapped layers.
    pub fn tap_channels(self) -> [usize; 5] {
        match self {
            Self::AlexNet => [64, 192, 384, 256, 256],
            Self::Vgg16 => [64, 128, 256, 512, 512],
        }
    }

    /// Smallest image side the backbone accepts (every tap at least 1x1).
    pub fn min_size(self) -> usize {
        match self {
            Self::AlexNet => 31,
            Self::Vgg16 => 16,
        }
    }

    /// The key-mapping table of this backbone's weight files.
    pub fn keymap(self) -> &'static KeyMap {
        match self {
            Self::AlexNet => &LPIPS_ALEXNET_KEYS,
            Self::Vgg16 => &LPIPS_VGG16_KEYS,
        }
    }

    /// The backbone of a weights file, from its tensor names (`features.28.*` ⇒ VGG16,
    /// `features.10.*` ⇒ AlexNet).
    ///
    /// # Errors
    /// [`TitokError::CheckpointRead`] when the file is unreadable or holds neither.
    pub fn detect(path: &Path) -> Result<Self, TitokError> {
        let header = read_safetensors_header(path)?;
        if header.contains_key("features.28.weight") {
            Ok(Self::Vgg16)
        } else if header.contains_key("features.10.weight") {
            Ok(Self::AlexNet)
        } else {
            Err(TitokError::CheckpointRead {
                path: path.to_path_buf(),
                reason: "not an LPIPS weights file: neither `features.28.weight` (VGG16) nor \
                         `features.10.weight` (AlexNet) is present"
                    .into(),
            })
        }
    }

    /// torchvision `features` indices of the backbone convs, in order.
    pub fn conv_indices(self) -> Vec<usize> {
        self.convs().iter().map(|c| c.index).collect()
    }

    fn convs(self) -> &'static [ConvSpec] {
        match self {
            Self::AlexNet => &ALEXNET_CONVS,
            Self::Vgg16 => &VGG16_CONVS,
        }
    }

    fn stages(self) -> &'static [Stage; 5] {
        match self {
            Self::AlexNet => &ALEXNET_STAGES,
            Self::Vgg16 => &VGG16_STAGES,
        }
    }
}

/// LPIPS distances of image pairs.
#[derive(Debug, Clone)]
pub struct LpipsOutput {
    /// Distance per pair `[batch]` (≥ 0; 0 for identical images).
    pub distance: Tensor<1>,
    /// The five per-layer terms `[batch, 5]`; they sum to `distance`.
    pub per_layer: Tensor<2>,
}

/// An LPIPS model. Its parameters never require gradients (the network is frozen), while the
/// images it compares keep theirs, so it serves as a training loss on an autodiff device.
#[derive(Module, Debug)]
pub struct Lpips {
    /// Backbone convs in order (official `features.{N}`, see [`LpipsNet`]).
    pub convs: Vec<Conv2d>,
    /// The five 1x1 heads `C_i -> 1`, no bias (official `lin{i}.model.1`).
    pub lin: Vec<Conv2d>,
    /// The backbone.
    #[module(skip)]
    pub net: LpipsNet,
}

impl Lpips {
    /// A randomly initialised, frozen model (for tests; load weights for real use).
    pub fn new(net: LpipsNet, device: &Device) -> Self {
        let convs = net
            .convs()
            .iter()
            .map(|c| {
                Conv2dConfig::new([c.cin, c.cout], [c.kernel, c.kernel])
                    .with_stride([c.stride, c.stride])
                    .with_padding(PaddingConfig2d::Explicit(c.pad, c.pad, c.pad, c.pad))
                    .init(device)
            })
            .collect();
        let lin = net
            .tap_channels()
            .iter()
            .map(|&c| Conv2dConfig::new([c, 1], [1, 1]).with_bias(false).init(device))
            .collect();
        Self { convs, lin, net }.no_grad()
    }

    /// Loads a weights file, choosing the backbone from its tensor names
    /// ([`LpipsNet::detect`]); strict: every tensor must be present with its shape and nothing
    /// else may be in the file.
    ///
    /// # Errors
    /// [`TitokError::CheckpointRead`] / [`TitokError::CheckpointMismatch`].
    pub fn load(path: &Path, device: &Device) -> Result<Self, TitokError> {
        Self::load_net(LpipsNet::detect(path)?, path, device)
    }

    /// Loads a weights file of a given backbone, strictly.
    ///
    /// # Errors
    /// [`TitokError::CheckpointRead`] / [`TitokError::CheckpointMismatch`].
    pub fn load_net(net: LpipsNet, path: &Path, device: &Device) -> Result<Self, TitokError> {
        let model = load_safetensors(Self::new(net, device), path, net.keymap())?;
        // Loading keeps each parameter's gradient setting; freeze again to be explicit.
        Ok(model.no_grad())
    }

    /// Distances between image pairs.
    ///
    /// # Shapes
    /// - `a`, `b`: `[batch, 3, H, W]`, RGB in `[0, 1]`, `H, W >= net.min_size()`
    /// - output: [`LpipsOutput`] with `[batch]` and `[batch, 5]`
    ///
    /// # Errors
    /// [`LossError::Input`] when the shapes differ, are not 3-channel or are too small.
    pub fn forward(&self, a: Tensor<4>, b: Tensor<4>) -> Result<LpipsOutput, LossError> {
        self.check_inputs(&a.dims(), &b.dims())?;
        let batch = a.dims()[0];
        // Both images go through the backbone as one batch.
        let feats = self.features(Tensor::cat(vec![a, b], 0)); // 5 x [2·batch, C_i, h_i, w_i]
        let terms = feats
            .into_iter()
            .zip(&self.lin)
            .map(|(f, lin)| {
                let f = normalize_channels(f);
                let fa = f.clone().narrow(0, 0, batch);
                let fb = f.narrow(0, batch, batch);
                let diff = (fa - fb).square(); // [batch, C_i, h_i, w_i]
                let [n, _, h, w] = diff.dims();
                lin.forward(diff).reshape([n, h * w]).mean_dim(1) // [batch, 1]
            })
            .collect::<Vec<_>>();
        let per_layer = Tensor::cat(terms, 1); // [batch, 5]
        let distance = per_layer.clone().sum_dim(1).reshape([batch]);
        Ok(LpipsOutput { distance, per_layer })
    }

    /// Distance per pair, `[batch]`.
    ///
    /// # Errors
    /// As [`Lpips::forward`].
    pub fn distance(&self, a: Tensor<4>, b: Tensor<4>) -> Result<Tensor<1>, LossError> {
        Ok(self.forward(a, b)?.distance)
    }

    /// The training loss: the batch mean of the distances, `[1]`.
    ///
    /// # Errors
    /// As [`Lpips::forward`].
    pub fn loss(&self, a: Tensor<4>, b: Tensor<4>) -> Result<Tensor<1>, LossError> {
        Ok(self.distance(a, b)?.mean())
    }

    /// The five tapped backbone activations (after their ReLU) of images in `[0, 1]`.
    ///
    /// # Shapes
    /// - `x`: `[batch, 3, H, W]` -> 5 x `[batch, C_i, h_i, w_i]`
    pub fn features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut h = scale_input(x);
        let mut taps = Vec::with_capacity(5);
        for (pool, convs) in self.net.stages() {
            if let Some((k, s)) = *pool {
                h = max_pool2d(h, MaxPoolOptions::new([k, k]).with_stride([s, s]));
            }
            for conv in &self.convs[convs.clone()] {
                h = relu(conv.forward(h));
            }
            taps.push(h.clone());
        }
        taps
    }

    fn check_inputs(&self, a: &[usize; 4], b: &[usize; 4]) -> Result<(), LossError> {
        let min = self.net.min_size();
        if a != b || a[1] != 3 || a[0] == 0 || a[2] < min || a[3] < min {
            return Err(LossError::Input(format!(
                "LPIPS ({:?}) compares two [batch, 3, H, W] images of one shape with H, W >= {min}; got {a:?} and {b:?}",
                self.net
            )));
        }
        Ok(())
    }
}

/// `[0, 1]` images to the backbone's input: `2x − 1`, then `(x − shift) / scale`.
fn scale_input(x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let shift = Tensor::<1>::from_floats(LPIPS_SHIFT, &device).reshape([1, 3, 1, 1]);
    let scale = Tensor::<1>::from_floats(LPIPS_SCALE, &device).reshape([1, 3, 1, 1]);
    ((x * 2.0 - 1.0) - shift) / scale
}

/// `f / (sqrt(Σ_c f²) + 1e-10)` over the channel axis.
///
/// A `1e-20` inside the square root keeps the gradient finite where a feature vector is all
/// zero (the official form gives NaN there); it changes no value: for `Σ f² = 0` both give 0,
/// otherwise `Σ f² + 1e-20` rounds to `Σ f²` in f32 unless `Σ f² < 1e-13`.
fn normalize_channels(f: Tensor<4>) -> Tensor<4> {
    let norm = (f.clone().square().sum_dim(1) + 1e-20).sqrt(); // [n, 1, h, w]
    f / (norm + NORMALIZE_EPS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn keymaps_name_every_parameter_officially() {
        let device = Device::flex();
        for (net, n_convs) in [(LpipsNet::AlexNet, 5), (LpipsNet::Vgg16, 13)] {
            let model = Lpips::new(net, &device);
            let expected = titok_model::checkpoint::expected_tensors(&model, net.keymap());
            assert_eq!(expected.len(), 2 * n_convs + 5, "{net:?}");
            for (c, index) in net.convs().iter().zip(net.conv_indices()) {
                assert_eq!(expected[&format!("features.{index}.weight")], [c.cout, c.cin, c.kernel, c.kernel]);
                assert!(expected.contains_key(&format!("features.{index}.bias")));
            }
            for (i, c) in net.tap_channels().iter().enumerate() {
                assert_eq!(expected[&format!("lin{i}.model.1.weight")], [1, *c, 1, 1]);
            }
        }
    }

    #[test]
    fn identical_images_have_zero_distance_and_terms_sum() {
        let device = Device::flex();
        let lpips = Lpips::new(LpipsNet::AlexNet, &device);
        let a = Tensor::<4>::random([2, 3, 40, 40], Distribution::Uniform(0.0, 1.0), &device);
        let b = Tensor::<4>::random([2, 3, 40, 40], Distribution::Uniform(0.0, 1.0), &device);
        let same = lpips.distance(a.clone(), a.clone()).unwrap().abs().max().into_scalar::<f32>();
        assert_eq!(same, 0.0);
        let out = lpips.forward(a, b).unwrap();
        let sum = out.per_layer.sum_dim(1).reshape([2]);
        let diff = (sum - out.distance).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let lpips = Lpips::new(LpipsNet::AlexNet, &device);
        let small = Tensor::<4>::zeros([1, 3, 30, 30], &device);
        assert!(matches!(lpips.forward(small.clone(), small), Err(LossError::Input(_))));
        let a = Tensor::<4>::zeros([1, 3, 32, 32], &device);
        let b = Tensor::<4>::zeros([1, 3, 32, 40], &device);
        assert!(matches!(lpips.forward(a, b), Err(LossError::Input(_))));
        let gray = Tensor::<4>::zeros([1, 1, 32, 32], &device);
        assert!(matches!(lpips.forward(gray.clone(), gray), Err(LossError::Input(_))));
        // The smallest accepted size runs.
        let a = Tensor::<4>::zeros([1, 3, 31, 31], &device);
        assert_eq!(lpips.forward(a.clone(), a).unwrap().per_layer.dims(), [1, 5]);
    }
}

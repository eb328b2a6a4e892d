//! The perceptual loss of the official recipes: LPIPS, the ConvNeXt-S logit loss, or a
//! weighted mix of both, chosen by the official names `"lpips"`, `"convnext_s"` and
//! `"lpips-convnext_s-{a}-{b}"`.
//!
//! Source: `modeling/modules/perceptual_loss.py` of the official TiTok code;
//! `../shared/REFERENCE.md` §7b-7c. The ConvNeXt-S term resizes both images to 224x224
//! (bilinear, antialiased), normalises them with the ImageNet mean/std, runs torchvision's
//! `convnext_small` (IMAGENET1K_V1) and takes the MSE between the two 1000-class logit vectors.
//! No ConvNeXt weights ship with titok-rs: asking for that term without a weights file is a
//! [`LossError::MissingWeights`] error.

use std::path::Path;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use titok_eval::{Filter, resize};
use titok_model::TitokError;
use titok_model::checkpoint::{KeyMap, KeyRule, load_safetensors};

use super::{LossError, Lpips};

/// ImageNet mean of the ConvNeXt input normalisation.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet std of the ConvNeXt input normalisation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Side of the ConvNeXt input.
pub const CONVNEXT_INPUT_SIZE: usize = 224;
/// LayerNorm epsilon of ConvNeXt.
const CONVNEXT_LN_EPS: f64 = 1e-6;

const CONVNEXT_HINT: &str = "pass torchvision's convnext_small IMAGENET1K_V1 state dict saved as \
                             safetensors (keys `features.*`, `classifier.*`); titok-rs ships none";
const LPIPS_HINT: &str = "pass an LPIPS weights file, e.g. ../shared/weights/lpips_alexnet.safetensors";

/// Which perceptual terms to use and how to mix them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PerceptualKind {
    /// LPIPS only (`"lpips"`).
    Lpips,
    /// ConvNeXt-S logit MSE only (`"convnext_s"`).
    ConvNextS,
    /// `(a·LPIPS + b·ConvNeXt) / (a + b)` (`"lpips-convnext_s-{a}-{b}"`).
    Mixed {
        /// `a`.
        lpips_weight: f64,
        /// `b`.
        convnext_weight: f64,
    },
}

impl PerceptualKind {
    /// Whether the LPIPS term is used.
    pub fn uses_lpips(&self) -> bool {
        !matches!(self, Self::ConvNextS)
    }

    /// Whether the ConvNeXt-S term is used.
    pub fn uses_convnext(&self) -> bool {
        !matches!(self, Self::Lpips)
    }

    /// `(lpips, convnext)` mixing weights, normalised to sum to 1.
    pub fn weights(&self) -> (f64, f64) {
        match *self {
            Self::Lpips => (1.0, 0.0),
            Self::ConvNextS => (0.0, 1.0),
            Self::Mixed { lpips_weight: a, convnext_weight: b } => (a / (a + b), b / (a + b)),
        }
    }
}

impl FromStr for PerceptualKind {
    type Err = LossError;

    /// Parses an official `perceptual_loss` name.
    fn from_str(name: &str) -> Result<Self, LossError> {
        let bad = || {
            LossError::Input(format!(
                "unknown perceptual loss `{name}`: expected `lpips`, `convnext_s` or `lpips-convnext_s-A-B`"
            ))
        };
        match name {
            "lpips" => Ok(Self::Lpips),
            "convnext_s" => Ok(Self::ConvNextS),
            _ => {
                let rest = name.strip_prefix("lpips-convnext_s-").ok_or_else(bad)?;
                let (a, b) = rest.split_once('-').ok_or_else(bad)?;
                let (a, b): (f64, f64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if !(a >= 0.0 && b >= 0.0 && a + b > 0.0) {
                    return Err(bad());
                }
                Ok(Self::Mixed { lpips_weight: a, convnext_weight: b })
            }
        }
    }
}

/// ConvNeXt stage depths and widths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvNextConfig {
    /// Blocks per stage.
    pub depths: [usize; 4],
    /// Channels per stage.
    pub dims: [usize; 4],
    /// Classifier outputs.
    pub num_classes: usize,
}

impl ConvNextConfig {
    /// torchvision `convnext_small`: depths (3, 3, 27, 3), widths (96, 192, 384, 768), 1000 classes.
    pub fn small() -> Self {
        Self { depths: [3, 3, 27, 3], dims: [96, 192, 384, 768], num_classes: 1000 }
    }
}

/// Official key <-> Burn path table of torchvision ConvNeXt state dicts.
pub const CONVNEXT_KEYS: KeyMap = KeyMap {
    family: "torchvision ConvNeXt",
    rules: &[
        // Stem `features.0 = Sequential(conv 4x4 s4, LayerNorm2d)`.
        KeyRule { official: "features.0.0", burn: "stem_conv" },
        KeyRule { official: "features.0.1", burn: "stem_norm" },
        // Down-sampling `features.{2,4,6} = Sequential(LayerNorm2d, conv 2x2 s2)`.
        KeyRule { official: "features.2.0", burn: "down.0.norm" },
        KeyRule { official: "features.2.1", burn: "down.0.conv" },
        KeyRule { official: "features.4.0", burn: "down.1.norm" },
        KeyRule { official: "features.4.1", burn: "down.1.conv" },
        KeyRule { official: "features.6.0", burn: "down.2.norm" },
        KeyRule { official: "features.6.1", burn: "down.2.conv" },
        // Stages `features.{1,3,5,7}.{j}` of CNBlocks.
        KeyRule { official: "features.1", burn: "stages.0" },
        KeyRule { official: "features.3", burn: "stages.1" },
        KeyRule { official: "features.5", burn: "stages.2" },
        KeyRule { official: "features.7", burn: "stages.3" },
        // CNBlock `block = Sequential(dwconv, permute, LayerNorm, Linear, GELU, Linear, permute)`.
        KeyRule { official: "block.0", burn: "dwconv" },
        KeyRule { official: "block.2", burn: "norm" },
        KeyRule { official: "block.3", burn: "pwconv1" },
        KeyRule { official: "block.5", burn: "pwconv2" },
        // Head `classifier = Sequential(LayerNorm2d, Flatten, Linear)`.
        KeyRule { official: "classifier.0", burn: "head_norm" },
        KeyRule { official: "classifier.2", burn: "head" },
    ],
    ignored: &[],
};

/// A ConvNeXt block: `x + γ · pw2(gelu(pw1(LN(dw7x7(x)))))`.
#[derive(Module, Debug)]
pub struct CnBlock {
    /// Depthwise 7x7 conv with bias.
    pub dwconv: Conv2d,
    /// LayerNorm over channels.
    pub norm: LayerNorm,
    /// `dim -> 4·dim`.
    pub pwconv1: Linear,
    /// `4·dim -> dim`.
    pub pwconv2: Linear,
    /// Per-channel layer scale `[dim, 1, 1]`.
    pub layer_scale: Param<Tensor<3>>,
}

impl CnBlock {
    fn new(dim: usize, device: &Device) -> Self {
        Self {
            dwconv: Conv2dConfig::new([dim, dim], [7, 7])
                .with_groups(dim)
                .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                .init(device),
            norm: LayerNormConfig::new(dim).with_epsilon(CONVNEXT_LN_EPS).init(device),
            pwconv1: LinearConfig::new(dim, 4 * dim).init(device),
            pwconv2: LinearConfig::new(4 * dim, dim).init(device),
            layer_scale: Param::from_tensor(Tensor::full([dim, 1, 1], 1e-6, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, dim, h, w]` -> same
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.dwconv.forward(x.clone()).permute([0, 2, 3, 1]); // [b, h, w, dim]
        let h = self.pwconv2.forward(gelu(self.pwconv1.forward(self.norm.forward(h))));
        let h = h.permute([0, 3, 1, 2]); // [b, dim, h, w]
        x + h * self.layer_scale.val().unsqueeze::<4>()
    }
}

/// A stage transition: LayerNorm2d then a 2x2 stride-2 conv.
#[derive(Module, Debug)]
pub struct Downsample {
    /// LayerNorm over channels.
    pub norm: LayerNorm,
    /// 2x2 stride-2 conv `dim_in -> dim_out`.
    pub conv: Conv2d,
}

/// torchvision ConvNeXt (classification), the network of the `convnext_s` perceptual term.
#[derive(Module, Debug)]
pub struct ConvNext {
    /// 4x4 stride-4 patchify conv `3 -> dims[0]`.
    pub stem_conv: Conv2d,
    /// LayerNorm2d after the stem.
    pub stem_norm: LayerNorm,
    /// Transitions before stages 1..3.
    pub down: Vec<Downsample>,
    /// The four stages of blocks.
    pub stages: Vec<Vec<CnBlock>>,
    /// LayerNorm2d on the pooled features.
    pub head_norm: LayerNorm,
    /// Classifier `dims[3] -> num_classes`.
    pub head: Linear,
}

/// LayerNorm over the channel axis of an NCHW map (torchvision `LayerNorm2d`).
fn layer_norm_2d(norm: &LayerNorm, x: Tensor<4>) -> Tensor<4> {
    norm.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}

impl ConvNext {
    /// A randomly initialised, frozen network (layer scale 1e-6 as in torchvision).
    pub fn new(config: &ConvNextConfig, device: &Device) -> Self {
        let d = config.dims;
        let ln = |c: usize| LayerNormConfig::new(c).with_epsilon(CONVNEXT_LN_EPS).init(device);
        Self {
            stem_conv: Conv2dConfig::new([3, d[0]], [4, 4]).with_stride([4, 4]).init(device),
            stem_norm: ln(d[0]),
            down: (1..4)
                .map(|i| Downsample {
                    norm: ln(d[i - 1]),
                    conv: Conv2dConfig::new([d[i - 1], d[i]], [2, 2]).with_stride([2, 2]).init(device),
                })
                .collect(),
            stages: (0..4).map(|i| (0..config.depths[i]).map(|_| CnBlock::new(d[i], device)).collect()).collect(),
            head_norm: ln(d[3]),
            head: LinearConfig::new(d[3], config.num_classes).init(device),
        }
        .no_grad()
    }

    /// Loads a torchvision state dict (safetensors) strictly and freezes the network.
    ///
    /// # Errors
    /// [`TitokError::CheckpointRead`] / [`TitokError::CheckpointMismatch`].
    pub fn load(config: &ConvNextConfig, path: &Path, device: &Device) -> Result<Self, TitokError> {
        Ok(load_safetensors(Self::new(config, device), path, &CONVNEXT_KEYS)?.no_grad())
    }

    /// Class logits of normalised images.
    ///
    /// # Shapes
    /// - `x`: `[batch, 3, H, W]` (ImageNet-normalised, `H, W` multiples of 32) -> `[batch, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = layer_norm_2d(&self.stem_norm, self.stem_conv.forward(x)); // [b, d0, H/4, W/4]
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                let down = &self.down[i - 1];
                h = down.conv.forward(layer_norm_2d(&down.norm, h)); // [b, d_i, H/2^(i+2), ..]
            }
            for block in stage {
                h = block.forward(h);
            }
        }
        let [b, c, hh, ww] = h.dims();
        let pooled = h.reshape([b, c, hh * ww]).mean_dim(2).reshape([b, c]); // [b, d3]
        self.head.forward(self.head_norm.forward(pooled)) // [b, classes]
    }

    /// Logits of images in `[0, 1]` of any size: antialiased bilinear resize to 224x224, then
    /// ImageNet normalisation (the official perceptual-loss preprocessing).
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, H, W]` -> `[batch, classes]`
    pub fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let x = resize(images, [CONVNEXT_INPUT_SIZE, CONVNEXT_INPUT_SIZE], Filter::BilinearAntialias);
        let mean = Tensor::<1>::from_floats(IMAGENET_MEAN, &device).reshape([1, 3, 1, 1]);
        let std = Tensor::<1>::from_floats(IMAGENET_STD, &device).reshape([1, 3, 1, 1]);
        self.forward((x - mean) / std)
    }
}

/// The perceptual loss: the terms of a [`PerceptualKind`] on frozen networks.
#[derive(Module, Debug)]
pub struct PerceptualLoss {
    /// LPIPS, when the kind uses it.
    pub lpips: Option<Lpips>,
    /// ConvNeXt-S, when the kind uses it.
    pub convnext: Option<ConvNext>,
    /// The terms and their mix.
    #[module(skip)]
    pub kind: PerceptualKind,
}

impl PerceptualLoss {
    /// Builds the loss, loading the networks its kind needs (ConvNeXt as `convnext_small`).
    ///
    /// # Errors
    /// [`LossError::MissingWeights`] when a needed weights file is not given (always the case
    /// for ConvNeXt-S here), [`LossError::Model`] when a file cannot be loaded.
    pub fn new(
        kind: PerceptualKind,
        lpips_weights: Option<&Path>,
        convnext_weights: Option<&Path>,
        device: &Device,
    ) -> Result<Self, LossError> {
        let missing = |what, hint| LossError::MissingWeights { what, hint };
        let lpips = match (kind.uses_lpips(), lpips_weights) {
            (false, _) => None,
            (true, None) => return Err(missing("the LPIPS perceptual loss", LPIPS_HINT)),
            (true, Some(p)) => Some(Lpips::load(p, device)?),
        };
        let convnext = match (kind.uses_convnext(), convnext_weights) {
            (false, _) => None,
            (true, None) => return Err(missing("the ConvNeXt-S perceptual loss", CONVNEXT_HINT)),
            (true, Some(p)) => Some(ConvNext::load(&ConvNextConfig::small(), p, device)?),
        };
        Ok(Self { lpips, convnext, kind })
    }

    /// The loss between reconstructions and targets, `[1]`:
    /// `w_l · mean LPIPS + w_c · MSE(logits)` with the kind's normalised weights.
    ///
    /// # Shapes
    /// - `input`, `target`: `[batch, 3, H, W]` in `[0, 1]`
    ///
    /// # Errors
    /// [`LossError::Input`] for mismatched or unusable shapes.
    pub fn forward(&self, input: Tensor<4>, target: Tensor<4>) -> Result<Tensor<1>, LossError> {
        if input.dims() != target.dims() || input.dims()[1] != 3 {
            return Err(LossError::Input(format!(
                "perceptual loss compares two [batch, 3, H, W] images of one shape; got {:?} and {:?}",
                input.dims(),
                target.dims()
            )));
        }
        let (wl, wc) = self.kind.weights();
        let mut terms = Vec::new();
        if let Some(lpips) = &self.lpips {
            terms.push(lpips.loss(input.clone(), target.clone())? * wl);
        }
        if let Some(net) = &self.convnext {
            let mse = (net.logits(input) - net.logits(target)).square().mean();
            terms.push(mse * wc);
        }
        Ok(terms.into_iter().reduce(|a, b| a + b).expect("a perceptual kind has at least one term"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use titok_model::checkpoint::{StorageDType, expected_tensors, save_safetensors};

    #[test]
    fn official_names_parse() {
        assert_eq!("lpips".parse::<PerceptualKind>().unwrap(), PerceptualKind::Lpips);
        assert_eq!("convnext_s".parse::<PerceptualKind>().unwrap(), PerceptualKind::ConvNextS);
        let mixed: PerceptualKind = "lpips-convnext_s-1.0-0.1".parse().unwrap();
        let (a, b) = mixed.weights();
        assert!((a - 1.0 / 1.1).abs() < 1e-12 && (b - 0.1 / 1.1).abs() < 1e-12);
        for bad in ["vgg", "lpips-convnext_s-1.0", "lpips-convnext_s-x-1", "lpips-convnext_s-0-0"] {
            assert!(bad.parse::<PerceptualKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_weights_are_a_clear_error() {
        let device = Device::flex();
        let err = PerceptualLoss::new(PerceptualKind::ConvNextS, None, None, &device).unwrap_err();
        assert!(matches!(err, LossError::MissingWeights { .. }));
        assert!(err.to_string().contains("convnext_small"), "{err}");
        let mixed = PerceptualKind::Mixed { lpips_weight: 1.0, convnext_weight: 0.1 };
        assert!(matches!(PerceptualLoss::new(mixed, None, None, &device), Err(LossError::MissingWeights { .. })));
    }

    #[test]
    fn convnext_small_has_the_torchvision_keys() {
        let device = Device::flex();
        let tiny = ConvNextConfig { depths: [1, 1, 2, 1], dims: [8, 16, 32, 64], num_classes: 10 };
        let keys = expected_tensors(&ConvNext::new(&tiny, &device), &CONVNEXT_KEYS);
        // stem 4 + 5 blocks x 9 + 3 transitions x 4 + head 4
        assert_eq!(keys.len(), 4 + 5 * 9 + 12 + 4);
        assert_eq!(keys["features.0.0.weight"], [8, 3, 4, 4]);
        assert_eq!(keys["features.0.1.weight"], [8]);
        assert_eq!(keys["features.4.1.weight"], [32, 16, 2, 2]);
        assert_eq!(keys["features.5.1.block.0.weight"], [32, 1, 7, 7]);
        assert_eq!(keys["features.5.1.block.3.weight"], [128, 32]);
        assert_eq!(keys["features.5.1.block.5.bias"], [32]);
        assert_eq!(keys["features.7.0.layer_scale"], [64, 1, 1]);
        assert_eq!(keys["classifier.0.bias"], [64]);
        assert_eq!(keys["classifier.2.weight"], [10, 64]);
    }

    /// Saving with the official names and loading strictly reproduces the logits.
    #[test]
    fn convnext_round_trips_through_official_names() {
        let device = Device::flex();
        let tiny = ConvNextConfig { depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], num_classes: 10 };
        let net = ConvNext::new(&tiny, &device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("convnext.safetensors");
        save_safetensors(&net, &path, &CONVNEXT_KEYS, StorageDType::F32).unwrap();
        let loaded = ConvNext::load(&tiny, &path, &device).unwrap();
        let wrong = ConvNextConfig { num_classes: 11, ..tiny.clone() };
        assert!(ConvNext::load(&wrong, &path, &device).is_err());
        let x = Tensor::<4>::random([2, 3, 40, 48], Distribution::Uniform(0.0, 1.0), &device);
        let (a, b) = (net.logits(x.clone()), loaded.logits(x));
        assert_eq!(a.dims(), [2, 10]);
        assert!((a - b).abs().max().into_scalar::<f32>() < 1e-6);
    }
}

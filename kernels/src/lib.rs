//! Nearest-codebook lookup for vector quantization.
//!
//! For every latent row `z_i` of `z: [N, D]` find `argmin_j ||z_i - c_j||²` over the codebook
//! `c: [K, D]` and the minimum squared distance. This is the quantizer's hot spot: the official
//! TiTok code (`modeling/quantizer/quantizer.py`) materialises the full `N x K` distance matrix.
//!
//! - [`nearest_code`] is the one entry point the quantizer calls. It routes by device:
//!   CubeCL devices (wgpu, cuda) run the fused kernel (`kernel.rs`, GEMM form with an exact
//!   re-check; tile table `tiles.rs`; launched by `forward.rs`), which never materialises `N x K`; Flex runs the matmul formulation on backend primitives
//!   (`matmul.rs`); any other backend gets [`nearest_code_reference`].
//! - [`NearestCodeBackend`] is the Burn backend extension behind it (selectors `Cube`, `Fusion`,
//!   `Flex`).
//! - [`nearest_code_reference`] is the plain tensor-op formulation (`||z||² - 2 z cᵀ + ||c||²`,
//!   then `argmin`) and is the definition of correct.
//!
//! The crate also holds the CPU fast path of the pixel decoder's 3x3 convolutions:
//! [`conv3x3_same`] (Winograd `F(4x4, 3x3)` on Flex, `winograd.rs`) beside its reference
//! [`conv3x3_same_reference`] (Burn's `conv2d`), and the fused GroupNorm + SiLU before them,
//! [`group_norm_silu`] beside [`group_norm_silu_reference`], and a parallel exact-erf [`gelu`]
//! for the transformers' MLPs.
//!
//! No backend is enabled by default: the binaries (or an embedding application) choose `flex`,
//! `wgpu` or `cuda`. Without any, the dispatch has nothing to route to and every search takes
//! the reference.

// Without a backend feature the backend-specific paths are compiled out and their helpers idle.
#![cfg_attr(not(any(feature = "flex", feature = "cube")), allow(unused))]

mod activation;
mod conv3x3;
#[cfg(feature = "cube")]
mod forward;
#[cfg(feature = "flex")]
mod gelu_train;
mod group_norm;
mod host;
#[cfg(feature = "cube")]
mod kernel;
mod matmul;
#[cfg(feature = "cube")]
mod tiles;
mod winograd;

pub use activation::{GeluPath, erf_f32, exp_f32, gelu, gelu_f32, silu_f32};
pub use conv3x3::{
    Conv3x3Path, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_PIXELS, conv3x3_same, conv3x3_same_reference, with_conv3x3_path,
};
pub use group_norm::{GroupNormPath, group_norm_silu, group_norm_silu_keep_input, group_norm_silu_reference};
pub use winograd::{Nchw, WinogradTransform, conv3x3_winograd};

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, DispatchDevice, backend_extension};
use burn::tensor::kind::Autodiff;
use burn::tensor::{DType, Device, GradientCheckpointingStrategy, Int, IntDType, Tensor};

#[cfg(feature = "cube")]
use forward::nearest_code_meta;

/// The result of a nearest-code search.
#[derive(Debug, Clone)]
pub struct NearestCode {
    /// Index of the nearest codebook row per latent, `[N]`, in `0..K`. Ties go to the lowest
    /// index, like `argmin`.
    pub indices: Tensor<1, Int>,
    /// Squared L2 distance to that row, `[N]` (f32, `>= 0` up to rounding).
    pub distances: Tensor<1>,
}

/// Why a nearest-code search was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NearestCodeError {
    /// `z` is `[N, D]` and the codebook `[K, D']` with `D != D'`.
    #[error("latent width {z} != codebook width {codebook}")]
    WidthMismatch {
        /// `D` of the latents.
        z: usize,
        /// `D` of the codebook.
        codebook: usize,
    },
    /// The codebook has no rows.
    #[error("the codebook is empty (K = 0)")]
    EmptyCodebook,
    /// The rows have no features.
    #[error("latents and codes have width D = 0")]
    ZeroWidth,
    /// The two tensors live on different devices.
    #[error("latents are on {z} but the codebook is on {codebook}")]
    DeviceMismatch {
        /// Device of the latents.
        z: String,
        /// Device of the codebook.
        codebook: String,
    },
}

/// Which implementation [`nearest_code`] runs on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearestCodePath {
    /// The fused CubeCL kernel (wgpu, cuda and other CubeCL runtimes): memory `O(N + K·D)`.
    FusedKernel,
    /// The matmul formulation on Flex primitives: memory `O(N·K)`.
    Matmul,
    /// [`nearest_code_reference`] in tensor ops (backends without an extension impl).
    Reference,
}

impl NearestCodePath {
    /// The path [`nearest_code`] takes for tensors on `device` (autodiff or not).
    pub fn for_device(device: &Device) -> Self {
        #[allow(unreachable_patterns)]
        match device.clone().inner().as_dispatch() {
            #[cfg(feature = "cube")]
            DispatchDevice::Cube(_) => Self::FusedKernel,
            #[cfg(feature = "flex")]
            DispatchDevice::Flex(_) => Self::Matmul,
            _ => Self::Reference,
        }
    }
}

/// Backend extension for the nearest-code search; see [`nearest_code`] for the contract.
///
/// Implemented for `CubeBackend` (the fused kernel; the macro derives the lazy `Fusion` wrapper
/// that wgpu and cuda use by default) and for Flex (the matmul formulation). Calling it on any
/// other backend panics in Burn's generated dispatch, so go through [`nearest_code`], which
/// routes such devices to [`nearest_code_reference`]. Not differentiable: pass non-autodiff
/// tensors (`Tensor::inner`).
#[backend_extension(
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
    Flex: cfg(feature = "flex")
)]
pub trait NearestCodeBackend: Backend {
    /// Indices `[N]` (`index_dtype`) and squared distances `[N]` of the nearest codebook rows.
    ///
    /// `z`: `[N, D]`, `codebook`: `[K, D]` with `K >= 1`, both of one float dtype.
    #[fusion(meta = nearest_code_meta)]
    fn nearest_code(
        z: FloatTensor<Self>,
        codebook: FloatTensor<Self>,
        l2_normalize: bool,
        index_dtype: IntDType,
    ) -> (IntTensor<Self>, FloatTensor<Self>);
}

/// Finds the nearest codebook row for every latent.
///
/// * `z`: latents `[N, D]` (any float dtype; f16/bf16 stay half on CubeCL devices and are
///   accumulated in f32, everything else is computed in f32).
/// * `codebook`: codebook `[K, D]`, on the same device.
/// * `l2_normalize`: when true both `z` and the codebook rows are L2-normalised first
///   (eps 1e-12, like `F.normalize`), so the distance is `2 - 2 cos` (0 and 1 for zero rows).
///
/// Autodiff inputs are accepted (autodiff is stripped for the search); the outputs are
/// untracked and on the caller's device. Not differentiable: callers keep the straight-through
/// estimator in tensor ops.
///
/// # Panics
/// On the errors of [`try_nearest_code`] (width mismatch, empty codebook, `D = 0`, two devices).
pub fn nearest_code(z: Tensor<2>, codebook: Tensor<2>, l2_normalize: bool) -> NearestCode {
    try_nearest_code(z, codebook, l2_normalize).unwrap_or_else(|e| panic!("nearest_code: {e}"))
}

/// [`nearest_code`] returning an error instead of panicking on bad input.
///
/// # Errors
/// [`NearestCodeError`] when the widths differ, `K = 0`, `D = 0`, or the tensors live on
/// different devices.
pub fn try_nearest_code(
    z: Tensor<2>,
    codebook: Tensor<2>,
    l2_normalize: bool,
) -> Result<NearestCode, NearestCodeError> {
    let [n, d] = z.dims();
    let [k, dc] = codebook.dims();
    if d != dc {
        return Err(NearestCodeError::WidthMismatch { z: d, codebook: dc });
    }
    if k == 0 {
        return Err(NearestCodeError::EmptyCodebook);
    }
    if d == 0 {
        return Err(NearestCodeError::ZeroWidth);
    }
    // Autodiff mode of the caller, restored on the (untracked) outputs.
    let strategy = z.gradient_checkpointing_strategy().or(codebook.gradient_checkpointing_strategy());
    let (z, codebook) = (z.inner(), codebook.inner());
    let device = z.device();
    if device != codebook.device() {
        return Err(NearestCodeError::DeviceMismatch {
            z: format!("{device:?}"),
            codebook: format!("{:?}", codebook.device()),
        });
    }

    let path = NearestCodePath::for_device(&device);
    let (indices, distances) = if n == 0 {
        (Tensor::<1, Int>::zeros([0], &device), Tensor::<1>::zeros([0], &device))
    } else if path == NearestCodePath::Reference {
        let r = nearest_code_reference(to_f32(z), to_f32(codebook), l2_normalize);
        (r.indices, r.distances)
    } else {
        let (z, codebook) = kernel_dtypes(z, codebook, path);
        let index_dtype = device.settings().int_dtype;
        let (i, dist) = <burn::backend::Dispatch as NearestCodeBackend>::nearest_code(
            z.into_dispatch(),
            codebook.into_dispatch(),
            l2_normalize,
            index_dtype,
        );
        (Tensor::<1, Int>::from_dispatch(i), Tensor::<1>::from_dispatch(dist))
    };
    Ok(NearestCode { indices: with_autodiff(indices, strategy), distances: with_autodiff(distances, strategy) })
}

/// Tensor-op reference: `||z||² + ||c||² - 2 z cᵀ`, then `argmin` / `min` over the codebook.
///
/// Materialises the `[N, K]` distance matrix. Same contract as [`nearest_code`].
pub fn nearest_code_reference(z: Tensor<2>, codebook: Tensor<2>, l2_normalize: bool) -> NearestCode {
    let [n, d] = z.dims();
    let [_, dc] = codebook.dims();
    assert_eq!(d, dc, "latent width {d} != codebook width {dc}");
    let (z, codebook) = if l2_normalize { (l2_normalize_rows(z), l2_normalize_rows(codebook)) } else { (z, codebook) };
    let dist = squared_distances(z.detach(), codebook.detach()); // [N, K]
    let (min, idx) = dist.min_dim_with_indices(1);
    NearestCode { indices: idx.reshape([n]), distances: min.reshape([n]) }
}

/// Squared Euclidean distances of every row of `a` to every row of `b` in the GEMM form
/// `||a||² + ||b||² - 2 a bᵀ`: `[N, D]`, `[K, D]` -> `[N, K]` (materialised).
pub fn squared_distances(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let a_sq = a.clone().square().sum_dim(1); // [N, 1]
    let b_sq = b.clone().square().sum_dim(1).reshape([1, -1]); // [1, K]
    a_sq + b_sq - a.matmul(b.transpose()).mul_scalar(2.0)
}

/// `x / max(||x||₂, 1e-12)` along the last dimension, as `torch.nn.functional.normalize`.
pub fn l2_normalize_rows<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x / norm
}

/// The dtypes the extension gets: the kernel reads f32/f16/bf16 (both operands alike) and
/// accumulates in f32; the matmul path computes in f32.
fn kernel_dtypes(z: Tensor<2>, codebook: Tensor<2>, path: NearestCodePath) -> (Tensor<2>, Tensor<2>) {
    let half = matches!(z.dtype(), DType::F16 | DType::BF16);
    if path == NearestCodePath::FusedKernel && half && z.dtype() == codebook.dtype() {
        (z, codebook)
    } else {
        (to_f32(z), to_f32(codebook))
    }
}

fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 { x } else { x.cast(DType::F32) }
}

/// `x` back in the caller's device mode: lifted to autodiff (untracked) with the caller's
/// checkpointing strategy, or left as is when the caller did not use autodiff.
fn with_autodiff<const D: usize, K: Autodiff>(
    x: Tensor<D, K>,
    strategy: Option<GradientCheckpointingStrategy>,
) -> Tensor<D, K> {
    match strategy {
        Some(strategy) => x.autodiff().with_gradient_checkpointing_strategy(strategy),
        None => x,
    }
}

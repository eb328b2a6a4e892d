//! Nearest-codebook lookup for vector quantization.
//!
//! For every latent row `z_i` of `z: [N, D]` find `argmin_j ||z_i - c_j||²` over the codebook
//! `c: [K, D]` and the minimum squared distance. This is the quantizer's hot spot: the official
//! TiTok code (`modeling/quantizer/quantizer.py`) materialises the full `N x K` distance matrix.
//!
//! [`nearest_code`] is the one entry point the quantizer calls. [`nearest_code_reference`] is
//! the plain tensor-op formulation (`||z||² - 2 z cᵀ + ||c||²`, then `argmin`) and is the
//! definition of correct.

use burn::tensor::{Int, Tensor};

/// The result of a nearest-code search.
#[derive(Debug, Clone)]
pub struct NearestCode {
    /// Index of the nearest codebook row per latent, `[N]`, in `0..K`. Ties go to the lowest
    /// index, like `argmin`.
    pub indices: Tensor<1, Int>,
    /// Squared L2 distance to that row, `[N]` (f32, `>= 0` up to rounding).
    pub distances: Tensor<1>,
}

/// Finds the nearest codebook row for every latent.
///
/// * `z`: latents `[N, D]`.
/// * `codebook`: codebook `[K, D]`.
/// * `l2_normalize`: when true both `z` and the codebook rows are L2-normalised first
///   (eps 1e-12, like `F.normalize`), so the distance is `2 - 2 cos`.
///
/// Not differentiable: callers keep the straight-through estimator in tensor ops.
///
/// # Panics
/// When `z` and `codebook` have different widths `D`.
pub fn nearest_code(z: Tensor<2>, codebook: Tensor<2>, l2_normalize: bool) -> NearestCode {
    nearest_code_reference(z, codebook, l2_normalize)
}

/// Tensor-op reference: `||z||² + ||c||² - 2 z cᵀ`, then `argmin` / `min` over the codebook.
///
/// Materialises the `[N, K]` distance matrix. Same contract as [`nearest_code`].
pub fn nearest_code_reference(z: Tensor<2>, codebook: Tensor<2>, l2_normalize: bool) -> NearestCode {
    let [n, d] = z.dims();
    let [_, dc] = codebook.dims();
    assert_eq!(d, dc, "latent width {d} != codebook width {dc}");
    let (z, codebook) = if l2_normalize {
        (l2_normalize_rows(z), l2_normalize_rows(codebook))
    } else {
        (z, codebook)
    };
    let z = z.detach();
    let codebook = codebook.detach();
    let z_sq = z.clone().square().sum_dim(1); // [N, 1]
    let c_sq = codebook.clone().square().sum_dim(1).reshape([1, -1]); // [1, K]
    let dot = z.matmul(codebook.transpose()); // [N, K]
    let dist = z_sq + c_sq - dot.mul_scalar(2.0); // [N, K]
    let (min, idx) = dist.min_dim_with_indices(1);
    NearestCode {
        indices: idx.reshape([n]),
        distances: min.reshape([n]),
    }
}

/// `x / max(||x||₂, 1e-12)` along the last dimension, as `torch.nn.functional.normalize`.
pub fn l2_normalize_rows<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x / norm
}

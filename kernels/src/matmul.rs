//! The unfused matmul formulation on backend primitives: the [`NearestCodeBackend`] impl of Flex.
//!
//! Same search as [`crate::nearest_code_reference`], op for op (`||z||² + ||c||² - 2 z cᵀ`,
//! then `min_dim_with_indices`), so the indices are bit-identical to the reference on the same
//! backend. On a CPU the gemm makes this about 8x faster than a direct loop (`BURN-NOTES.md` §4).
//! The winner's distance is then recomputed directly as `Σ (z - c_idx)²`, an `O(N·D)` gather,
//! because the expanded form loses digits to cancellation (about `1e-7 · (||z||² + ||c||²)`).

use burn::backend::Backend;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Scalar, TensorMetadata};
use burn::tensor::{IntDType, Shape};

use crate::NearestCodeBackend;

/// Nearest code by the matmul formulation; see the module docs.
///
/// # Shapes
/// - `z`: `[N, D]`, `codebook`: `[K, D]` (same float dtype)
/// - returns indices `[N]` (`index_dtype`) and squared distances `[N]` (the input dtype)
pub(crate) fn nearest_code_matmul<B: Backend>(
    z: FloatTensor<B>,
    codebook: FloatTensor<B>,
    l2_normalize: bool,
    index_dtype: IntDType,
) -> (IntTensor<B>, FloatTensor<B>) {
    let n = z.shape()[0];
    let (z, codebook) =
        if l2_normalize { (l2_normalize_rows::<B>(z), l2_normalize_rows::<B>(codebook)) } else { (z, codebook) };
    let dtype = z.dtype();

    // Distance matrix, exactly as the reference builds it.
    let z_sq = B::float_sum_dim(square::<B>(z.clone()), 1); // [N, 1]
    let c_sq = B::float_sum_dim(square::<B>(codebook.clone()), 1); // [K, 1]
    let k = c_sq.shape()[0];
    let c_sq = B::float_reshape(c_sq, Shape::new([1, k])); // [1, K]
    let dot = B::float_matmul(z.clone(), B::float_transpose(codebook.clone())); // [N, K]
    let dot2 = B::float_mul_scalar(dot, Scalar::new(2.0, &dtype)); // [N, K]
    let dist = B::float_sub(B::float_add(z_sq, c_sq), dot2); // [N, K]
    let (_, indices) = B::float_min_dim_with_indices(dist, 1, index_dtype); // [N, 1]
    let indices = B::int_reshape(indices, Shape::new([n])); // [N]

    // Exact distance of the winner.
    let nearest = B::float_select(codebook, 0, indices.clone()); // [N, D]
    let diff = B::float_sub(z, nearest); // [N, D]
    let distances = B::float_sum_dim(square::<B>(diff), 1); // [N, 1]
    (indices, B::float_reshape(distances, Shape::new([n])))
}

/// `x²` element-wise, as `Tensor::square` lowers it.
fn square<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_powi_scalar(x, Scalar::from(2))
}

/// `x / max(||x||₂, 1e-12)` per row, as [`crate::l2_normalize_rows`] lowers it.
fn l2_normalize_rows<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let dtype = x.dtype();
    let norm = B::float_sqrt(B::float_sum_dim(square::<B>(x.clone()), 1)); // [rows, 1]
    let norm = B::float_clamp_min(norm, Scalar::new(1e-12, &dtype));
    B::float_div(x, norm)
}

#[cfg(feature = "flex")]
impl NearestCodeBackend for burn::backend::Flex {
    fn nearest_code(
        z: FloatTensor<Self>,
        codebook: FloatTensor<Self>,
        l2_normalize: bool,
        index_dtype: IntDType,
    ) -> (IntTensor<Self>, FloatTensor<Self>) {
        nearest_code_matmul::<Self>(z, codebook, l2_normalize, index_dtype)
    }
}

//! The stage-1 ("proxy codes") reconstruction loss.
//!
//! Source: `modeling/modules/losses.py::ReconstructionLoss_Stage1`; REFERENCE §7a.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy between proxy-code logits and the teacher's codes (no label smoothing).
///
/// # Shapes
/// - `logits`: `[batch, N_codes, G, G]` (decoder output of a two-stage model)
/// - `target_codes`: `[batch, G²]` teacher code ids, row-major over the grid
/// - returns a scalar `[1]`; about `ln(N_codes)` for uniform logits
pub fn proxy_code_cross_entropy(logits: Tensor<4>, target_codes: Tensor<2, Int>) -> Tensor<1> {
    let [b, n, h, w] = logits.dims();
    let log_p = log_softmax(logits.reshape([b, n, h * w]), 1); // [b, n, hw]
    let picked = log_p.gather(1, target_codes.reshape([b, 1, h * w])); // [b, 1, hw]
    picked.mean().neg()
}

//! GroupNorm followed by SiLU, the pre-activation of every convolution in the MaskGIT-VQGAN
//! (`h = conv(silu(norm(x)))`), with a fused CPU fast path.
//!
//! In tensor ops the pair is about ten passes over the activation (mean, centring, variance,
//! normalisation, scale, shift, sigmoid, product), each allocating a tensor of the full size: at
//! the decoder's 256 px levels that is 134 MB per pass for a batch of 4. The fast path reads
//! the activation twice (statistics in f64, then normalise + affine + SiLU in place), in
//! parallel over `(image, group)` blocks, which are contiguous in NCHW.

use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::host::{forced_reference, host_inference};

/// Which implementation [`group_norm_silu`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupNormPath {
    /// The fused host loop (Flex, f32, no autodiff).
    Fused,
    /// Burn's `GroupNorm` and `silu` ([`group_norm_silu_reference`]).
    Reference,
}

impl GroupNormPath {
    /// The path for input `x`; `TITOK_FUSED_NORM=reference` forces the reference path.
    pub fn for_input(x: &Tensor<4>, norm: &GroupNorm) -> Self {
        let tracked = |p: &Option<burn::module::Param<Tensor<1>>>| {
            p.as_ref().is_some_and(|p| p.val().gradient_checkpointing_strategy().is_some())
        };
        let inference = host_inference(x) && !tracked(&norm.gamma) && !tracked(&norm.beta);
        if inference && x.dtype() == DType::F32 && !forced_reference("TITOK_FUSED_NORM") {
            Self::Fused
        } else {
            Self::Reference
        }
    }
}

/// `silu(norm(x))` (or `norm(x)` when `with_silu` is false) for `x` `[batch, C, H, W]`, with
/// Burn's `GroupNorm` semantics: biased variance over each group's `C / G` channels and all
/// pixels, `eps` inside the square root, per-channel `gamma`/`beta` when affine. Same shape out.
///
/// # Panics
/// When `C` is not `norm.num_channels`.
pub fn group_norm_silu(norm: &GroupNorm, x: Tensor<4>, with_silu: bool) -> Tensor<4> {
    group_norm_silu_keep_input(norm, x, with_silu).1
}

/// [`group_norm_silu`] that also hands `x` back, for callers that still need it (a residual
/// connection). Holding a clone of `x` instead would make the fast path copy it first.
///
/// Returns `(x, silu(norm(x)))`.
///
/// # Panics
/// As [`group_norm_silu`].
pub fn group_norm_silu_keep_input(norm: &GroupNorm, x: Tensor<4>, with_silu: bool) -> (Tensor<4>, Tensor<4>) {
    let [batch, c, h, w] = x.dims();
    assert_eq!(c, norm.num_channels, "group_norm_silu: {c} channels for a GroupNorm of {}", norm.num_channels);
    if GroupNormPath::for_input(&x, norm) == GroupNormPath::Reference {
        let y = group_norm_silu_reference(norm, x.clone(), with_silu);
        return (x, y);
    }
    let device = x.device();
    let host = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().expect("f32 tensor data");
    let gamma = norm.gamma.as_ref().map(|g| host(g.val()));
    let beta = norm.beta.as_ref().map(|b| host(b.val()));
    let data = x.into_data();
    let src = data.as_slice::<f32>().expect("f32 tensor data");
    let mut out = vec![0.0f32; src.len()];
    let groups = norm.num_groups;
    let per_group = c / groups;
    let pixels = h * w;
    let len = per_group * pixels;
    out.par_chunks_mut(len).zip(src.par_chunks(len)).enumerate().for_each(|(block, (dst, values))| {
        let g = block % groups;
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        let inv_std = 1.0 / (var + norm.epsilon).sqrt();
        for (j, (out_ch, in_ch)) in dst.chunks_mut(pixels).zip(values.chunks(pixels)).enumerate() {
            let ch = g * per_group + j;
            let scale = gamma.as_ref().map_or(1.0, |gm| f64::from(gm[ch])) * inv_std;
            let shift = beta.as_ref().map_or(0.0, |bt| f64::from(bt[ch])) - mean * scale;
            let (scale, shift) = (scale as f32, shift as f32);
            let pairs = out_ch.iter_mut().zip(in_ch);
            if with_silu {
                pairs.for_each(|(o, &v)| {
                    let y = v * scale + shift;
                    *o = crate::activation::silu_f32(y);
                });
            } else {
                pairs.for_each(|(o, &v)| *o = v * scale + shift);
            }
        }
    });
    let shape = [batch, c, h, w];
    (Tensor::from_data(data, &device), Tensor::from_data(TensorData::new(out, shape), &device))
}

/// [`group_norm_silu`] in Burn's ops (any device, differentiable): the definition of correct.
pub fn group_norm_silu_reference(norm: &GroupNorm, x: Tensor<4>, with_silu: bool) -> Tensor<4> {
    let y = norm.forward(x);
    if with_silu { silu(y) } else { y }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::GroupNormConfig;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn fused_path_matches_burn_group_norm_and_silu() {
        let device = Device::flex();
        for ([n, c, h, w], groups) in [([2, 64, 5, 7], 32), ([1, 6, 3, 3], 3), ([3, 32, 8, 8], 1)] {
            let mut norm = GroupNormConfig::new(groups, c).with_epsilon(1e-6).init(&device);
            // Non-trivial affine parameters, and inputs off zero mean / unit variance.
            norm.gamma =
                Some(burn::module::Param::from_tensor(Tensor::random([c], Distribution::Normal(1.0, 0.5), &device)));
            norm.beta =
                Some(burn::module::Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 0.5), &device)));
            let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(3.0, 2.0), &device);
            assert_eq!(GroupNormPath::for_input(&x, &norm), GroupNormPath::Fused);
            for with_silu in [true, false] {
                let fast = group_norm_silu(&norm, x.clone(), with_silu);
                let reference = group_norm_silu_reference(&norm, x.clone(), with_silu);
                let err = (fast - reference).abs().max().into_scalar::<f32>();
                let (kept, _) = group_norm_silu_keep_input(&norm, x.clone(), with_silu);
                assert_eq!(kept.into_data(), x.clone().into_data(), "the input comes back unchanged");
                assert!(err < 1e-5, "{n}x{c}x{h}x{w}, {groups} groups, silu {with_silu}: max error {err:e}");
            }
        }
    }

    #[test]
    fn autodiff_takes_the_reference_path() {
        let device = Device::flex().autodiff();
        let norm = GroupNormConfig::new(4, 8).init(&device);
        let x = Tensor::<4>::random([1, 8, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(GroupNormPath::for_input(&x, &norm), GroupNormPath::Reference);
    }
}

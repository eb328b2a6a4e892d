//! The 3x3 "same" convolution of the MaskGIT-VQGAN pixel decoder and encoder (stride 1, one
//! pixel of zero padding), with a CPU fast path.
//!
//! These convolutions are most of the pixel decoder's ~100 GFLOP per 256 px image. Burn's CPU
//! backend runs them as im2col + gemm (9 multiply-adds per output and input channel); on Flex,
//! [`conv3x3_same`] runs the Winograd `F(4x4, 3x3)` algorithm of `winograd.rs` instead (2.25,
//! 4x fewer) whenever it is inference (no autodiff), f32, with at least 16 input channels and
//! an image large enough for the filter transform to pay for itself. Everything else, and every GPU, takes [`conv3x3_same_reference`], Burn's
//! `conv2d`, which is also the definition of correct.

use std::cell::Cell;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData};

use crate::host::{forced_reference, host_inference};
use crate::winograd::{WinogradTransform, conv3x3_winograd};

/// Which implementation [`conv3x3_same`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv3x3Path {
    /// Winograd `F(4x4, 3x3)` on the host (Flex, f32, no autodiff, `C_in >= 16`, at least
    /// [`WINOGRAD_MIN_PIXELS`] output pixels).
    Winograd,
    /// Burn's `conv2d` ([`conv3x3_same_reference`]).
    Reference,
}

/// Smallest input channel count for the Winograd path: below it (the 3-channel first conv of
/// the encoder) Burn's small-channel kernel is the better choice.
pub const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Smallest `batch · H · W` for the Winograd path. Transforming the filters costs about as much
/// as the products of 16 tiles (256 output pixels), and Burn's kernel is efficient on small
/// images (measured at 4 x 16 x 16 x 512 channels: 0.047 s for Burn, 0.15 s for Winograd
/// with the filter transform; from 4 x 32 x 32 on Winograd wins).
pub const WINOGRAD_MIN_PIXELS: usize = 4096;

impl Conv3x3Path {
    /// The path for input `x` `[batch, C_in, H, W]` and `weight` `[C_out, C_in, 3, 3]`.
    ///
    /// Setting the environment variable `TITOK_CONV3X3=reference` forces the reference path
    /// (for side-by-side timing); [`with_conv3x3_path`] overrides the choice on one thread.
    pub fn for_input(x: &Tensor<4>, weight: &Tensor<4>) -> Self {
        let [batch, cin, h, w] = x.dims();
        let inference = host_inference(x) && weight.gradient_checkpointing_strategy().is_none();
        let eligible =
            inference && x.dtype() == DType::F32 && weight.dtype() == DType::F32 && cin >= WINOGRAD_MIN_CHANNELS;
        let forced = FORCED.with(Cell::get);
        let winograd = match forced {
            Some(Self::Reference) => false,
            Some(Self::Winograd) => eligible,
            None => eligible && !forced_reference("TITOK_CONV3X3") && batch * h * w >= WINOGRAD_MIN_PIXELS,
        };
        if winograd { Self::Winograd } else { Self::Reference }
    }
}

thread_local! {
    static FORCED: Cell<Option<Conv3x3Path>> = const { Cell::new(None) };
}

/// Runs `f` with the path of [`conv3x3_same`] calls made on this thread forced to `path`:
/// `Reference` everywhere, or `Winograd` wherever it applies (Flex, f32, inference, `C_in >= 16`)
/// whatever the image size. For parity tests of the fast path on small fixtures, and timing.
pub fn with_conv3x3_path<R>(path: Conv3x3Path, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Conv3x3Path>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|c| c.replace(Some(path))));
    f()
}

/// 3x3 convolution, stride 1, zero padding 1 on every side, one group.
///
/// * `x`: `[batch, C_in, H, W]`
/// * `weight`: `[C_out, C_in, 3, 3]` (PyTorch layout)
/// * `bias`: `[C_out]`
///
/// Returns `[batch, C_out, H, W]`, on `x`'s device. Takes the path of
/// [`Conv3x3Path::for_input`]; the Winograd path agrees with the reference to ~1e-6 relative
/// (f32 rounding).
///
/// # Panics
/// When the shapes do not fit (`weight` not `[_, C_in, 3, 3]`, `bias` not `[C_out]`).
pub fn conv3x3_same(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    let [batch, cin, h, w] = x.dims();
    let [cout, wcin, kh, kw] = weight.dims();
    assert!(wcin == cin && kh == 3 && kw == 3, "conv3x3_same: weight {:?} for {cin} input channels", weight.dims());
    if let Some(b) = &bias {
        assert_eq!(b.dims(), [cout], "conv3x3_same: bias for {cout} output channels");
    }
    if Conv3x3Path::for_input(&x, &weight) == Conv3x3Path::Reference {
        return conv3x3_same_reference(x, weight, bias);
    }
    let device = x.device();
    let (xd, wd) = (x.into_data(), weight.into_data());
    let bd = bias.map(Tensor::into_data);
    let xs = xd.as_slice::<f32>().expect("f32 tensor data");
    let ws = wd.as_slice::<f32>().expect("f32 tensor data");
    let bs = bd.as_ref().map(|d| d.as_slice::<f32>().expect("f32 tensor data"));
    let out = conv3x3_winograd(xs, [batch, cin, h, w], ws, cout, bs, WinogradTransform::F4);
    Tensor::from_data(TensorData::new(out, [batch, cout, h, w]), &device)
}

/// [`conv3x3_same`] with Burn's `conv2d` (any device, differentiable): the definition of
/// correct for the fast path.
pub fn conv3x3_same_reference(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    conv2d(x, weight, bias, ConvOptions::new([1, 1], [1, 1], [1, 1], 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn max_abs(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The fast path against Burn's `conv2d` on Flex, at the pixel decoder's kinds of shape
    /// (odd sizes, a bias or none, more and fewer output than input channels).
    #[test]
    fn winograd_path_matches_burn_conv2d() {
        let device = Device::flex();
        for ([n, cin, h, w], cout, bias) in
            [([2, 32, 48, 45], 48, true), ([1, 64, 64, 64], 3, false), ([3, 16, 37, 40], 40, true)]
        {
            let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
            let scale = (1.0 / (9.0 * cin as f64)).sqrt();
            let wt = Tensor::<4>::random([cout, cin, 3, 3], Distribution::Normal(0.0, scale), &device);
            let b = bias.then(|| Tensor::<1>::random([cout], Distribution::Normal(0.0, 1.0), &device));
            assert_eq!(Conv3x3Path::for_input(&x, &wt), Conv3x3Path::Winograd);
            let fast = conv3x3_same(x.clone(), wt.clone(), b.clone());
            let reference = conv3x3_same_reference(x, wt, b);
            assert_eq!(fast.dims(), reference.dims());
            let peak = reference.clone().abs().max().into_scalar::<f32>();
            let err = max_abs(fast, reference);
            // Relative to the output's range: F(4x4, 3x3)'s transforms amplify f32 rounding.
            assert!(
                err < 1e-5 * peak.max(1.0),
                "{n}x{cin}x{h}x{w} -> {cout}: max |fast - conv2d| = {err:e} (peak {peak})"
            );
        }
    }

    /// Autodiff inputs, RGB inputs, small images and half precision take Burn's `conv2d`, so gradients
    /// and dtypes are Burn's.
    #[test]
    fn training_and_narrow_convs_take_the_reference_path() {
        let device = Device::flex();
        let x = Tensor::<4>::random([1, 32, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let wt = Tensor::<4>::random([32, 32, 3, 3], Distribution::Normal(0.0, 0.1), &device);
        let ad = device.clone().autodiff();
        let tracked = Tensor::<4>::random([32, 32, 3, 3], Distribution::Normal(0.0, 0.1), &ad).require_grad();
        let x_ad = Tensor::<4>::random([1, 32, 64, 64], Distribution::Normal(0.0, 1.0), &ad);
        assert_eq!(Conv3x3Path::for_input(&x_ad, &tracked), Conv3x3Path::Reference);
        let rgb = Tensor::<4>::random([1, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let narrow = Tensor::<4>::random([32, 3, 3, 3], Distribution::Normal(0.0, 0.1), &device);
        assert_eq!(Conv3x3Path::for_input(&rgb, &narrow), Conv3x3Path::Reference);
        assert_eq!(Conv3x3Path::for_input(&x, &wt), Conv3x3Path::Winograd);
        let small = Tensor::<4>::random([1, 32, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(Conv3x3Path::for_input(&small, &wt), Conv3x3Path::Reference);
        assert_eq!(
            with_conv3x3_path(Conv3x3Path::Winograd, || Conv3x3Path::for_input(&small, &wt)),
            Conv3x3Path::Winograd
        );
        assert_eq!(
            with_conv3x3_path(Conv3x3Path::Reference, || Conv3x3Path::for_input(&x, &wt)),
            Conv3x3Path::Reference
        );
        assert_eq!(Conv3x3Path::for_input(&small, &wt), Conv3x3Path::Reference, "the override ends with the closure");
        let x16 = x.clone().cast(DType::F16);
        assert_eq!(Conv3x3Path::for_input(&x16, &wt.clone().cast(DType::F16)), Conv3x3Path::Reference);
        // The reference path is the one Burn differentiates.
        let y = conv3x3_same(x_ad, tracked.clone(), None);
        let grads = y.sum().backward();
        assert!(tracked.grad(&grads).is_some());
    }
}

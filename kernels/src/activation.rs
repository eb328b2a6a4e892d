//! Exact-erf GELU (`x · Φ(x)`, PyTorch's `nn.GELU()` default) with a CPU fast path, and the
//! vectorisable `exp` / `erf` it and the fused GroupNorm + SiLU use.
//!
//! Burn's CPU GELU evaluates `libm::erff` element by element on one thread; in the ViT MLPs
//! (`[batch, tokens, 4W]`) that was a visible share of the encoder's time. The fast path
//! splits the tensor over rayon's pool and uses polynomial `exp`/`erf` that the compiler turns
//! into SIMD code. It is differentiable: under autodiff the backward runs the same way
//! (`gelu_train.rs`), so CPU training takes it too.

use burn::tensor::activation::gelu as burn_gelu;
use burn::tensor::{DType, Tensor};

use crate::host::{forced_reference, on_flex};

/// `e^x` for f32, relative error below 3e-7 on `[-87, 88]`; 0 below -87.3, and finite
/// (about 3.4e38) above 88.7.
///
/// Cody-Waite reduction `x = k ln 2 + r`, `|r| <= ln 2 / 2`, a degree-6 Taylor polynomial for
/// `e^r`, and `2^k` built in the exponent bits. Branch-free, so loops over slices vectorise.
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest with the 1.5 · 2^23 trick: `f32::round` is a libm call on the
    // baseline x86-64 target and would stop the loop from vectorising.
    const ROUND: f32 = 12_582_912.0;
    let k = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^k for k in [-126, 128): exponent bits; k = 128 (x near 88.7) splits into 2^127 * 2.
    let k = k as i32;
    let (k1, k2) = (k.min(127), k - k.min(127));
    let scale1 = f32::from_bits(((k1 + 127).max(0) as u32) << 23);
    let scale2 = f32::from_bits(((k2 + 127) as u32) << 23);
    let y = p * scale1 * scale2;
    if x <= -87.3 { 0.0 } else { y }
}

/// `erf(x)` for f32, absolute error below 1e-6 (Abramowitz & Stegun 7.1.26: 1.5e-7 in exact
/// arithmetic, in `t = 1 / (1 + p|x|)` with five coefficients, odd symmetry; plus f32
/// rounding; the Maclaurin series below |x| = 0.25, so `erf(0) = 0`), using [`exp_f32`].
#[inline]
pub fn erf_f32(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let y = (1.0 - poly * exp_f32(-ax * ax)).copysign(x);
    // Near 0 the rational form keeps a 2e-7 offset; the Maclaurin series is exact to 1e-8 there.
    let x2 = x * x;
    let series = x * std::f32::consts::FRAC_2_SQRT_PI * (1.0 - x2 * (1.0 / 3.0 - x2 * (0.1 - x2 / 42.0)));
    if ax < 0.25 { series } else { y }
}

/// `x · Φ(x) = x/2 · (1 + erf(x/√2))` with [`erf_f32`].
#[inline]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `x · σ(x)` with [`exp_f32`].
#[inline]
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// Which implementation [`gelu`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeluPath {
    /// Parallel host loop with [`gelu_f32`] (Flex, f32), with its differentiable backward
    /// under autodiff.
    Fused,
    /// Burn's `gelu`.
    Reference,
}

impl GeluPath {
    /// The path for `x`; `TITOK_FUSED_GELU=reference` forces Burn's `gelu`.
    pub fn for_input<const D: usize>(x: &Tensor<D>) -> Self {
        if on_flex(x) && x.dtype() == DType::F32 && !forced_reference("TITOK_FUSED_GELU") {
            Self::Fused
        } else {
            Self::Reference
        }
    }
}

/// Exact (erf) GELU of every element, any shape; same shape out; differentiable. Takes
/// [`GeluPath::for_input`]; the fast path agrees with Burn's `gelu` (and its gradient) to ~1e-6
/// relative.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if GeluPath::for_input(&x) == GeluPath::Reference {
        return burn_gelu(x);
    }
    fused(x)
}

#[cfg(feature = "flex")]
fn fused<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    use crate::gelu_train::GeluBackend;
    Tensor::from_dispatch(<burn::backend::Dispatch as GeluBackend>::fast_gelu(x.into_dispatch()))
}

#[cfg(not(feature = "flex"))]
fn fused<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn_gelu(x) // never reached: the fused path needs Flex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gelu_train::gelu_grad_f32;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0.0f64;
        let mut worst_erf = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 4.35e-4; // [-87, 87]
            let e = f64::from(x).exp();
            worst_exp = worst_exp.max((f64::from(exp_f32(x)) - e).abs() / e);
            let y = i as f32 * 3e-5; // [-6, 6]
            let want = libm::erf(f64::from(y));
            worst_erf = worst_erf.max((f64::from(erf_f32(y)) - want).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp:e}");
        assert!(worst_erf < 1e-6, "erf absolute error {worst_erf:e}");
        assert_eq!(exp_f32(-200.0), 0.0);
        assert!(exp_f32(200.0) > 3e38);
        assert_eq!(erf_f32(0.0), 0.0);
    }

    #[test]
    fn fused_gelu_matches_burn_gelu() {
        let device = Device::flex();
        let x = Tensor::<3>::random([3, 70, 129], Distribution::Normal(0.0, 3.0), &device);
        assert_eq!(GeluPath::for_input(&x), GeluPath::Fused);
        let err = (gelu(x.clone()) - burn_gelu(x)).abs().max().into_scalar::<f32>();
        // |x| up to ~15 here: GELU's error is |x|/2 · erf's.
        assert!(err < 1e-5, "max |fused - burn| = {err:e}");
    }

    /// Under autodiff the fused GELU is differentiable: its gradient is Burn's `gelu` gradient.
    #[test]
    fn fused_gelu_gradients_match_burn_gelu() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::random([2, 33, 70], Distribution::Normal(0.0, 2.0), &device);
        let w = Tensor::<3>::random([2, 33, 70], Distribution::Uniform(-1.0, 1.0), &device);
        assert_eq!(GeluPath::for_input(&x), GeluPath::Fused);
        let grad_of = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            (y.inner(), x.grad(&grads).expect("x gets a gradient"))
        };
        let (y_fused, g_fused) = grad_of(&|x| gelu(x));
        let (y_burn, g_burn) = grad_of(&|x| burn_gelu(x));
        let forward = (y_fused - y_burn).abs().max().into_scalar::<f32>();
        let backward = (g_fused - g_burn.clone()).abs().max().into_scalar::<f32>();
        assert!(forward < 1e-5, "forward max |fused - burn| = {forward:e}");
        assert!(backward < 1e-5, "gradient max |fused - burn| = {backward:e}");
        assert!(g_burn.abs().max().into_scalar::<f32>() > 0.1, "a real gradient");
        // The derivative on its own: d/dx GELU at 0 is 1/2, far out it is 0 and 1.
        assert!((gelu_grad_f32(0.0, 1.0) - 0.5).abs() < 1e-7);
        assert!(gelu_grad_f32(-12.0, 1.0).abs() < 1e-7 && (gelu_grad_f32(12.0, 1.0) - 1.0).abs() < 1e-6);
    }
}

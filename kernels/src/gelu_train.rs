//! The fast exact-erf GELU as a differentiable op on Flex, for training on the CPU.
//!
//! Under autodiff Burn's Flex GELU and its backward evaluate `libm::erff` (and `exp`) element by
//! element on one thread; in the TiTok ViTs that was about 18 % of a CPU training step, all of it
//! on the main thread while the second core idled. This op computes the forward with
//! [`gelu_f32`] and the backward `g · (Φ(x) + x·φ(x))` with [`erf_f32`] / [`exp_f32`], both as
//! parallel host loops, and registers the backward through Burn's autodiff (a backend extension
//! with an `Autodiff<Flex>` implementation that saves `x`).
//!
//! Source: the derivative is the one of Burn's `gelu_backward` (`burn-flex`, `ops/activation.rs`)
//! and of PyTorch's `GeluBackward` (`approximate='none'`).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use crate::activation::{erf_f32, exp_f32, gelu_f32};

/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

/// `1 / √(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `d/dx [x·Φ(x)] · g = g · (Φ(x) + x·φ(x))` with the polynomial `erf` and `exp`.
#[inline]
pub fn gelu_grad_f32(x: f32, g: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * exp_f32(-0.5 * x * x);
    g * (cdf + x * pdf)
}

/// The differentiable fast GELU: the forward on Flex, and on `Autodiff<Flex>` the forward plus
/// a registered backward. Only for f32 tensors on Flex; [`crate::gelu`] routes to it.
#[backend_extension(Flex, Autodiff)]
pub trait GeluBackend: Backend {
    /// `x·Φ(x)` of every element (f32, any shape).
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `f` applied to the f32 elements of a Flex tensor, in parallel; the result is contiguous.
fn map_host(x: FloatTensor<Flex>, f: impl Fn(f32) -> f32 + Sync) -> FloatTensor<Flex> {
    let shape = x.shape();
    let x = x.to_contiguous();
    let src = x.as_slice::<f32>().expect("a contiguous f32 tensor");
    let mut out = vec![0.0f32; src.len()];
    out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(dst, s)| {
        dst.iter_mut().zip(s).for_each(|(o, &v)| *o = f(v));
    });
    FloatTensor::<Flex>::from_data(TensorData::new(out, shape))
}

/// `f(x, g)` over the f32 elements of two same-shaped Flex tensors, in parallel.
fn zip_host(x: FloatTensor<Flex>, g: FloatTensor<Flex>, f: impl Fn(f32, f32) -> f32 + Sync) -> FloatTensor<Flex> {
    let shape = x.shape();
    assert_eq!(shape, g.shape(), "GELU backward: input and gradient shapes differ");
    let (x, g) = (x.to_contiguous(), g.to_contiguous());
    let xs = x.as_slice::<f32>().expect("a contiguous f32 tensor");
    let gs = g.as_slice::<f32>().expect("a contiguous f32 gradient");
    let mut out = vec![0.0f32; xs.len()];
    out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK))).for_each(|(dst, (xc, gc))| {
        dst.iter_mut().zip(xc.iter().zip(gc)).for_each(|(o, (&v, &d))| *o = f(v, d));
    });
    FloatTensor::<Flex>::from_data(TensorData::new(out, shape))
}

impl GeluBackend for Flex {
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        assert_eq!(x.dtype(), DType::F32, "fast GELU takes f32");
        map_host(x, gelu_f32)
    }
}

/// The backward step: `grad_x = g · (Φ(x) + x·φ(x))`, from the saved input.
#[derive(Debug)]
struct FastGeluBackward;

impl Backward<Flex, 1> for FastGeluBackward {
    type State = FloatTensor<Flex>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, zip_host(ops.state, grad, gelu_grad_f32));
        }
    }
}

impl<C: CheckpointStrategy> GeluBackend for Autodiff<Flex, C> {
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match FastGeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = x.primitive().clone();
                let output = Flex::fast_gelu(input.clone());
                prep.finish(input, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fast_gelu(x.into_primitive())),
        }
    }
}

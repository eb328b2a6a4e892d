//! What the CPU fast paths (`conv3x3`, `group_norm`, `activation`) share: which tensors they
//! may take, and the environment switch back to Burn's ops.

use burn::backend::DispatchDevice;
use burn::tensor::Tensor;

/// Whether `x` lives on Flex (the CPU backend the host loops read), with or without autodiff.
pub(crate) fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    #[allow(unreachable_patterns)]
    match x.device().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        _ => false,
    }
}

/// Whether `x` lives on Flex and carries no autodiff (the inference-only fast paths are not
/// differentiable).
pub(crate) fn host_inference<const D: usize>(x: &Tensor<D>) -> bool {
    on_flex(x) && x.gradient_checkpointing_strategy().is_none()
}

/// Whether the environment variable `var` is set to `reference` (read at every call: a few
/// hundred nanoseconds against an operation's milliseconds).
pub(crate) fn forced_reference(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "reference")
}

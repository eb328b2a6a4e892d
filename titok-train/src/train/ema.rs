//! Exponential moving average of the weights.
//!
//! Source: `modeling/modules/ema_model.py` with the decay fixed at 0.999 by
//! `create_model_and_loss_module`: the effective decay at optimisation step `t` (0-based count
//! of previous updates) is `min((1 + t) / (10 + t), 0.999)`; REFERENCE §7d.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// The official effective EMA decay after `t` updates.
pub fn ema_decay(t: u64, max_decay: f64) -> f64 {
    ((1.0 + t as f64) / (10.0 + t as f64)).min(max_decay)
}

/// Every float parameter of a module, flattened, in visiting order.
struct Flatten {
    values: Vec<Tensor<1>>,
}

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.values.push(param.val().inner().reshape([-1]));
    }
}

/// Blends each parameter with the next flattened source tensor.
struct Blend {
    sources: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, ema, mapper) = param.consume();
        let src: Tensor<D> = self.sources.next().expect("same module structure").reshape(ema.shape());
        let src = src.to_device(&ema.device());
        let blended = ema.mul_scalar(self.decay) + src.mul_scalar(1.0 - self.decay);
        Param::from_mapped_value(id, blended.detach(), mapper)
    }
}

/// `ema ← decay·ema + (1 - decay)·model`, parameter by parameter (same module structure).
///
/// Parameters the optimizer does not train (frozen parts) converge to the model's values as the
/// official code copies them; here they are blended like the rest, which is the same once
/// they are equal (they start equal).
pub fn ema_update<M: Module>(ema: M, model: &M, decay: f64) -> M {
    let mut flat = Flatten { values: Vec::new() };
    model.visit(&mut flat);
    ema.map(&mut Blend { sources: flat.values.into_iter(), decay })
}

/// Gives every parameter a fresh id and an untracked copy of its value.
struct Fresh;

impl ModuleMapper for Fresh {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let value = param.val().detach();
        Param::initialized(ParamId::new(), value).set_require_grad(false)
    }
}

/// An independent, non-trainable copy of a module to hold the EMA weights.
///
/// `module.clone().no_grad()` would not do: clones share parameter ids (the optimizer would
/// update both) and, for lazily initialised parameters, the `require_grad` flag.
pub fn ema_copy<M: Module>(module: &M) -> M {
    module.clone().map(&mut Fresh)
}

/// One EMA step of a trainee: blends `model` into `ema` with the official decay for the
/// current update count, then increments the count (a `[1]` buffer saved with checkpoints so
/// that a resumed run continues the same decay schedule). `max_decay = 0` copies the model.
pub fn ema_step<M: Module>(ema: M, model: &M, updates: &mut Param<Tensor<1>>, max_decay: f64) -> M {
    let t = updates.val().into_scalar::<f64>() as u64;
    let decay = if max_decay > 0.0 { ema_decay(t, max_decay) } else { 0.0 };
    let device = updates.device();
    *updates = Param::from_tensor(Tensor::from_floats([(t + 1) as f32], &device)).set_require_grad(false);
    ema_update(ema, model, decay)
}

/// A fresh update counter for [`ema_step`].
pub fn ema_counter(device: &burn::tensor::Device) -> Param<Tensor<1>> {
    Param::from_tensor(Tensor::zeros([1], device)).set_require_grad(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[test]
    fn official_decay_warms_up_to_0_999() {
        assert!((ema_decay(0, 0.999) - 0.1).abs() < 1e-12);
        assert!((ema_decay(10, 0.999) - 11.0 / 20.0).abs() < 1e-12);
        assert_eq!(ema_decay(100_000, 0.999), 0.999);
    }

    #[test]
    fn ema_copy_is_independent_of_the_model() {
        // `require_grad` only means something on an autodiff device (plain tensors report false).
        let device = Device::flex().autodiff();
        let a: Linear = LinearConfig::new(3, 2).init(&device); // lazily initialised parameters
        let ema = ema_copy(&a);
        assert_ne!(ema.weight.id, a.weight.id, "fresh parameter ids");
        assert!(a.weight.is_require_grad(), "the model stays trainable");
        assert!(!ema.weight.is_require_grad());
        let diff = (ema.weight.val() - a.weight.val()).abs().max().into_scalar::<f32>();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn update_blends_every_parameter() {
        let device = Device::flex();
        let a: Linear = LinearConfig::new(3, 2).init(&device);
        let b: Linear = LinearConfig::new(3, 2).init(&device);
        let expect = a.weight.val().mul_scalar(0.75) + b.weight.val().mul_scalar(0.25);
        let ema = ema_update(a, &b, 0.75);
        let diff = (ema.weight.val() - expect).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-7);
    }
}

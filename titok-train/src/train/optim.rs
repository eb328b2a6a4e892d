//! AdamW with the official parameter groups, and gradient clipping by the global norm.
//!
//! Source: `utils/train_utils.py::create_optimizer` (no weight decay for parameters with fewer
//! than 2 dimensions and for names containing `ln`, `bias`, `latent_tokens`, `mask_token`,
//! `embedding`, `norm`, `gamma`, `embed`) and `accelerator.clip_grad_norm_`; REFERENCE §7a.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWSettings {
    /// β1.
    pub beta1: f32,
    /// β2.
    pub beta2: f32,
    /// Weight decay of the decayed group.
    pub weight_decay: f32,
    /// ε (PyTorch's default 1e-8).
    pub epsilon: f32,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.99, weight_decay: 1e-4, epsilon: 1e-8 }
    }
}

/// Name fragments that exclude a parameter from weight decay (official list; Burn's norm
/// parameters are `gamma`/`beta`, so `beta` is added for LayerNorm/GroupNorm biases).
pub const NO_DECAY_FRAGMENTS: &[&str] =
    &["ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "beta", "embed"];

/// A float parameter of a module: its id, its module path as the optimizer sees it (e.g.
/// `model.encoder.ln_pre.gamma`) and its number of dimensions.
#[derive(Debug, Clone)]
pub struct ParamPath {
    /// The parameter's id.
    pub id: ParamId,
    /// Dot-separated module path.
    pub path: String,
    /// Number of dimensions.
    pub rank: usize,
}

/// Every float parameter of `module`, in visiting order, with its path.
pub fn param_paths<M: Module>(module: &M) -> Vec<ParamPath> {
    #[derive(Default)]
    struct Paths {
        path: Vec<String>,
        found: Vec<ParamPath>,
    }
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.found.push(ParamPath { id: param.id, path: self.path.join("."), rank: D });
        }
    }
    let mut v = Paths::default();
    module.visit(&mut v);
    v.found
}

/// Whether the official recipe excludes a parameter from weight decay: fewer than 2
/// dimensions, or a name fragment of [`NO_DECAY_FRAGMENTS`] in its path.
fn is_undecayed(p: &ParamPath) -> bool {
    p.rank < 2 || NO_DECAY_FRAGMENTS.iter().any(|f| p.path.contains(f))
}

/// Ids of the parameters of `module` that the official recipe excludes from weight decay.
pub fn no_decay_params<M: Module>(module: &M) -> Vec<ParamId> {
    param_paths(module).into_iter().filter(is_undecayed).map(|p| p.id).collect()
}

/// Module paths (as the optimizer sees them, e.g. `model.encoder.ln_pre.gamma`) of the
/// parameters the official recipe excludes from weight decay.
pub fn no_decay_paths<M: Module>(module: &M) -> Vec<String> {
    param_paths(module).into_iter().filter(is_undecayed).map(|p| p.path).collect()
}

/// AdamW over `module` with two groups: weight decay for matrices/kernels, none for the
/// parameters [`no_decay_params`] selects. The group is matched by module path, not by
/// parameter id, so it still holds after a resumed run has loaded parameters (with the ids
/// saved in the checkpoint) into the model.
pub fn adamw_with_groups<M: Module>(module: &M, s: AdamWSettings) -> ModuleOptimizer {
    let base = AdamWConfig::new().with_beta_1(s.beta1).with_beta_2(s.beta2).with_epsilon(s.epsilon);
    let decayed = base.clone().with_weight_decay(s.weight_decay).init();
    let undecayed = base.with_weight_decay(0.0).build();
    decayed.with_group(ParamGroup::from_paths(no_decay_paths(module)), undecayed, None)
}

/// Sums the squared gradients of every parameter of `module` present in `grads`.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

/// Scales the gradients of every parameter by a factor.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    module.visit(&mut Scale { grads, factor });
}

/// Clips the gradients of `module` by their global L2 norm (`torch.nn.utils.clip_grad_norm_`):
/// when the norm exceeds `max_norm` every gradient is scaled by `max_norm / (norm + 1e-6)`.
/// Returns the norm before clipping (0 when there are no gradients).
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut v = SquaredNorm { grads, sum: None };
    module.visit(&mut v);
    let Some(sum) = v.sum else { return 0.0 };
    let norm = sum.into_scalar::<f64>().sqrt();
    if norm.is_finite() && norm > max_norm {
        module.visit(&mut Scale { grads, factor: max_norm / (norm + 1e-6) });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Toy {
        proj: Linear,
        ln_pre: LayerNorm,
        latent_tokens: Param<Tensor<2>>,
    }

    #[test]
    fn official_groups_exclude_norms_biases_and_embeddings() {
        let device = Device::flex();
        let toy = Toy {
            proj: LinearConfig::new(4, 3).init(&device),
            ln_pre: LayerNormConfig::new(4).init(&device),
            latent_tokens: Param::from_tensor(Tensor::zeros([2, 4], &device)),
        };
        let ids = no_decay_params(&toy);
        assert!(!ids.contains(&toy.proj.weight.id), "a weight matrix is decayed");
        for id in [toy.proj.bias.as_ref().unwrap().id, toy.ln_pre.gamma.id, toy.latent_tokens.id] {
            assert!(ids.contains(&id));
        }
        assert_eq!(ids.len(), 4, "bias, gamma, beta, latent_tokens");
        let paths = no_decay_paths(&toy);
        assert!(
            paths.contains(&"ln_pre.gamma".to_string()) && paths.contains(&"latent_tokens".to_string()),
            "{paths:?}"
        );
    }

    #[test]
    fn global_norm_clipping_scales_all_gradients_together() {
        let device = Device::flex().autodiff();
        let lin = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::ones([1, 3], &device);
        let loss = lin.forward(x).sum().mul_scalar(100.0);
        let mut grads = GradientsParams::from_grads(loss.backward(), &lin);
        let before = clip_grad_norm(&lin, &mut grads, 1.0);
        assert!(before > 1.0);
        let after = clip_grad_norm(&lin, &mut grads, f64::INFINITY);
        assert!((after - 1.0).abs() < 1e-4, "norm after clipping {after}");
    }
}

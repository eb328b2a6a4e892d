//! The generator and the discriminator on burn-train's single optimizer.
//!
//! burn-train's `Learner` holds one `ModuleOptimizer`; the discriminator gets its own AdamW
//! instances as parameter groups of it, matched by module path ([`with_discriminator_groups`]).
//! A training step then
//! 1. computes the generator objective with a frozen copy of the discriminator and backwards it,
//!    keeping only the generator's gradients ([`PixelLoss::gradients`]);
//! 2. computes the discriminator objective on *detached* reconstructions and backwards it,
//!    keeping only the discriminator's gradients, and merges both sets; the updated LeCam EMA
//!    travels to `optimize` in the same `GradientsParams`, under the ids of its buffers (the only
//!    channel burn-train has from `TrainStep::step(&self)` to `optimize(self)`);
//! 3. in `optimize` ([`super::trainee::optimize`]), [`PixelLoss::take_discriminator_update`]
//!    separates the discriminator's gradients (and stores the LeCam EMA); the optimizer steps the
//!    generator with the schedule's learning rate, then the discriminator with its own
//!    ([`step_both_sides`]); the GAN clock advances ([`PixelLoss::advance`]).
//!
//! Source: `utils/train_utils.py::train_one_epoch` (the two optimizers of the official loop);
//! `../shared/REFERENCE.md` §7b.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::losses::DiscriminatorStep;
use crate::losses::pixel::{PixelLoss, replace};
use crate::train::optim::{AdamWSettings, ParamPath, clip_grad_norm, no_decay_params, param_paths};

impl PixelLoss {
    /// The gradients of one step for `trainee` (the module holding this loss and `generator`):
    /// the generator objective is backwarded and only `generator`'s gradients kept; the
    /// discriminator objective (if any) is backwarded and only the discriminator's gradients
    /// kept; both sets are merged, with the updated LeCam EMA registered under its buffers' ids
    /// for [`PixelLoss::take_discriminator_update`].
    pub fn gradients<M: Module, G: Module>(
        &self,
        trainee: &M,
        generator: &G,
        generator_loss: Tensor<1>,
        discriminator: Option<&DiscriminatorStep>,
    ) -> GradientsParams {
        let mut raw = generator_loss.backward();
        let mut grads = GradientsParams::from_params(&mut raw, trainee, &param_ids(generator));
        if let (Some(adv), Some(d)) = (&self.adversarial, discriminator) {
            let mut raw = d.loss.total.clone().backward();
            let mut d_grads = GradientsParams::from_params(&mut raw, trainee, &param_ids(&adv.discriminator));
            move_grads(&adv.discriminator, &mut d_grads, &mut grads);
            grads.register(adv.lecam_real.id, d.lecam.real.clone().detach());
            grads.register(adv.lecam_fake.id, d.lecam.fake.clone().detach());
        }
        grads
    }

    /// Takes the discriminator's part out of merged gradients: stores the LeCam EMA carried by
    /// [`PixelLoss::gradients`] and returns the discriminator's gradients (clipped to the global
    /// norm `grad_clip` when > 0, as the official loop clips each side separately) with the
    /// learning rate of this discriminator update, or `None` when it was not trained this step.
    pub fn take_discriminator_update(
        &mut self,
        grads: &mut GradientsParams,
        grad_clip: f64,
    ) -> Option<(f64, GradientsParams)> {
        let adv = self.adversarial.as_mut()?;
        let gan = self.config.gan.as_ref()?;
        if let Some(real) = grads.remove::<1>(adv.lecam_real.id) {
            adv.lecam_real = replace(&adv.lecam_real, real);
        }
        if let Some(fake) = grads.remove::<1>(adv.lecam_fake.id) {
            adv.lecam_fake = replace(&adv.lecam_fake, fake);
        }
        let mut d_grads = GradientsParams::new();
        move_grads(&adv.discriminator, grads, &mut d_grads);
        let step = adv.step();
        if d_grads.is_empty() || !gan.is_active(step) {
            return None;
        }
        if grad_clip > 0.0 {
            clip_grad_norm(&adv.discriminator, &mut d_grads, grad_clip);
        }
        let k = step - gan.discriminator_start + 1;
        Some((self.config.discriminator_lr.lr_at(k), d_grads))
    }
}

/// Adds the discriminator's own AdamW instances to `optim` as parameter groups (decayed and
/// not decayed, with the official name rules, as the official `discriminator_optimizer`); they
/// take precedence over the generator's groups. `trainee` is the module the optimizer steps
/// (holding `loss`): the groups are matched by the discriminator's module paths in it, which,
/// unlike parameter ids, survive loading a checkpoint on resume. Nothing changes without a
/// discriminator.
pub fn with_discriminator_groups<M: Module>(
    optim: ModuleOptimizer,
    trainee: &M,
    loss: &PixelLoss,
    s: AdamWSettings,
) -> ModuleOptimizer {
    let Some((decayed, undecayed)) = discriminator_paths(trainee, loss) else { return optim };
    let base = AdamWConfig::new().with_beta_1(s.beta1).with_beta_2(s.beta2).with_epsilon(s.epsilon);
    optim
        .with_group(ParamGroup::from_paths(decayed), base.clone().with_weight_decay(s.weight_decay).build(), None)
        .with_group(ParamGroup::from_paths(undecayed), base.with_weight_decay(0.0).build(), None)
}

/// Paths in `trainee` of the discriminator's parameters, `(decayed, not decayed)`; `None`
/// without a discriminator. (The fixed blur kernels are among them: they never get gradients,
/// so the optimizer never touches them. Trainability cannot be read here: on a plain device,
/// before `Module::train`, no parameter reports that it requires gradients.)
pub fn discriminator_paths<M: Module>(trainee: &M, loss: &PixelLoss) -> Option<(Vec<String>, Vec<String>)> {
    let d = &loss.adversarial.as_ref()?.discriminator;
    // The name rules apply to the discriminator's own paths, as the official optimizer sees them.
    let no_decay = no_decay_params(d);
    let ids: Vec<ParamId> = param_paths(d).into_iter().map(|p| p.id).collect();
    let (undecayed, decayed): (Vec<_>, Vec<_>) =
        param_paths(trainee).into_iter().filter(|p| ids.contains(&p.id)).partition(|p| no_decay.contains(&p.id));
    let paths_of = |v: Vec<ParamPath>| v.into_iter().map(|p| p.path).collect::<Vec<_>>();
    Some((paths_of(decayed), paths_of(undecayed)))
}

/// One optimisation step of both sides: the generator's gradients with the schedule's learning
/// rate, then (when trained this step) the discriminator's with its own. The gradient sets are
/// disjoint, so each parameter is updated once, by the AdamW instance of its group.
pub fn step_both_sides<M: Module>(
    optim: &mut ModuleOptimizer,
    lr: burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate,
    trainee: M,
    generator_grads: GradientsParams,
    discriminator: Option<(f64, GradientsParams)>,
) -> M {
    let next = optim.step(lr, trainee, generator_grads);
    match discriminator {
        Some((d_lr, d_grads)) => optim.step(d_lr, next, d_grads),
        None => next,
    }
}

/// Ids of every float parameter of a module that requires gradients (on an autodiff device;
/// on a plain one no parameter reports that it does).
pub fn param_ids<M: Module>(module: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0.push(param.id);
            }
        }
    }
    let mut v = Ids(Vec::new());
    module.visit(&mut v);
    v.0
}

/// Moves the gradients of the visited parameters from one set into another.
struct MoveGrads<'a> {
    from: &'a mut GradientsParams,
    into: &'a mut GradientsParams,
}

impl ModuleVisitor for MoveGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.from.remove::<D>(param.id) {
            self.into.register::<D>(param.id, g);
        }
    }
}

/// Moves the gradients of `module`'s parameters from `from` into `into`.
pub fn move_grads<M: Module>(module: &M, from: &mut GradientsParams, into: &mut GradientsParams) {
    module.visit(&mut MoveGrads { from, into });
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    use crate::config::TrainConfig;

    /// The discriminator's optimizer groups are found by path in the trainee holding the loss:
    /// every parameter once, kernels and weights decayed, biases and norms not.
    #[test]
    fn discriminator_groups_are_matched_by_path_in_the_trainee() {
        #[derive(Module, Debug)]
        struct Trainee {
            loss: PixelLoss,
        }
        let device = Device::flex();
        let mut c = TrainConfig::default();
        c.loss.gan_weight = 0.1;
        c.loss.discriminator_channels = 32;
        let t = Trainee { loss: PixelLoss::from_train(&c, &device).unwrap() };
        let (decayed, undecayed) = discriminator_paths(&t, &t.loss).unwrap();
        let d = &t.loss.adversarial.as_ref().unwrap().discriminator;
        assert_eq!(decayed.len() + undecayed.len(), param_paths(d).len());
        assert_eq!(param_paths(d).len(), 2 + 3 * 5 + 2 + 2, "stem, 3 stages (conv, blur, norm), head");
        assert!(decayed.contains(&"loss.adversarial.discriminator.block_in.weight".to_string()), "{decayed:?}");
        assert!(decayed.contains(&"loss.adversarial.discriminator.blocks.2.conv.weight".to_string()));
        assert!(undecayed.contains(&"loss.adversarial.discriminator.block_in.bias".to_string()), "{undecayed:?}");
        assert!(undecayed.contains(&"loss.adversarial.discriminator.blocks.0.norm.gamma".to_string()));
        assert!(discriminator_paths(&t, &PixelLoss::l2_only(1.0)).is_none());
    }

    /// The LeCam values travel to `optimize` under the buffers' ids; the discriminator's
    /// gradients are split off with the learning rate of its `k`-th update, `k` counted from
    /// the GAN start.
    #[test]
    fn the_discriminator_update_is_split_off_with_its_own_learning_rate() {
        let device = Device::flex();
        let mut c = TrainConfig::default();
        c.loss.gan_weight = 0.1;
        c.loss.gan_start = 2;
        c.loss.discriminator_channels = 32;
        c.optim = crate::config::OptimConfig { warmup_steps: 4, ..Default::default() };
        c.run.total_steps = 12;
        let mut loss = PixelLoss::from_train(&c, &device).unwrap();
        let adv = loss.adversarial.as_ref().unwrap();
        let (w, real) = (adv.discriminator.block_in.weight.clone(), adv.lecam_real.id);
        let mut grads = GradientsParams::new();
        grads.register(w.id, w.val().ones_like());
        assert!(loss.take_discriminator_update(&mut grads, 0.0).is_none(), "not before the GAN start");
        for _ in 0..3 {
            loss.advance();
        }
        let mut grads = GradientsParams::new();
        grads.register(w.id, w.val().ones_like());
        grads.register(real, Tensor::<1>::from_floats([0.5], &device));
        let (lr, d) = loss.take_discriminator_update(&mut grads, 0.0).expect("GAN on at step 3");
        // Step 3 is the discriminator's 2nd update: warm-up 2/4 of the peak.
        assert!((lr - 0.5e-4).abs() < 1e-12, "lr {lr}");
        assert_eq!((d.len(), grads.len()), (1, 0));
        let adv = loss.adversarial.as_ref().unwrap();
        assert_eq!(adv.lecam_real.val().into_scalar::<f32>(), 0.5);
        assert_eq!(adv.lecam_real.id, real, "the buffer keeps its id");
        assert_eq!(loss.step(), 3);
    }
}

//! The optimisation step every trainee shares: the discriminator's part split off (when the
//! trainee has one), the generator side clipped by its global gradient norm, both sides stepped,
//! the GAN clock advanced and the EMA of the weights updated.
//!
//! Source: `utils/train_utils.py::train_one_epoch` (`accelerator.clip_grad_norm_`, the optimizer
//! steps, `ema_model.step`) of the official code; REFERENCE §7a-7e.

use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};

use super::optim::clip_grad_norm;
use super::two_sides::step_both_sides;
use crate::losses::PixelLoss;

/// A module burn-train trains: a model, an EMA copy of it, and (for the pixel modes) the pixel
/// loss with its discriminator. Implemented by every training mode; its
/// `TrainStep::optimize` is [`optimize`].
pub trait Trainee: Module + Sized {
    /// The trained model (the generator side of a GAN).
    type Model: Module;

    /// The trained model, whose gradients are clipped together.
    fn model(&self) -> &Self::Model;

    /// Global gradient-norm clip of each side (0 = off).
    fn grad_clip(&self) -> f64;

    /// The pixel loss holding the discriminator, for the modes that decode to pixels.
    fn pixel_loss(&mut self) -> Option<&mut PixelLoss> {
        None
    }

    /// One EMA step after the optimizer step (blends the model into the EMA copy and counts the
    /// update).
    fn update_ema(self) -> Self;
}

/// One optimisation step of `trainee` (its `TrainStep::optimize`): takes the discriminator's
/// gradients and the LeCam EMA out of `grads` ([`PixelLoss::take_discriminator_update`]),
/// clips the model's gradients by their global norm, steps the model (and then the
/// discriminator with its own learning rate, [`step_both_sides`]), advances the GAN clock and
/// updates the EMA.
pub fn optimize<T: Trainee>(
    mut trainee: T,
    optim: &mut ModuleOptimizer,
    lr: ModuleLearningRate,
    mut grads: GradientsParams,
) -> T {
    let clip = trainee.grad_clip();
    let discriminator = trainee.pixel_loss().and_then(|loss| loss.take_discriminator_update(&mut grads, clip));
    if clip > 0.0 {
        clip_grad_norm(trainee.model(), &mut grads, clip);
    }
    let mut next = step_both_sides(optim, lr, trainee, grads, discriminator);
    if let Some(loss) = next.pixel_loss() {
        loss.advance();
    }
    next.update_ema()
}

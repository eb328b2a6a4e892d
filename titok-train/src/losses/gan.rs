//! Adversarial losses of the official stage-2 and single-stage recipes: the hinge
//! discriminator loss, the generator loss `−mean D(x̂)`, the LeCam regulariser ("Regularizing
//! Generative Adversarial Networks under Limited Data", Tseng et al., 2021) with its EMA state,
//! and the schedule that switches the GAN on at a given step.
//!
//! Source: `modeling/modules/losses.py` (`hinge_d_loss`, `compute_lecam_loss`,
//! `ReconstructionLoss_Stage2`) of the official TiTok code; `../shared/REFERENCE.md` §7b-7c,
//! fixture `../shared/golden/discriminator_tiny`.
//!
//! All losses take logit maps `[batch, 1, 16, 16]` (any shape works) and return `[1]` tensors.

use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Hinge loss of the discriminator: `0.5·(mean relu(1 − D(x)) + mean relu(1 + D(x̂)))`, `[1]`.
pub fn hinge_d_loss<const D: usize>(logits_real: Tensor<D>, logits_fake: Tensor<D>) -> Tensor<1> {
    let real = relu(logits_real.neg() + 1.0).mean();
    let fake = relu(logits_fake + 1.0).mean();
    (real + fake) * 0.5
}

/// Generator (adversarial) loss `−mean D(x̂)`, `[1]`.
pub fn generator_loss<const D: usize>(logits_fake: Tensor<D>) -> Tensor<1> {
    logits_fake.mean().neg()
}

/// Unweighted LeCam regulariser of the batch means of the logits, `[1]`:
/// `relu(mean D(x) − ema_fake)² + relu(ema_real − mean D(x̂))²`.
///
/// # Shapes
/// - `logits_real_mean`, `logits_fake_mean`: `[1]`
pub fn lecam_loss(logits_real_mean: Tensor<1>, logits_fake_mean: Tensor<1>, ema: &LecamEma) -> Tensor<1> {
    let real = relu(logits_real_mean - ema.fake.clone()).square();
    let fake = relu(ema.real.clone() - logits_fake_mean).square();
    real + fake
}

/// EMA of the batch-mean logits used by LeCam (the official `ema_real_logits_mean` /
/// `ema_fake_logits_mean` buffers, zeros at the start of training).
///
/// The state lives on the device of the logits (create it there); [`LecamEma::values`] and
/// [`LecamEma::from_values`] move it to and from checkpoints.
#[derive(Debug, Clone)]
pub struct LecamEma {
    /// EMA of `mean D(x)`, `[1]`.
    pub real: Tensor<1>,
    /// EMA of `mean D(x̂)`, `[1]`.
    pub fake: Tensor<1>,
    /// Decay per update (official 0.999).
    pub decay: f64,
}

impl LecamEma {
    /// Zero state, as at the start of official training.
    pub fn new(decay: f64, device: &Device) -> Self {
        Self::from_values(0.0, 0.0, decay, device)
    }

    /// A state with given values (e.g. from a checkpoint).
    pub fn from_values(real: f64, fake: f64, decay: f64, device: &Device) -> Self {
        Self {
            real: Tensor::from_floats([real as f32], device),
            fake: Tensor::from_floats([fake as f32], device),
            decay,
        }
    }

    /// The current `[real, fake]` values (reads the device).
    pub fn values(&self) -> [f64; 2] {
        [self.real.clone().into_scalar::<f64>(), self.fake.clone().into_scalar::<f64>()]
    }

    /// `ema ← ema·decay + mean·(1 − decay)` for both; the means are detached.
    ///
    /// # Shapes
    /// - `logits_real_mean`, `logits_fake_mean`: `[1]`
    pub fn update(&mut self, logits_real_mean: Tensor<1>, logits_fake_mean: Tensor<1>) {
        let d = self.decay;
        self.real = self.real.clone() * d + logits_real_mean.detach() * (1.0 - d);
        self.fake = self.fake.clone() * d + logits_fake_mean.detach() * (1.0 - d);
    }
}

/// Weights and schedule of the adversarial terms (official `losses.*` config keys in brackets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanLossConfig {
    /// First step at which the discriminator is trained and the generator loss is used
    /// (`discriminator_start`).
    pub discriminator_start: usize,
    /// Factor on the hinge loss and on the generator loss once started (`discriminator_factor`).
    pub discriminator_factor: f64,
    /// Weight of the generator loss in the generator objective (`discriminator_weight`).
    pub discriminator_weight: f64,
    /// Weight of the LeCam regulariser in the discriminator objective; 0 disables it and its
    /// EMA (`lecam_regularization_weight`).
    pub lecam_weight: f64,
    /// Decay of the LeCam EMA (`lecam_ema_decay`).
    pub lecam_ema_decay: f64,
}

impl GanLossConfig {
    /// Two-stage TiTok stage 2 (REFERENCE §7b): GAN from step 20 000, generator weight
    /// 0.01 × factor 1.0, LeCam 0.001 with EMA decay 0.999.
    pub fn stage2() -> Self {
        Self {
            discriminator_start: 20_000,
            discriminator_factor: 1.0,
            discriminator_weight: 0.01,
            lecam_weight: 0.001,
            lecam_ema_decay: 0.999,
        }
    }

    /// Single-stage recipe (REFERENCE §7c): GAN from step 200 000, generator weight 0.1,
    /// LeCam 0.001.
    pub fn single_stage() -> Self {
        Self { discriminator_start: 200_000, discriminator_weight: 0.1, ..Self::stage2() }
    }

    /// A copy that switches the GAN on at `step`.
    pub fn starting_at(self, step: usize) -> Self {
        Self { discriminator_start: step, ..self }
    }

    /// Whether the discriminator is trained at `step` (`step >= discriminator_start`).
    pub fn is_active(&self, step: usize) -> bool {
        step >= self.discriminator_start
    }

    /// The discriminator factor at `step`: 0 before the start, `discriminator_factor` after.
    pub fn factor(&self, step: usize) -> f64 {
        if self.is_active(step) { self.discriminator_factor } else { 0.0 }
    }

    /// Weight of [`generator_loss`] in the generator objective at `step`
    /// (`discriminator_weight · factor(step)`); 0 means the discriminator need not be run.
    pub fn generator_weight(&self, step: usize) -> f64 {
        self.discriminator_weight * self.factor(step)
    }

    /// The weighted generator term `generator_weight(step) · (−mean D(x̂))`, `[1]`.
    pub fn weighted_generator_loss<const D: usize>(&self, step: usize, logits_fake: Tensor<D>) -> Tensor<1> {
        generator_loss(logits_fake) * self.generator_weight(step)
    }

    /// The discriminator objective at `step` (official `_forward_discriminator`):
    /// `factor(step)·hinge + lecam_weight·LeCam(ema)`; the LeCam term uses the EMA from
    /// before this batch, then the EMA is updated with this batch's means (when
    /// `lecam_weight > 0`). Pass fake logits of detached reconstructions.
    ///
    /// # Shapes
    /// - `logits_real`, `logits_fake`: `[batch, 1, 16, 16]`
    pub fn discriminator_loss<const D: usize>(
        &self,
        step: usize,
        logits_real: Tensor<D>,
        logits_fake: Tensor<D>,
        ema: &mut LecamEma,
    ) -> DiscriminatorLoss {
        let real_mean = logits_real.clone().mean();
        let fake_mean = logits_fake.clone().mean();
        let hinge = hinge_d_loss(logits_real, logits_fake);
        let mut total = hinge.clone() * self.factor(step);
        let lecam = if self.lecam_weight > 0.0 {
            let lecam = lecam_loss(real_mean.clone(), fake_mean.clone(), ema);
            ema.update(real_mean.clone(), fake_mean.clone());
            total = total + lecam.clone() * self.lecam_weight;
            lecam
        } else {
            Tensor::zeros([1], &hinge.device())
        };
        DiscriminatorLoss {
            total,
            hinge,
            lecam,
            logits_real_mean: real_mean.detach(),
            logits_fake_mean: fake_mean.detach(),
        }
    }
}

/// The discriminator objective and its parts, all `[1]`.
#[derive(Debug, Clone)]
pub struct DiscriminatorLoss {
    /// What to minimise: `factor·hinge + lecam_weight·lecam`.
    pub total: Tensor<1>,
    /// Unweighted hinge loss.
    pub hinge: Tensor<1>,
    /// Unweighted LeCam regulariser (0 when disabled).
    pub lecam: Tensor<1>,
    /// Batch mean of the real logits (detached, for logging).
    pub logits_real_mean: Tensor<1>,
    /// Batch mean of the fake logits (detached, for logging).
    pub logits_fake_mean: Tensor<1>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_switches_on_at_the_start_step() {
        let c = GanLossConfig::stage2().starting_at(100);
        assert_eq!((c.factor(99), c.generator_weight(99)), (0.0, 0.0));
        assert!(!c.is_active(99) && c.is_active(100));
        assert_eq!(c.generator_weight(100), 0.01);
        assert_eq!(GanLossConfig::single_stage().generator_weight(200_000), 0.1);
    }

    #[test]
    fn hinge_is_zero_beyond_the_margins_and_lecam_ema_moves_toward_the_means() {
        let device = Device::flex();
        let real = Tensor::<1>::from_floats([2.0, 1.5], &device);
        let fake = Tensor::<1>::from_floats([-3.0, -1.0], &device);
        assert_eq!(hinge_d_loss(real.clone(), fake.clone()).into_scalar::<f32>(), 0.0);
        assert_eq!(generator_loss(fake.clone()).into_scalar::<f32>(), 2.0);

        let config = GanLossConfig::stage2().starting_at(0);
        let mut ema = LecamEma::new(config.lecam_ema_decay, &device);
        let loss = config.discriminator_loss(0, real, fake, &mut ema);
        // EMA zero: relu(1.75 − 0)² + relu(0 − (−2))² = 3.0625 + 4.
        assert!((loss.lecam.into_scalar::<f32>() - 7.0625).abs() < 1e-5);
        let [r, f] = ema.values();
        assert!((r - 0.00175).abs() < 1e-7 && (f + 0.002).abs() < 1e-7, "{r} {f}");
        assert!((loss.total.into_scalar::<f32>() - 0.0070625).abs() < 1e-7);
    }
}

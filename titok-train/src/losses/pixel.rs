//! The pixel-space objective shared by every mode that decodes to pixels (stage 2, single
//! stage, VQGAN): `l2·MSE + perceptual·P(x̂, x) + gan·(−mean D(x̂))` for the generator side,
//! `hinge + lecam·LeCam` for the discriminator, with the discriminator inside.
//!
//! Source: `modeling/modules/losses.py::ReconstructionLoss_Stage2` (`_forward_generator`,
//! `_forward_discriminator`) and `utils/train_utils.py::train_one_epoch` of the official code;
//! `../shared/REFERENCE.md` §7b-7c. How both sides are stepped with burn-train's one optimizer
//! is in [`crate::train::two_sides`].
//!
//! With both weights 0 (the defaults) no perceptual network is loaded and no discriminator is
//! built: the objective is `l2·MSE` and the module has no parameters.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::config::TrainConfig;
use crate::discriminator::{Discriminator, DiscriminatorConfig};
use crate::eval::{Filter, resize};
use crate::losses::gan::generator_loss;
use crate::losses::{DiscriminatorLoss, GanLossConfig, LecamEma, LossError, PerceptualKind, PerceptualLoss};
use crate::stages::runner::MetricSpec;
use crate::train::TrainError;
use crate::train::metrics::StepTerms;
use crate::train::schedule::WarmupCosine;

/// Weights and settings of a [`PixelLoss`] (from [`crate::config::LossConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PixelLossConfig {
    /// Weight of the pixel MSE (`[0, 1]` images).
    pub l2_weight: f64,
    /// Weight of the perceptual term (0 = no perceptual network).
    pub perceptual_weight: f64,
    /// Which perceptual term.
    pub perceptual_kind: PerceptualKind,
    /// Images smaller than this side are up-sampled to it before the perceptual network.
    pub perceptual_min_size: usize,
    /// The adversarial terms; `None` (GAN weight 0) = no discriminator.
    pub gan: Option<GanLossConfig>,
    /// The discriminator to build when `gan` is set.
    pub discriminator: DiscriminatorConfig,
    /// Learning rate of the discriminator: its `k`-th update (1-based) uses `lr_at(k)`. The
    /// official discriminator scheduler is stepped only when the discriminator trains, over
    /// `total_steps − gan_start` steps with the generator's warm-up and peak.
    pub discriminator_lr: WarmupCosine,
}

impl PixelLossConfig {
    /// L2 only (no perceptual network, no discriminator).
    pub fn l2_only(l2_weight: f64) -> Self {
        Self {
            l2_weight,
            perceptual_weight: 0.0,
            perceptual_kind: PerceptualKind::Lpips,
            perceptual_min_size: 0,
            gan: None,
            discriminator: DiscriminatorConfig::official(),
            discriminator_lr: WarmupCosine::new(0.0, 0.0, 0, 1),
        }
    }

    /// The pixel objective a training configuration asks for (`loss.*`, with the discriminator
    /// learning rate following `optim.*` from `loss.gan_start` to `run.total_steps`).
    ///
    /// # Errors
    /// [`TrainError::Config`] for an unknown perceptual name or negative weights.
    pub fn from_train(config: &TrainConfig) -> Result<Self, TrainError> {
        let l = &config.loss;
        for (name, w) in [
            ("l2_weight", l.l2_weight),
            ("perceptual_weight", l.perceptual_weight),
            ("gan_weight", l.gan_weight),
            ("lecam_weight", l.lecam_weight),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(TrainError::Config(format!("loss.{name} must be a finite number >= 0, got {w}")));
            }
        }
        if !(0.0..1.0).contains(&l.lecam_ema_decay) {
            return Err(TrainError::Config(format!("loss.lecam_ema_decay {} must be in [0, 1)", l.lecam_ema_decay)));
        }
        let perceptual_kind: PerceptualKind = l
            .perceptual_loss
            .parse()
            .map_err(|e: LossError| TrainError::Config(format!("loss.perceptual_loss: {e}")))?;
        let gan = (l.gan_weight > 0.0).then_some(GanLossConfig {
            discriminator_start: l.gan_start as usize,
            discriminator_factor: 1.0,
            discriminator_weight: l.gan_weight,
            lecam_weight: l.lecam_weight,
            lecam_ema_decay: l.lecam_ema_decay,
        });
        let o = &config.optim;
        let d_steps = config.run.total_steps.saturating_sub(l.gan_start).max(1) as usize;
        Ok(Self {
            l2_weight: l.l2_weight,
            perceptual_weight: l.perceptual_weight,
            perceptual_kind,
            perceptual_min_size: l.perceptual_min_size,
            gan,
            discriminator: DiscriminatorConfig {
                hidden_channels: l.discriminator_channels,
                num_stages: l.discriminator_stages,
                ..DiscriminatorConfig::official()
            },
            discriminator_lr: WarmupCosine::new(o.lr, o.end_lr, o.warmup_steps, d_steps),
        })
    }

    /// Whether the objective has a perceptual or adversarial term.
    pub fn has_extra_terms(&self) -> bool {
        self.perceptual_weight > 0.0 || self.gan.is_some()
    }
}

/// The discriminator with its state: the LeCam EMA and the GAN clock.
#[derive(Module, Debug)]
pub struct Adversarial {
    /// The discriminator (trained by the discriminator side only).
    pub discriminator: Discriminator,
    /// EMA of the batch-mean real logits (official buffer `ema_real_logits_mean`), `[1]`.
    pub lecam_real: Param<Tensor<1>>,
    /// EMA of the batch-mean fake logits (official buffer `ema_fake_logits_mean`), `[1]`.
    pub lecam_fake: Param<Tensor<1>>,
    /// Optimisation steps taken (the official `global_step`), `[1]`: decides when the GAN is
    /// on and the discriminator's learning rate. Saved with checkpoints.
    pub steps: Param<Tensor<1>>,
}

/// A `[1]` buffer (never trained) holding `value`.
fn buffer(value: f32, device: &Device) -> Param<Tensor<1>> {
    Param::from_tensor(Tensor::from_floats([value], device)).set_require_grad(false)
}

/// `param` with a new value, keeping its id.
pub(crate) fn replace(param: &Param<Tensor<1>>, value: Tensor<1>) -> Param<Tensor<1>> {
    Param::initialized(param.id, value.detach()).set_require_grad(false)
}

impl Adversarial {
    fn new(config: &DiscriminatorConfig, device: &Device) -> Result<Self, TrainError> {
        Ok(Self {
            discriminator: Discriminator::new(config, device)?,
            lecam_real: buffer(0.0, device),
            lecam_fake: buffer(0.0, device),
            steps: buffer(0.0, device),
        })
    }

    /// Completed optimisation steps.
    pub(crate) fn step(&self) -> usize {
        self.steps.val().into_scalar::<f64>() as usize
    }
}

/// The generator objective of one batch and its parts (all `[1]`).
#[derive(Debug, Clone)]
pub struct GeneratorLoss {
    /// What the generator minimises: `l2·MSE + perceptual·P + gan_weight(step)·G`.
    pub total: Tensor<1>,
    /// Unweighted MSE.
    pub l2: Tensor<1>,
    /// Unweighted perceptual loss (when its weight is > 0).
    pub perceptual: Option<Tensor<1>>,
    /// Unweighted generator loss `−mean D(x̂)` (when the GAN is on at this step).
    pub gan: Option<Tensor<1>>,
}

impl GeneratorLoss {
    /// Adds `l2`, `perceptual` and `gan` (those present) to logged terms.
    pub fn log(&self, terms: StepTerms) -> StepTerms {
        let mut terms = terms.with("l2", scalar(&self.l2));
        if let Some(p) = &self.perceptual {
            terms = terms.with("perceptual", scalar(p));
        }
        if let Some(g) = &self.gan {
            terms = terms.with("gan", scalar(g));
        }
        terms
    }
}

/// The discriminator objective of one batch and the LeCam EMA after it.
#[derive(Debug, Clone)]
pub struct DiscriminatorStep {
    /// The objective and its parts.
    pub loss: DiscriminatorLoss,
    /// The LeCam EMA updated with this batch's mean logits.
    pub lecam: LecamEma,
}

impl DiscriminatorStep {
    /// Adds `d_hinge`, `lecam`, `logits_real` and `logits_fake` to logged terms.
    pub fn log(&self, terms: StepTerms) -> StepTerms {
        terms
            .with("d_hinge", scalar(&self.loss.hinge))
            .with("lecam", scalar(&self.loss.lecam))
            .with("logits_real", scalar(&self.loss.logits_real_mean))
            .with("logits_fake", scalar(&self.loss.logits_fake_mean))
    }
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f64>()
}

/// Images smaller than `min_size` (either side) up-sampled (bilinear, `align_corners=False`) so
/// that the smaller side is `min_size`; others unchanged. Differentiable.
///
/// # Shapes
/// - `images`: `[batch, C, H, W]` -> `[batch, C, H', W']`
pub fn perceptual_input(images: Tensor<4>, min_size: usize) -> Tensor<4> {
    let [_, _, h, w] = images.dims();
    let side = h.min(w);
    if side == 0 || side >= min_size {
        return images;
    }
    let size = [(h * min_size).div_ceil(side), (w * min_size).div_ceil(side)];
    resize(images, size, Filter::BilinearAntialias)
}

/// The pixel-space loss: MSE, the frozen perceptual network and the discriminator with its
/// state. A module, so the discriminator and the LeCam EMA are saved with the trainee.
#[derive(Module, Debug)]
pub struct PixelLoss {
    /// The frozen perceptual network (perceptual weight > 0).
    pub perceptual: Option<PerceptualLoss>,
    /// The discriminator and its state (GAN weight > 0).
    pub adversarial: Option<Adversarial>,
    /// Weights and settings.
    #[module(skip)]
    pub config: PixelLossConfig,
}

impl PixelLoss {
    /// L2 only: no network, no parameters.
    pub fn l2_only(l2_weight: f64) -> Self {
        Self { perceptual: None, adversarial: None, config: PixelLossConfig::l2_only(l2_weight) }
    }

    /// Builds the loss for `image_size` images: loads the perceptual network when its weight is
    /// > 0, builds a randomly initialised discriminator when the GAN weight is > 0.
    ///
    /// # Errors
    /// [`TrainError::Config`] for missing or unusable perceptual weights (the ConvNeXt-S term
    /// always needs a file), images too small for the perceptual network, or a discriminator
    /// configuration that does not validate.
    pub fn new(
        config: PixelLossConfig,
        lpips_weights: Option<&Path>,
        convnext_weights: Option<&Path>,
        image_size: usize,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let perceptual = if config.perceptual_weight > 0.0 {
            let p = PerceptualLoss::new(config.perceptual_kind, lpips_weights, convnext_weights, device)
                .map_err(|e| TrainError::Config(format!("loss.perceptual_weight > 0: {e}")))?;
            if let Some(lpips) = &p.lpips {
                let side = image_size.max(config.perceptual_min_size);
                if side < lpips.net.min_size() {
                    return Err(TrainError::Config(format!(
                        "LPIPS ({:?}) needs images of at least {} px; the data is {image_size} px: set \
                         loss.perceptual_min_size >= {}",
                        lpips.net,
                        lpips.net.min_size(),
                        lpips.net.min_size()
                    )));
                }
            }
            Some(p)
        } else {
            None
        };
        let adversarial = match &config.gan {
            Some(_) => Some(Adversarial::new(&config.discriminator, device)?),
            None => None,
        };
        Ok(Self { perceptual, adversarial, config })
    }

    /// [`PixelLoss::new`] from a training configuration's `loss` section.
    ///
    /// # Errors
    /// As [`PixelLossConfig::from_train`] and [`PixelLoss::new`].
    pub fn from_train(config: &TrainConfig, device: &Device) -> Result<Self, TrainError> {
        let l = &config.loss;
        Self::new(
            PixelLossConfig::from_train(config)?,
            l.perceptual_weights.as_deref(),
            l.convnext_weights.as_deref(),
            config.data.image_size,
            device,
        )
    }

    /// Completed optimisation steps counted by the GAN clock (0 without a discriminator).
    pub fn step(&self) -> usize {
        self.adversarial.as_ref().map_or(0, Adversarial::step)
    }

    /// The generator objective.
    ///
    /// # Shapes
    /// - `reconstructions`, `targets`: `[batch, 3, H, W]`, targets in `[0, 1]`
    ///   (reconstructions unclamped)
    ///
    /// # Errors
    /// [`LossError::Input`] when the two shapes differ or do not fit the networks.
    pub fn generator(&self, reconstructions: Tensor<4>, targets: Tensor<4>) -> Result<GeneratorLoss, LossError> {
        if reconstructions.dims() != targets.dims() {
            return Err(LossError::Input(format!(
                "reconstructions {:?} and targets {:?} differ in shape",
                reconstructions.dims(),
                targets.dims()
            )));
        }
        let c = &self.config;
        let l2 = (reconstructions.clone() - targets.clone()).square().mean(); // [1]
        let mut total = l2.clone() * c.l2_weight;
        let perceptual = match &self.perceptual {
            Some(net) => {
                let x = perceptual_input(reconstructions.clone(), c.perceptual_min_size);
                let y = perceptual_input(targets, c.perceptual_min_size);
                let p = net.forward(x, y)?; // [1]
                total = total + p.clone() * c.perceptual_weight;
                Some(p)
            }
            None => None,
        };
        let gan = match (&self.adversarial, &c.gan) {
            (Some(adv), Some(gan)) if gan.is_active(adv.step()) && gan.discriminator_weight > 0.0 => {
                let weight = gan.discriminator_weight * gan.discriminator_factor;
                // The official code sets `requires_grad = False` on the discriminator here.
                let logits = adv.discriminator.clone().freeze().forward(reconstructions)?; // [b, 1, 16, 16]
                let g = generator_loss(logits);
                total = total + g.clone() * weight;
                Some(g)
            }
            _ => None,
        };
        Ok(GeneratorLoss { total, l2, perceptual, gan })
    }

    /// The discriminator objective on detached reconstructions, or `None` when there is no
    /// discriminator or it is not trained at this step.
    ///
    /// # Shapes
    /// - `reconstructions`, `targets`: `[batch, 3, H, W]`
    ///
    /// # Errors
    /// [`LossError::Model`] when the images do not fit the discriminator.
    pub fn discriminator(
        &self,
        reconstructions: Tensor<4>,
        targets: Tensor<4>,
    ) -> Result<Option<DiscriminatorStep>, LossError> {
        let (Some(adv), Some(gan)) = (&self.adversarial, &self.config.gan) else { return Ok(None) };
        let step = adv.step();
        if !gan.is_active(step) {
            return Ok(None);
        }
        let logits_real = adv.discriminator.forward(targets.detach())?; // [b, 1, 16, 16]
        let logits_fake = adv.discriminator.forward(reconstructions.detach())?;
        let mut lecam = LecamEma { real: adv.lecam_real.val(), fake: adv.lecam_fake.val(), decay: gan.lecam_ema_decay };
        let loss = gan.discriminator_loss(step, logits_real, logits_fake, &mut lecam);
        Ok(Some(DiscriminatorStep { loss, lecam }))
    }

    /// Advances the GAN clock by one optimisation step (call once per `optimize`).
    pub fn advance(&mut self) {
        if let Some(adv) = self.adversarial.as_mut() {
            let next = adv.steps.val() + 1.0;
            adv.steps = replace(&adv.steps, next);
        }
    }

    /// The logged terms of this loss beyond `l2`, as `(key, label, higher_is_better)`.
    pub fn extra_metrics(&self) -> Vec<(&'static str, &'static str, bool)> {
        let mut m = Vec::new();
        if self.perceptual.is_some() {
            m.push(("perceptual", "Perceptual", false));
        }
        if self.adversarial.is_some() {
            m.extend([
                ("gan", "GAN generator", false),
                ("d_hinge", "Discriminator hinge", false),
                ("lecam", "LeCam", false),
                ("logits_real", "D real logit", true),
                ("logits_fake", "D fake logit", false),
            ]);
        }
        m
    }

    /// `base` followed by [`PixelLoss::extra_metrics`] (`base` itself when there are none).
    pub fn metric_spec(&self, base: MetricSpec) -> MetricSpec {
        let extra = self.extra_metrics();
        if extra.is_empty() {
            return base;
        }
        // One small allocation per training run: burn-train's metric list is `'static`.
        Box::leak(base.iter().copied().chain(extra).collect::<Vec<_>>().into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_weights_build_no_networks() {
        let loss = PixelLoss::from_train(&TrainConfig::default(), &Device::flex()).unwrap();
        assert!(loss.perceptual.is_none() && loss.adversarial.is_none());
        assert!(!loss.config.has_extra_terms() && loss.extra_metrics().is_empty());
        assert_eq!(loss.num_params(), 0, "nothing new in the trainee's records");
        const BASE: MetricSpec = &[("loss", "Loss", false)];
        assert!(std::ptr::eq(loss.metric_spec(BASE), BASE));
        assert_eq!(loss.step(), 0);
    }

    #[test]
    fn the_configuration_maps_to_the_official_loss() {
        let mut c = TrainConfig::stage2_recipe();
        let p = PixelLossConfig::from_train(&c).unwrap();
        assert_eq!((p.l2_weight, p.perceptual_weight, p.perceptual_kind), (1.0, 0.1, PerceptualKind::Lpips));
        let gan = p.gan.expect("GAN on");
        assert_eq!(gan, GanLossConfig::stage2(), "stage 2: weight 0.01 from 20 000, LeCam 0.001, EMA 0.999");
        assert_eq!(p.discriminator, DiscriminatorConfig::official());
        // The discriminator's schedule spans the steps after the GAN starts.
        assert_eq!((p.discriminator_lr.total_steps, p.discriminator_lr.warmup_steps), (480_000, 5_000));
        c.loss.perceptual_loss = "vgg".into();
        assert!(PixelLossConfig::from_train(&c).unwrap_err().to_string().contains("perceptual_loss"));
        c.loss.perceptual_loss = "lpips".into();
        c.loss.gan_weight = -1.0;
        assert!(PixelLossConfig::from_train(&c).unwrap_err().to_string().contains("gan_weight"));
    }

    #[test]
    fn missing_or_unusable_perceptual_weights_are_errors() {
        let device = Device::flex();
        let mut c = TrainConfig::default();
        c.loss.perceptual_weight = 0.1;
        let err = PixelLoss::from_train(&c, &device).unwrap_err().to_string();
        assert!(err.contains("needs pretrained weights"), "{err}");
        c.loss.perceptual_loss = "convnext_s".into();
        let err = PixelLoss::from_train(&c, &device).unwrap_err().to_string();
        assert!(err.contains("convnext_small"), "{err}");
    }

    #[test]
    fn small_images_are_upsampled_for_the_perceptual_network() {
        let device = Device::flex();
        let x = Tensor::<4>::full([2, 3, 32, 32], 0.25, &device);
        let y = perceptual_input(x, 64);
        assert_eq!(y.dims(), [2, 3, 64, 64]);
        assert!((y - 0.25).abs().max().into_scalar::<f32>() < 1e-6, "a flat image stays flat");
        let big = Tensor::<4>::zeros([1, 3, 256, 256], &device);
        assert_eq!(perceptual_input(big, 64).dims(), [1, 3, 256, 256]);
        let wide = Tensor::<4>::zeros([1, 3, 32, 48], &device);
        assert_eq!(perceptual_input(wide, 64).dims(), [1, 3, 64, 96]);
    }
}

//! Training the 2D MaskGIT-VQGAN tokenizer, the stage-1 teacher when no pretrained one is at
//! hand: pixel L2 + quantizer loss (commitment + codebook) with the straight-through estimator.
//!
//! Source: the MaskGIT-VQGAN of `modeling/modules/maskgit_vqgan.py` (the official code only
//! loads it); the losses are the VQ-VAE objective of the quantizer (REFERENCE §4-5).

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::module::{Module, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use titok_model::checkpoint::{StorageDType, load_vqgan, save_vqgan};
use titok_model::{CodebookStats, MaskgitVqgan, VqganConfig};

use super::runner::{Launch, MetricSpec, launch, open_data, spread, train_loader, valid_loader};
use crate::config::TrainConfig;
use crate::data::image_io::save_png_grid;
use crate::data::{ImageBatch, ImageBatcher, Transform};
use crate::eval::psnr;
use crate::losses::PixelLoss;
use crate::train::TrainError;
use crate::train::ema::{ema_copy, ema_counter, ema_step};
use crate::train::metrics::StepTerms;
use crate::train::optim::{AdamWSettings, adamw_with_groups};
use crate::train::run::RunDir;
use crate::train::schedule::WarmupCosine;
use crate::train::strategy::StepHook;
use crate::train::trainee::{Trainee, optimize};
use crate::train::two_sides::with_discriminator_groups;

/// The module burn-train trains: the VQGAN, its EMA copy and the pixel loss.
#[derive(Module, Debug)]
pub struct VqganTrainee {
    /// The trained model.
    pub model: MaskgitVqgan,
    /// Exponential moving average of `model`.
    pub ema: MaskgitVqgan,
    /// Number of EMA updates so far.
    pub ema_updates: Param<Tensor<1>>,
    /// The pixel objective: L2, plus the perceptual and GAN terms (with the discriminator)
    /// when weighted.
    pub loss: PixelLoss,
    /// Quantizer loss weight.
    #[module(skip)]
    pub quantizer_weight: f64,
    /// Maximum EMA decay (0 = none).
    #[module(skip)]
    pub ema_max_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[module(skip)]
    pub grad_clip: f64,
}

impl VqganTrainee {
    /// Loss, logged terms and reconstructions of one batch.
    fn forward_loss(&self, images: Tensor<4>) -> (Tensor<1>, StepTerms, Tensor<4>) {
        let b = images.dims()[0];
        let latents = self.model.encoder.forward(images.clone());
        let (z_q, q) = self.model.quantize_latents(latents);
        let recon = self.model.decoder.forward(z_q);
        // Shapes were checked when the loss was built (`PixelLoss::new`).
        let pixel = self.loss.generator(recon.clone(), images.clone()).expect("VQGAN images fit the loss networks");
        let loss = pixel.total.clone() + q.losses.quantizer_loss.clone().mul_scalar(self.quantizer_weight);
        let stats = CodebookStats::from_ids(
            q.indices.try_into_vec_as::<i64>().unwrap_or_default(),
            self.model.quantize.codebook_size(),
        );
        let psnr = psnr(recon.clone().detach().clamp(0.0, 1.0), images.detach())
            .map(|p| p.mean().into_scalar::<f64>())
            .unwrap_or(f64::NAN);
        let terms = StepTerms::new(b).with("loss", loss.clone().into_scalar::<f64>());
        let terms = pixel
            .log(terms)
            .with("quantizer", q.losses.quantizer_loss.into_scalar::<f64>())
            .with("psnr", psnr)
            .with("usage", stats.usage)
            .with("perplexity", stats.perplexity);
        (loss, terms, recon)
    }
}

impl TrainStep for VqganTrainee {
    type Input = ImageBatch;
    type Output = StepTerms;

    fn step(&self, batch: ImageBatch) -> TrainOutput<StepTerms> {
        let images = batch.images;
        let (loss, mut item, recon) = self.forward_loss(images.clone());
        let d = self.loss.discriminator(recon, images).expect("VQGAN images fit the discriminator");
        if let Some(d) = &d {
            item = d.log(item);
        }
        TrainOutput { grads: self.loss.gradients(self, &self.model, loss, d.as_ref()), item }
    }

    fn optimize(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: GradientsParams) -> Self {
        optimize(self, optim, lr, grads)
    }
}

impl Trainee for VqganTrainee {
    type Model = MaskgitVqgan;

    fn model(&self) -> &MaskgitVqgan {
        &self.model
    }

    fn grad_clip(&self) -> f64 {
        self.grad_clip
    }

    fn pixel_loss(&mut self) -> Option<&mut PixelLoss> {
        Some(&mut self.loss)
    }

    fn update_ema(mut self) -> Self {
        self.ema = ema_step(self.ema, &self.model, &mut self.ema_updates, self.ema_max_decay);
        self
    }
}

impl InferenceStep for VqganTrainee {
    type Input = ImageBatch;
    type Output = StepTerms;

    fn step(&self, batch: ImageBatch) -> StepTerms {
        self.forward_loss(batch.images).1
    }
}

/// Trains a MaskGIT-VQGAN as configured (`model.vqgan`, default the official numbers) in the
/// run folder, resuming when it holds a checkpoint. Writes the EMA weights (official teacher
/// keys + config) at every checkpoint and a reconstruction grid at every validation.
///
/// # Errors
/// [`TrainError`] for configurations, data, checkpoints and failed runs.
pub fn train_vqgan(config: TrainConfig, run_dir: &Path, devices: &[Device]) -> Result<MaskgitVqgan, TrainError> {
    let device = devices.first().ok_or_else(|| TrainError::Config("no training device".into()))?;
    config.validate_run()?;
    let vq_config = config.model.vqgan.clone().unwrap_or_else(VqganConfig::official);
    vq_config.validate()?;
    let f = vq_config.downsample_factor();
    if !config.data.image_size.is_multiple_of(f) {
        return Err(TrainError::Config(format!(
            "image size {} is not a multiple of the VQGAN factor {f}",
            config.data.image_size
        )));
    }
    let run = RunDir::create(run_dir)?;
    let (train, valid) = open_data(&config)?;
    device.seed(config.run.seed);
    let model = match &config.model.init {
        Some(path) => load_vqgan(path, device)?,
        None => MaskgitVqgan::new(&vq_config, device),
    };
    let trainee = VqganTrainee {
        ema: ema_copy(&model),
        model,
        ema_updates: ema_counter(device),
        loss: PixelLoss::from_train(&config, device)?,
        quantizer_weight: config.loss.quantizer_weight,
        ema_max_decay: config.run.ema_decay,
        grad_clip: config.optim.grad_clip,
    };
    let o = &config.optim;
    let settings =
        AdamWSettings { beta1: o.beta1, beta2: o.beta2, weight_decay: o.weight_decay, ..AdamWSettings::default() };
    let optim = with_discriminator_groups(adamw_with_groups(&trainee, settings), &trainee, &trainee.loss, settings);
    let schedule = WarmupCosine::new(o.lr, o.end_lr, o.warmup_steps, config.run.total_steps as usize);

    let preview = ImageBatcher::new(Transform::eval(config.data.image_size as u32)).batch(spread(&valid, 8), device);
    let samples = run.samples();
    let on_validation: StepHook<VqganTrainee> = Arc::new(move |t: &VqganTrainee, step| {
        let ema = t.ema.valid();
        let images = preview.images.clone().to_device(&ema.quantize.embedding.weight.device());
        let (z_q, _) = ema.quantize_latents(ema.encoder.forward(images.clone()));
        let recon = ema.decoder.forward(z_q).clamp(0.0, 1.0);
        save_png_grid(&samples.join(format!("recon-{step:07}.png")), Tensor::cat(vec![images, recon], 0), preview.len())
            .map_err(|e| TrainError::Data(e.to_string()))
    });
    let weights_run = run.clone();
    let (keep, every) = (config.run.keep_checkpoints, config.run.checkpoint_every);
    let saved_config = vq_config.clone();
    let on_checkpoint: StepHook<VqganTrainee> = Arc::new(move |t: &VqganTrainee, step| {
        save_vqgan(&t.ema.valid(), &saved_config, &weights_run.weights_dir(step), StorageDType::F32)?;
        weights_run.prune_weights(step, keep, every);
        Ok(())
    });
    const METRICS: MetricSpec = &[
        ("loss", "Loss", false),
        ("l2", "L2", false),
        ("quantizer", "Quantizer loss", false),
        ("psnr", "PSNR dB", true),
        ("usage", "Codebook usage", true),
        ("perplexity", "Perplexity", true),
    ];
    let launch_args = Launch {
        train: train_loader(&config, &train, device),
        valid: valid_loader(&config, valid, device),
        config,
        run,
        device: device.clone(),
        metrics: trainee.loss.metric_spec(METRICS),
        on_checkpoint,
        on_validation,
        extra_devices: devices[1..].to_vec(),
    };
    Ok(launch(trainee, optim, schedule, launch_args)?.ema)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> VqganConfig {
        VqganConfig {
            hidden_channels: 32,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            z_channels: 8,
            codebook_size: 16,
            ..VqganConfig::official()
        }
    }

    #[test]
    fn a_train_step_produces_gradients_and_moves_the_weights() {
        let device = Device::flex();
        let model = MaskgitVqgan::new(&tiny(), &device);
        let trainee = VqganTrainee {
            ema: ema_copy(&model),
            model,
            ema_updates: ema_counter(&device),
            loss: PixelLoss::l2_only(1.0),
            quantizer_weight: 1.0,
            ema_max_decay: 0.999,
            grad_clip: 1.0,
        };
        let ad = device.clone().autodiff();
        let trainee = trainee.train().fork(&ad);
        assert!(trainee.model.encoder.conv_in.weight.is_require_grad());
        assert!(!trainee.ema.encoder.conv_in.weight.is_require_grad());
        let images = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Uniform(0.0, 1.0), &ad);
        let batch = ImageBatch { images, labels: None, names: vec!["a".into(), "b".into()], indices: vec![0, 1] };
        let out = TrainStep::step(&trainee, batch);
        assert!(out.item.get("loss").unwrap().is_finite());
        let mut optim = adamw_with_groups(&trainee, AdamWSettings::default());
        let before = trainee.model.encoder.conv_in.weight.val().inner();
        let ema_before = trainee.ema.encoder.conv_in.weight.val().inner();
        let next = trainee.optimize(&mut optim, 1e-2.into(), out.grads);
        let moved = (next.model.encoder.conv_in.weight.val().inner() - before.clone()).abs().max().into_scalar::<f32>();
        assert!(moved > 0.0, "the optimizer step changes the weights");
        // First EMA update: decay 0.1, so the EMA moves 90% of the way to the new weights.
        let expect = ema_before.mul_scalar(0.1) + next.model.encoder.conv_in.weight.val().inner().mul_scalar(0.9);
        let diff = (next.ema.encoder.conv_in.weight.val().inner() - expect).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "EMA update {diff}");
        assert_eq!(next.ema_updates.val().into_scalar::<f32>(), 1.0);
    }
}

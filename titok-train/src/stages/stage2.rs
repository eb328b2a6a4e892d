//! Stage 2, decoder fine-tuning: the encoder, quantizer and latent tokens of a VQ TiTok are
//! frozen and its decoder side is fine-tuned toward pixels with L2 + perceptual + adversarial
//! losses; a discriminator is trained alongside with the hinge loss and LeCam.
//!
//! - **Two-stage** models (stage 1 on proxy codes): the decoder, the MaskGIT-VQGAN pixel decoder
//!   and its codebook (`pixel_quantize`, looked up softly) are trained.
//! - **Single-stage** VQ models (already decoding to pixels): the decoder is trained, as the
//!   official decoder fine-tuning does with the tokens fixed (`finetune_decoder` freezes the
//!   same parts); this is the "single stage + stage 2" recipe of the next default CIFAR-10
//!   tokenizer (`configs/cifar10-titok-s32-stage2.json`).
//!
//! Source: `configs/training/TiTok/stage2/*.yaml`, `modeling/titok.py` (`finetune_decoder`),
//! `modeling/modules/losses.py::ReconstructionLoss_Stage2`, `utils/train_utils.py`
//! (`create_model_and_loss_module`, `create_optimizer`, `train_one_epoch`); REFERENCE §7b, §7d.
//! The generator/discriminator step on burn-train's single optimizer is described in
//! [`crate::train::two_sides`].

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::module::{Module, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use titok_model::checkpoint::keymap::TITOK;
use titok_model::checkpoint::{
    HfConfig, StorageDType, WEIGHTS_FILE, load_safetensors, load_vqgan, read_safetensors_header, save_titok,
    vqgan_config,
};
use titok_model::{MaskgitVqgan, Titok, TitokConfig, VqganConfig};

use super::runner::{Launch, MetricSpec, launch, open_data, spread, train_loader, valid_loader};
use crate::config::TrainConfig;
use crate::data::image_io::save_png_grid;
use crate::data::{ImageBatch, ImageBatcher, Transform};
use crate::eval::psnr;
use crate::losses::LossError;
use crate::losses::{GeneratorLoss, PixelLoss};
use crate::train::TrainError;
use crate::train::ema::{ema_copy, ema_counter, ema_decay, ema_update};
use crate::train::metrics::StepTerms;
use crate::train::optim::{AdamWSettings, adamw_with_groups};
use crate::train::run::RunDir;
use crate::train::schedule::WarmupCosine;
use crate::train::strategy::StepHook;
use crate::train::trainee::{Trainee, optimize};
use crate::train::two_sides::with_discriminator_groups;

/// The module burn-train trains in stage 2: the VQ TiTok model (two-stage with its pixel
/// decoder, or single-stage), its EMA copy, and the pixel loss (frozen LPIPS, discriminator,
/// LeCam EMA, GAN clock).
#[derive(Module, Debug)]
pub struct Stage2Trainee {
    /// The model; encoder, quantizer and latent tokens do not require gradients.
    pub model: Titok,
    /// Exponential moving average of `model`'s trained parts (the frozen parts are copies, as
    /// the official EMA copies parameters that do not require gradients); exported at
    /// checkpoints.
    pub ema: Titok,
    /// The pixel objective and the discriminator.
    pub loss: PixelLoss,
    /// Number of EMA updates so far.
    pub ema_updates: Param<Tensor<1>>,
    /// Maximum EMA decay (0 = `ema` follows `model`).
    #[module(skip)]
    pub ema_max_decay: f64,
    /// Global gradient-norm clip of each side (0 = off).
    #[module(skip)]
    pub grad_clip: f64,
}

/// Freezes what the official stage 2 freezes: encoder, quantizer and latent tokens
/// (`TiTok.encode` runs them under `torch.no_grad()` when `finetune_decoder` is set).
pub fn freeze_encoder(mut model: Titok) -> Titok {
    model.latent_tokens = model.latent_tokens.set_require_grad(false);
    model.encoder = model.encoder.no_grad();
    model.quantize = model.quantize.no_grad();
    model
}

impl Stage2Trainee {
    /// Wraps a stage-2 model (a two-stage VQ TiTok with `finetune_decoder`, its pixel decoder
    /// and codebook; or a single-stage VQ TiTok): freezes its encoder side and starts the EMA as
    /// a copy.
    ///
    /// # Errors
    /// [`TrainError::Config`] for a VAE model, or a two-stage model without its pixel decoder.
    pub fn new(model: Titok, loss: PixelLoss, ema_max_decay: f64, grad_clip: f64) -> Result<Self, TrainError> {
        if model.quantize.is_none() {
            return Err(TrainError::Config("stage 2 fine-tunes VQ tokenizers; this one is a VAE".into()));
        }
        if model.config.is_legacy && (model.pixel_decoder.is_none() || model.pixel_quantize.is_none()) {
            return Err(TrainError::Config(
                "stage 2 of a two-stage TiTok needs its MaskGIT-VQGAN pixel decoder and codebook".into(),
            ));
        }
        let device = model.latent_tokens.device();
        let model = freeze_encoder(model);
        Ok(Self { ema: ema_copy(&model), model, loss, ema_updates: ema_counter(&device), ema_max_decay, grad_clip })
    }

    /// Reconstructions of images through the frozen encoder and the trained decoder side.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, S, S]` in `[0, 1]` -> `[batch, 3, S, S]` (unclamped)
    pub fn reconstruct(&self, images: Tensor<4>) -> Tensor<4> {
        let latents = self.model.encode_unchecked(images).latents.detach(); // [b, C, 1, K]
        self.model.decode(latents)
    }

    /// The generator objective of a batch and the reconstructions.
    ///
    /// # Errors
    /// [`LossError::Input`] when the images do not fit the loss networks.
    pub fn generator_loss(&self, images: Tensor<4>) -> Result<(GeneratorLoss, Tensor<4>), LossError> {
        let recon = self.reconstruct(images.clone());
        Ok((self.loss.generator(recon.clone(), images)?, recon))
    }

    /// Logged terms of a generator objective.
    fn log(images: &Tensor<4>, recon: &Tensor<4>, g: &GeneratorLoss) -> StepTerms {
        let psnr = psnr(recon.clone().detach().clamp(0.0, 1.0), images.clone().detach())
            .map(|p| p.mean().into_scalar::<f64>())
            .unwrap_or(f64::NAN);
        let terms =
            StepTerms::new(images.dims()[0]).with("loss", g.total.clone().into_scalar::<f64>()).with("psnr", psnr);
        g.log(terms)
    }
}

/// One EMA step of the trained parts (decoder, and a two-stage model's pixel decoder and pixel
/// codebook) with the official decay schedule; the frozen parts of `ema` stay the copies they
/// are.
fn ema_step_trained(mut ema: Titok, model: &Titok, updates: &mut Param<Tensor<1>>, max_decay: f64) -> Titok {
    let t = updates.val().into_scalar::<f64>() as u64;
    let decay = if max_decay > 0.0 { ema_decay(t, max_decay) } else { 0.0 };
    let device = updates.device();
    *updates = Param::initialized(updates.id, Tensor::from_floats([(t + 1) as f32], &device)).set_require_grad(false);
    ema.decoder = ema_update(ema.decoder, &model.decoder, decay);
    ema.pixel_decoder = ema_update(ema.pixel_decoder, &model.pixel_decoder, decay);
    ema.pixel_quantize = ema_update(ema.pixel_quantize, &model.pixel_quantize, decay);
    ema
}

impl TrainStep for Stage2Trainee {
    type Input = ImageBatch;
    type Output = StepTerms;

    fn step(&self, batch: ImageBatch) -> TrainOutput<StepTerms> {
        let images = batch.images;
        // Shapes were checked when the run started (`train_stage2`).
        let (g, recon) = self.generator_loss(images.clone()).expect("stage-2 inputs fit the loss networks");
        let d = self.loss.discriminator(recon.clone(), images.clone()).expect("stage-2 inputs fit the discriminator");
        let mut item = Self::log(&images, &recon, &g);
        if let Some(d) = &d {
            item = d.log(item);
        }
        let grads = self.loss.gradients(self, &self.model, g.total, d.as_ref());
        TrainOutput { grads, item }
    }

    fn optimize(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: GradientsParams) -> Self {
        optimize(self, optim, lr, grads)
    }
}

impl Trainee for Stage2Trainee {
    type Model = Titok;

    fn model(&self) -> &Titok {
        &self.model
    }

    fn grad_clip(&self) -> f64 {
        self.grad_clip
    }

    fn pixel_loss(&mut self) -> Option<&mut PixelLoss> {
        Some(&mut self.loss)
    }

    fn update_ema(mut self) -> Self {
        self.ema = ema_step_trained(self.ema, &self.model, &mut self.ema_updates, self.ema_max_decay);
        self
    }
}

impl InferenceStep for Stage2Trainee {
    type Input = ImageBatch;
    type Output = StepTerms;

    fn step(&self, batch: ImageBatch) -> StepTerms {
        let images = batch.images;
        let (g, recon) = self.generator_loss(images.clone()).expect("stage-2 inputs fit the loss networks");
        Self::log(&images, &recon, &g)
    }
}

/// The AdamW optimizer of stage 2: the official groups for the generator side (no weight decay
/// on norms, biases, embeddings, ...) and the discriminator's own AdamW instances as groups.
pub fn stage2_optimizer(trainee: &Stage2Trainee, s: AdamWSettings) -> ModuleOptimizer {
    with_discriminator_groups(adamw_with_groups(trainee, s), trainee, &trainee.loss, s)
}

/// The MaskGIT-VQGAN configuration of a `pixel_decoder` path: a folder's `config.json` (or the
/// official numbers without one), the official numbers for a weights file.
fn pixel_vqgan_config(path: &Path) -> Result<VqganConfig, TrainError> {
    Ok(if path.is_dir() { vqgan_config(path)? } else { VqganConfig::official() })
}

/// `model` with the VQGAN's decoder and codebook as its pixel decoder (`finetune_decoder`).
fn attach_pixel_decoder(mut model: Titok, vqgan: MaskgitVqgan, config: VqganConfig) -> Titok {
    model.config.finetune_decoder = true;
    model.config.pixel_vqgan = config;
    model.pixel_quantize = Some(vqgan.quantize);
    model.pixel_decoder = Some(vqgan.decoder);
    model
}

/// Loads the model stage 2 starts from: `init` is a TiTok HF folder (ours or official) of a VQ
/// model. A single-stage model is loaded strictly as it is (it has no pixel decoder, and
/// `pixel_decoder` must not be given). A two-stage stage-1 checkpoint has no `pixel_*` weights:
/// it is loaded strictly as a stage-1 model (every one of its tensors, nothing missing but the
/// `pixel_*` ones) and the MaskGIT-VQGAN at `pixel_decoder` supplies `pixel_decoder` +
/// `pixel_quantize` (its encoder is dropped), as the official `create_model_and_loss_module`
/// does. A checkpoint that already has `pixel_*` weights keeps them unless `pixel_decoder` is
/// given, whose weights then replace them.
///
/// # Errors
/// [`TrainError::Config`] for a VAE model, a single-stage model with `pixel_decoder`, a stage-1
/// checkpoint without `pixel_decoder`, or a VQGAN whose codebook does not match the proxy-code
/// head;
/// [`TrainError::Model`] for unreadable or mismatched files.
pub fn load_stage2_model(init: &Path, pixel_decoder: Option<&Path>, device: &Device) -> Result<Titok, TrainError> {
    if !init.is_dir() {
        return Err(TrainError::Config(format!(
            "model.init {} is not a folder: stage 2 starts from a TiTok HF folder (config.json + model.safetensors)",
            init.display()
        )));
    }
    let weights = init.join(WEIGHTS_FILE);
    // The kind first, from the raw keys: a two-stage config.json may only validate with its
    // pixel decoder (`read_init_config`).
    let hf = HfConfig::from_dir(init)?;
    if hf.str_or("model.vq_model.quantize_mode", "vq")? == "vae" {
        return Err(TrainError::Config(format!("{} is a VAE tokenizer; stage 2 fine-tunes VQ models", init.display())));
    }
    if !hf.bool_or("model.vq_model.is_legacy", true)? {
        if let Some(p) = pixel_decoder {
            return Err(TrainError::Config(format!(
                "{} is a single-stage tokenizer (it decodes to pixels): remove `pixel_decoder` ({})",
                init.display(),
                p.display()
            )));
        }
        return Ok(load_safetensors(Titok::new(&hf.titok()?, device)?, &weights, &TITOK)?);
    }
    let vqgan = match pixel_decoder {
        Some(p) => Some((load_vqgan(p, device)?, pixel_vqgan_config(p)?)),
        None => None,
    };
    let mut config = read_init_config(hf, vqgan.as_ref().map(|(_, c)| c))?;
    let header = read_safetensors_header(&weights)?;
    let has_pixel = header.keys().any(|k| k.starts_with("pixel_"));
    if let (Some(head), Some((_, vc))) = (header.get("decoder.ffn.2.weight"), &vqgan)
        && head.shape.first() != Some(&vc.codebook_size)
    {
        return Err(TrainError::Config(format!(
            "the proxy-code head of {} predicts {:?} codes but the pixel decoder's codebook has {}",
            init.display(),
            head.shape.first(),
            vc.codebook_size
        )));
    }
    match (has_pixel, vqgan) {
        (true, None) => {
            config.finetune_decoder = true;
            Ok(load_safetensors(Titok::new(&config, device)?, &weights, &TITOK)?)
        }
        (true, Some((vqgan, vc))) => {
            config.finetune_decoder = true;
            let model = load_safetensors(Titok::new(&config, device)?, &weights, &TITOK)?;
            Ok(attach_pixel_decoder(model, vqgan, vc))
        }
        (false, Some((vqgan, vc))) => {
            config.finetune_decoder = false;
            let model = load_safetensors(Titok::new(&config, device)?, &weights, &TITOK)?;
            Ok(attach_pixel_decoder(model, vqgan, vc))
        }
        (false, None) => Err(TrainError::Config(format!(
            "{} is a stage-1 checkpoint (no pixel_* weights): set `pixel_decoder` to the MaskGIT-VQGAN \
             whose codes it was trained on",
            init.display()
        ))),
    }
}

/// The TiTok configuration of an HF folder's `config.json` (`hf`), with `pixel` (when given) as its MaskGIT-VQGAN.
///
/// `config.json` records only the pixel decoder's width (the other numbers are taken to be
/// official), so a two-stage model built on another MaskGIT-VQGAN (e.g. f = 4 at 32 px) does not
/// validate as read: it is then parsed with the two-stage check off and validated again with
/// `pixel`.
fn read_init_config(mut hf: HfConfig, pixel: Option<&VqganConfig>) -> Result<TitokConfig, TrainError> {
    let Some(pixel) = pixel else { return Ok(hf.titok()?) };
    let is_legacy = hf.bool_or("model.vq_model.is_legacy", true)?;
    if let Some(vq) = hf.root.pointer_mut("/model/vq_model").and_then(serde_json::Value::as_object_mut) {
        vq.insert("is_legacy".into(), serde_json::Value::Bool(false));
    }
    let mut config = hf.titok()?;
    config.is_legacy = is_legacy;
    config.pixel_vqgan = pixel.clone();
    config.validate()?;
    Ok(config)
}

/// Runs stage 2 as configured in the run folder, resuming when it holds a checkpoint:
/// `model.init` (a single-stage VQ TiTok HF folder, or a stage-1 or stage-2 one with
/// `pixel_decoder`, a MaskGIT-VQGAN) as in [`load_stage2_model`]; the loss from `loss.*`
/// (`l2_weight`, `perceptual_weight`, `gan_weight` from `gan_start`, `lecam_weight`); AdamW,
/// warm-up + cosine and clipping from `optim.*` for both sides. Writes the EMA weights as an
/// official HF folder at every checkpoint and a PNG grid (inputs above, EMA reconstructions
/// below) at every validation. The first of `devices` is the main one; the others split each
/// batch (data parallel).
///
/// # Errors
/// [`TrainError`] for configurations, data, checkpoints and failed runs.
pub fn train_stage2(config: TrainConfig, run_dir: &Path, devices: &[Device]) -> Result<Titok, TrainError> {
    let device = devices.first().ok_or_else(|| TrainError::Config("no training device".into()))?;
    config.validate_run()?;
    let init = config.model.init.as_deref().ok_or_else(|| {
        TrainError::Config("stage 2 needs `model.init`: a single-stage, stage-1 or stage-2 TiTok HF folder".into())
    })?;
    let run = RunDir::create(run_dir)?;
    let (train, valid) = open_data(&config)?;
    device.seed(config.run.seed);
    let model = load_stage2_model(init, config.pixel_decoder.as_deref(), device)?;
    check_model_fits(&config, &model)?;
    let loss = PixelLoss::from_train(&config, device)?;
    if !loss.config.has_extra_terms() {
        tracing::warn!(
            "stage 2 with L2 only; the official recipe adds loss.perceptual_weight 0.1 and loss.gan_weight 0.01 \
             from loss.gan_start 20000"
        );
    }
    let trainee = Stage2Trainee::new(model, loss, config.run.ema_decay, config.optim.grad_clip)?;
    let o = &config.optim;
    let settings =
        AdamWSettings { beta1: o.beta1, beta2: o.beta2, weight_decay: o.weight_decay, ..AdamWSettings::default() };
    let optim = stage2_optimizer(&trainee, settings);
    let schedule = WarmupCosine::new(o.lr, o.end_lr, o.warmup_steps, config.run.total_steps as usize);

    let preview = ImageBatcher::new(Transform::eval(config.data.image_size as u32)).batch(spread(&valid, 8), device);
    let samples = run.samples();
    let on_validation: StepHook<Stage2Trainee> = Arc::new(move |t: &Stage2Trainee, step| {
        let ema = t.ema.valid();
        let images = preview.images.clone().to_device(&ema.latent_tokens.device());
        let recon = ema.decode(ema.encode_unchecked(images.clone()).latents).clamp(0.0, 1.0);
        save_png_grid(&samples.join(format!("recon-{step:07}.png")), Tensor::cat(vec![images, recon], 0), preview.len())
            .map_err(|e| TrainError::Data(e.to_string()))
    });
    let weights_run = run.clone();
    let (keep, every) = (config.run.keep_checkpoints, config.run.checkpoint_every);
    let on_checkpoint: StepHook<Stage2Trainee> = Arc::new(move |t: &Stage2Trainee, step| {
        save_titok(&t.ema.valid(), &weights_run.weights_dir(step), StorageDType::F32)?;
        weights_run.prune_weights(step, keep, every);
        Ok(())
    });
    const METRICS: MetricSpec = &[("loss", "Loss", false), ("l2", "L2", false), ("psnr", "PSNR dB", true)];
    let metrics = trainee.loss.metric_spec(METRICS);
    let launch_args = Launch {
        train: train_loader(&config, &train, device),
        valid: valid_loader(&config, valid, device),
        config,
        run,
        device: device.clone(),
        metrics,
        on_checkpoint,
        on_validation,
        extra_devices: devices[1..].to_vec(),
    };
    Ok(launch(trainee, optim, schedule, launch_args)?.ema)
}

/// The model must be for the data's resolution and, when the configuration names an
/// architecture too, be that architecture.
fn check_model_fits(config: &TrainConfig, model: &Titok) -> Result<(), TrainError> {
    let m = &model.config;
    if m.image_size != config.data.image_size {
        return Err(TrainError::Config(format!(
            "model.init is a {} px model but data.image_size is {}",
            m.image_size, config.data.image_size
        )));
    }
    if config.model.titok.is_some() || config.model.preset.is_some() {
        let mut wanted = config.titok()?;
        wanted.finetune_decoder = m.finetune_decoder;
        wanted.pixel_vqgan = m.pixel_vqgan.clone();
        if &wanted != m {
            return Err(TrainError::Config(format!(
                "model.titok/model.preset describe another architecture than model.init (stage 2 takes it \
                 from model.init; remove them or make them match):\n  config: {wanted:?}\n  init:   {m:?}"
            )));
        }
    }
    Ok(())
}

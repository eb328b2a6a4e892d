//! Training a TiTok tokenizer: stage 1 ("proxy codes": the decoder predicts the codes a frozen
//! MaskGIT-VQGAN teacher assigns to the same augmented image) and the single-stage recipe
//! (straight to pixels).
//!
//! Source: `modeling/modules/losses.py::ReconstructionLoss_Stage1` /
//! `ReconstructionLoss_Single_Stage`, `scripts/train_titok.py`; REFERENCE §7a, §7c.

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::module::{Module, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use titok_model::checkpoint::{StorageDType, load_titok, load_vqgan, save_titok};
use titok_model::loss::proxy_code_cross_entropy;
use titok_model::{CodebookStats, MaskgitVqgan, Titok};

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

/// What the decoder is trained to produce.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenizerObjective {
    /// Stage 1: cross-entropy against the teacher's codes + `quantizer_weight` × quantizer loss.
    ProxyCodes {
        /// Weight of the quantizer loss (official 1.0).
        quantizer_weight: f64,
    },
    /// Single stage: the trainee's [`PixelLoss`] (L2, and the perceptual and GAN terms when
    /// weighted) + `quantizer_weight` × quantizer loss (or `kl_weight` × KL for VAE tokenizers).
    Pixels {
        /// Weight of the quantizer loss.
        quantizer_weight: f64,
        /// Weight of the KL term (VAE).
        kl_weight: f64,
    },
}

/// The module burn-train trains: the tokenizer, its EMA copy and the frozen teacher.
#[derive(Module, Debug)]
pub struct TokenizerTrainee {
    /// The trained tokenizer.
    pub model: Titok,
    /// Exponential moving average of `model` (not trained; exported at checkpoints).
    pub ema: Titok,
    /// Stage 1: the frozen MaskGIT-VQGAN teacher that provides the proxy codes.
    pub teacher: Option<MaskgitVqgan>,
    /// Number of EMA updates so far (a buffer, saved with the checkpoint).
    pub ema_updates: Param<Tensor<1>>,
    /// Single stage: the pixel objective (L2, plus the perceptual and GAN terms with the
    /// discriminator when weighted); unused by stage 1.
    pub loss: PixelLoss,
    /// The objective.
    #[module(skip)]
    pub objective: TokenizerObjective,
    /// Maximum EMA decay (0 = no EMA: `ema` follows `model`).
    #[module(skip)]
    pub ema_max_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[module(skip)]
    pub grad_clip: f64,
    /// Weight of the unused-code anchor loss (VQ; 0 = off), see
    /// [`titok_model::VectorQuantizer::unused_code_anchor_loss`].
    #[module(skip)]
    pub unused_code_weight: f64,
}

impl TokenizerTrainee {
    /// Turns on the unused-code anchor loss against codebook collapse.
    pub fn with_unused_code_weight(mut self, weight: f64) -> Self {
        self.unused_code_weight = weight;
        self
    }

    /// Wraps a tokenizer for training; the EMA starts as a copy, the teacher is frozen.
    pub fn new(
        model: Titok,
        teacher: Option<MaskgitVqgan>,
        objective: TokenizerObjective,
        loss: PixelLoss,
        ema_max_decay: f64,
        grad_clip: f64,
    ) -> Self {
        let device = model.latent_tokens.device();
        Self {
            ema: ema_copy(&model),
            model,
            teacher: teacher.map(|t| t.no_grad()),
            ema_updates: ema_counter(&device),
            loss,
            objective,
            ema_max_decay,
            grad_clip,
            unused_code_weight: 0.0,
        }
    }

    /// Loss, logged terms and (single stage) reconstructions of one batch.
    fn forward_loss(&self, images: Tensor<4>) -> (Tensor<1>, StepTerms, Option<Tensor<4>>) {
        let b = images.dims()[0];
        let enc = self.model.encode_unchecked(images.clone());
        let mut terms = StepTerms::new(b);
        if let Some(ids) = &enc.tokens {
            let n = self.model.config.codebook_size;
            let stats = CodebookStats::from_ids(ids_to_vec(ids.clone()), n);
            terms = terms.with("usage", stats.usage).with("perplexity", stats.perplexity);
        }
        let quantizer = enc.losses.as_ref().map(|l| l.quantizer_loss.clone());
        let (loss, mut terms, recon) = match self.objective {
            TokenizerObjective::ProxyCodes { quantizer_weight } => {
                let teacher = self.teacher.as_ref().expect("stage 1 needs a teacher");
                let targets = teacher.encode(images.clone().detach()); // [b, G²]
                let logits = self.model.decode(enc.latents);
                let ce = proxy_code_cross_entropy(logits, targets.to_device(&self.model.latent_tokens.device()));
                let q = quantizer.expect("stage 1 is VQ");
                let terms = terms.with("ce", scalar(&ce)).with("quantizer", scalar(&q));
                (ce + q.mul_scalar(quantizer_weight), terms, None)
            }
            TokenizerObjective::Pixels { quantizer_weight, kl_weight } => {
                let (latents, reg) = match (&enc.posterior, quantizer) {
                    (Some(post), _) => {
                        let kl = post.kl().mean().mul_scalar(kl_weight);
                        (post.sample(), kl)
                    }
                    (None, Some(q)) => (enc.latents, q.mul_scalar(quantizer_weight)),
                    (None, None) => unreachable!("VQ or VAE"),
                };
                let recon = self.model.decode(latents);
                // Shapes were checked when the loss was built (`PixelLoss::new`).
                let pixel = self.loss.generator(recon.clone(), images.clone()).expect("images fit the loss networks");
                let psnr = psnr(recon.clone().detach().clamp(0.0, 1.0), images.detach())
                    .map(|p| p.mean().into_scalar::<f64>())
                    .unwrap_or(f64::NAN);
                let terms = pixel.log(terms).with("regularizer", scalar(&reg)).with("psnr", psnr);
                (pixel.total + reg, terms, Some(recon))
            }
        };
        let loss = match (&self.model.quantize, &enc.tokens) {
            (Some(q), Some(ids)) if self.unused_code_weight > 0.0 => {
                let anchor = q.unused_code_anchor_loss(enc.encoder.z.clone(), ids.clone());
                terms = terms.with("anchor", scalar(&anchor));
                loss + anchor.mul_scalar(self.unused_code_weight)
            }
            _ => loss,
        };
        let terms = terms.with("loss", scalar(&loss));
        (loss, terms, recon)
    }
}

impl TrainStep for TokenizerTrainee {
    type Input = ImageBatch;
    type Output = StepTerms;

    fn step(&self, batch: ImageBatch) -> TrainOutput<StepTerms> {
        let images = batch.images;
        let (loss, mut item, recon) = self.forward_loss(images.clone());
        let d = match recon {
            Some(recon) => self.loss.discriminator(recon, images).expect("images fit the discriminator"),
            None => None,
        };
        if let Some(d) = &d {
            item = d.log(item);
        }
        TrainOutput { grads: self.loss.gradients(self, &self.model, loss, d.as_ref()), item }
    }

    fn optimize(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: GradientsParams) -> Self {
        optimize(self, optim, lr, grads)
    }
}

impl Trainee for TokenizerTrainee {
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
        self.ema = ema_step(self.ema, &self.model, &mut self.ema_updates, self.ema_max_decay);
        self
    }
}

impl InferenceStep for TokenizerTrainee {
    type Input = ImageBatch;
    type Output = StepTerms;

    fn step(&self, batch: ImageBatch) -> StepTerms {
        self.forward_loss(batch.images).1
    }
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f64>()
}

fn ids_to_vec(ids: Tensor<2, Int>) -> Vec<i64> {
    ids.try_into_vec_as::<i64>().unwrap_or_default()
}

/// Trains a TiTok tokenizer as configured (`objective` picks stage 1 or single stage) in the
/// run folder, resuming when it holds a checkpoint. Writes the EMA weights as an official HF
/// folder at every checkpoint and a PNG grid (inputs above, reconstructions below) at every
/// validation.
///
/// # Errors
/// [`TrainError`] for configurations, data, checkpoints and failed runs.
pub fn train_tokenizer(
    config: TrainConfig,
    stage1: bool,
    run_dir: &Path,
    devices: &[Device],
) -> Result<Titok, TrainError> {
    let device = devices.first().ok_or_else(|| TrainError::Config("no training device".into()))?;
    config.validate_run()?;
    let titok_config = config.titok()?;
    let run = RunDir::create(run_dir)?;
    let (train, valid) = open_data(&config)?;
    device.seed(config.run.seed);
    let model = match &config.model.init {
        Some(dir) => load_titok(dir, device)?,
        None => Titok::new(&titok_config, device)?,
    };
    let teacher = if stage1 {
        if !titok_config.is_legacy {
            return Err(TrainError::Config("stage 1 (proxy codes) needs a two-stage (is_legacy) model".into()));
        }
        let path = config
            .teacher
            .as_ref()
            .ok_or_else(|| TrainError::Config("stage 1 needs `teacher` (a MaskGIT-VQGAN)".into()))?;
        let teacher = load_vqgan(path, device)?;
        if teacher.quantize.codebook_size() != titok_config.pixel_vqgan.codebook_size {
            return Err(TrainError::Config(format!(
                "teacher codebook {} != model proxy-code head {}",
                teacher.quantize.codebook_size(),
                titok_config.pixel_vqgan.codebook_size
            )));
        }
        Some(teacher)
    } else {
        if titok_config.is_legacy && !titok_config.finetune_decoder {
            return Err(TrainError::Config("single-stage training needs a model that decodes to pixels".into()));
        }
        None
    };
    let objective = if stage1 {
        TokenizerObjective::ProxyCodes { quantizer_weight: config.loss.quantizer_weight }
    } else {
        TokenizerObjective::Pixels { quantizer_weight: config.loss.quantizer_weight, kl_weight: config.loss.kl_weight }
    };
    let loss = if stage1 {
        if config.loss.perceptual_weight > 0.0 || config.loss.gan_weight > 0.0 {
            return Err(TrainError::Config(
                "stage 1 trains proxy codes, not pixels: loss.perceptual_weight and loss.gan_weight must be 0 \
                 (the pixel terms belong to stage2 and single-stage)"
                    .into(),
            ));
        }
        PixelLoss::l2_only(0.0)
    } else {
        PixelLoss::from_train(&config, device)?
    };
    let trainee = TokenizerTrainee::new(model, teacher, objective, loss, config.run.ema_decay, config.optim.grad_clip)
        .with_unused_code_weight(config.loss.unused_code_weight);
    let o = &config.optim;
    let settings =
        AdamWSettings { beta1: o.beta1, beta2: o.beta2, weight_decay: o.weight_decay, ..AdamWSettings::default() };
    let optim = with_discriminator_groups(adamw_with_groups(&trainee, settings), &trainee, &trainee.loss, settings);
    let schedule = WarmupCosine::new(o.lr, o.end_lr, o.warmup_steps, config.run.total_steps as usize);

    let preview = spread(&valid, 8);
    let preview = ImageBatcher::new(Transform::eval(config.data.image_size as u32)).batch(preview, device);
    let samples = run.samples();
    let on_validation: StepHook<TokenizerTrainee> = Arc::new(move |t: &TokenizerTrainee, step| {
        let ema = t.ema.valid();
        let images = preview.images.clone().to_device(&ema.latent_tokens.device());
        let enc = ema.encode_unchecked(images.clone());
        let recon = match (&t.teacher, ema.config.decodes_to_pixels()) {
            (_, true) => ema.decode(enc.latents),
            (Some(teacher), false) => {
                let logits = ema.decode(enc.latents);
                let [b, n, h, w] = logits.dims();
                let codes = logits.reshape([b, n, h * w]).argmax(1).reshape([b, h * w]);
                teacher.valid().decode_codes(codes)
            }
            (None, false) => return Ok(()),
        };
        let grid = Tensor::cat(vec![images, recon.clamp(0.0, 1.0)], 0);
        save_png_grid(&samples.join(format!("recon-{step:07}.png")), grid, preview.len())
            .map_err(|e| TrainError::Data(e.to_string()))
    });
    let weights_run = run.clone();
    let keep = config.run.keep_checkpoints;
    let every = config.run.checkpoint_every;
    let on_checkpoint: StepHook<TokenizerTrainee> = Arc::new(move |t: &TokenizerTrainee, step| {
        save_titok(&t.ema.valid(), &weights_run.weights_dir(step), StorageDType::F32)?;
        weights_run.prune_weights(step, keep, every);
        Ok(())
    });
    let metrics: MetricSpec = if stage1 {
        &[
            ("loss", "Loss", false),
            ("ce", "Proxy-code CE", false),
            ("quantizer", "Quantizer loss", false),
            ("usage", "Codebook usage", true),
            ("perplexity", "Perplexity", true),
        ]
    } else {
        &[
            ("loss", "Loss", false),
            ("l2", "L2", false),
            ("regularizer", "Quantizer or KL", false),
            ("psnr", "PSNR dB", true),
            ("usage", "Codebook usage", true),
            ("perplexity", "Perplexity", true),
        ]
    };
    let launch_args = Launch {
        train: train_loader(&config, &train, device),
        valid: valid_loader(&config, valid, device),
        config,
        run,
        device: device.clone(),
        metrics: trainee.loss.metric_spec(metrics),
        on_checkpoint,
        on_validation,
        extra_devices: devices[1..].to_vec(),
    };
    Ok(launch(trainee, optim, schedule, launch_args)?.ema)
}

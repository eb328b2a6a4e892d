//! Training a MaskGIT generator on TiTok tokens (`titok-train generator`): masked token
//! modelling on a pre-tokenised dataset ([`crate::data::token_cache`]).
//!
//! Each step, every sample `i` of the batch
//! 1. takes its image or its mirror (the flip augmentation) from the token cache,
//! 2. hides `n = max(1, round(K·arccos(t)/(π/2)))` tokens at random positions (`t ~ U(0, 1)`,
//!    [`mask_tokens`]),
//! 3. replaces its class by the drop label with probability `class_label_dropout` (0.1),
//!
//! and the loss is the smoothed cross-entropy weighted 1 on masked and 0.1 on unmasked
//! positions ([`mlm_loss`]). All three draws come from `(seed, epoch, index)` of the item in the
//! batch builder, never from the device RNG, and the dropout RNG is re-seeded per step from the
//! step's items: a resumed run computes exactly the steps of an uninterrupted one. The optimizer
//! is AdamW (0.9, 0.96) with weight decay 0.03 outside norms/biases/embeddings, a warm-up +
//! cosine schedule, gradient clipping, and an EMA of the weights, which is what checkpoints
//! export (official HF layout + `classes.txt`) and what draws the periodic sample grids.
//!
//! Source: `scripts/train_maskgit.py`, `configs/training/generator/maskgit.yaml`,
//! `modeling/maskgit.py::ImageBert.masking_input_tokens`, `modeling/modules/losses.py::MLMLoss`;
//! REFERENCE §7e.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::module::{Module, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use titok_model::Titok;
use titok_model::checkpoint::{
    StorageDType, load_bpk, load_generator, load_titok, save_generator, write_bytes_atomically,
};
use titok_model::generator::{
    Generator, GeneratorConfig, MlmLossConfig, SeededUniform, TokenLayout, TokenPredictor, condition_tokens, generate,
    mask_tokens, mlm_loss, model_input,
};

use super::runner::{Launch, MetricSpec, launch, open_split, spread};
use crate::config::{GeneratorSpec, TrainConfig};
use crate::data::image_io::save_png_grid;
use crate::data::token_cache::{TokenCache, TokenCacheHeader, TokenizeOptions, VERSION, tokenizer_fingerprint};
use crate::data::{ItemRng, spread_indices};
use crate::train::TrainError;
use crate::train::ema::{ema_copy, ema_counter, ema_step};
use crate::train::metrics::StepTerms;
use crate::train::optim::{AdamWSettings, adamw_with_groups};
use crate::train::run::RunDir;
use crate::train::schedule::WarmupCosine;
use crate::train::strategy::StepHook;
use crate::train::stream::{MakeBatch, StepItem, StepLoader, StepSchedule};
use crate::train::trainee::{Trainee, optimize};

/// `ItemRng` stream of the training draws (view, masking, label drop).
const TRAIN_DRAWS: u64 = 0x4745_4e5f_5452_4149; // "GEN_TRAI"
/// `ItemRng` stream of the validation masking.
const VALID_DRAWS: u64 = 0x4745_4e5f_5641_4c49; // "GEN_VALI"
/// `ItemRng` stream of the per-step dropout seed.
const DROPOUT_SEED: u64 = 0x4745_4e5f_4452_4f50; // "GEN_DROP"

/// A masked batch of token sequences, ready for the generator.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[batch, K]` ids with the masked positions set to the mask id `N`.
    pub input_ids: Tensor<2, Int>,
    /// `[batch, K]` the original ids `0..N` (the targets).
    pub targets: Tensor<2, Int>,
    /// `[batch, K]`, true at masked positions.
    pub mask: Tensor<2, Bool>,
    /// `[batch]` condition tokens: class `c` -> `N + 1 + c`, or the drop label `N + 1 + C`.
    pub condition: Tensor<1, Int>,
    /// Seed of the dropout RNG for this step (a pure function of the run seed and the items).
    pub dropout_seed: u64,
}

/// The random choices of one sample, drawn from `(seed, stream, epoch, index)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleDraws {
    /// Use the mirror image (view 1) instead of the image.
    pub mirror: bool,
    /// The masking time `t` in `[0, 1)` (hides `training_num_masked(K, t)` tokens).
    pub t: f32,
    /// `K` uniforms in `[0, 1)` ranking the positions (`argsort(noise) < n` are masked).
    pub noise: Vec<f32>,
    /// Replace the class by the drop label.
    pub drop_label: bool,
}

impl SampleDraws {
    /// Draws for one item: first the view (a fair coin, only when `mirrors`), then `t`, the `K`
    /// noise values, and the label drop (`u < drop_prob`).
    pub fn draw(rng: &mut ItemRng, k: usize, mirrors: bool, drop_prob: f64) -> Self {
        let mirror = mirrors && rng.coin();
        let t = uniform(rng);
        let noise = (0..k).map(|_| uniform(rng)).collect();
        let drop_label = f64::from(uniform(rng)) < drop_prob;
        Self { mirror, t, noise, drop_label }
    }
}

/// A uniform f32 in `[0, 1)` from the top 24 bits.
fn uniform(rng: &mut ItemRng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

/// How a batch builder draws: the run seed, the stream, and the label-drop probability.
#[derive(Debug, Clone, Copy)]
pub struct DrawSpec {
    /// Run seed.
    pub seed: u64,
    /// `ItemRng` stream (training or validation).
    pub stream: u64,
    /// Probability of the drop label (0 for validation).
    pub drop_prob: f64,
    /// Pick the mirror image half of the time (when the cache holds mirrors).
    pub mirrors: bool,
}

/// Builds the masked batch of `items` from `cache` on `device`.
///
/// # Errors
/// [`titok_model::TitokError::Input`] when the draws do not fit the batch (never for a
/// consistent cache).
pub fn token_batch(
    cache: &TokenCache,
    items: &[StepItem],
    layout: &TokenLayout,
    spec: &DrawSpec,
    device: &Device,
) -> titok_model::Result<TokenBatch> {
    let (b, k) = (items.len(), cache.seq_len());
    let mirrors = spec.mirrors && cache.views() == 2;
    let (mut ids, mut labels, mut t, mut noise, mut drop) = (
        Vec::with_capacity(b * k),
        Vec::with_capacity(b),
        Vec::with_capacity(b),
        Vec::with_capacity(b * k),
        Vec::with_capacity(b),
    );
    for item in items {
        let mut rng = ItemRng::new(spec.seed, spec.stream, item.epoch, item.index as u64);
        let d = SampleDraws::draw(&mut rng, k, mirrors, spec.drop_prob);
        cache.extend_ids(item.index, usize::from(d.mirror), &mut ids);
        labels.push(cache.label(item.index) as i64);
        t.push(d.t);
        noise.extend(d.noise);
        drop.push(i64::from(d.drop_label));
    }
    let targets = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, k]), device); // [b, k]
    let noise = Tensor::<2>::from_data(TensorData::new(noise, [b, k]), device); // [b, k]
    let masking = mask_tokens(targets.clone(), &t, noise, layout.mask_id())?;
    let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), device); // [b]
    let drop = Tensor::<1, Int>::from_data(TensorData::new(drop, [b]), device).equal_elem(1); // [b]
    let first = items.first().map_or((0, 0), |i| (i.epoch, i.index as u64));
    Ok(TokenBatch {
        input_ids: masking.input_ids,
        targets,
        mask: masking.mask,
        condition: condition_tokens(layout, labels, Some(drop)),
        dropout_seed: ItemRng::new(spec.seed, DROPOUT_SEED, first.0, first.1).next_u64(),
    })
}

/// The module burn-train trains: the generator and its EMA copy.
#[derive(Module, Debug)]
pub struct GeneratorTrainee {
    /// The trained generator.
    pub model: Generator,
    /// Exponential moving average of `model` (exported at checkpoints, draws the samples).
    pub ema: Generator,
    /// Number of EMA updates so far (a buffer, saved with the checkpoint).
    pub ema_updates: Param<Tensor<1>>,
    /// Label smoothing and unmasked weight of the MLM loss.
    #[module(skip)]
    pub loss: MlmLossConfig,
    /// Maximum EMA decay (0 = no EMA: `ema` follows `model`).
    #[module(skip)]
    pub ema_max_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[module(skip)]
    pub grad_clip: f64,
}

impl GeneratorTrainee {
    /// Wraps a generator (on `device`) for training; the EMA starts as a copy.
    pub fn new(model: Generator, loss: MlmLossConfig, ema_max_decay: f64, grad_clip: f64, device: &Device) -> Self {
        Self { ema: ema_copy(&model), model, ema_updates: ema_counter(device), loss, ema_max_decay, grad_clip }
    }

    /// The MLM loss of a batch and its logged terms: `loss`, `accuracy` (on masked tokens)
    /// and `masked` (fraction of masked tokens).
    pub fn forward_loss(&self, batch: TokenBatch) -> (Tensor<1>, StepTerms) {
        let [b, _] = batch.targets.dims();
        let masked = batch.mask.clone().float().mean().into_scalar::<f64>();
        let logits = self.model.logits(model_input(batch.input_ids, batch.condition)); // [b, K, N]
        let out = mlm_loss(logits, batch.targets, batch.mask, &self.loss);
        let terms = StepTerms::new(b)
            .with("loss", out.loss.clone().into_scalar::<f64>())
            .with("accuracy", out.correct_tokens.into_scalar::<f64>())
            .with("masked", masked);
        (out.loss, terms)
    }
}

impl TrainStep for GeneratorTrainee {
    type Input = TokenBatch;
    type Output = StepTerms;

    fn step(&self, batch: TokenBatch) -> TrainOutput<StepTerms> {
        // Dropout is the only device randomness: seeded per step, so a resumed run repeats it.
        batch.input_ids.device().seed(batch.dropout_seed);
        let (loss, terms) = self.forward_loss(batch);
        TrainOutput::new(self, loss.backward(), terms)
    }

    fn optimize(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: GradientsParams) -> Self {
        optimize(self, optim, lr, grads)
    }
}

impl Trainee for GeneratorTrainee {
    type Model = Generator;

    fn model(&self) -> &Generator {
        &self.model
    }

    fn grad_clip(&self) -> f64 {
        self.grad_clip
    }

    fn update_ema(mut self) -> Self {
        self.ema = ema_step(self.ema, &self.model, &mut self.ema_updates, self.ema_max_decay);
        self
    }
}

impl InferenceStep for GeneratorTrainee {
    type Input = TokenBatch;
    type Output = StepTerms;

    fn step(&self, batch: TokenBatch) -> StepTerms {
        self.forward_loss(batch).1
    }
}

/// Loads the tokenizer named by `config.tokenizer` and checks it against the data resolution.
///
/// # Errors
/// [`TrainError::Config`] when no tokenizer is set, it is not a VQ model or its resolution is
/// not `data.image_size`; [`TrainError::Model`] when it cannot be loaded.
pub fn load_tokenizer(config: &TrainConfig, device: &Device) -> Result<Titok, TrainError> {
    let path = config
        .tokenizer
        .as_ref()
        .ok_or_else(|| TrainError::Config("set `tokenizer` to the HF folder of a VQ TiTok tokenizer".into()))?;
    let tokenizer = load_titok(path, device)?;
    if tokenizer.quantize.is_none() {
        return Err(TrainError::Config(format!(
            "{} is a VAE tokenizer; the generator needs token ids (VQ)",
            path.display()
        )));
    }
    if tokenizer.config.image_size != config.data.image_size {
        return Err(TrainError::Config(format!(
            "tokenizer resolution {} != data.image_size {}",
            tokenizer.config.image_size, config.data.image_size
        )));
    }
    Ok(tokenizer)
}

/// Where a run's token cache lives: `data.token_cache`, else `<run>/tokens.safetensors`.
pub fn token_cache_path(config: &TrainConfig, run_dir: &Path) -> PathBuf {
    config.data.token_cache.clone().unwrap_or_else(|| run_dir.join("tokens.safetensors"))
}

/// The dataset path as recorded in a cache header (absolute when it can be resolved).
fn source_name(config: &TrainConfig) -> String {
    std::fs::canonicalize(&config.data.path).unwrap_or_else(|_| config.data.path.clone()).display().to_string()
}

/// What a cache of `split` must hold for this configuration and tokenizer (fingerprint given).
fn expected_header(config: &TrainConfig, tokenizer: &Titok, fingerprint: &str, split: &str) -> TokenCacheHeader {
    let c = &tokenizer.config;
    TokenCacheHeader {
        version: VERSION,
        num_images: 0,
        views: if config.data.hflip { 2 } else { 1 },
        seq_len: c.num_latent_tokens,
        codebook_size: c.codebook_size,
        id_bytes: 0,
        class_names: Vec::new(),
        tokenizer_fingerprint: fingerprint.to_string(),
        image_size: c.image_size,
        source: source_name(config),
        split: split.to_string(),
        skipped: 0,
    }
}

/// Encodes the records of `split` of the configured data (`limit` of them spread over the
/// split, or all), with mirrors when `flips`.
fn encode_split(
    config: &TrainConfig,
    tokenizer: &Titok,
    fingerprint: &str,
    split: &str,
    limit: Option<usize>,
    flips: bool,
    device: &Device,
) -> Result<TokenCache, TrainError> {
    let data = open_split(&config.data.path, split)?;
    let records = match limit {
        Some(n) => spread(&data.records, n),
        None => data.records.to_vec(),
    };
    let options = TokenizeOptions {
        flips,
        batch_size: config.run.batch_size,
        progress: true,
        fingerprint: fingerprint.to_string(),
        source: source_name(config),
        split: split.to_string(),
    };
    Ok(TokenCache::encode(tokenizer, &records, &data.class_names, &options, device)?)
}

/// The token cache of the training split: loaded from [`token_cache_path`] when it exists (and
/// was built by this tokenizer from this data), otherwise encoded (with mirrors when
/// `data.hflip`) and written there. This is the `titok-train tokens` step; `generator` runs it
/// first.
///
/// # Errors
/// [`TrainError::Data`] for a cache of another tokenizer or other data, unreadable data or a
/// corrupt cache; [`TrainError::Config`]/[`TrainError::Model`] as [`load_tokenizer`].
pub fn prepare_token_cache(
    config: &TrainConfig,
    tokenizer: &Titok,
    run_dir: &Path,
    device: &Device,
) -> Result<(TokenCache, PathBuf), TrainError> {
    let path = token_cache_path(config, run_dir);
    let split = config.data.train_split.as_str();
    let fingerprint = tokenizer_fingerprint(tokenizer);
    let expected = expected_header(config, tokenizer, &fingerprint, split);
    if path.is_file() {
        let cache = TokenCache::load(&path)?;
        cache.check_source(&path, &expected)?;
        tracing::info!(path = %path.display(), images = cache.len(), "token cache loaded");
        return Ok((cache, path));
    }
    tracing::info!(path = %path.display(), split, "tokenizing the training split");
    let cache = encode_split(config, tokenizer, &fingerprint, split, None, config.data.hflip, device)?;
    cache.save(&path)?;
    tracing::info!(path = %path.display(), images = cache.len(), views = cache.views(), "token cache written");
    Ok((cache, path))
}

/// The generator configuration of a run: an explicit `generator.config` (checked against the
/// tokenizer and the classes), else the preset (default `small`) with the tokenizer's
/// codebook size and `K` and the data's number of classes.
///
/// # Errors
/// [`TrainError::Config`] for an unknown preset, a layout that does not fit, or a config that
/// does not validate.
pub fn generator_config(
    spec: &GeneratorSpec,
    tokenizer: &Titok,
    num_classes: usize,
) -> Result<GeneratorConfig, TrainError> {
    let t = &tokenizer.config;
    let config = match (&spec.config, &spec.preset) {
        (Some(c), _) => {
            check_layout(&c.layout(), t.codebook_size, t.num_latent_tokens, num_classes)?;
            c.clone()
        }
        (None, preset) => GeneratorConfig {
            codebook_size: t.codebook_size,
            image_seq_len: t.num_latent_tokens,
            condition_num_classes: num_classes,
            ..GeneratorConfig::preset(preset.as_deref().unwrap_or("small"))?
        },
    };
    config.validate()?;
    Ok(config)
}

fn check_layout(layout: &TokenLayout, codebook: usize, k: usize, classes: usize) -> Result<(), TrainError> {
    if (layout.codebook_size, layout.seq_len, layout.num_classes) != (codebook, k, classes) {
        return Err(TrainError::Config(format!(
            "the generator expects {} codes, K = {} and {} classes; the tokenizer and data give {codebook} codes, \
             K = {k} and {classes} classes",
            layout.codebook_size, layout.seq_len, layout.num_classes
        )));
    }
    Ok(())
}

/// The classes a sample grid shows: `n` spread over `0..num_classes`.
fn sample_classes(num_classes: usize, n: usize) -> Vec<usize> {
    spread_indices(num_classes, n.max(1)).collect()
}

/// Trains a MaskGIT generator on the tokens of `config.tokenizer` (see the module docs) in the
/// run folder, resuming when it holds a checkpoint. Builds or reuses the token cache first.
/// Every checkpoint exports the EMA generator (official HF folder) plus `classes.txt`; every
/// validation writes `samples/samples-<step>.png` (one column per class, EMA weights, the
/// configured sampler, a fixed seed).
///
/// # Errors
/// [`TrainError`] for configurations, data, token caches, checkpoints and failed runs.
pub fn train_generator(config: TrainConfig, run_dir: &Path, devices: &[Device]) -> Result<Generator, TrainError> {
    let device = devices.first().ok_or_else(|| TrainError::Config("no training device".into()))?;
    config.validate_run()?;
    let spec = config.generator.clone().unwrap_or_default();
    let tokenizer = load_tokenizer(&config, device)?;
    let run = RunDir::create(run_dir)?;
    // Rank 0 of a multi-process job encodes and writes the cache; the others then load it.
    let (cache, _) = crate::distributed::group()
        .main_first("building the token cache", || prepare_token_cache(&config, &tokenizer, &run.root, device))?;
    let fingerprint = cache.header.tokenizer_fingerprint.clone();
    let class_names = cache.class_names().to_vec();
    if class_names.is_empty() {
        return Err(TrainError::Data(
            "the generator is class-conditional: use a dataset with class folders (it has no labels)".into(),
        ));
    }
    if config.run.batch_size > cache.len() {
        return Err(TrainError::Config(format!(
            "batch size {} is larger than the {} cached images",
            config.run.batch_size,
            cache.len()
        )));
    }
    let valid = if config.data.valid_split.is_empty() {
        let indices: Vec<usize> = spread_indices(cache.len(), config.data.valid_images.max(1)).collect();
        cache.subset(&indices)
    } else {
        let valid_split = config.data.valid_split.clone();
        encode_split(&config, &tokenizer, &fingerprint, &valid_split, Some(config.data.valid_images), false, device)?
    };

    let gen_config = generator_config(&spec, &tokenizer, class_names.len())?;
    let layout = gen_config.layout();
    device.seed(config.run.seed);
    let model = match &config.model.init {
        Some(path) => {
            let m = load_generator(path, device)?;
            check_layout(&m.layout(), layout.codebook_size, layout.seq_len, layout.num_classes)?;
            m
        }
        None => Generator::new(&gen_config, device)?,
    };
    let loss = MlmLossConfig {
        label_smoothing: config.loss.mlm_label_smoothing,
        unmasked_weight: config.loss.mlm_unmasked_weight,
    };
    let trainee = GeneratorTrainee::new(model, loss, config.run.ema_decay, config.optim.grad_clip, device);
    // Loading a record restores the parameter ids it was saved with, and the optimizer's
    // no-decay group is a set of ids: on resume, build it from the checkpoint's ids (burn-train
    // loads the same record again), else norms and biases would be decayed after a restart.
    let trainee = match run.latest()? {
        Some(state) => load_bpk(trainee, &run.checkpoints().join(format!("model-{}.bpk", state.step)))?,
        None => trainee,
    };
    let o = &config.optim;
    let optim = adamw_with_groups(
        &trainee,
        AdamWSettings { beta1: o.beta1, beta2: o.beta2, weight_decay: o.weight_decay, ..AdamWSettings::default() },
    );
    let schedule = WarmupCosine::new(o.lr, o.end_lr, o.warmup_steps, config.run.total_steps as usize);

    // Data: the training stream over the cache, the validation set with fixed masks.
    let seed = config.run.seed;
    let cache = Arc::new(cache);
    let train_spec = DrawSpec { seed, stream: TRAIN_DRAWS, drop_prob: gen_config.class_label_dropout, mirrors: true };
    let train_cache = cache.clone();
    let make_train: MakeBatch<TokenBatch> = Arc::new(move |items, device| {
        token_batch(&train_cache, items, &layout, &train_spec, device)
            .map_err(|e| burn::data::dataset::DatasetError::new(std::io::Error::other(e.to_string())))
    });
    let schedule_train = Arc::new(StepSchedule::new(cache.len(), config.run.batch_size, seed));
    let train =
        StepLoader::new(schedule_train, make_train, 0..config.run.total_steps, config.data.num_workers, device.clone());
    let valid_spec = DrawSpec { seed, stream: VALID_DRAWS, drop_prob: 0.0, mirrors: false };
    let valid_batch = config.run.batch_size.min(valid.len());
    let schedule_valid = Arc::new(StepSchedule::new(valid.len(), valid_batch, seed));
    let valid_steps = schedule_valid.steps_per_epoch();
    let valid = Arc::new(valid);
    let make_valid: MakeBatch<TokenBatch> = Arc::new(move |items, device| {
        // Every validation sees the same masks: draws of epoch 0 whatever the position.
        let items: Vec<StepItem> = items.iter().map(|i| StepItem { index: i.index, epoch: 0 }).collect();
        token_batch(&valid, &items, &layout, &valid_spec, device)
            .map_err(|e| burn::data::dataset::DatasetError::new(std::io::Error::other(e.to_string())))
    });
    let valid_loader = StepLoader::new(schedule_valid, make_valid, 0..valid_steps, 1, device.clone());

    // Hooks: sample grids at validations, HF exports of the EMA at checkpoints.
    let classes = sample_classes(class_names.len(), spec.sample_classes);
    let per_class = spec.samples_per_class.max(1);
    let grid_labels: Vec<i64> = (0..per_class).flat_map(|_| classes.iter().map(|&c| c as i64)).collect();
    let sampler = gen_config.sampling.clone();
    let samples = run.samples();
    let sample_device = device.clone();
    let columns = classes.len();
    let on_validation: StepHook<GeneratorTrainee> = Arc::new(move |t: &GeneratorTrainee, step| {
        let ema = t.ema.valid();
        let labels =
            Tensor::<1, Int>::from_data(TensorData::new(grid_labels.clone(), [grid_labels.len()]), &sample_device);
        let ids = generate(&ema, labels, &sampler, &mut SeededUniform::new(seed))?; // [n, K]
        let images = tokenizer.decode_tokens(ids)?.clamp(0.0, 1.0); // [n, 3, S, S]
        save_png_grid(&samples.join(format!("samples-{step:07}.png")), images, columns)
            .map_err(|e| TrainError::Data(e.to_string()))
    });
    let weights_run = run.clone();
    let (keep, every) = (config.run.keep_checkpoints, config.run.checkpoint_every);
    let classes_txt = class_names.join("\n") + "\n";
    let on_checkpoint: StepHook<GeneratorTrainee> = Arc::new(move |t: &GeneratorTrainee, step| {
        let dir = weights_run.weights_dir(step);
        save_generator(&t.ema.valid(), &dir, StorageDType::F32)?;
        write_bytes_atomically(&dir.join("classes.txt"), classes_txt.as_bytes())?;
        weights_run.prune_weights(step, keep, every);
        Ok(())
    });
    const METRICS: MetricSpec =
        &[("loss", "Loss", false), ("accuracy", "Masked accuracy", true), ("masked", "Masked fraction", false)];
    let launch_args = Launch {
        train,
        valid: Arc::new(valid_loader),
        config,
        run,
        device: device.clone(),
        metrics: METRICS,
        on_checkpoint,
        on_validation,
        extra_devices: devices[1..].to_vec(),
    };
    Ok(launch(trainee, optim, schedule, launch_args)?.ema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_only_on_seed_epoch_and_index() {
        let d =
            |seed, epoch, index| SampleDraws::draw(&mut ItemRng::new(seed, TRAIN_DRAWS, epoch, index), 8, true, 0.1);
        assert_eq!(d(1, 2, 3), d(1, 2, 3));
        assert_ne!(d(1, 2, 3), d(1, 3, 3));
        assert_ne!(d(1, 2, 3), d(2, 2, 3));
        // Over many items: about half mirrored, about 10% dropped labels, uniforms in [0, 1).
        let all: Vec<SampleDraws> = (0..4000).map(|i| d(7, 0, i)).collect();
        let mirrored = all.iter().filter(|s| s.mirror).count() as f64 / 4000.0;
        let dropped = all.iter().filter(|s| s.drop_label).count() as f64 / 4000.0;
        assert!((mirrored - 0.5).abs() < 0.04, "{mirrored}");
        assert!((dropped - 0.1).abs() < 0.02, "{dropped}");
        assert!(all.iter().flat_map(|s| s.noise.iter().chain([&s.t])).all(|u| (0.0..1.0).contains(u)));
    }

    fn tiny_cache() -> TokenCache {
        let header = TokenCacheHeader {
            version: VERSION,
            num_images: 6,
            views: 2,
            seq_len: 8,
            codebook_size: 64,
            id_bytes: 0,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            tokenizer_fingerprint: "test".into(),
            image_size: 32,
            source: "memory".into(),
            split: "train".into(),
            skipped: 0,
        };
        let ids = (0..6 * 2 * 8).map(|i| (i * 5 % 64) as u32).collect();
        TokenCache::new(header, ids, vec![0, 1, 2, 0, 1, 2]).unwrap()
    }

    fn tiny_layout() -> TokenLayout {
        TokenLayout { codebook_size: 64, num_classes: 3, seq_len: 8 }
    }

    #[test]
    fn a_batch_holds_the_items_views_masks_and_conditions_of_their_draws() {
        let (cache, layout, device) = (tiny_cache(), tiny_layout(), Device::flex());
        let spec = DrawSpec { seed: 5, stream: TRAIN_DRAWS, drop_prob: 0.5, mirrors: true };
        let items = [
            StepItem { index: 4, epoch: 1 },
            StepItem { index: 0, epoch: 1 },
            StepItem { index: 5, epoch: 2 },
            StepItem { index: 2, epoch: 7 },
        ];
        let batch = token_batch(&cache, &items, &layout, &spec, &device).unwrap();
        let again = token_batch(&cache, &items, &layout, &spec, &device).unwrap();
        let read = |t: Tensor<2, Int>| t.try_into_vec_as::<i64>().unwrap();
        let (targets, input) = (read(batch.targets.clone()), read(batch.input_ids.clone()));
        let mask = read(batch.mask.clone().int());
        let condition = batch.condition.clone().try_into_vec_as::<i64>().unwrap();
        assert_eq!(input, read(again.input_ids));
        assert_eq!(batch.dropout_seed, again.dropout_seed);
        for (row, item) in items.iter().enumerate() {
            let d = SampleDraws::draw(&mut ItemRng::new(5, TRAIN_DRAWS, item.epoch, item.index as u64), 8, true, 0.5);
            let mut want = Vec::new();
            cache.extend_ids(item.index, usize::from(d.mirror), &mut want);
            assert_eq!(targets[row * 8..(row + 1) * 8], want, "row {row}: the drawn view");
            let m = &mask[row * 8..(row + 1) * 8];
            let n = titok_model::generator::training_num_masked(8, d.t);
            assert_eq!(m.iter().sum::<i64>() as usize, n, "row {row}: the scheduled count");
            for j in 0..8 {
                let expect = if m[j] == 1 { layout.mask_id() } else { want[j] };
                assert_eq!(input[row * 8 + j], expect);
            }
            let class = layout.class_id(cache.label(item.index));
            assert_eq!(condition[row], if d.drop_label { layout.drop_label_id() } else { class });
        }
        // Validation draws: no label drop, image view only.
        let valid = DrawSpec { seed: 5, stream: VALID_DRAWS, drop_prob: 0.0, mirrors: false };
        let v = token_batch(&cache, &items, &layout, &valid, &device).unwrap();
        let cond = v.condition.try_into_vec_as::<i64>().unwrap();
        let labels: Vec<i64> = items.iter().map(|i| layout.class_id(cache.label(i.index))).collect();
        assert_eq!(cond, labels);
        let mut view0 = Vec::new();
        items.iter().for_each(|i| cache.extend_ids(i.index, 0, &mut view0));
        assert_eq!(read(v.targets), view0);
    }

    #[test]
    fn a_train_step_moves_the_weights_and_the_ema() {
        let device = Device::flex();
        let config = GeneratorConfig {
            codebook_size: 64,
            condition_num_classes: 3,
            image_seq_len: 8,
            ..GeneratorConfig::tiny()
        };
        let model = Generator::new(&config, &device).unwrap();
        let trainee = GeneratorTrainee::new(model, MlmLossConfig::default(), 0.999, 1.0, &device);
        let ad = device.clone().autodiff();
        let trainee = trainee.train().fork(&ad);
        let spec = DrawSpec { seed: 1, stream: TRAIN_DRAWS, drop_prob: 0.1, mirrors: true };
        let items: Vec<StepItem> = (0..6).map(|index| StepItem { index, epoch: 0 }).collect();
        let batch = token_batch(&tiny_cache(), &items, &tiny_layout(), &spec, &ad).unwrap();
        let out = TrainStep::step(&trainee, batch);
        let loss = out.item.get("loss").unwrap();
        assert!((loss - 64f64.ln()).abs() < 1.0, "a fresh model is near ln N: {loss}");
        assert!((0.0..=1.0).contains(&out.item.get("accuracy").unwrap()));
        // (That a step with dropout is repeatable from its batch's seed is checked end to end in
        // `tests/generator_training.rs`: the device RNG is process-global, shared with the
        // tests running in parallel here.)
        let lm_head = |g: &Generator| match g {
            Generator::Bert(m) => m.model.lm_head.weight.val().inner(),
            Generator::UVit(m) => m.lm_head.weight.val().inner(),
        };
        assert!(matches!(trainee.model, Generator::Bert(_)));
        let mut optim = adamw_with_groups(&trainee, AdamWSettings::default());
        let (before, ema_before) = (lm_head(&trainee.model), lm_head(&trainee.ema));
        let next = trainee.optimize(&mut optim, 1e-2.into(), out.grads);
        let moved = (lm_head(&next.model) - before).abs().max().into_scalar::<f32>();
        assert!(moved > 0.0, "the optimizer step changes the weights");
        // First EMA update: decay 0.1.
        let expect = ema_before.mul_scalar(0.1) + lm_head(&next.model).mul_scalar(0.9);
        let diff = (lm_head(&next.ema) - expect).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "EMA update {diff}");
        assert_eq!(next.ema_updates.val().into_scalar::<f32>(), 1.0);
    }

    #[test]
    fn sample_classes_spread_over_all_classes() {
        assert_eq!(sample_classes(10, 10), (0..10).collect::<Vec<_>>());
        assert_eq!(sample_classes(1000, 4), vec![0, 250, 500, 750]);
        assert_eq!(sample_classes(3, 10), vec![0, 1, 2]);
    }
}

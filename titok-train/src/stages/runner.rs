//! What every training mode shares: opening the data, the deterministic training stream and
//! the validation loader, and launching burn-train's `SupervisedTraining` with the step
//! strategy, the metrics and the atomic checkpointers (resuming from the run directory).

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::lr_scheduler::LrScheduler;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use burn::train::metric::LearningRateMetric;
use burn::train::{Learner, LearnerModel, SupervisedTraining, TrainStep, TrainingStrategy};

use crate::config::TrainConfig;
use crate::data::{ImageBatch, ImageBatcher, ImageFolder, ImageRecord, TarImages, Transform, spread_indices};
use crate::train::TrainError;
use crate::train::metrics::{ImagesPerSecond, StepTerms, TermMetric};
use crate::train::renderer::renderer_for;
use crate::train::run::{KeepLastSteps, RunDir, RunState, checkpointers};
use crate::train::strategy::{StepHook, StepStrategy};
use crate::train::stream::{MakeBatch, StepLoader, StepSchedule};

/// The images of one split.
pub struct Split {
    /// The records, in dataset order.
    pub records: Arc<Vec<ImageRecord>>,
    /// Class names (empty for unlabelled data).
    pub class_names: Vec<String>,
}

/// Opens `split` (a sub-folder, e.g. `train`; empty = everything) of an image folder or of a
/// `.tar`/`.tar.gz` archive of one.
///
/// # Errors
/// [`TrainError::Data`] with the data pipeline's message (missing path or split, no images).
pub fn open_split(path: &Path, split: &str) -> Result<Split, TrainError> {
    let split_opt = (!split.is_empty()).then_some(split);
    let name = path.to_string_lossy();
    let is_tar = name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz");
    let (records, class_names) = if is_tar {
        let t = TarImages::open(path, split_opt).map_err(|e| TrainError::Data(e.to_string()))?;
        (t.list().records().to_vec(), t.class_names().to_vec())
    } else {
        let root = match split_opt {
            Some(s) => path.join(s),
            None => path.to_path_buf(),
        };
        let f = ImageFolder::open(&root).map_err(|e| TrainError::Data(e.to_string()))?;
        (f.list().records().to_vec(), f.class_names().to_vec())
    };
    Ok(Split { records: Arc::new(records), class_names })
}

/// `n` records spread evenly over a split (every class of a sorted dataset is represented).
pub fn spread(records: &[ImageRecord], n: usize) -> Vec<ImageRecord> {
    spread_indices(records.len(), n.max(1)).map(|i| records[i].clone()).collect()
}

/// The training split, the validation records, and the class names.
///
/// # Errors
/// As [`open_split`]; [`TrainError::Config`] when the batch is larger than the dataset.
pub fn open_data(config: &TrainConfig) -> Result<(Split, Vec<ImageRecord>), TrainError> {
    let d = &config.data;
    let train = open_split(&d.path, &d.train_split)?;
    if config.run.batch_size > train.records.len() {
        return Err(TrainError::Config(format!(
            "batch size {} is larger than the {} training images",
            config.run.batch_size,
            train.records.len()
        )));
    }
    let valid = if d.valid_split.is_empty() {
        spread(&train.records, d.valid_images)
    } else {
        spread(&open_split(&d.path, &d.valid_split)?.records, d.valid_images)
    };
    Ok((train, valid))
}

/// The deterministic training stream (see [`crate::train::stream`]).
pub fn train_loader(config: &TrainConfig, train: &Split, device: &Device) -> StepLoader<ImageBatch> {
    let d = &config.data;
    let transform = Transform { hflip: d.hflip, ..Transform::train(d.image_size as u32, config.run.seed) };
    let batcher = ImageBatcher::new(transform);
    let records = train.records.clone();
    let make: MakeBatch<ImageBatch> = Arc::new(move |items, device| {
        let items: Vec<(ImageRecord, u64)> = items.iter().map(|i| (records[i.index].clone(), i.epoch)).collect();
        Ok(batcher.batch_with_epochs(&items, device))
    });
    let schedule = Arc::new(StepSchedule::new(train.records.len(), config.run.batch_size, config.run.seed));
    StepLoader::new(schedule, make, 0..config.run.total_steps, d.num_workers, device.clone())
}

/// The validation loader (centre crops, no augmentation).
pub fn valid_loader(config: &TrainConfig, valid: Vec<ImageRecord>, device: &Device) -> Arc<dyn DataLoader<ImageBatch>> {
    let batcher = ImageBatcher::new(Transform::eval(config.data.image_size as u32));
    DataLoaderBuilder::new(batcher)
        .batch_size(config.run.batch_size)
        .num_workers(config.data.num_workers.max(1))
        .set_device(device.clone())
        .build(InMemDataset::new(valid))
}

/// Metric names a mode reports: `(key, label, higher_is_better)`.
pub type MetricSpec = &'static [(&'static str, &'static str, bool)];

/// Everything [`launch`] needs besides the model.
pub struct Launch<M: LearnerModel> {
    /// The configuration (saved as `<run>/config.json`).
    pub config: TrainConfig,
    /// The run directory.
    pub run: RunDir,
    /// Training device.
    pub device: Device,
    /// Training stream.
    pub train: StepLoader<<M as TrainStep>::Input>,
    /// Validation loader.
    pub valid: Arc<dyn DataLoader<<M as burn::train::InferenceStep>::Input>>,
    /// Logged terms.
    pub metrics: MetricSpec,
    /// Runs at each checkpoint (e.g. the HF export of the EMA weights).
    pub on_checkpoint: StepHook<M>,
    /// Runs after each validation (e.g. a PNG grid).
    pub on_validation: StepHook<M>,
    /// More training devices (data parallel); empty for one device.
    pub extra_devices: Vec<Device>,
}

/// Trains `model` with burn-train: resumes from `<run>/latest.json` when present, otherwise
/// starts at step 0. Returns the final model.
///
/// # Errors
/// [`TrainError::Resume`] when the run directory belongs to another configuration;
/// [`TrainError::Config`] with burn-train's message when training fails.
pub fn launch<M, S>(model: M, optim: ModuleOptimizer, schedule: S, l: Launch<M>) -> Result<M, TrainError>
where
    M: LearnerModel + TrainStep<Output = StepTerms> + burn::train::InferenceStep<Output = StepTerms>,
    <M as TrainStep>::Input: Send + Sync + std::fmt::Debug,
    <M as burn::train::InferenceStep>::Input: Send + Sync,
    S: LrScheduler + 'static,
{
    let cfg = &l.config;
    let group = crate::distributed::group();
    if !cfg.run.batch_size.is_multiple_of(group.world_size) {
        return Err(TrainError::Config(format!(
            "run.batch_size {} (the global batch) does not divide into {} equal shares, one per rank: choose a \
             multiple of {}",
            cfg.run.batch_size, group.world_size, group.world_size
        )));
    }
    let config_json = serde_json::to_string_pretty(cfg).expect("serialisable");
    let resume = l.run.latest()?;
    if let Some(state) = &resume {
        let saved_path = l.run.root.join("config.json");
        let saved = TrainConfig::load(Some(&saved_path), &[])?;
        if !saved.same_run_as(cfg) {
            return Err(TrainError::Resume(format!(
                "{} holds a run with another configuration (only run.total_steps, run.log_every and \
                 data.num_workers may change on resume); use a new --run folder",
                l.run.root.display()
            )));
        }
        if group.is_main() {
            titok_model::checkpoint::write_bytes_atomically(&saved_path, config_json.as_bytes())?;
        }
        if state.dataset_len != l.train.schedule().len {
            return Err(TrainError::Resume(format!(
                "the training data changed: {} images now, {} when the run started",
                l.train.schedule().len,
                state.dataset_len
            )));
        }
        tracing::info!(step = state.step, "resuming");
    } else if group.is_main() {
        titok_model::checkpoint::write_bytes_atomically(&l.run.root.join("config.json"), config_json.as_bytes())?;
    }

    let (ckpt_model, ckpt_optim, ckpt_sched, tracker) = checkpointers(&l.run);
    let state = RunState {
        step: 0,
        seed: cfg.run.seed,
        batch_size: cfg.run.batch_size,
        dataset_len: l.train.schedule().len,
        total_steps: cfg.run.total_steps,
        weights: String::new(),
    };
    let intervals = cfg.run.total_steps.div_ceil(cfg.run.valid_every) as usize;
    let strategy = StepStrategy {
        device: l.device.clone(),
        loader: l.train.clone(),
        total_steps: cfg.run.total_steps,
        valid_every: cfg.run.valid_every,
        checkpoint_every: cfg.run.checkpoint_every,
        run: l.run.clone(),
        tracker,
        state,
        on_checkpoint: l.on_checkpoint,
        on_validation: l.on_validation,
        extra_devices: l.extra_devices,
        group,
    };
    // burn-train's own files (metric logs) of the ranks other than 0 go to a scratch folder:
    // the run folder is rank 0's.
    let artifacts = if group.is_main() {
        l.run.root.clone()
    } else {
        std::env::temp_dir().join(format!("titok-train-rank{}-{}", group.rank, std::process::id()))
    };
    let mut training = SupervisedTraining::new(&artifacts, Arc::new(l.train.clone()), l.valid)
        .with_training_strategy(TrainingStrategy::Custom(Arc::new(strategy)))
        .with_custom_checkpointers(ckpt_model, ckpt_optim, ckpt_sched)
        .with_checkpointing_strategy(KeepLastSteps::new(cfg.run.keep_checkpoints, &l.run))
        // Our binaries install their own `tracing` subscriber (stderr).
        .with_application_logger(None)
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(ImagesPerSecond::default())
        .num_epochs(intervals);
    for &(key, label, higher) in l.metrics {
        training = training
            .metric_train_numeric(TermMetric::new(key, label, higher))
            .metric_valid_numeric(TermMetric::new(key, label, higher));
    }
    if let Some(state) = &resume {
        training = training.checkpoint(state.step as usize);
    }
    let first_step = resume.as_ref().map_or(0, |s| s.step);
    if let Some(renderer) =
        renderer_for(cfg.run.log_every, cfg.run.batch_size, first_step, group.is_launched().then_some(group.rank))
    {
        training = training.renderer(renderer);
    }
    // Models are built on the plain device; `train()` turns their trainable parameters into
    // tracked autodiff leaves (frozen ones, the EMA copy and buffers stay untracked).
    let learner = Learner::new(model.train(), optim, schedule);
    let result = training.launch(learner);
    if !group.is_main() {
        let _ = std::fs::remove_dir_all(&artifacts);
    }
    if let Some(error) = result.error {
        return Err(TrainError::Config(format!("training failed: {error}")));
    }
    Ok(result.model)
}

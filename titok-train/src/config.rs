//! Training configuration: a JSON or TOML file plus `--set key=value` overrides, with the
//! official recipes' numbers as defaults (REFERENCE §7).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use titok_model::generator::GeneratorConfig;
use titok_model::{TitokConfig, VqganConfig};

use crate::train::TrainError;

/// Which model a run trains and where it starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A named TiTok preset (`l32`, `b64`, ...); ignored when `config` is given.
    pub preset: Option<String>,
    /// An explicit TiTok configuration.
    pub titok: Option<TitokConfig>,
    /// An explicit MaskGIT-VQGAN configuration (the `vqgan` mode; default: official numbers).
    pub vqgan: Option<VqganConfig>,
    /// Start from these weights (an HF folder) instead of a random init.
    pub init: Option<PathBuf>,
}

/// The data of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// An image folder or a `.tar` / `.tar.gz` of one.
    pub path: PathBuf,
    /// Sub-folder used for training (e.g. `train`); empty = the whole archive/folder.
    pub train_split: String,
    /// Sub-folder used for validation (e.g. `test`); empty = hold out `valid_images` training
    /// images instead.
    pub valid_split: String,
    /// Number of validation images (metrics and the PNG grid).
    pub valid_images: usize,
    /// Training resolution (images are resized and cropped to it).
    pub image_size: usize,
    /// Parallel decoding threads.
    pub num_workers: usize,
    /// Random horizontal flips in training.
    pub hflip: bool,
    /// Generator training: the token cache file, built on first use (default
    /// `<run>/tokens.safetensors`); share it between runs of the same tokenizer and data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_cache: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            train_split: "train".into(),
            valid_split: "test".into(),
            valid_images: 256,
            image_size: 256,
            num_workers: 2,
            hflip: true,
            token_cache: None,
        }
    }
}

/// AdamW, schedule and clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    pub end_lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// AdamW β1.
    pub beta1: f32,
    /// AdamW β2.
    pub beta2: f32,
    /// Weight decay (not applied to norms, biases, embeddings, latent tokens, mask token).
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (0 = off).
    pub grad_clip: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        // Stage 1 of the official recipe.
        Self {
            lr: 1e-4,
            end_lr: 1e-5,
            warmup_steps: 10_000,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 1e-4,
            grad_clip: 1.0,
        }
    }
}

/// Steps, batch, checkpoints, EMA and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Images per step.
    pub batch_size: usize,
    /// Total optimisation steps.
    pub total_steps: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Steps between validations (and PNG grids).
    pub valid_every: u64,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Seed of the data order, augmentation and initialisation.
    pub seed: u64,
    /// Maximum EMA decay (official 0.999; 0 disables the EMA).
    pub ema_decay: f64,
    /// Steps between log lines (plain-text output; the terminal dashboard updates live).
    pub log_every: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            total_steps: 1_000_000,
            checkpoint_every: 1000,
            valid_every: 1000,
            keep_checkpoints: 2,
            seed: 42,
            ema_decay: 0.999,
            log_every: 50,
        }
    }
}

/// Loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Pixel L2 (single-stage, VQGAN).
    pub l2_weight: f64,
    /// Quantizer loss (commitment + codebook) weight.
    pub quantizer_weight: f64,
    /// KL weight of VAE tokenizers.
    pub kl_weight: f64,
    /// VQ tokenizers: weight of the unused-code anchor loss against codebook collapse (codes no
    /// latent of the batch picked are pulled toward distinct latents the codebook serves worst;
    /// in the spirit of the official `clustering_vq`; see
    /// `titok_model::VectorQuantizer::unused_code_anchor_loss`). 0 = off (the official
    /// stage-1/2 recipe).
    pub unused_code_weight: f64,
    /// Generator (MLM loss): label smoothing of the cross-entropy (official 0.1).
    pub mlm_label_smoothing: f64,
    /// Generator (MLM loss): weight of unmasked positions; masked ones weigh 1 (official 0.1).
    pub mlm_unmasked_weight: f64,
    /// Pixel modes (`stage2`, `single-stage`, `vqgan`): weight of the perceptual loss; 0 (the
    /// default) loads no perceptual network. Official: stage 2 0.1, single stage 1.1.
    pub perceptual_weight: f64,
    /// Perceptual loss by its official name: `lpips`, `convnext_s` or `lpips-convnext_s-A-B`.
    pub perceptual_loss: String,
    /// LPIPS weights (safetensors, AlexNet or VGG16 layout), e.g.
    /// `../shared/weights/lpips_alexnet.safetensors`; needed when the loss uses LPIPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perceptual_weights: Option<PathBuf>,
    /// torchvision `convnext_small` weights (safetensors); needed for `convnext_s` (none ship).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convnext_weights: Option<PathBuf>,
    /// Images whose side is smaller are up-sampled (bilinear) to this side before the
    /// perceptual network: at 32 px AlexNet's deeper taps are 1x1 and LPIPS degenerates. No
    /// effect at 256 px.
    pub perceptual_min_size: usize,
    /// Pixel modes: weight of the generator (adversarial) loss `−mean D(x̂)` once the GAN is
    /// on; 0 (the default) builds no discriminator. Official: stage 2 0.01, single stage 0.1.
    pub gan_weight: f64,
    /// Optimisation step at which the discriminator starts training and the generator loss is
    /// used (official: stage 2 20 000, single stage 200 000).
    pub gan_start: u64,
    /// Weight of the LeCam regulariser in the discriminator loss (official 0.001; 0 = off).
    pub lecam_weight: f64,
    /// Decay of the LeCam EMA of the mean logits (official 0.999).
    pub lecam_ema_decay: f64,
    /// Discriminator width: stem channels, a multiple of 32 (official 128).
    pub discriminator_channels: usize,
    /// Discriminator down-sampling stages (official 3).
    pub discriminator_stages: usize,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            l2_weight: 1.0,
            quantizer_weight: 1.0,
            kl_weight: 1e-6,
            unused_code_weight: 0.0,
            mlm_label_smoothing: 0.1,
            mlm_unmasked_weight: 0.1,
            perceptual_weight: 0.0,
            perceptual_loss: "lpips".into(),
            perceptual_weights: None,
            convnext_weights: None,
            perceptual_min_size: 64,
            gan_weight: 0.0,
            gan_start: 20_000,
            lecam_weight: 0.001,
            lecam_ema_decay: 0.999,
            discriminator_channels: 128,
            discriminator_stages: 3,
        }
    }
}

/// The MaskGIT generator of the `generator` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorSpec {
    /// A generator preset (`small`, `tiny`, `l32`, `b64`, `s128`); its token layout (codebook
    /// size, `K`, classes) is taken from the tokenizer and the data. Ignored when `config` is
    /// given; neither = `small`.
    pub preset: Option<String>,
    /// An explicit generator configuration; its codebook size, `image_seq_len` and classes must
    /// match the tokenizer and the data.
    pub config: Option<GeneratorConfig>,
    /// Classes shown in the periodic sample grid (spread over all classes; one column each).
    pub sample_classes: usize,
    /// Samples per class in the grid (rows).
    pub samples_per_class: usize,
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        Self { preset: None, config: None, sample_classes: 10, samples_per_class: 1 }
    }
}

/// A whole training configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelSpec,
    /// Stage 1: the MaskGIT-VQGAN teacher (HF folder, or the official `.bin`).
    pub teacher: Option<PathBuf>,
    /// Stage 2 of a two-stage model: the MaskGIT-VQGAN (folder or `.bin`) whose decoder and
    /// codebook become the model's `pixel_decoder` and `pixel_quantize`. Refused for a
    /// single-stage `model.init`, which decodes to pixels itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixel_decoder: Option<PathBuf>,
    /// Data.
    pub data: DataConfig,
    /// Optimizer.
    pub optim: OptimConfig,
    /// Run length, checkpoints, EMA, seed.
    pub run: RunConfig,
    /// Loss weights.
    pub loss: LossConfig,
    /// Generator training: the TiTok tokenizer (an HF folder) whose tokens the generator
    /// learns; also decodes the sample grids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Generator training: the MaskGIT generator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSpec>,
}

impl TrainConfig {
    /// Reads a `.json` or `.toml` file and applies `overrides` (`a.b.c=value`, the value parsed
    /// as JSON when possible, else taken as a string).
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the file and the problem (unknown keys included).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, TrainError> {
        let mut value = match path {
            None => serde_json::to_value(Self::default()).expect("serialisable"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| TrainError::io(p, e))?;
                let is_toml = p.extension().is_some_and(|e| e == "toml");
                if is_toml {
                    let t: toml::Value =
                        toml::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
                    serde_json::to_value(t).map_err(|e| TrainError::Config(e.to_string()))?
                } else {
                    serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?
                }
            }
        };
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        serde_json::from_value(value).map_err(|e| TrainError::Config(format!("{e}")))
    }

    /// The TiTok configuration of the run.
    ///
    /// # Errors
    /// [`TrainError::Config`] when neither a preset nor a config is given, or it does not
    /// validate or fit the data resolution.
    pub fn titok(&self) -> Result<TitokConfig, TrainError> {
        let config = match (&self.model.titok, &self.model.preset) {
            (Some(c), _) => c.clone(),
            (None, Some(p)) => TitokConfig::preset(p)?,
            (None, None) => return Err(TrainError::Config("set model.preset or model.titok".into())),
        };
        config.validate()?;
        if config.image_size != self.data.image_size {
            return Err(TrainError::Config(format!(
                "model resolution {} != data.image_size {}",
                config.image_size, self.data.image_size
            )));
        }
        Ok(config)
    }

    /// The defaults of the `generator` mode: the official MaskGIT recipe
    /// (`configs/training/generator/maskgit.yaml`, REFERENCE §7e): AdamW lr 2e-4, β (0.9, 0.96),
    /// weight decay 0.03, 10 k warm-up steps, cosine to 1e-5, 500 k steps, grad clip 1.0,
    /// batch 64 (per GPU in the official runs), centre crops with flips, the `small` generator.
    pub fn generator_recipe() -> Self {
        let optim = OptimConfig {
            lr: 2e-4,
            end_lr: 1e-5,
            warmup_steps: 10_000,
            beta1: 0.9,
            beta2: 0.96,
            weight_decay: 0.03,
            grad_clip: 1.0,
        };
        let mut c = Self { optim, ..Self::default() };
        c.run.batch_size = 64;
        c.run.total_steps = 500_000;
        c.generator = Some(GeneratorSpec::default());
        c
    }

    /// Defaults of the `stage2` mode: the official stage-2 recipe (REFERENCE §7b): AdamW lr
    /// 1e-4 → 1e-5 cosine after 5 000 warm-up steps, β (0.9, 0.999), weight decay 1e-4,
    /// clip 1.0, 500 000 steps; L2 1.0, perceptual 0.1, GAN 0.01 from step 20 000, LeCam 0.001.
    /// The perceptual term is LPIPS (the official ConvNeXt-S logits need weights that do not
    /// ship; `loss.perceptual_loss = "convnext_s"` with `loss.convnext_weights` selects them).
    pub fn stage2_recipe() -> Self {
        let optim = OptimConfig { warmup_steps: 5_000, beta2: 0.999, ..OptimConfig::default() };
        let mut c = Self { optim, ..Self::default() };
        c.run.total_steps = 500_000;
        c.loss.perceptual_weight = 0.1;
        c.loss.gan_weight = 0.01;
        c.loss.gan_start = 20_000;
        c
    }

    /// As [`TrainConfig::load`], with the values the file leaves out taken from `defaults`
    /// (e.g. [`TrainConfig::generator_recipe`]) instead of [`TrainConfig::default`]: the file is
    /// merged into `defaults` key by key, then `overrides` are applied.
    ///
    /// # Errors
    /// As [`TrainConfig::load`].
    pub fn load_with_defaults(defaults: Self, path: Option<&Path>, overrides: &[String]) -> Result<Self, TrainError> {
        let mut value = serde_json::to_value(defaults).expect("serialisable");
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|e| TrainError::io(p, e))?;
            let given: Value = if p.extension().is_some_and(|e| e == "toml") {
                let t: toml::Value =
                    toml::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
                serde_json::to_value(t).map_err(|e| TrainError::Config(e.to_string()))?
            } else {
                serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?
            };
            merge_json(&mut value, given);
        }
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        serde_json::from_value(value).map_err(|e| TrainError::Config(format!("{e}")))
    }

    /// Whether a run started with `self` can be resumed with `other`: everything equal but the
    /// length of the run, the log interval and the number of data workers (none of which
    /// changes the computation of the steps already taken).
    pub fn same_run_as(&self, other: &TrainConfig) -> bool {
        let normalise = |c: &TrainConfig| {
            let mut c = c.clone();
            c.run.total_steps = 0;
            c.run.log_every = 0;
            c.data.num_workers = 0;
            c
        };
        normalise(self) == normalise(other)
    }

    /// Checks the run numbers.
    ///
    /// # Errors
    /// [`TrainError::Config`] for zero sizes or intervals.
    pub fn validate_run(&self) -> Result<(), TrainError> {
        let r = &self.run;
        if r.batch_size == 0 || r.total_steps == 0 || r.checkpoint_every == 0 || r.valid_every == 0 {
            return Err(TrainError::Config(
                "run.batch_size, run.total_steps, run.checkpoint_every and run.valid_every must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&r.ema_decay) {
            return Err(TrainError::Config(format!("run.ema_decay {} must be in [0, 1)", r.ema_decay)));
        }
        Ok(())
    }
}

/// Merges `given` into `base`: objects key by key (recursively), anything else replaces.
fn merge_json(base: &mut Value, given: Value) {
    match (base, given) {
        (Value::Object(b), Value::Object(g)) => {
            for (k, v) in g {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Applies one `a.b.c=value` override to a JSON tree.
///
/// # Errors
/// [`TrainError::Config`] for a malformed override.
pub fn apply_override(root: &mut Value, assignment: &str) -> Result<(), TrainError> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("override `{assignment}` is not key=value")))?;
    let value: Value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("object");
        if i + 1 == parts.len() {
            map.insert(part.to_string(), value);
            return Ok(());
        }
        node = map.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()));
    }
    Err(TrainError::Config(format!("override `{assignment}` has an empty key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_unknown_keys() {
        let mut v = serde_json::to_value(TrainConfig::default()).unwrap();
        apply_override(&mut v, "optim.lr=0.0002").unwrap();
        apply_override(&mut v, "data.path=/tmp/x.tar").unwrap();
        apply_override(&mut v, "model.preset=l32").unwrap();
        let c: TrainConfig = serde_json::from_value(v.clone()).unwrap();
        assert_eq!((c.optim.lr, c.data.path.to_str().unwrap()), (2e-4, "/tmp/x.tar"));
        assert_eq!(c.model.preset.as_deref(), Some("l32"));
        apply_override(&mut v, "optim.learning_rate=1").unwrap();
        let err = serde_json::from_value::<TrainConfig>(v).unwrap_err().to_string();
        assert!(err.contains("learning_rate"), "{err}");
    }

    #[test]
    fn generator_defaults_fill_what_the_file_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"optim": {"lr": 0.001}, "generator": {"preset": "tiny"}, "tokenizer": "tok"}"#)
            .unwrap();
        let c = TrainConfig::load_with_defaults(TrainConfig::generator_recipe(), Some(&path), &["run.seed=7".into()])
            .unwrap();
        assert_eq!((c.optim.lr, c.optim.beta2, c.optim.weight_decay), (1e-3, 0.96, 0.03), "file value + recipe");
        let g = c.generator.unwrap();
        assert_eq!((g.preset.as_deref(), g.sample_classes), (Some("tiny"), 10));
        assert_eq!((c.run.seed, c.loss.mlm_label_smoothing, c.loss.mlm_unmasked_weight), (7, 0.1, 0.1));
        assert_eq!(c.tokenizer.as_deref(), Some(Path::new("tok")));
        std::fs::write(&path, r#"{"generator": {"presett": "tiny"}}"#).unwrap();
        let e = TrainConfig::load_with_defaults(TrainConfig::generator_recipe(), Some(&path), &[]).unwrap_err();
        assert!(e.to_string().contains("presett"), "{e}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn model_resolution_must_fit_the_data() {
        let mut c = TrainConfig::default();
        c.model.preset = Some("l32".into());
        c.data.image_size = 32;
        assert!(c.titok().unwrap_err().to_string().contains("!= data.image_size 32"));
    }
}

//! The command-line interface: global options and one argument struct per subcommand (clap
//! derive). The book chapter "The titok command line" documents every option.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use titok_model::device::DeviceRequest;
use titok_model::generator::{GuidanceDecay, MaskSchedule};

/// Tokenize images into a few dozen 1D tokens, reconstruct them, and generate new images
/// (TiTok, "An Image is Worth 32 Tokens for Reconstruction and Generation", and MaskGIT).
///
/// Without --model / --generator the embedded default models are used: a TiTok tokenizer and a
/// class-conditional MaskGIT generator for 32x32 images (CIFAR-10 classes).
#[derive(Parser, Debug)]
#[command(name = "titok", version)]
pub struct Cli {
    /// Options that every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every subcommand.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Tokenizer folder in the official Hugging Face layout (`config.json` +
    /// `model.safetensors`, e.g. a download of `yucornetto/tokenizer_titok_l32_imagenet`);
    /// default: the embedded CIFAR-10 tokenizer.
    #[arg(long, global = true, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Generator folder in the official layout (e.g. `yucornetto/generator_titok_l32_imagenet`),
    /// with an optional `classes.txt`; default: the embedded CIFAR-10 generator.
    #[arg(long, global = true, value_name = "DIR")]
    pub generator: Option<PathBuf>,
    /// Device: auto (a GPU when one answers, else the CPU), cpu, wgpu, gpu or cuda[:N] (as
    /// compiled in). The choice is printed on stderr.
    #[arg(long, global = true, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceRequest,
    /// Images per forward pass.
    #[arg(long, global = true, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// CPU threads for the CPU backend's tensor operations (default: `RAYON_NUM_THREADS`, else
    /// one per logical core).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Images -> token ids (JSON lines `{"file", "tokens"}`, or `.npy`).
    Tokenize(TokenizeArgs),
    /// Token ids -> PNG images.
    Detokenize(DetokenizeArgs),
    /// Image -> tokens -> image: writes the reconstruction and a side-by-side PNG, prints the
    /// token count, bytes of tokens vs pixels, PSNR, SSIM and LPIPS.
    Reconstruct(ReconstructArgs),
    /// Class-conditional generation (or inpainting) with the MaskGIT generator: a PNG grid and
    /// the token ids as JSON lines next to it.
    Generate(GenerateArgs),
    /// Dataset-level evaluation: reconstruction (rFID, PSNR, SSIM, LPIPS, codebook usage) or
    /// generation (gFID).
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Configuration, parameter counts, codebook size, token count and resolution of a model
    /// folder (default: the models in use).
    Info(InfoArgs),
    /// Converts a model between the Hugging Face layout and a native Burn `.bpk` file, in f32 or
    /// f16.
    Export(ExportArgs),
}

/// Format of a token file.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// One JSON object per line: `{"file": "...", "tokens": [...]}`.
    Jsonl,
    /// A NumPy `.npy` array `[N, K]` of int64, with the file names in `NAME.files.txt`.
    Npy,
}

/// `titok tokenize`.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Image files or folders (searched recursively for image files).
    #[arg(required = true, value_name = "IMG|DIR")]
    pub inputs: Vec<PathBuf>,
    /// Output token file (default: JSON lines on stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: from the extension of --output, `.npy` or JSON lines).
    #[arg(long, value_enum)]
    pub format: Option<TokenFormat>,
}

/// `titok detokenize`.
#[derive(Args, Debug)]
pub struct DetokenizeArgs {
    /// Token file written by `titok tokenize` or `titok generate` (JSON lines or `.npy`).
    #[arg(value_name = "TOKENS")]
    pub tokens: PathBuf,
    /// Output folder for the PNGs (`<name>.png` per row).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
}

/// `titok reconstruct`.
#[derive(Args, Debug)]
pub struct ReconstructArgs {
    /// Image files or folders (searched recursively for image files).
    #[arg(required = true, value_name = "IMG|DIR")]
    pub inputs: Vec<PathBuf>,
    /// Output folder: `<name>.recon.png` (model resolution) and `<name>.compare.png`
    /// (input | reconstruction, enlarged by --zoom).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// LPIPS weights (AlexNet or VGG safetensors); default: $TITOK_LPIPS_WEIGHTS, then
    /// `lpips_alexnet.safetensors` in $TITOK_SHARED_DIR/weights or in `../shared/weights/`
    /// beside the workspace or the current folder.
    #[arg(long, value_name = "FILE")]
    pub lpips_weights: Option<PathBuf>,
    /// Integer enlargement (nearest neighbour) of the side-by-side image; default: enough for
    /// 128 px tall images.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub zoom: Option<u32>,
}

/// Guidance schedule names (`guidance_decay` of the official config).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleArg {
    /// The same weight at every step.
    Constant,
    /// Weight growing linearly from 0 (MUSE; TiTok-L-32 / B-64).
    Linear,
    /// MDT's power-cosine (TiTok-S-128).
    PowerCosine,
}

impl From<ScheduleArg> for GuidanceDecay {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Constant => Self::Constant,
            ScheduleArg::Linear => Self::Linear,
            ScheduleArg::PowerCosine => Self::PowerCosine,
        }
    }
}

/// Mask schedule names.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskScheduleArg {
    /// `arccos(r)/(π/2)` (official TiTok).
    Arccos,
    /// `cos(π/2·r)` (original MaskGIT).
    Cosine,
    /// `1 − r`.
    Linear,
    /// `1 − sqrt(r)`.
    SquareRoot,
}

impl From<MaskScheduleArg> for MaskSchedule {
    fn from(s: MaskScheduleArg) -> Self {
        match s {
            MaskScheduleArg::Arccos => Self::Arccos,
            MaskScheduleArg::Cosine => Self::Cosine,
            MaskScheduleArg::Linear => Self::Linear,
            MaskScheduleArg::SquareRoot => Self::SquareRoot,
        }
    }
}

/// Sampler settings; each defaults to the generator's own (its `config.json`).
#[derive(Args, Debug, Clone, Default)]
pub struct SamplerArgs {
    /// Parallel decoding steps (default: the generator's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale (0 = no guidance with constant/linear schedules; default:
    /// the generator's).
    #[arg(long, value_name = "G", allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// Guidance schedule (default: the generator's).
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Gumbel temperature of the token choice, annealed to 0 (0 = greedy; default: the
    /// generator's).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Mask schedule (default: the generator's).
    #[arg(long, value_enum)]
    pub mask_schedule: Option<MaskScheduleArg>,
    /// Seed of the sampler (the same seed, settings and --batch-size give the same images).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `titok generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Class name or id (repeatable; default: every class). Names come from the generator's
    /// `classes.txt` (or the ImageNet names for 1000-class generators); a unique part of a
    /// name is enough.
    #[arg(long = "class", value_name = "NAME|ID")]
    pub classes: Vec<String>,
    /// Samples per class.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub num: u32,
    /// Sampler settings.
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Output PNG grid; the token ids go to the same name with `.json` (JSON lines).
    #[arg(short, long, value_name = "PNG")]
    pub output: PathBuf,
    /// Grid columns (default: --num, at most 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub columns: Option<u32>,
    /// Integer enlargement of the grid cells (nearest neighbour); default: enough for 128 px
    /// cells.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub zoom: Option<u32>,
    /// Inpainting: keep the tokens of this image outside --mask and generate the rest.
    #[arg(long, value_name = "IMG", requires = "mask")]
    pub inpaint: Option<PathBuf>,
    /// Token positions to regenerate with --inpaint: comma-separated ids and inclusive ranges
    /// (`0-15,20`), or `first`/`left`/`top` (first half of the sequence),
    /// `second`/`right`/`bottom` (second half), `all`.
    #[arg(long, value_name = "SPEC", requires = "inpaint")]
    pub mask: Option<String>,
}

/// `titok eval`.
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Reconstruct a dataset with the tokenizer: rFID, PSNR, SSIM, LPIPS, codebook usage and
    /// entropy.
    Recon(EvalReconArgs),
    /// Generate samples with the generator (or read them with --samples) and measure gFID
    /// against reference images or statistics.
    Gen(EvalGenArgs),
}

/// Where the evaluation network weights are.
#[derive(Args, Debug, Clone, Default)]
pub struct EvalWeightsArgs {
    /// FID InceptionV3 weights (`fid_inception_v3_pool3.safetensors`); default:
    /// $TITOK_INCEPTION_WEIGHTS, then $TITOK_SHARED_DIR/weights, then `../shared/weights/` beside
    /// the workspace or the current folder.
    #[arg(long, value_name = "FILE")]
    pub inception: Option<PathBuf>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `titok eval recon`.
#[derive(Args, Debug)]
pub struct EvalReconArgs {
    /// Images: a folder (with class subfolders or flat) or a `.tar`/`.tar.gz` of one.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Sub-folder of the data to use (e.g. `test` of the CIFAR-10 archive).
    #[arg(long, value_name = "NAME")]
    pub split: Option<String>,
    /// Use at most this many images, spread evenly over the (sorted) dataset.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// LPIPS weights (as for `titok reconstruct`).
    #[arg(long, value_name = "FILE")]
    pub lpips_weights: Option<PathBuf>,
    /// Skip rFID (the Inception network is the slow part on a CPU).
    #[arg(long)]
    pub no_fid: bool,
    /// FID statistics of these same images (`.npz`, from `--save-real-stats` or `eval gen
    /// --save-reference-stats` with the same data, split and limit): only the reconstructions
    /// then go through Inception, half the rFID time.
    #[arg(long, value_name = "NPZ", conflicts_with = "no_fid")]
    pub real_stats: Option<PathBuf>,
    /// Save the FID statistics of the real images (`mu`, `sigma`, `n`) to this `.npz` for
    /// `--real-stats` or `eval gen --reference`.
    #[arg(long, value_name = "NPZ", conflicts_with_all = ["no_fid", "real_stats"])]
    pub save_real_stats: Option<PathBuf>,
    /// Weights and report options.
    #[command(flatten)]
    pub weights: EvalWeightsArgs,
}

/// `titok eval gen`.
#[derive(Args, Debug)]
pub struct EvalGenArgs {
    /// Reference: an image folder, a `.tar`/`.tar.gz` of one, or a `.npz` with `mu` and
    /// `sigma` (ours, pytorch-fid's or the ADM reference batches').
    #[arg(long, value_name = "PATH")]
    pub reference: PathBuf,
    /// Sub-folder of the reference images (e.g. `test`).
    #[arg(long, value_name = "NAME")]
    pub reference_split: Option<String>,
    /// Use at most this many reference images, spread evenly.
    #[arg(long, value_name = "N")]
    pub reference_limit: Option<usize>,
    /// Save the reference statistics (`mu`, `sigma`, `n`) to this `.npz` for reuse.
    #[arg(long, value_name = "NPZ")]
    pub save_reference_stats: Option<PathBuf>,
    /// Score existing samples (an image folder or tar) instead of generating.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["num_per_class", "adm_npz"])]
    pub samples: Option<PathBuf>,
    /// Samples per class (classes in order, as the published evaluations).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub num_per_class: u32,
    /// Sampler settings.
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Also write the samples as an ADM-evaluator batch (`arr_0`, uint8 NHWC) for the
    /// TensorFlow suite.
    #[arg(long, value_name = "NPZ")]
    pub adm_npz: Option<PathBuf>,
    /// Weights and report options.
    #[command(flatten)]
    pub weights: EvalWeightsArgs,
}

/// `titok info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A tokenizer or generator folder (default: the --model and --generator in use, or the
    /// embedded ones).
    #[arg(value_name = "DIR")]
    pub folder: Option<PathBuf>,
}

/// Storage precision of exported weights.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeArg {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (half the size; converted back to f32 on load).
    F16,
}

/// `titok export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Source: a tokenizer or generator folder (official layout), or a `.bpk` written by
    /// `titok export` (its config is read from `NAME.config.json` beside it, or --config).
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// Destination: a `.bpk` file (plus `NAME.config.json` beside it) or a folder (official
    /// layout).
    #[arg(short, long, value_name = "DST")]
    pub output: PathBuf,
    /// Storage precision of the destination.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Official `config.json` of a `.bpk` source (default: `NAME.config.json` beside it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

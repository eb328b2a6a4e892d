//! `titok-train`: train TiTok tokenizers, the MaskGIT-VQGAN teacher and MaskGIT generators.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use titok_train::config::TrainConfig;
use titok_train::device::{DeviceRequest, select_device};
use titok_train::stages;
use titok_train::train::run::RunDir;

/// Train TiTok tokenizers (stage 1 with proxy codes, single stage), the 2D MaskGIT-VQGAN
/// teacher and MaskGIT generators. Runs checkpoint every `run.checkpoint_every` steps and
/// continue with `--resume` after an interruption (even `kill -9`) with the same data order.
#[derive(Parser, Debug)]
#[command(name = "titok-train", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Training configuration (`.json` or `.toml`); defaults follow the official recipe.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Run folder: checkpoints, HF exports of the EMA weights, PNG grids, metric logs.
    #[arg(long)]
    run: PathBuf,
    /// Continue the run in `--run` from its last complete checkpoint.
    #[arg(long)]
    resume: bool,
    /// Override a configuration value, e.g. `--set optim.lr=2e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Training data: an image folder or a `.tar`/`.tar.gz` of one (sets `data.path`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Total optimisation steps (sets `run.total_steps`).
    #[arg(long)]
    steps: Option<u64>,
    /// Images per step (sets `run.batch_size`).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Device: auto, cpu, wgpu, gpu or cuda[:N].
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Train the 2D MaskGIT-VQGAN tokenizer (the stage-1 teacher): pixel L2 + VQ losses.
    Vqgan(Common),
    /// Stage 1: TiTok decoder predicts the codes of a frozen MaskGIT-VQGAN (set `teacher`).
    Stage1(Common),
    /// Single stage: TiTok trained straight to pixels (L2 + quantizer or KL).
    SingleStage(Common),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (mode, common) = match &cli.mode {
        Mode::Vqgan(c) => ("vqgan", c),
        Mode::Stage1(c) => ("stage1", c),
        Mode::SingleStage(c) => ("single-stage", c),
    };
    let mut overrides = common.overrides.clone();
    if let Some(d) = &common.data {
        overrides.push(format!("data.path={}", serde_json::to_string(d)?));
    }
    if let Some(s) = common.steps {
        overrides.push(format!("run.total_steps={s}"));
    }
    if let Some(b) = common.batch_size {
        overrides.push(format!("run.batch_size={b}"));
    }
    let config = TrainConfig::load(common.config.as_deref(), &overrides)?;
    let has_checkpoint = RunDir::create(&common.run)?.latest()?.is_some();
    if has_checkpoint && !common.resume {
        bail!("{} already holds a checkpoint: pass --resume to continue it, or choose another --run", common.run.display());
    }
    let (device, name) = select_device(common.device)?;
    eprintln!("titok-train {mode}: device {name}, run {}", common.run.display());
    match mode {
        "vqgan" => {
            stages::vqgan::train_vqgan(config, &common.run, &device).context("vqgan training")?;
        }
        "stage1" => {
            stages::tokenizer::train_tokenizer(config, true, &common.run, &device).context("stage-1 training")?;
        }
        _ => {
            stages::tokenizer::train_tokenizer(config, false, &common.run, &device).context("single-stage training")?;
        }
    }
    eprintln!("done; EMA weights in {}/checkpoints/", common.run.display());
    Ok(())
}

//! `titok-train`: train TiTok tokenizers, the MaskGIT-VQGAN teacher and MaskGIT generators.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use titok_train::config::TrainConfig;
use titok_train::device::{DeviceRequest, select_device};
use titok_train::distributed::ProcessGroup;
use titok_train::stages;
use titok_train::train::run::RunDir;

/// jemalloc keeps freed tensor buffers' pages for reuse (glibc unmaps large blocks, and each
/// new one costs a page fault per 4 KiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Train TiTok tokenizers (stage 1 with proxy codes, single stage), the 2D MaskGIT-VQGAN
/// teacher and MaskGIT generators. Runs checkpoint every `run.checkpoint_every` steps and
/// continue with `--resume` after an interruption (even `kill -9`) with the same data order.
/// Launched by `mpirun -n N` or `srun` (build with `--features mpi`), N processes train one run
/// data-parallel: each takes 1/N of every batch, rank 0 writes the run folder.
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
    /// Device: auto, cpu, wgpu, gpu or cuda[:N]. Under `mpirun`/`srun` each rank adds its local
    /// rank to the CUDA index (rank 1 of a machine with `cuda` trains on `cuda:1`).
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Data-parallel devices, comma-separated (e.g. `cuda:0,cuda:1`); overrides `--device`.
    /// Each step's batch is split across them and the gradients averaged on the first.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<DeviceRequest>,
    /// CPU threads for the CPU backend's tensor operations (default: `RAYON_NUM_THREADS`, else
    /// one per logical core, shared out among the ranks on one machine); data-loading workers
    /// are set by `data.num_workers`.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Train the 2D MaskGIT-VQGAN tokenizer (the stage-1 teacher): pixel L2 + VQ losses.
    Vqgan(Common),
    /// Stage 1: TiTok decoder predicts the codes of a frozen MaskGIT-VQGAN (set `teacher`).
    Stage1(Common),
    /// Single stage: TiTok trained straight to pixels (L2 + quantizer or KL).
    SingleStage(Common),
    /// Stage 2: fine-tune the decoder side of a VQ TiTok toward pixels with L2 + perceptual +
    /// GAN (discriminator with hinge + LeCam); encoder, quantizer and latent tokens frozen. Set
    /// `model.init`: a stage-1 TiTok HF folder with `pixel_decoder` (its MaskGIT-VQGAN, whose
    /// decoder is trained too), or a single-stage one. Defaults: the official stage-2 recipe,
    /// LPIPS as the perceptual term.
    Stage2(Common),
    /// MaskGIT generator on the tokens of `tokenizer` (an HF folder): masked token modelling,
    /// class-conditional. Tokenizes the training split into `data.token_cache` first (default
    /// `<run>/tokens.safetensors`) unless that cache exists. Defaults: the official MaskGIT recipe.
    Generator(Common),
    /// Only build the generator's token cache (`data.token_cache`, default `<run>/tokens.safetensors`):
    /// the training split encoded with `tokenizer`, each image and its mirror.
    Tokens(Common),
}

fn main() -> Result<()> {
    titok_train::device::quiet_vulkan_loader();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let group = titok_train::distributed::init().context("joining the training job")?;
    match run(&cli, group) {
        Ok(()) => {
            group.finish();
            Ok(())
        }
        // One rank's error ends the job (MPI_Abort): the others would wait in their next
        // collective, and `srun` does not stop them on its own.
        Err(e) if group.is_distributed() => {
            eprintln!("titok-train {}: error: {e:#}", group.label());
            group.abort(1);
        }
        Err(e) => Err(e),
    }
}

/// The device a request names for this rank: CUDA indices are offset by the local rank (one GPU
/// per process), and `auto` tries `cuda:<local rank>` first. Where the launcher shows each
/// process only its own GPU (`srun --gpus-per-task=1`, `CUDA_VISIBLE_DEVICES` per rank) the
/// offset index does not exist and the request's own index is taken.
fn rank_device(request: DeviceRequest, group: &ProcessGroup) -> Result<(burn::tensor::Device, String)> {
    let device = |r| select_device(r).map_err(|e| anyhow::anyhow!("device: {e}"));
    match request {
        DeviceRequest::Cuda(i) if group.local_size > 1 => {
            device(DeviceRequest::Cuda(i + group.local_rank)).or_else(|_| device(DeviceRequest::Cuda(i)))
        }
        DeviceRequest::Auto if group.local_size > 1 => device(DeviceRequest::Cuda(group.local_rank))
            .or_else(|_| device(DeviceRequest::Cuda(0)))
            .or_else(|_| device(DeviceRequest::Auto)),
        other => device(other),
    }
}

fn run(cli: &Cli, group: &ProcessGroup) -> Result<()> {
    let (mode, common) = match &cli.mode {
        Mode::Vqgan(c) => ("vqgan", c),
        Mode::Stage1(c) => ("stage1", c),
        Mode::SingleStage(c) => ("single-stage", c),
        Mode::Stage2(c) => ("stage2", c),
        Mode::Generator(c) => ("generator", c),
        Mode::Tokens(c) => ("tokens", c),
    };
    titok_train::device::set_cpu_threads(common.threads.or(group.default_cpu_threads())).map_err(anyhow::Error::msg)?;
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
        bail!(
            "{} already holds a checkpoint: pass --resume to continue it, or choose another --run",
            common.run.display()
        );
    }
    // `--devices` is taken as given on every rank; one `--device` is offset per rank.
    let (mut devices, mut names) = (Vec::new(), Vec::new());
    if common.devices.is_empty() {
        let (d, n) = rank_device(common.device, group)?;
        devices.push(d);
        names.push(n);
    } else {
        for &r in &common.devices {
            let (d, n) = select_device(r).map_err(|e| anyhow::anyhow!("device: {e}"))?;
            devices.push(d);
            names.push(n);
        }
    }
    let mut rank = if group.is_distributed() {
        format!(
            "{} (local rank {} of {}, pid {}, launched by {}), ",
            group.label(),
            group.local_rank,
            group.local_size,
            std::process::id(),
            group.launcher
        )
    } else {
        String::new()
    };
    let transport = group.use_device(&devices[0])?;
    if group.is_distributed() {
        rank.push_str(&format!("gradients averaged by {transport}, "));
    }
    eprintln!("titok-train {mode}: {rank}device {}, run {}", names.join(" + "), common.run.display());
    match mode {
        "vqgan" => {
            stages::vqgan::train_vqgan(config, &common.run, &devices).context("vqgan training")?;
        }
        "stage1" => {
            stages::tokenizer::train_tokenizer(config, true, &common.run, &devices).context("stage-1 training")?;
        }
        "stage2" => {
            let config =
                TrainConfig::load_with_defaults(TrainConfig::stage2_recipe(), common.config.as_deref(), &overrides)?;
            stages::stage2::train_stage2(config, &common.run, &devices).context("stage-2 training")?;
        }
        "generator" | "tokens" => {
            let recipe = TrainConfig::generator_recipe();
            let config = TrainConfig::load_with_defaults(recipe, common.config.as_deref(), &overrides)?;
            if mode == "tokens" {
                if !group.is_main() {
                    return Ok(()); // rank 0 builds the cache
                }
                let device = &devices[0];
                let tokenizer = stages::generator::load_tokenizer(&config, device)?;
                let (cache, path) = stages::generator::prepare_token_cache(&config, &tokenizer, &common.run, device)?;
                eprintln!(
                    "token cache {}: {} images x {} views x {} tokens",
                    path.display(),
                    cache.len(),
                    cache.views(),
                    cache.seq_len()
                );
                return Ok(());
            }
            stages::generator::train_generator(config, &common.run, &devices).context("generator training")?;
        }
        _ => {
            stages::tokenizer::train_tokenizer(config, false, &common.run, &devices)
                .context("single-stage training")?;
        }
    }
    if group.is_main() {
        eprintln!("done; EMA weights in {}/checkpoints/", common.run.display());
    }
    Ok(())
}

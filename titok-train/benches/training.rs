//! Training throughput (images/s) of single-stage TiTok steps on the CPU (flex): forward,
//! backward, gradient clipping, AdamW and the EMA update, on random 32 px images (no data
//! loading). `cargo test --release --workspace --bench training [-- --steps N] [--threads N]`
//! (the test profile is the release profile, so nothing is rebuilt for the bench). Also prints
//! `titok train_<tiny|small> img_s <value>` lines for `titok-model/benches/side-by-side.sh`.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use burn::train::TrainStep;
use titok_model::{Titok, TitokConfig, VitSize};
use titok_train::data::ImageBatch;
use titok_train::losses::PixelLoss;
use titok_train::stages::tokenizer::{TokenizerObjective, TokenizerTrainee};
use titok_train::train::optim::{AdamWSettings, adamw_with_groups};

/// jemalloc keeps freed tensor buffers' pages for reuse (glibc unmaps large blocks, and each
/// new one costs a page fault per 4 KiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn config(width: usize, layers: usize, heads: usize, k: usize) -> TitokConfig {
    let size = VitSize::new(width, layers, heads);
    TitokConfig {
        image_size: 32,
        patch_size: 4,
        encoder: size,
        decoder: size,
        num_latent_tokens: k,
        token_size: 16,
        codebook_size: 1024,
        use_l2_norm: true,
        ..TitokConfig::single_stage_vq(size, size, k)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let threads = args.iter().position(|a| a == "--threads").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok());
    titok_train::device::set_cpu_threads(threads).expect("thread pool");
    let device = Device::flex();
    let ad = device.clone().autodiff();
    println!(
        "single-stage TiTok training steps on flex (CPU, {} threads), 32x32 images, {steps} timed steps after 1 warm-up",
        titok_train::device::cpu_threads()
    );
    println!("| config | params (M) | batch | images/s | s/step |");
    println!("|---|---|---|---|---|");
    for (name, key, cfg, batch) in [
        ("tiny (64-d, 2+2 layers, K=16)", "tiny", config(64, 2, 4, 16), 32),
        ("small (128-d, 4+4 layers, K=32; the default CIFAR-10 model)", "small", config(128, 4, 4, 32), 64),
    ] {
        let model = Titok::new(&cfg, &device).expect("config");
        let params = model.num_params() as f64 / 1e6;
        let objective = TokenizerObjective::Pixels { quantizer_weight: 1.0, kl_weight: 0.0 };
        let trainee = TokenizerTrainee::new(model, None, objective, PixelLoss::l2_only(1.0), 0.999, 1.0);
        let mut optim = adamw_with_groups(&trainee, AdamWSettings::default());
        let mut trainee = trainee.train().fork(&ad);
        let make_batch = || ImageBatch {
            images: Tensor::random([batch, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &ad),
            labels: None,
            names: vec![String::new(); batch],
            indices: (0..batch).collect(),
        };
        let mut run = |trainee: TokenizerTrainee| {
            let out = TrainStep::step(&trainee, make_batch());
            trainee.optimize(&mut optim, 1e-4.into(), out.grads)
        };
        trainee = run(trainee); // warm-up
        let t = Instant::now();
        for _ in 0..steps {
            trainee = run(trainee);
        }
        let secs = t.elapsed().as_secs_f64() / steps as f64;
        println!("| {name} | {params:.2} | {batch} | {:.1} | {secs:.3} |", batch as f64 / secs);
        println!("titok train_{key} img_s {:.4}", batch as f64 / secs);
    }
}

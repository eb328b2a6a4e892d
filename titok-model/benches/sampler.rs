//! Speed of the MaskGIT sampler: the released L-32 configuration (TiTok-L-32 tokenizer +
//! 177 M-parameter BERT generator), random weights (speed does not depend on them), f32.
//!
//! `cargo bench --workspace --bench sampler [-- --batch 4] [--iters 2] [--steps 8] [--threads N]`
//! Prints samples/s for token generation alone and end to end (generation + `decode_tokens`
//! to 256x256 pixels), with the L-32 eval sampling (guidance 4.5 linear, τ 9.5, softmax
//! annealing; step 0 is a single conditional pass) and with constant guidance (every step
//! runs the conditional and unconditional passes as one 2B batch). Also prints lines
//! `titok sampler_<linear|constant> <metric> <value>` named like `../shared/tools/pytorch-bench`'s.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use titok_model::generator::{GeneratorConfig, GuidanceDecay, ImageBert, SamplerConfig, SeededUniform, generate};
use titok_model::{Titok, TitokConfig};

/// jemalloc keeps freed tensor buffers' pages for reuse (glibc unmaps large blocks, and each
/// new one costs a page fault per 4 KiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let value = |flag: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let batch = value("--batch", 4);
    let iters = value("--iters", 2);
    let steps = value("--steps", 8);
    let threads = set_threads(args.iter().any(|a| a == "--threads").then(|| value("--threads", 0)));
    let device = Device::flex();

    let tokenizer = Titok::new(&TitokConfig::l32(), &device).expect("tokenizer");
    let generator = ImageBert::new(&GeneratorConfig::l32(), &device).expect("generator");
    println!(
        "device: flex (CPU, {threads} threads), batch {batch}, {steps} steps, {iters} timed iterations after 1 warm-up; \
         tokenizer L-32 {:.1} M params, generator BERT {:.1} M params",
        tokenizer.num_params() as f64 / 1e6,
        generator.num_params() as f64 / 1e6
    );
    let labels = Tensor::<1, Int>::from_data(
        burn::tensor::TensorData::new((0..batch as i64).map(|i| (i * 97) % 1000).collect::<Vec<_>>(), [batch]),
        &device,
    );

    println!("| guidance | tokens samples/s | s/batch | end-to-end images/s | s/batch |");
    println!("|---|---|---|---|---|");
    let eval = SamplerConfig { num_steps: steps, ..SamplerConfig::l32() };
    let constant = SamplerConfig { guidance_decay: GuidanceDecay::Constant, ..eval.clone() };
    for (name, key, config) in [("4.5 linear (L-32 eval)", "linear", eval), ("4.5 constant", "constant", constant)] {
        let mut rng = SeededUniform::new(0);
        let mut tokens_only = || {
            let ids = generate(&generator, labels.clone(), &config, &mut rng).expect("generate");
            ids.try_into_vec_as::<i64>().expect("ids");
        };
        let tok = time(iters, &mut tokens_only);
        let mut rng = SeededUniform::new(0);
        let mut end_to_end = || {
            let ids = generate(&generator, labels.clone(), &config, &mut rng).expect("generate");
            let px = tokenizer.decode_tokens(ids).expect("decode").clamp(0.0, 1.0);
            px.try_into_vec_as::<f32>().expect("pixels");
        };
        let e2e = time(iters, &mut end_to_end);
        println!("| {name} | {:.2} | {tok:.2} | {:.2} | {e2e:.2} |", batch as f64 / tok, batch as f64 / e2e);
        println!("titok sampler_{key} tokens_samples_s {:.4}", batch as f64 / tok);
        println!("titok sampler_{key} e2e_img_s {:.4}", batch as f64 / e2e);
    }
}

/// `--threads N`: the CPU backend's (rayon's) pool size, as the CLI's `--threads`; default
/// rayon's (one per core). Returns the size in use.
fn set_threads(n: Option<usize>) -> usize {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().expect("thread pool");
    }
    rayon::current_num_threads()
}

/// Mean seconds per call after one warm-up call.
fn time(iters: usize, f: &mut dyn FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() / iters.max(1) as f64
}

//! Encode / decode throughput of the released TiTok architectures on one device.
//!
//! `cargo bench --workspace --bench tokenizer [-- s128 b64 l32] [--batch 4] [--iters 3] [--threads N]
//! [--only encode|decode]`
//! Random weights (speed does not depend on them), 256x256 inputs, f32. Prints images/s for
//! `encode` (image -> token ids) and `decode_tokens` (ids -> pixels, including the
//! MaskGIT-VQGAN pixel decoder of the two-stage models), as a table and as lines
//! `titok <model> encode_img_s <value>` named like those of `../shared/tools/pytorch-bench`
//! (`titok-model/benches/side-by-side.sh` joins the two).

use std::time::Instant;

use burn::tensor::{Distribution, Int, Tensor};
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
    let iters = value("--iters", 3);
    // `--only encode|decode`: time one direction (e.g. under a profiler).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).map(String::as_str);
    let threads = set_threads(args.iter().any(|a| a == "--threads").then(|| value("--threads", 0)));
    let mut presets: Vec<&str> = args.iter().map(String::as_str).filter(|a| TitokConfig::PRESETS.contains(a)).collect();
    if presets.is_empty() {
        presets = vec!["s128", "b64", "l32"];
    }
    let device = burn::tensor::Device::flex();
    println!("device: flex (CPU), batch {batch}, {iters} timed iterations after 1 warm-up, {threads} threads");
    println!("| model | params (M) | encode img/s | decode img/s |");
    println!("|---|---|---|---|");
    for name in presets {
        let config = TitokConfig::preset(name).expect("preset");
        let model = Titok::new(&config, &device).expect("model");
        let params = burn::module::Module::num_params(&model) as f64 / 1e6;
        let s = config.image_size;
        let images = Tensor::<4>::random([batch, 3, s, s], Distribution::Uniform(0.0, 1.0), &device);
        let tokens = model.encode(images.clone()).expect("encode").tokens.expect("VQ");
        let time = |f: &dyn Fn()| {
            f(); // warm-up
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            (batch * iters) as f64 / t.elapsed().as_secs_f64()
        };
        let enc = if only == Some("decode") {
            f64::NAN
        } else {
            time(&|| {
                let ids: Tensor<2, Int> = model.encode(images.clone()).unwrap().tokens.unwrap();
                let _ = ids.into_data();
            })
        };
        let dec = if only == Some("encode") {
            f64::NAN
        } else {
            time(&|| {
                let px = model.decode_tokens(tokens.clone()).unwrap();
                let _ = px.into_data();
            })
        };
        println!("| {name} | {params:.2} | {enc:.2} | {dec:.2} |");
        if !enc.is_nan() {
            println!("titok {name} encode_img_s {enc:.4}");
        }
        if !dec.is_nan() {
            println!("titok {name} decode_img_s {dec:.4}");
        }
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

//! LPIPS-AlexNet throughput (image pairs per second) as a metric and as a training loss.
//!
//! `cargo bench --workspace --bench lpips [-- --batch 8] [--iters 3] [--weights PATH]`
//! Weights: `../shared/weights/lpips_alexnet.safetensors` (random weights when the file is
//! absent; speed does not depend on them). Prints a table for 64 and 256 px: the forward
//! alone (metric) and forward + backward to the images (training loss) on flex.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use titok_train::losses::{Lpips, LpipsNet};

/// jemalloc keeps freed tensor buffers' pages for reuse (glibc unmaps large blocks, and each
/// new one costs a page fault per 4 KiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let batch: usize = value("--batch").and_then(|v| v.parse().ok()).unwrap_or(8);
    let iters: usize = value("--iters").and_then(|v| v.parse().ok()).unwrap_or(3);
    let weights = value("--weights").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/weights/lpips_alexnet.safetensors")
    });

    println!("device: flex (CPU), LPIPS AlexNet, batch {batch} pairs, {iters} timed iterations after 1 warm-up");
    println!("| size | metric pairs/s | loss fwd+bwd pairs/s |");
    println!("|---|---|---|");
    for size in [64, 256] {
        let metric = pairs_per_second(&Device::flex(), &weights, batch, size, iters, false);
        let loss = pairs_per_second(&Device::flex().autodiff(), &weights, batch, size, iters, true);
        println!("| {size} | {metric:.1} | {loss:.1} |");
    }
}

fn pairs_per_second(device: &Device, weights: &Path, batch: usize, size: usize, iters: usize, backward: bool) -> f64 {
    let lpips = Lpips::load(weights, device).unwrap_or_else(|e| {
        eprintln!("{e}; timing random weights");
        Lpips::new(LpipsNet::AlexNet, device)
    });
    let a = Tensor::<4>::random([batch, 3, size, size], Distribution::Uniform(0.0, 1.0), device);
    let b = Tensor::<4>::random([batch, 3, size, size], Distribution::Uniform(0.0, 1.0), device);
    let run = || {
        if backward {
            let x = a.clone().require_grad();
            let grads = lpips.loss(x.clone(), b.clone()).unwrap().backward();
            let _ = x.grad(&grads).expect("gradient").into_data();
        } else {
            let _ = lpips.distance(a.clone(), b.clone()).unwrap().into_data();
        }
    };
    run(); // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        run();
    }
    (batch * iters) as f64 / t.elapsed().as_secs_f64()
}

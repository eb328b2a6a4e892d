//! FID InceptionV3 throughput and Fréchet-distance cost on one device.
//!
//! `cargo bench --workspace --bench inception [-- --batch 8] [--iters 3] [--size 256] [--device flex|wgpu]`
//! Uses `../shared/weights/fid_inception_v3_pool3.safetensors` when present (speed does not
//! depend on the weights). Prints images/s of `InceptionV3::features` (resize to 299 included),
//! then the time of `FeatureAccumulator` + `FidStats::fid` on 2048-d features (full rank and
//! rank-deficient).

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use titok_train::eval::{FeatureAccumulator, InceptionV3, inception::WEIGHTS_FILE};

/// jemalloc keeps freed tensor buffers' pages for reuse (glibc unmaps large blocks, and each
/// new one costs a page fault per 4 KiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let number = |flag: &str, default: usize| value(flag).and_then(|v| v.parse().ok()).unwrap_or(default);
    let batch = number("--batch", 8);
    let iters = number("--iters", 3);
    let size = number("--size", 256);
    let rows = number("--fid-rows", 2500);
    let (device, device_name) = match value("--device").as_deref() {
        #[cfg(feature = "wgpu")]
        Some("wgpu") => (Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), "wgpu"),
        _ => (Device::flex(), "flex (CPU)"),
    };

    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/weights").join(WEIGHTS_FILE);
    let (model, weights_note) = match InceptionV3::load(&weights, &device) {
        Ok(m) => (m, "official weights"),
        Err(_) => (InceptionV3::new(&device), "zero weights (weights file not found)"),
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("device: {device_name}, {threads} threads, {weights_note}, {iters} timed iterations after 1 warm-up");
    println!();
    println!("| stage | batch | input | per batch (s) | images/s |");
    println!("|---|---|---|---|---|");
    let images = Tensor::<4>::random([batch, 3, size, size], Distribution::Uniform(0.0, 1.0), &device);
    let run = || {
        let f = model.features(images.clone()).expect("features");
        let _ = f.into_data();
    };
    run();
    let t = Instant::now();
    for _ in 0..iters {
        run();
    }
    let per_batch = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "| InceptionV3 features (resize + pool3) | {batch} | {size}x{size} | {per_batch:.3} | {:.2} |",
        batch as f64 / per_batch
    );

    // Fréchet distance on 2048-d features: full rank (Cholesky path) and rank-deficient
    // (fewer rows than dimensions: eigen-decomposition path).
    println!();
    println!("| step | features | seconds |");
    println!("|---|---|---|");
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32) / (1u64 << 24) as f32
    };
    for (rows, path) in [(rows, "full rank"), (1000, "rank-deficient")] {
        let feats_a: Vec<f32> = (0..rows * 2048).map(|_| next()).collect();
        let feats_b: Vec<f32> = (0..rows * 2048).map(|_| next() * 1.1).collect();
        let t = Instant::now();
        let mut acc_a = FeatureAccumulator::new(2048);
        acc_a.push_rows(&feats_a).expect("rows");
        let stats_a = acc_a.stats().expect("stats");
        let accumulate = t.elapsed().as_secs_f64();
        let mut acc_b = FeatureAccumulator::new(2048);
        acc_b.push_rows(&feats_b).expect("rows");
        let stats_b = acc_b.stats().expect("stats");
        println!("| FeatureAccumulator push + stats | {rows} x 2048 | {accumulate:.2} |");
        let t = Instant::now();
        let fid = stats_a.fid(&stats_b).expect("fid");
        println!("| FidStats::fid, {path} (FID {fid:.3}) | {rows} x 2048 | {:.2} |", t.elapsed().as_secs_f64());
    }
}

//! Data pipeline throughput: archive indexing time and decode + transform + batch speed
//! (images/s) with burn's data loader at 0, 1 and 2 workers.
//!
//! `cargo bench --workspace --bench data` (data from `../shared`, or `TITOK_SHARED_DIR`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::data::dataset::transform::SelectionDataset;
use burn::tensor::Device;
use titok_train::data::{ImageBatcher, TarImages, Transform};

/// jemalloc keeps freed tensor buffers' pages for reuse (glibc unmaps large blocks, and each
/// new one costs a page fault per 4 KiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn shared_dir() -> PathBuf {
    std::env::var_os("TITOK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// Seconds to index an archive split (best of `repeats`), and the split.
fn index(path: &Path, split: &str, repeats: usize) -> (f64, TarImages) {
    let mut best = f64::INFINITY;
    let mut images = None;
    for _ in 0..repeats {
        let started = Instant::now();
        let opened = TarImages::open(path, Some(split)).expect("the shared archive");
        best = best.min(started.elapsed().as_secs_f64());
        images = Some(opened);
    }
    (best, images.unwrap())
}

/// Images per second through a burn data loader over the first `n` items.
fn throughput(images: &TarImages, n: usize, transform: Transform, batch: usize, workers: usize) -> f64 {
    let subset = SelectionDataset::from_indices_checked(images.clone(), (0..n.min(images.len())).collect());
    let count = subset.len();
    let loader = DataLoaderBuilder::new(ImageBatcher::new(transform))
        .batch_size(batch)
        .num_workers(workers)
        .set_device(Device::flex())
        .build(subset);
    let started = Instant::now();
    let seen: usize = loader.iter().map(|b| b.expect("in-memory records").len()).sum();
    assert_eq!(seen, count);
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let data = shared_dir().join("data");
    let cifar = data.join("cifar10-jpg.tar.gz");
    let imagenet = data.join("imagenet-samples-256.tar");

    println!("## Indexing (best of 3)\n");
    println!("| archive | split | images | seconds |");
    println!("|---|---|---:|---:|");
    let (t, cifar_train) = index(&cifar, "train", 3);
    println!("| cifar10-jpg.tar.gz (19.6 MB, read into memory) | train | {} | {t:.3} |", cifar_train.len());
    let (t, cifar_test) = index(&cifar, "test", 3);
    println!("| cifar10-jpg.tar.gz | test | {} | {t:.3} |", cifar_test.len());
    let (t, samples) = index(&imagenet, "imagenet-samples-256jpg", 3);
    println!(
        "| imagenet-samples-256.tar (32 MB, indexed in place) | imagenet-samples-256jpg | {} | {t:.3} |",
        samples.len()
    );

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\n## Decode + transform + batch, images/s ({cores} cores)\n");
    println!("| data | transform | batch | 0 workers | 1 worker | 2 workers |");
    println!("|---|---|---:|---:|---:|---:|");
    let cases: [(&str, &TarImages, usize, Transform, &str, usize); 3] = [
        ("CIFAR-10 32 px JPEG", &cifar_train, 10_000, Transform::train(32, 0), "train 32 (crop + flip)", 64),
        ("ImageNet 256 px JPEG", &samples, 1000, Transform::train(256, 0), "train 256 (crop + flip)", 32),
        ("ImageNet 256 px JPEG", &samples, 1000, Transform::train(128, 0), "train 128 (bicubic resize)", 32),
    ];
    for (name, images, n, transform, what, batch) in cases {
        let speeds: Vec<String> =
            [0, 1, 2].iter().map(|&w| format!("{:.0}", throughput(images, n, transform, batch, w))).collect();
        println!("| {name} | {what} | {batch} | {} |", speeds.join(" | "));
    }
}

//! Generator training throughput on the CPU (flex): masked batch building, forward, backward,
//! gradient clipping, AdamW with the official groups and the EMA update of MaskGIT BERTs on
//! random tokens of the default CIFAR-10 tokenizer's layout (K = 32, 1024 codes, 10 classes).
//! `cargo bench --workspace --bench generator [-- --steps N] [-- --batch B]` (the bench profile
//! is the release profile, so nothing is rebuilt for it).

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use burn::train::TrainStep;
use titok_model::generator::{Generator, GeneratorConfig, GeneratorKind, MlmLossConfig};
use titok_train::data::token_cache::{TokenCache, TokenCacheHeader, VERSION};
use titok_train::stages::generator::{DrawSpec, GeneratorTrainee, token_batch};
use titok_train::train::optim::{AdamWSettings, adamw_with_groups};
use titok_train::train::stream::StepSchedule;

/// jemalloc keeps freed tensor buffers' pages for reuse (glibc unmaps large blocks, and each
/// new one costs a page fault per 4 KiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const K: usize = 32;
const CODEBOOK: usize = 1024;
const CLASSES: usize = 10;
const IMAGES: usize = 4096;

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux; `None`
/// elsewhere). On a shared machine, wall time swings with the load; CPU time much less.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15 (1-based).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn bert(hidden: usize, layers: usize, heads: usize) -> GeneratorConfig {
    GeneratorConfig {
        kind: GeneratorKind::Bert,
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: 4 * hidden,
        image_seq_len: K,
        codebook_size: CODEBOOK,
        condition_num_classes: CLASSES,
        ..GeneratorConfig::small()
    }
}

/// Random ids in the layout of the default CIFAR-10 tokenizer.
fn random_cache() -> TokenCache {
    let header = TokenCacheHeader {
        version: VERSION,
        num_images: IMAGES,
        views: 2,
        seq_len: K,
        codebook_size: CODEBOOK,
        id_bytes: 0,
        class_names: (0..CLASSES).map(|c| format!("class{c}")).collect(),
        tokenizer_fingerprint: "bench".into(),
        image_size: 32,
        source: "random".into(),
        split: "train".into(),
        skipped: 0,
    };
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ids = (0..IMAGES * 2 * K).map(|_| (next() % CODEBOOK as u64) as u32).collect();
    let labels = (0..IMAGES).map(|i| (i % CLASSES) as u32).collect();
    TokenCache::new(header, ids, labels).expect("consistent cache")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps = arg(&args, "--steps", 5);
    let batch = arg(&args, "--batch", 128);
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let cache = random_cache();
    let layout = bert(64, 1, 1).layout();
    let schedule = StepSchedule::new(cache.len(), batch, 42);
    let spec = DrawSpec { seed: 42, stream: 1, drop_prob: 0.1, mirrors: true };
    println!(
        "MaskGIT generator training steps on flex (CPU), K = {K}, {CODEBOOK} codes, {CLASSES} classes, batch {batch}, {steps} timed steps after 1 warm-up"
    );
    println!("| generator | params (M) | s/step | steps/s | sequences/s | CPU s/step |");
    println!("|---|---|---|---|---|---|");
    for (name, config) in [
        (
            "tiny (64-d, 2 layers, 4 heads)",
            GeneratorConfig {
                image_seq_len: K,
                codebook_size: CODEBOOK,
                condition_num_classes: CLASSES,
                ..GeneratorConfig::tiny()
            },
        ),
        ("192-d, 4 layers, 4 heads", bert(192, 4, 4)),
        ("256-d, 4 layers, 8 heads", bert(256, 4, 8)),
        ("256-d, 6 layers, 8 heads", bert(256, 6, 8)),
        ("384-d, 6 layers, 8 heads", bert(384, 6, 8)),
    ] {
        device.seed(0);
        let model = Generator::new(&config, &device).expect("config");
        let params = model.num_params() as f64 / 1e6;
        let trainee = GeneratorTrainee::new(model, MlmLossConfig::default(), 0.999, 1.0, &device);
        let mut optim =
            adamw_with_groups(&trainee, AdamWSettings { beta2: 0.96, weight_decay: 0.03, ..AdamWSettings::default() });
        let mut trainee = trainee.train().fork(&ad);
        let mut step = 0u64;
        let mut run = |trainee: GeneratorTrainee| {
            let items = schedule.items(step);
            step += 1;
            let batch = token_batch(&cache, &items, &layout, &spec, &ad).expect("batch");
            let out = TrainStep::step(&trainee, batch);
            trainee.optimize(&mut optim, 2e-4.into(), out.grads)
        };
        trainee = run(trainee); // warm-up
        let (t, cpu) = (Instant::now(), cpu_seconds());
        for _ in 0..steps {
            trainee = run(trainee);
        }
        let secs = t.elapsed().as_secs_f64() / steps as f64;
        let cpu = match (cpu, cpu_seconds()) {
            (Some(a), Some(b)) => format!("{:.3}", (b - a) / steps as f64),
            _ => "n/a".into(),
        };
        println!("| {name} | {params:.2} | {secs:.3} | {:.2} | {:.0} | {cpu} |", 1.0 / secs, batch as f64 / secs);
    }
}

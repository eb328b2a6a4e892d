//! MaskGIT generator training end to end on real images (CIFAR-10, CPU), through the
//! `titok-train` binary: 300 training images (30 per class) of `../shared/data/cifar10-jpg.tar.gz`
//! are tokenized with a small random TiTok built here (codebook initialised from its own encoder
//! outputs, so that the tokens depend on the image). The generator lowers the MLM loss, raises the
//! masked-token accuracy against its first steps and beyond the best context-free guess, and
//! exports a loadable HF folder with `classes.txt`; the token cache holds exactly the tokenizer's
//! ids of each image and its mirror and is refused for another tokenizer; a run resumed from a
//! mid-way checkpoint repeats the same steps (loss sequence and EMA weights).

mod common;
use common::{json, logged, shared};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor};
use titok_model::checkpoint::{StorageDType, load_generator, load_titok, save_titok};
use titok_model::generator::{SamplerConfig, SeededUniform, TokenPredictor, generate};
use titok_model::{Titok, TitokConfig, VitSize};
use titok_train::data::{ImageBatcher, ImageFolder, ImageRecord, TarImages, Transform};
use titok_train::data::{TokenCache, tokenizer_fingerprint};

const PER_CLASS_TRAIN: usize = 30;
const PER_CLASS_TEST: usize = 4;
const K: usize = 16;
const CODEBOOK: usize = 256;

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cifar10-maskgit.json")
}

/// A small CIFAR-10 image folder (`train/`, `test/`, class sub-folders) and two random tiny
/// tokenizers (`tok_a`, `tok_b`), built once per test binary.
struct Fixture {
    root: PathBuf,
    data: PathBuf,
    tok_a: PathBuf,
    tok_b: PathBuf,
    class_names: Vec<String>,
}

fn tiny_tokenizer() -> TitokConfig {
    let size = VitSize::new(64, 2, 4);
    TitokConfig {
        image_size: 32,
        patch_size: 4,
        token_size: 8,
        codebook_size: CODEBOOK,
        ..TitokConfig::single_stage_vq(size, size, K)
    }
}

/// A random tiny TiTok whose codebook rows are encoder outputs of (image, position) pairs of
/// `images` (the usual data initialisation of a VQ codebook): all 256 codes are used and the
/// tokens vary with the image (a purely random codebook gives nearly one code per position).
fn data_initialised_tokenizer(seed: u64, images: Tensor<4>) -> Titok {
    let device = images.device();
    device.seed(seed);
    let mut model = Titok::new(&tiny_tokenizer(), &device).unwrap();
    let z = model.encode(images).unwrap().encoder.z; // [b, C, 1, K]
    let [b, c, _, k] = z.dims();
    let rows = z.reshape([b, c, k]).swap_dims(1, 2).reshape([b * k, c]); // [b·K, C]
    let pick: Vec<i64> = (0..CODEBOOK).map(|i| ((i * 7919 + seed as usize * 13) % (b * k)) as i64).collect();
    let quantize = model.quantize.as_mut().expect("VQ");
    quantize.embedding.weight =
        Param::from_tensor(rows.select(0, Tensor::<1, Int>::from_ints(pick.as_slice(), &device)));
    model
}

const FIXTURE_PREFIX: &str = "generator-training-fixture-";

/// Removes the fixture folders of processes that no longer run (Linux's `/proc` tells; without
/// it nothing is removed).
fn remove_fixtures_of_ended_processes(tmp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(FIXTURE_PREFIX).and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Shared by every test of this process. A static is never dropped, so the folder is
        // named after the process under cargo's per-target temporary directory, and the
        // folders of processes that have ended are removed here.
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_fixtures_of_ended_processes(tmp);
        let root = tmp.join(format!("{FIXTURE_PREFIX}{}", std::process::id()));
        let data = root.join("cifar10-small");
        let cifar = shared().join("data/cifar10-jpg.tar.gz");
        let mut class_names = Vec::new();
        for (split, per_class) in [("train", PER_CLASS_TRAIN), ("test", PER_CLASS_TEST)] {
            let tar = TarImages::open(&cifar, Some(split)).expect("CIFAR-10 archive");
            class_names = tar.class_names().to_vec();
            let mut taken = vec![0; class_names.len()];
            for r in tar.list().records() {
                let c = r.label.expect("labelled");
                if taken[c] == per_class {
                    continue;
                }
                taken[c] += 1;
                let file = Path::new(r.name.as_ref()).file_name().unwrap();
                let dir = data.join(split).join(&class_names[c]);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(file), r.source.read().unwrap()).unwrap();
            }
        }
        let device = Device::flex();
        let train = ImageFolder::open(data.join("train")).unwrap();
        let items: Vec<(ImageRecord, u64)> = train.list().records().iter().map(|r| (r.clone(), 0)).collect();
        let images = ImageBatcher::new(Transform::eval(32)).batch_with_epochs(&items, &device).images;
        let tokenizer = |seed: u64, name: &str| {
            let dir = root.join(name);
            save_titok(&data_initialised_tokenizer(seed, images.clone()), &dir, StorageDType::F32).unwrap();
            dir
        };
        let (tok_a, tok_b) = (tokenizer(1, "tok_a"), tokenizer(2, "tok_b"));
        Fixture { root, data, tok_a, tok_b, class_names }
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = fixture().root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The example config, shrunk: the tiny generator preset on the fixture's data and tokenizer.
fn sets(tokenizer: &Path, steps: u64) -> Vec<String> {
    vec![
        format!("tokenizer={}", json(tokenizer)),
        format!("data.path={}", json(&fixture().data)),
        "data.valid_images=40".into(),
        "data.token_cache=null".into(), // <run>/tokens.safetensors
        "data.num_workers=2".into(),
        "generator.config=null".into(),
        "generator.preset=tiny".into(),
        "run.batch_size=32".into(),
        format!("run.total_steps={steps}"),
        format!("run.checkpoint_every={steps}"),
        format!("run.valid_every={steps}"),
        "run.log_every=1000".into(),
        "optim.lr=0.001".into(),
        "optim.end_lr=0.0001".into(),
        "optim.warmup_steps=10".into(),
    ]
}

fn command(mode: &str, run: &Path, sets: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_titok-train"));
    cmd.arg(mode).arg("--config").arg(example_config()).arg("--run").arg(run).args(["--device", "cpu"]);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd
}

fn run_ok(mode: &str, run: &Path, sets: &[String]) -> Output {
    let out = command(mode, run, sets).output().expect("run titok-train");
    assert!(out.status.success(), "titok-train {mode} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn generator_learns_on_cifar10_tokens_and_exports_an_hf_folder() {
    let f = fixture();
    let run = scratch("learn");
    let steps = 400;
    run_ok("generator", &run, &sets(&f.tok_a, steps));

    // Learning: loss down, masked accuracy up, against the first steps.
    let (loss, acc) = (logged(&run, "train", "Loss", false), logged(&run, "train", "Masked_accuracy", false));
    assert_eq!((loss.len(), acc.len()), (steps as usize, steps as usize), "one value per step");
    let (l0, l1) = (mean(&loss[..10]), mean(&loss[loss.len() - 10..]));
    let (a0, a1) = (mean(&acc[..10]), mean(&acc[acc.len() - 10..]));
    eprintln!("generator: loss {l0:.3} -> {l1:.3}, masked accuracy {a0:.3} -> {a1:.3}");
    assert!(l0 > 0.9 * (CODEBOOK as f64).ln(), "a fresh model starts near ln N: {l0}");
    assert!(l1 < l0 - 1.5, "loss {l0} -> {l1}");
    assert!(a1 > a0 + 0.15, "masked accuracy {a0} -> {a1}");
    let masked = logged(&run, "train", "Masked_fraction", false);
    assert!((0.3..0.9).contains(&mean(&masked)), "arccos masking hides ~64% on average: {}", mean(&masked));

    // The token cache: 300 images x 2 views x K tokens with the CIFAR-10 classes.
    let cache = TokenCache::load(&run.join("tokens.safetensors")).unwrap();
    assert_eq!((cache.len(), cache.views(), cache.seq_len()), (10 * PER_CLASS_TRAIN, 2, K));
    assert_eq!(cache.class_names(), f.class_names.as_slice());
    // The best context-free guess (each position's most frequent code) as a baseline.
    let mut counts = vec![std::collections::HashMap::<i64, usize>::new(); K];
    for i in 0..cache.len() {
        for view in 0..2 {
            let mut ids = Vec::new();
            cache.extend_ids(i, view, &mut ids);
            for (pos, id) in ids.into_iter().enumerate() {
                *counts[pos].entry(id).or_default() += 1;
            }
        }
    }
    let majority = counts.iter().map(|c| *c.values().max().unwrap() as f64).sum::<f64>() / (K * 2 * cache.len()) as f64;
    eprintln!("per-position majority baseline {majority:.3}");
    assert!(
        a1 > 1.5 * majority,
        "masked accuracy {a1} must beat the context-free guess {majority}: context and class are used"
    );

    // The HF export of the EMA generator loads, has the data's layout, samples valid ids.
    let export = run.join(format!("checkpoints/step-{steps:07}"));
    let device = Device::flex();
    let generator = load_generator(&export, &device).expect("the export loads strictly");
    let layout = generator.layout();
    assert_eq!((layout.codebook_size, layout.seq_len, layout.num_classes), (CODEBOOK, K, 10));
    let classes = std::fs::read_to_string(export.join("classes.txt")).unwrap();
    assert_eq!(classes.lines().collect::<Vec<_>>(), f.class_names.iter().map(String::as_str).collect::<Vec<_>>());
    let labels = Tensor::<1, Int>::from_ints([0, 9], &device);
    let ids = generate(&generator, labels, &SamplerConfig::default(), &mut SeededUniform::new(3)).unwrap();
    let ids = ids.try_into_vec_as::<i64>().unwrap();
    assert!(ids.len() == 2 * K && ids.iter().all(|&i| (0..CODEBOOK as i64).contains(&i)));
    let grid = image::open(run.join(format!("samples/samples-{steps:07}.png"))).expect("sample grid written");
    assert!(
        grid.width() >= 10 * 32 && grid.height() >= 32,
        "one 32 px column per class: {}x{}",
        grid.width(),
        grid.height()
    );
    let _ = std::fs::remove_dir_all(run);
}

#[test]
fn the_token_cache_holds_the_tokenizer_ids_and_is_refused_for_another_tokenizer() {
    let f = fixture();
    let run = scratch("cache");
    let cache_path = f.root.join("shared-tokens.safetensors");
    let _ = std::fs::remove_file(&cache_path);
    let mut with_a = sets(&f.tok_a, 5);
    with_a.push(format!("data.token_cache={}", json(&cache_path)));
    let out = run_ok("tokens", &run, &with_a);
    assert!(String::from_utf8_lossy(&out.stderr).contains("300 images x 2 views x 16 tokens"));

    // Exactly the ids of the centre crop and of its mirror, in dataset order, with labels.
    let device = Device::flex();
    let tokenizer = load_titok(&f.tok_a, &device).unwrap();
    let cache = TokenCache::load(&cache_path).unwrap();
    assert_eq!(cache.header.tokenizer_fingerprint, tokenizer_fingerprint(&tokenizer));
    let train = ImageFolder::open(f.data.join("train")).unwrap();
    let records: Vec<ImageRecord> = train.list().records().iter().step_by(37).cloned().collect();
    let batch = ImageBatcher::new(Transform::eval(32))
        .batch_with_epochs(&records.iter().map(|r| (r.clone(), 0)).collect::<Vec<_>>(), &device);
    let mirrored = batch.images.clone().flip([3]);
    for (view, images) in [(0, batch.images.clone()), (1, mirrored)] {
        let ids = tokenizer.encode(images).unwrap().tokens.unwrap().try_into_vec_as::<i64>().unwrap();
        for (row, r) in records.iter().enumerate() {
            let mut cached = Vec::new();
            cache.extend_ids(r.index, view, &mut cached);
            assert_eq!(cached, ids[row * K..(row + 1) * K], "image {} view {view}", r.name);
            assert_eq!(cache.label(r.index), r.label.unwrap());
        }
    }

    // Another tokenizer: refused by `tokens` and by `generator`, with the reason.
    let other = load_titok(&f.tok_b, &device).unwrap();
    assert_ne!(tokenizer_fingerprint(&other), tokenizer_fingerprint(&tokenizer));
    let mut with_b = sets(&f.tok_b, 5);
    with_b.push(format!("data.token_cache={}", json(&cache_path)));
    for mode in ["tokens", "generator"] {
        let out = command(mode, &scratch(&format!("refused-{mode}")), &with_b).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode} must refuse the cache");
        assert!(err.contains("another tokenizer") && !err.contains("panicked"), "{mode}:\n{err}");
    }
    // The same tokenizer reuses it (no re-encoding: the file is unchanged).
    let before = std::fs::read(&cache_path).unwrap();
    run_ok("tokens", &scratch("reuse"), &with_a);
    assert!(std::fs::read(&cache_path).unwrap() == before);
    let _ = std::fs::remove_dir_all(run);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_resumed_run_repeats_the_same_steps() {
    let f = fixture();
    let mut s = sets(&f.tok_a, 60);
    s.extend(["run.checkpoint_every=20".into(), "run.valid_every=20".into(), "run.keep_checkpoints=5".into()]);
    let a = scratch("uninterrupted");
    run_ok("generator", &a, &s);

    // Rewind a copy to its step-20 checkpoint (as if it had been killed after it) and resume.
    let b = scratch("resumed");
    copy_dir(&a, &b);
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("latest.json")).unwrap()).unwrap();
    assert_eq!(latest["step"], 60);
    let mut rewound = latest.clone();
    rewound["step"] = 20.into();
    rewound["weights"] = "checkpoints/step-0000020".into();
    std::fs::write(b.join("latest.json"), serde_json::to_string_pretty(&rewound).unwrap()).unwrap();
    for epoch in [2, 3] {
        let _ = std::fs::remove_dir_all(b.join(format!("train/epoch-{epoch}")));
    }
    let out = command("generator", &b, &s).arg("--resume").output().unwrap();
    assert!(out.status.success(), "resume failed:\n{}", String::from_utf8_lossy(&out.stderr));

    // Steps 21..60 again: same masks, views, label drops and dropout, so the same losses.
    for metric in ["Loss", "Masked_accuracy", "Masked_fraction"] {
        let (la, lb) = (logged(&a, "train", metric, false), logged(&b, "train", metric, false));
        assert_eq!(la.len(), 60, "{metric}");
        assert_eq!(la, lb, "{metric} sequence differs after resume");
    }
    let ema = |d: &Path| std::fs::read(d.join("checkpoints/step-0000060/model.safetensors")).unwrap();
    assert!(ema(&a) == ema(&b), "EMA weights differ after resume");
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

//! End to end on real data (CIFAR-10, CPU, tiny configurations), through the `titok-train`
//! binary: `vqgan`, `stage1` (with the VQGAN just trained as teacher) and `single-stage` lower the
//! loss and raise the PSNR against their first steps; a run killed with SIGKILL mid-way and
//! resumed ends bit-identical to an uninterrupted run of the same length.

mod common;
use common::{json, logged, scratch_run, shared};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::store::burn_pack::Reader;

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(name)
}

/// Settings shared by every run here: small, fast, on the CPU, with data from `../shared`.
fn common_sets(steps: u64) -> Vec<String> {
    let data = shared().join("data/cifar10-jpg.tar.gz");
    vec![
        format!("data.path={}", json(&data)),
        "data.valid_images=32".into(),
        "data.num_workers=2".into(),
        "run.batch_size=16".into(),
        format!("run.total_steps={steps}"),
        "run.log_every=1000".into(),
        "optim.warmup_steps=10".into(),
    ]
}

fn command(mode: &str, config: &Path, run: &Path, sets: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_titok-train"));
    cmd.arg(mode).arg("--config").arg(config).arg("--run").arg(run).args(["--device", "cpu"]);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd
}

fn run_ok(mode: &str, config: &Path, run: &Path, sets: &[String]) -> Output {
    let out = command(mode, config, run, sets).output().expect("run titok-train");
    assert!(out.status.success(), "titok-train {mode} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// First `n` and last `n` logged values of a metric.
fn first_last(run: &Path, metric: &str, n: usize) -> (f64, f64) {
    let v = logged(run, "train", metric, true);
    assert!(v.len() >= 2 * n, "{metric}: only {} values logged in {}", v.len(), run.display());
    (mean(&v[..n]), mean(&v[v.len() - n..]))
}

#[test]
fn vqgan_stage1_and_single_stage_learn_on_cifar10() {
    // 2D MaskGIT-VQGAN teacher.
    let (_vq_guard, vq) = scratch_run("vqgan");
    run_ok("vqgan", &config("cifar10-vqgan-tiny.json"), &vq, &common_sets(120));
    let (l0, l1) = first_last(&vq, "Loss", 8);
    let (e0, e1) = first_last(&vq, "L2", 8);
    let (p0, p1) = first_last(&vq, "PSNR_dB", 8);
    eprintln!("vqgan: loss {l0:.4} -> {l1:.4}, L2 {e0:.4} -> {e1:.4}, PSNR {p0:.2} -> {p1:.2} dB");
    assert!(l1 < 0.85 * l0, "vqgan loss {l0} -> {l1}");
    assert!(e1 < 0.5 * e0, "vqgan L2 {e0} -> {e1}");
    assert!(p1 > p0 + 2.0, "vqgan PSNR {p0} -> {p1}");
    let teacher = vq.join("checkpoints/step-0000120");
    assert!(teacher.join("model.safetensors").is_file() && teacher.join("config.json").is_file());

    // Stage 1: proxy codes of that teacher.
    let (_s1_guard, s1) = scratch_run("stage1");
    let mut sets = common_sets(120);
    sets.push(format!("teacher={}", json(&teacher)));
    run_ok("stage1", &config("cifar10-titok-tiny-stage1.json"), &s1, &sets);
    let (c0, c1) = first_last(&s1, "Proxy-code_CE", 8);
    eprintln!("stage1: proxy-code CE {c0:.4} -> {c1:.4}");
    assert!(c1 < c0 - 0.5, "stage-1 cross-entropy {c0} -> {c1}");

    // Single stage: straight to pixels.
    let (_ss_guard, ss) = scratch_run("single");
    run_ok("single-stage", &config("cifar10-titok-tiny.json"), &ss, &common_sets(120));
    let (l0, l1) = first_last(&ss, "Loss", 8);
    let (p0, p1) = first_last(&ss, "PSNR_dB", 8);
    eprintln!("single-stage: loss {l0:.4} -> {l1:.4}, PSNR {p0:.2} -> {p1:.2} dB");
    assert!(l1 < 0.6 * l0, "single-stage loss {l0} -> {l1}");
    assert!(p1 > p0 + 2.0, "single-stage PSNR {p0} -> {p1}");
    // The HF export of the EMA weights loads with the official-checkpoint loader.
    let exported = ss.join("checkpoints/step-0000120");
    titok_model::checkpoint::load_titok(&exported, &burn::tensor::Device::flex()).expect("export loads");
    assert!(ss.join("samples/recon-0000120.png").is_file(), "validation grid written");

    for d in [vq, s1, ss] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Tensor name -> bytes of a burn record. Optimizer-state names start with a parameter id,
/// which is random per process: they are translated to the parameter's path through the model
/// record of the same run (`ids`).
fn record_tensors(path: &Path, ids: &std::collections::HashMap<u64, String>) -> Vec<(String, Vec<u8>)> {
    let reader = Reader::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out: Vec<(String, Vec<u8>)> = reader
        .tensor_names()
        .into_iter()
        .map(|n| {
            let data = reader.tensor_data(n).unwrap();
            let name = match n.split_once('.') {
                Some((id, rest)) if id.parse::<u64>().is_ok_and(|i| ids.contains_key(&i)) => {
                    format!("{}.{rest}", ids[&id.parse::<u64>().unwrap()])
                }
                _ => n.to_string(),
            };
            (name, data)
        })
        .collect();
    out.sort();
    out
}

/// Parameter id -> parameter path, from a model record.
fn param_paths(model_record: &Path) -> std::collections::HashMap<u64, String> {
    Reader::from_file(model_record)
        .unwrap()
        .into_tensors()
        .unwrap()
        .into_iter()
        .filter_map(|t| Some((t.param_id?, t.name)))
        .collect()
}

#[test]
fn killed_run_resumes_bit_identically() {
    let cfg = config("cifar10-titok-tiny.json");
    let mut sets = common_sets(40);
    sets.extend(["run.checkpoint_every=10".to_string(), "run.valid_every=20".to_string()]);

    let (_a_guard, a) = scratch_run("uninterrupted");
    run_ok("single-stage", &cfg, &a, &sets);

    let (_b_guard, b) = scratch_run("killed");
    let mut child = command("single-stage", &cfg, &b, &sets)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start titok-train");
    let start = Instant::now();
    loop {
        let latest = std::fs::read_to_string(b.join("latest.json")).unwrap_or_default();
        if latest.contains("\"step\": 20") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint at step 20");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().unwrap();
    let latest = std::fs::read_to_string(b.join("latest.json")).unwrap();
    assert!(!latest.contains("\"step\": 40"), "killed before the end");

    // Without --resume an existing run is refused; with it the run continues.
    let refused = command("single-stage", &cfg, &b, &sets).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    let mut resume = sets.clone();
    resume.push("data.num_workers=1".into()); // allowed to differ
    let mut cmd = command("single-stage", &cfg, &b, &resume);
    let out = cmd.arg("--resume").output().unwrap();
    assert!(out.status.success(), "resume failed:\n{}", String::from_utf8_lossy(&out.stderr));

    // Same EMA weights (HF export) and same model / optimizer / schedule state.
    let ema = |d: &Path| std::fs::read(d.join("checkpoints/step-0000040/model.safetensors")).unwrap();
    assert!(ema(&a) == ema(&b), "EMA weights differ after resume");
    let (ids_a, ids_b) =
        (param_paths(&a.join("checkpoints/model-40.bpk")), param_paths(&b.join("checkpoints/model-40.bpk")));
    for kind in ["model", "optim", "scheduler"] {
        let f = format!("checkpoints/{kind}-40.bpk");
        let (ta, tb) = (record_tensors(&a.join(&f), &ids_a), record_tensors(&b.join(&f), &ids_b));
        assert!(!ta.is_empty() || kind == "scheduler", "{kind} record is empty");
        assert!(ta == tb, "{kind} state differs after resume");
    }
    // A changed configuration is refused.
    let mut other = sets.clone();
    other.push("optim.lr=0.5".into());
    let out = command("single-stage", &cfg, &b, &other).arg("--resume").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("another configuration"));
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn bad_training_input_gives_clear_errors() {
    let cfg = config("cifar10-titok-tiny.json");
    let (_dir_guard, dir) = scratch_run("bad-input");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::create_dir_all(dir.join("text/a")).unwrap();
    std::fs::write(dir.join("text/a/notes.txt"), "not an image").unwrap();
    std::fs::write(dir.join("text/a/fake.jpg"), "not a jpeg either").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![format!("data.path={}", json(&dir.join("empty"))), "data.train_split=".into()], "empty"),
        (vec![format!("data.path={}", json(&dir.join("text"))), "data.train_split=".into()], "skipped"),
        (vec!["data.path=/nonexistent/cifar.tar.gz".into()], "/nonexistent/cifar.tar.gz"),
        (vec!["data.image_size=48".into()], "!= data.image_size 48"),
        (vec!["run.batch_size=0".into()], "must be positive"),
        (vec!["optim.learning_rate=1".into()], "learning_rate"),
    ];
    for (sets, expect) in cases {
        let mut all = common_sets(5);
        all.extend(sets.clone());
        let out = command("single-stage", &cfg, &dir.join("run"), &all).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sets:?} should fail");
        assert!(err.contains(expect), "{sets:?}: expected `{expect}` in:\n{err}");
        assert!(!err.contains("panicked"), "{sets:?} panicked:\n{err}");
        let _ = std::fs::remove_dir_all(dir.join("run"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Data parallelism over two CPU "devices" computes the same steps as one device (up to float
/// reassociation: each shard's mean loss is averaged instead of one mean over the batch).
#[test]
fn data_parallel_steps_match_single_device() {
    let cfg = config("cifar10-titok-tiny.json");
    let sets = common_sets(6);
    let (_one_guard, one) = scratch_run("dp-one");
    run_ok("single-stage", &cfg, &one, &sets);
    let (_two_guard, two) = scratch_run("dp-two");
    let out =
        command("single-stage", &cfg, &two, &sets).args(["--devices", "cpu,cpu", "--threads", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cpu (flex, 1 thread) + cpu (flex, 1 thread)"));
    let (a, b) = (logged(&one, "train", "Loss", true), logged(&two, "train", "Loss", true));
    assert!(a.len() >= 6, "{} logged losses", a.len());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-3 * x.abs(), "loss {x} (one device) vs {y} (two)");
    }
    for d in [one, two] {
        let _ = std::fs::remove_dir_all(d);
    }
}

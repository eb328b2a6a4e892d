//! Multi-process data parallelism under `mpirun` (the `mpi` feature; Open MPI on localhost, CPU
//! backend): two ranks end with bit-identical replicas equal (within float tolerance) to one
//! process trained on the whole batch, also in stage 2 with the discriminator and the LeCam EMA;
//! a rank killed mid-run ends the job with an error instead of a hang, and the run resumes from
//! its last checkpoint with the same number of ranks and with a different one; in generator
//! training rank 0 alone builds the token cache and the others load it, or stop with rank 0's
//! failure.
//!
//! Run with `cargo test --release --workspace --features titok-train/mpi --test distributed`
//! (`.ci/run` does, after installing Open MPI); the target requires the feature.

mod common;
use common::{json, scratch_run, shared};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::store::burn_pack::Reader;
use burn::tensor::Device;
use titok_model::checkpoint::{StorageDType, save_titok, save_vqgan};
use titok_model::{MaskgitVqgan, QuantizeMode, Titok, TitokConfig, VitSize, VqganConfig};
use titok_train::data::TarImages;

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(name)
}

/// `<mode> --config configs/<config> --run <run> --device cpu --set ...` for `titok-train`.
fn cli(mode: &str, config_name: &str, run: &Path, sets: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut args = vec![mode.to_string(), "--config".into(), config(config_name).display().to_string()];
    args.extend(["--run".into(), run.display().to_string(), "--device".into(), "cpu".into()]);
    for s in sets {
        args.extend(["--set".into(), s]);
    }
    args
}

/// Small single-stage runs on CIFAR-10: a global batch of 16 (8 per rank), checkpoints every 5 steps.
fn sets(steps: u64) -> Vec<String> {
    let data = shared().join("data/cifar10-jpg.tar.gz");
    vec![
        format!("data.path={}", json(&data)),
        "data.valid_images=16".into(),
        "data.num_workers=1".into(),
        "run.batch_size=16".into(),
        format!("run.total_steps={steps}"),
        "run.checkpoint_every=5".into(),
        "run.valid_every=20".into(),
        "run.log_every=1000".into(),
        "optim.warmup_steps=5".into(),
    ]
}

/// The `titok-train single-stage` arguments of a run.
fn train_args(run: &Path, steps: u64, resume: bool) -> Vec<String> {
    let mut args = cli("single-stage", "cifar10-titok-tiny.json", run, sets(steps));
    if resume {
        args.push("--resume".into());
    }
    args
}

/// One process, no launcher.
fn single(run: &Path, steps: u64, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_titok-train"));
    cmd.args(train_args(run, steps, resume));
    cmd
}

/// The arguments of a short stage-2 run (L2 + LPIPS + GAN with LeCam from step 2) on a random
/// tiny stage-1 TiTok and its random tiny MaskGIT-VQGAN pixel decoder saved in `models`.
fn stage2_args(run: &Path, models: &Path) -> Vec<String> {
    let sets = [
        format!("model.init={}", json(&models.join("titok"))),
        format!("pixel_decoder={}", json(&models.join("vqgan"))),
        format!("data.path={}", json(&shared().join("data/cifar10-jpg.tar.gz"))),
        format!("loss.perceptual_weights={}", json(&shared().join("weights/lpips_alexnet.safetensors"))),
        "loss.gan_start=2".into(),
        "data.valid_images=8".into(),
        "data.num_workers=1".into(),
        "run.batch_size=8".into(),
        "run.total_steps=6".into(),
        "run.checkpoint_every=3".into(),
        "run.valid_every=6".into(),
        "run.log_every=1000".into(),
        "optim.warmup_steps=2".into(),
    ];
    cli("stage2", "cifar10-titok-tiny-stage2.json", run, sets)
}

/// Saves a random tiny two-stage TiTok (8x8 patches, the teacher's code grid) and its random
/// tiny MaskGIT-VQGAN as HF folders `titok/` and `vqgan/` in `dir`.
fn save_stage1_models(dir: &Path) {
    let device = Device::flex();
    let vqgan = VqganConfig {
        hidden_channels: 32,
        channel_mult: vec![1, 2, 2],
        num_res_blocks: 1,
        z_channels: 32,
        codebook_size: 256,
        ..VqganConfig::official()
    };
    let size = VitSize::new(64, 2, 4);
    let titok = TitokConfig {
        image_size: 32,
        patch_size: 4,
        encoder: size,
        decoder: size,
        num_latent_tokens: 16,
        token_size: 8,
        codebook_size: 256,
        use_l2_norm: true,
        commitment_cost: 0.25,
        quantize_mode: QuantizeMode::Vq,
        is_legacy: true,
        finetune_decoder: false,
        pixel_vqgan: vqgan.clone(),
    };
    device.seed(3);
    save_titok(&Titok::new(&titok, &device).unwrap(), &dir.join("titok"), StorageDType::F32).unwrap();
    save_vqgan(&MaskgitVqgan::new(&vqgan, &device), &vqgan, &dir.join("vqgan"), StorageDType::F32).unwrap();
}

/// `mpirun -n <ranks> titok-train <args>` on this machine. Open MPI refuses root without the two variables (CI runs
/// as root), busy-polls idle ranks unless told to yield (2 cores here), and its shared-memory
/// single-copy path needs ptrace rights that containers often lack.
fn launcher(ranks: usize, args: Vec<String>) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "-n", &ranks.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_mpi_yield_when_idle", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .arg(env!("CARGO_BIN_EXE_titok-train"))
        .args(args);
    cmd
}

/// `mpirun -n <ranks>` of the single-stage run of [`train_args`].
fn mpirun(ranks: usize, run: &Path, steps: u64, resume: bool) -> Command {
    launcher(ranks, train_args(run, steps, resume))
}

fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start ({e}); is Open MPI installed?"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

/// The fingerprint each rank logged after `step` (`rank r/n: parameters after step s: fingerprint f`).
fn fingerprints(log: &str, step: u64) -> HashMap<String, String> {
    let key = format!(": parameters after step {step}: fingerprint ");
    log.lines()
        .filter_map(|l| {
            let (head, fp) = l.split_once(&key)?;
            let rank = head.rsplit_once("rank ")?.1.to_string();
            Some((rank, fp.trim().to_string()))
        })
        .collect()
}

/// Parameter path -> f32 values of the model record (trained weights, EMA copy) of `step`.
fn model_record(run: &Path, step: u64) -> Vec<(String, Vec<f32>)> {
    let path = run.join(format!("checkpoints/model-{step}.bpk"));
    let reader = Reader::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out: Vec<(String, Vec<f32>)> = reader
        .into_tensors()
        .unwrap()
        .into_iter()
        .filter(|t| t.dtype == burn::tensor::DType::F32)
        .map(|t| {
            let (name, _, _, _, bytes) = t.into_parts().unwrap();
            let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Largest difference between two runs' records of `step`, with the name where it occurs, and
/// the mean absolute difference over all values; the records must hold the same tensors.
fn differences(a: &Path, b: &Path, step: u64) -> (f32, String, f64) {
    let (ra, rb) = (model_record(a, step), model_record(b, step));
    assert!(!ra.is_empty(), "empty model record");
    assert_eq!(ra.iter().map(|t| &t.0).collect::<Vec<_>>(), rb.iter().map(|t| &t.0).collect::<Vec<_>>());
    let (mut worst, mut sum, mut count) = ((0.0f32, String::new()), 0.0f64, 0usize);
    for ((name, va), (_, vb)) in ra.iter().zip(&rb) {
        assert_eq!(va.len(), vb.len(), "{name}");
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs();
            sum += f64::from(d);
            count += 1;
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
    }
    (worst.0, worst.1, sum / count as f64)
}

fn max_difference(a: &Path, b: &Path, step: u64) -> (f32, String) {
    let (max, name, _) = differences(a, b, step);
    (max, name)
}

fn latest_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("latest.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

/// A job whose stderr is collected by a thread.
struct Job {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Job {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start mpirun");
        let log = Arc::new(Mutex::new(String::new()));
        let (sink, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The pid rank `rank` announced (`rank r/n (local rank .., pid P, ...`).
    fn pid_of(&self, rank: usize) -> Option<u32> {
        let key = format!("rank {rank}/");
        self.log().lines().find(|l| l.contains(&key) && l.contains(", pid ")).and_then(|l| {
            let rest = l.split_once(", pid ")?.1;
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
    }

    /// Kills rank `rank` with SIGKILL once the run has committed `step`, then waits for the
    /// launcher to end the job. Returns the launcher's log.
    fn kill_rank_after(mut self, rank: usize, run: &Path, step: u64) -> String {
        let start = Instant::now();
        while latest_step(run).is_none_or(|s| s < step) {
            assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint at step {step}:\n{}", self.log());
            assert!(self.child.try_wait().unwrap().is_none(), "the job ended before the kill:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = self.pid_of(rank).unwrap_or_else(|| panic!("rank {rank} announced no pid:\n{}", self.log()));
        let killed = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        assert!(killed.success(), "kill -9 {pid}");
        // The launcher must end the whole job (the surviving rank would otherwise wait forever
        // in its next all-reduce).
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                panic!("the job hung after rank {rank} was killed:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(200)); // the reader thread's last lines
        let log = self.log();
        assert!(!status.success(), "a job that lost a rank must fail:\n{log}");
        // Open MPI names the rank and the signal.
        assert!(
            log.contains(&format!("process rank {rank}")) && log.contains("signal 9"),
            "the launcher's message names the lost rank:\n{log}"
        );
        log
    }
}

#[test]
fn two_ranks_keep_identical_replicas_equal_to_one_process_with_the_whole_batch() {
    let (_g1, one) = scratch_run("one");
    run_ok(single(&one, 10, false), "one process");
    let (_g2, two) = scratch_run("two");
    let log = run_ok(mpirun(2, &two, 10, false), "mpirun -n 2");

    // Both ranks logged the fingerprint of their replica at each checkpoint: the same one.
    for step in [5, 10] {
        let fps = fingerprints(&log, step);
        assert_eq!(fps.len(), 2, "one fingerprint per rank after step {step}:\n{log}");
        assert_eq!(fps["0/2"], fps["1/2"], "replicas differ after step {step}");
    }
    // The run was committed (by rank 0), with its export.
    assert_eq!(latest_step(&two), Some(10));
    assert!(two.join("checkpoints/step-0000010/model.safetensors").is_file());
    // Two half batches averaged = one whole batch, up to float rounding.
    let (diff, name) = max_difference(&one, &two, 10);
    eprintln!("2 ranks vs 1 process after 10 steps: max |difference| {diff:.3e} ({name})");
    assert!(diff < 1e-4, "2 ranks drifted from 1 process: {diff} at {name}");
    // ... and the comparison can fail: another seed gives other weights.
    let (_g3, other) = scratch_run("other-seed");
    let mut cmd = single(&other, 10, false);
    cmd.args(["--set", "run.seed=7"]);
    run_ok(cmd, "another seed");
    assert!(max_difference(&one, &other, 10).0 > 1e-3);
}

#[test]
fn a_killed_rank_ends_the_job_and_the_run_resumes_with_any_number_of_ranks() {
    const STEPS: u64 = 30;
    let (_g1, reference) = scratch_run("reference");
    run_ok(single(&reference, STEPS, false), "uninterrupted run");

    let (_g2, run) = scratch_run("killed");
    // Rank 1 killed: the launcher ends the job.
    let log = Job::start(mpirun(2, &run, STEPS, false)).kill_rank_after(1, &run, 5);
    let at = latest_step(&run).expect("a committed checkpoint");
    assert!(at < STEPS, "killed before the end:\n{log}");
    eprintln!(
        "rank 1 killed after step {at}; launcher said:\n{}",
        log.lines().rev().take(6).collect::<Vec<_>>().join("\n")
    );

    // Same world size: resumed with 2 ranks, then rank 0 killed mid-way.
    let log = Job::start(mpirun(2, &run, STEPS, true)).kill_rank_after(0, &run, at + 5);
    assert!(log.contains("resuming"), "the second job resumed:\n{log}");
    let at = latest_step(&run).unwrap();
    assert!(at < STEPS, "killed before the end:\n{log}");

    // Different world size: one process finishes the run.
    run_ok(single(&run, STEPS, true), "resume with one process");
    assert_eq!(latest_step(&run), Some(STEPS));
    let (diff, name) = max_difference(&reference, &run, STEPS);
    eprintln!("killed twice and resumed vs uninterrupted after {STEPS} steps: max |difference| {diff:.3e} ({name})");
    assert!(diff < 1e-4, "the resumed run drifted: {diff} at {name}");
}

#[test]
fn stage2_ranks_share_the_discriminator_and_the_lecam_state() {
    let (_g0, models) = scratch_run("stage1-models");
    std::fs::create_dir_all(&models).unwrap();
    save_stage1_models(&models);
    let (_g1, one) = scratch_run("stage2-one");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_titok-train"));
    cmd.args(stage2_args(&one, &models));
    run_ok(cmd, "stage 2, one process");
    let (_g2, two) = scratch_run("stage2-two");
    let log = run_ok(launcher(2, stage2_args(&two, &models)), "stage 2, mpirun -n 2");
    // The fingerprint covers every float parameter of the trainee: the decoder side, its EMA
    // copy, the discriminator and the LeCam EMA buffers (the GAN runs from step 2).
    let fps = fingerprints(&log, 6);
    assert_eq!(fps.len(), 2, "one fingerprint per rank:\n{log}");
    assert_eq!(fps["0/2"], fps["1/2"], "stage-2 replicas differ");
    // AdamW's first steps move each weight by about ±lr whatever the gradient's size, so a
    // near-zero gradient whose sign differs by rounding (two means of 4 images instead of one
    // of 8) moves a weight by up to 2 lr the other way: the largest difference is bounded by a
    // few learning rates (3e-4 here), the mean one stays at rounding level.
    let (max, name, mean) = differences(&one, &two, 6);
    eprintln!("stage 2, 2 ranks vs 1 process after 6 steps: max |difference| {max:.3e} ({name}), mean {mean:.3e}");
    assert!(max < 8.0 * 3e-4, "2 ranks drifted from 1 process in stage 2: {max} at {name}");
    assert!(mean < 1e-5, "2 ranks drifted from 1 process in stage 2: mean |difference| {mean}");
    let lecam = model_record(&two, 6).into_iter().find(|(n, _)| n.contains("lecam")).expect("LeCam EMA in the record");
    assert!(lecam.1.iter().any(|v| *v != 0.0), "the LeCam EMA moved once the GAN started: {lecam:?}");
}

/// A class-folder copy of `per_class` CIFAR-10 training images per class, and a random tiny
/// single-stage TiTok (K = 16, 256 codes) as an HF folder: `(data, tokenizer)`.
fn generator_fixture(dir: &Path, per_class: usize) -> (PathBuf, PathBuf) {
    let tar = TarImages::open(shared().join("data/cifar10-jpg.tar.gz"), Some("train")).expect("CIFAR-10 archive");
    let names = tar.class_names().to_vec();
    let mut taken = vec![0; names.len()];
    let data = dir.join("data");
    for r in tar.list().records() {
        let c = r.label.expect("labelled");
        if taken[c] < per_class {
            taken[c] += 1;
            let folder = data.join(&names[c]);
            std::fs::create_dir_all(&folder).unwrap();
            let file = Path::new(r.name.as_ref()).file_name().unwrap();
            std::fs::write(folder.join(file), r.source.read().unwrap()).unwrap();
        }
    }
    let size = VitSize::new(64, 2, 4);
    let config = TitokConfig {
        image_size: 32,
        patch_size: 4,
        token_size: 8,
        codebook_size: 256,
        ..TitokConfig::single_stage_vq(size, size, 16)
    };
    let device = Device::flex();
    device.seed(5);
    let tokenizer = dir.join("tokenizer");
    save_titok(&Titok::new(&config, &device).unwrap(), &tokenizer, StorageDType::F32).unwrap();
    (data, tokenizer)
}

fn generator_args(run: &Path, data: &Path, tokenizer: &Path, cache: Option<&Path>) -> Vec<String> {
    let sets = [
        format!("tokenizer={}", json(tokenizer)),
        format!("data.path={}", json(data)),
        "data.train_split=".into(),
        "data.valid_split=".into(),
        "data.valid_images=8".into(),
        match cache {
            Some(c) => format!("data.token_cache={}", json(c)),
            None => "data.token_cache=null".into(),
        },
        "data.num_workers=1".into(),
        "generator.config=null".into(),
        "generator.preset=tiny".into(),
        "run.batch_size=8".into(),
        "run.total_steps=4".into(),
        "run.checkpoint_every=4".into(),
        "run.valid_every=4".into(),
        "run.log_every=1000".into(),
        "optim.warmup_steps=2".into(),
    ];
    cli("generator", "cifar10-maskgit.json", run, sets)
}

#[test]
fn generator_ranks_share_one_token_cache_built_by_rank_0() {
    let (_g, dir) = scratch_run("generator");
    let (data, tokenizer) = generator_fixture(&dir, 6);
    let run = dir.join("run");
    let log = run_ok(launcher(2, generator_args(&run, &data, &tokenizer, None)), "generator, mpirun -n 2");
    // Rank 0 encoded and wrote the cache, rank 1 loaded it (one line each).
    assert_eq!(log.matches("token cache written").count(), 1, "{log}");
    assert_eq!(log.matches("token cache loaded").count(), 1, "{log}");
    let fps = fingerprints(&log, 4);
    assert_eq!(fps.len(), 2, "one fingerprint per rank:\n{log}");
    assert_eq!(fps["0/2"], fps["1/2"], "generator replicas differ");
    assert_eq!(latest_step(&run), Some(4));

    // Rank 0 cannot write the cache: every rank stops, the others naming rank 0's failure.
    let unwritable = Path::new("/proc/titok-tokens.safetensors");
    let out = launcher(2, generator_args(&dir.join("run-2"), &data, &tokenizer, Some(unwritable))).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("rank 0 failed: building the token cache"), "{log}");
}

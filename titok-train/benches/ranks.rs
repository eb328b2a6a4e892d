//! Throughput scaling of multi-process data parallelism on this machine: the default CIFAR-10
//! tokenizer (`configs/cifar10-titok-s32.json`, global batch 64) trained by the real
//! `titok-train` binary under `mpirun -n 1` and `mpirun -n 2` (Open MPI, CPU backend), and one
//! plain process for reference. Images/s are taken between two logged steps, so start-up and
//! data loading of the first steps do not count.
//!
//! `cargo test --release --workspace --features titok-train/mpi --bench ranks [-- --steps N]`
//! (needs `mpirun` on the `PATH` and CIFAR-10 in `../shared/data`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn shared() -> PathBuf {
    std::env::var_os("TITOK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// `[  12.3s] step 20 | ...` lines of the plain-text renderer: `(step, seconds)`.
fn step_times(log: &str) -> Vec<(u64, f64)> {
    log.lines()
        .filter_map(|l| {
            let (time, rest) = l.strip_prefix('[')?.split_once("s] step ")?;
            let step = rest.split_whitespace().next()?.parse().ok()?;
            Some((step, time.trim().parse().ok()?))
        })
        .collect()
}

/// Trains `steps` steps with `ranks` processes (`None`: no launcher) of `threads` CPU threads
/// each and returns images/s between the first and the last logged step.
fn measure(ranks: Option<usize>, threads: usize, steps: u64, log_every: u64) -> f64 {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let bin = env!("CARGO_BIN_EXE_titok-train");
    let mut cmd = match ranks {
        Some(n) => {
            let mut c = Command::new("mpirun");
            c.args(["--oversubscribe", "--bind-to", "none", "-n", &n.to_string(), bin]);
            c
        }
        None => Command::new(bin),
    };
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cifar10-titok-s32.json");
    let data = shared().join("data/cifar10-jpg.tar.gz");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .arg("single-stage")
        .arg("--config")
        .arg(&config)
        .arg("--run")
        .arg(scratch.path().join("run"))
        .args(["--device", "cpu", "--threads", &threads.to_string(), "--steps", &steps.to_string()]);
    for set in [
        format!("data.path={}", serde_json::to_string(&data).unwrap()),
        "data.valid_images=64".into(),
        format!("run.log_every={log_every}"),
        format!("run.checkpoint_every={steps}"),
        format!("run.valid_every={steps}"),
    ] {
        cmd.arg("--set").arg(set);
    }
    let out = cmd.output().expect("run titok-train (is Open MPI installed?)");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "training failed:\n{log}");
    let times = step_times(&log);
    let (Some(first), Some(last)) = (times.first(), times.last()) else { panic!("no step lines in:\n{log}") };
    assert!(last.0 > first.0, "need two logged steps:\n{log}");
    let batch = 64.0;
    (last.0 - first.0) as f64 * batch / (last.1 - first.1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: u64 = args.iter().position(|a| a == "--steps").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(40);
    let log_every = (steps / 4).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("data-parallel scaling, default CIFAR-10 tokenizer, global batch 64, {steps} steps, {cores} cores");
    let single = measure(None, cores, steps, log_every);
    println!("1 process ({cores} threads, no launcher):   {single:7.1} img/s");
    let one = measure(Some(1), cores, steps, log_every);
    println!("mpirun -n 1 ({cores} threads):              {one:7.1} img/s");
    let per_rank = (cores / 2).max(1);
    let two = measure(Some(2), per_rank, steps, log_every);
    println!("mpirun -n 2 ({per_rank} thread(s) per rank):     {two:7.1} img/s  ({:.2}x of mpirun -n 1)", two / one);
    println!("titok train_ranks1 img_s {one:.2}");
    println!("titok train_ranks2 img_s {two:.2}");
}

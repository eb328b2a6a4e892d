//! Data-parallel training across processes and machines: one process per GPU (or per CPU
//! socket), launched by `mpirun`/`mpiexec` or SLURM's `srun`.
//!
//! Every rank holds a full replica of the trainee and reads its contiguous share of each global
//! step's batch from the deterministic stream ([`crate::train::stream`]); after the backward
//! pass the gradients (and the LeCam EMA that travels with them) are averaged over the ranks
//! ([`sync::all_reduce_gradients`]), so every rank takes the same optimizer step and the
//! replicas stay identical (checked at each checkpoint with [`sync::parameter_fingerprint`]).
//! Rank 0 alone writes checkpoints, exports, PNG grids and logs and runs validation.
//!
//! The transport is MPI through the `mpi` crate (feature `mpi`): host-staged all-reduce, usable
//! with every backend. Without the feature a launch with more than one rank is refused with a
//! clear error instead of training N unrelated copies into one run folder.
//!
//! Source: the official code trains with `accelerate` (PyTorch DDP: mean all-reduce of the
//! gradients every step, the main process saves); REFERENCE §7.

pub mod launcher;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
pub mod sync;

use std::sync::OnceLock;

pub use launcher::LaunchEnv;

use crate::train::TrainError;

/// The collective operations a transport provides. Every rank must make the same calls in the
/// same order with buffers of the same length.
pub(crate) trait Transport: Send + Sync {
    /// In-place sum over the ranks.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]);
    /// In-place sum over the ranks.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// In-place maximum over the ranks.
    fn all_reduce_max_i64(&self, buf: &mut [i64]);
    /// Every rank's `value`, in rank order.
    fn all_gather_u64(&self, value: u64) -> Vec<u64>;
    /// Rank 0's `buf` on every rank.
    fn broadcast_bytes(&self, buf: &mut [u8]);
    /// Shuts the transport down (after the last collective).
    fn finish(&self);
    /// Ends every process of the job (`MPI_Abort`) with `code`.
    fn abort(&self, code: i32) -> !;
}

/// [`ProcessGroup::launcher`] of a process no launcher started.
const NO_LAUNCHER: &str = "single process";

/// The processes of one training job and this process's place in it.
pub struct ProcessGroup {
    /// This process's rank, `0..world_size`; rank 0 writes the run folder.
    pub rank: usize,
    /// Processes in the job.
    pub world_size: usize,
    /// Rank among the processes on this machine (picks the GPU: `cuda:<local_rank>`).
    pub local_rank: usize,
    /// Processes on this machine (shares the CPU cores out).
    pub local_size: usize,
    /// Who launched the job (for messages); `single process` without a launcher.
    pub launcher: &'static str,
    transport: Option<Box<dyn Transport>>,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .field("launcher", &self.launcher)
            .finish()
    }
}

impl ProcessGroup {
    /// A job of one process (no transport).
    pub fn single() -> Self {
        Self { rank: 0, world_size: 1, local_rank: 0, local_size: 1, launcher: NO_LAUNCHER, transport: None }
    }

    /// Whether this is rank 0, which writes checkpoints, exports and logs.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Whether a launcher (`mpirun`, `srun`) started this process, even as a job of one: its
    /// output is forwarded line by line (possibly through a pseudo-terminal), so no dashboard.
    pub fn is_launched(&self) -> bool {
        self.launcher != NO_LAUNCHER
    }

    /// Whether the job has more than one process.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// In-place mean over the ranks (no-op for one process).
    pub fn all_reduce_mean_f32(&self, buf: &mut [f32]) {
        if let Some(t) = &self.transport {
            t.all_reduce_sum_f32(buf);
            let scale = 1.0 / self.world_size as f32;
            buf.iter_mut().for_each(|v| *v *= scale);
        }
    }

    /// In-place sum over the ranks (no-op for one process).
    pub fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        if let Some(t) = &self.transport {
            t.all_reduce_sum_f64(buf);
        }
    }

    /// The minimum and maximum of `value` over the ranks.
    pub fn min_max(&self, value: i64) -> (i64, i64) {
        let mut buf = [-value, value];
        if let Some(t) = &self.transport {
            t.all_reduce_max_i64(&mut buf);
        }
        (-buf[0], buf[1])
    }

    /// Every rank's `value`, in rank order (`[value]` for one process).
    pub fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        match &self.transport {
            Some(t) => t.all_gather_u64(value),
            None => vec![value],
        }
    }

    /// Rank 0's `buf` on every rank (unchanged for one process).
    pub fn broadcast_bytes(&self, buf: &mut [u8]) {
        if let Some(t) = &self.transport {
            t.broadcast_bytes(buf);
        }
    }

    /// Picks the gradient transport for training on `device` (a collective call: every rank,
    /// after choosing its device) and names it. Every rank takes the same one: with the `nccl`
    /// feature and every rank on CUDA with `libnccl` present, the ranks join one NCCL
    /// communicator and gradients are averaged on the GPUs; with none on CUDA, MPI averages
    /// them through host memory.
    ///
    /// # Errors
    /// [`TrainError::Distributed`] when some ranks are on CUDA and others are not (or lack
    /// `libnccl`), or when NCCL cannot be set up.
    pub fn use_device(&self, device: &burn::tensor::Device) -> Result<&'static str, TrainError> {
        if !self.is_distributed() {
            return Ok("none (one process)");
        }
        #[cfg(feature = "nccl")]
        {
            let ordinal = nccl::cuda_ordinal(device);
            let on_cuda = ordinal.is_some();
            let ready = on_cuda && nccl::library_present();
            let (fewest, most) = self.min_max(i64::from(u8::from(on_cuda)) + i64::from(u8::from(ready)));
            match (fewest, most, ordinal) {
                (2, 2, Some(ordinal)) => {
                    nccl::join(self, ordinal)?;
                    return Ok("NCCL (on the GPUs)");
                }
                (0, 0, _) => {}
                _ => {
                    return Err(TrainError::Distributed(format!(
                        "the ranks disagree on the gradient transport ({}: {}): every rank must train on a CUDA \
                         device with libnccl present, or none on CUDA",
                        self.label(),
                        match (on_cuda, ready) {
                            (false, _) => "not on CUDA",
                            (true, false) => "on CUDA, libnccl not found",
                            (true, true) => "on CUDA with libnccl",
                        }
                    )));
                }
            }
        }
        let _ = device;
        Ok("MPI (through host memory)")
    }

    /// Runs `f` on rank 0 first and on the other ranks after it succeeded (e.g. rank 0 builds a
    /// cache file, the others then load it). Rank 0 tells the others whether it succeeded; if
    /// not, they return an error without running `f` (and rank 0 returns its own).
    ///
    /// # Errors
    /// `f`'s error on rank 0; [`TrainError::Distributed`] on the other ranks when rank 0 failed.
    pub fn main_first<T>(&self, what: &str, f: impl FnOnce() -> Result<T, TrainError>) -> Result<T, TrainError> {
        if self.is_main() {
            let out = f();
            self.broadcast_bytes(&mut [u8::from(out.is_ok())]);
            out
        } else {
            let mut ok = [0u8];
            self.broadcast_bytes(&mut ok);
            if ok[0] == 0 {
                return Err(TrainError::Distributed(format!("rank 0 failed: {what}")));
            }
            f()
        }
    }

    /// CPU threads for this rank's tensor operations when `--threads` is not given: the cores
    /// this rank may run on (its affinity mask), shared among the ranks of the machine when the
    /// mask is the whole machine (a launcher that binds each rank to its own cores or socket has
    /// done the sharing). `None` (rayon's default) for one rank per machine or when
    /// `RAYON_NUM_THREADS` is set.
    pub fn default_cpu_threads(&self) -> Option<usize> {
        if self.local_size <= 1 || std::env::var_os("RAYON_NUM_THREADS").is_some() {
            return None;
        }
        let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
        let online = online_cpus().unwrap_or(allowed);
        Some(if allowed < online { allowed } else { (allowed / self.local_size).max(1) })
    }

    /// A label for log lines: `rank 1/4` (empty for one process).
    pub fn label(&self) -> String {
        if self.is_distributed() { format!("rank {}/{}", self.rank, self.world_size) } else { String::new() }
    }

    /// Shuts the transport down after a successful run (`MPI_Finalize`). After an error call
    /// [`ProcessGroup::abort`] instead.
    pub fn finish(&self) {
        if let Some(t) = &self.transport {
            t.finish();
        }
    }

    /// Ends the whole job after an error on this rank (`MPI_Abort`: every launcher, `srun`
    /// included, then stops the other ranks, which would otherwise wait in their next
    /// collective); exits the process when there is no transport.
    pub fn abort(&self, code: i32) -> ! {
        match &self.transport {
            Some(t) => t.abort(code),
            None => std::process::exit(code),
        }
    }
}

/// The machine's online CPUs (`/sys/devices/system/cpu/online`, e.g. `0-63` or `0-3,8-11`);
/// `None` where that file does not exist (not Linux).
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse_cpu_list(text.trim())
}

/// The number of CPUs in a Linux CPU list (`0-3,8,10-11` -> 7).
fn parse_cpu_list(list: &str) -> Option<usize> {
    list.split(',').try_fold(0, |n, part| {
        let count = match part.split_once('-') {
            Some((a, b)) => b.trim().parse::<usize>().ok()?.checked_sub(a.trim().parse::<usize>().ok()?)? + 1,
            None => {
                part.trim().parse::<usize>().ok()?;
                1
            }
        };
        Some(n + count)
    })
}

static GROUP: OnceLock<ProcessGroup> = OnceLock::new();

/// Joins the job this process was launched into (see [`LaunchEnv`]) and makes it
/// [`group`]'s answer: with a launcher and the `mpi` feature, MPI is initialised; without a
/// launcher (or one rank) this is a single process. Call once, at the start of `main`.
///
/// # Errors
/// [`TrainError::Distributed`] when the launcher's variables are inconsistent, when more than
/// one rank was launched but this build has no `mpi` feature, when MPI cannot be initialised, or
/// when the group was already initialised or used.
pub fn init() -> Result<&'static ProcessGroup, TrainError> {
    let env = LaunchEnv::detect().map_err(TrainError::Distributed)?;
    let group = match env {
        Some(env) if env.world_size > 1 => join(&env)?,
        // `mpirun -n 1`: one process, but its output goes through the launcher.
        Some(env) => ProcessGroup { launcher: env.launcher, ..ProcessGroup::single() },
        None => ProcessGroup::single(),
    };
    GROUP.set(group).map_err(|_| {
        TrainError::Distributed("distributed::init called after the process group was first used".into())
    })?;
    Ok(group_ref())
}

#[cfg(feature = "mpi")]
fn join(env: &LaunchEnv) -> Result<ProcessGroup, TrainError> {
    let (transport, rank, world_size, local_rank, local_size) =
        mpi::MpiTransport::init().map_err(|e| TrainError::Distributed(format!("MPI: {e}")))?;
    if world_size != env.world_size {
        return Err(TrainError::Distributed(format!(
            "{} announced {} ranks but MPI sees {world_size}: launch with a launcher of the MPI library \
             titok-train was built against (for srun: --mpi=pmix)",
            env.launcher, env.world_size
        )));
    }
    let transport: Option<Box<dyn Transport>> = Some(Box::new(transport));
    Ok(ProcessGroup { rank, world_size, local_rank, local_size, launcher: env.launcher, transport })
}

#[cfg(not(feature = "mpi"))]
fn join(env: &LaunchEnv) -> Result<ProcessGroup, TrainError> {
    Err(TrainError::Distributed(format!(
        "launched by {} as rank {} of {}, but this titok-train was built without the `mpi` feature; \
         rebuild it with `cargo build --release -p titok-train --features mpi` (needs an MPI library, \
         e.g. Debian's libopenmpi-dev, and libclang)",
        env.launcher, env.rank, env.world_size
    )))
}

fn group_ref() -> &'static ProcessGroup {
    GROUP.get_or_init(ProcessGroup::single)
}

/// The job of this process: what [`init`] joined, else a single process.
pub fn group() -> &'static ProcessGroup {
    group_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_needs_no_transport() {
        let g = ProcessGroup::single();
        let mut buf = [1.0f32, 2.0];
        g.all_reduce_mean_f32(&mut buf);
        assert_eq!(buf, [1.0, 2.0]);
        assert_eq!((g.min_max(7), g.all_gather_u64(9)), ((7, 7), vec![9]));
        assert_eq!(g.main_first("three", || Ok(3)).unwrap(), 3);
        assert!(g.is_main() && !g.is_distributed() && g.label().is_empty());
        assert_eq!(g.default_cpu_threads(), None, "one rank keeps every core");
    }

    #[test]
    fn reads_linux_cpu_lists() {
        assert_eq!(parse_cpu_list("0-63"), Some(64));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn a_launch_with_ranks_needs_the_mpi_feature() {
        let env = LaunchEnv { launcher: "mpirun (Open MPI)", world_size: 2, rank: 1, local_rank: Some(1) };
        let message = join(&env).unwrap_err().to_string();
        assert!(message.contains("rank 1 of 2") && message.contains("--features mpi"), "{message}");
    }
}

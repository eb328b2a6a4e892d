//! Which launcher started this process, read from the environment it sets: Open MPI's `mpirun`,
//! MPICH/Intel MPI's Hydra (`mpiexec`), or SLURM's `srun`.

/// This process's place in a job, as its launcher announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// The launcher, for messages (`mpirun (Open MPI)`, `mpiexec (Hydra)`, `srun (SLURM)`).
    pub launcher: &'static str,
    /// Processes in the job.
    pub world_size: usize,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Rank among the processes on this machine, when the launcher says.
    pub local_rank: Option<usize>,
}

/// The `(launcher, size, rank, local rank)` variables of each launcher, first match wins.
const LAUNCHERS: &[(&str, &str, &str, &str)] = &[
    ("mpirun (Open MPI)", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mpiexec (Hydra)", "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),
    // `SLURM_STEP_NUM_TASKS` is set inside a job step (`srun`), not in the batch script itself.
    ("srun (SLURM)", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID"),
];

impl LaunchEnv {
    /// The job this process belongs to according to `var` (e.g. `std::env::var`), or `None`
    /// when no launcher's variables are set (a plain single process).
    ///
    /// # Errors
    /// A message when a launcher's variables are set but do not parse or disagree (rank outside
    /// `0..size`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        for &(launcher, size, rank, local) in LAUNCHERS {
            let Some(world) = var(size) else { continue };
            let parse = |name: &str, value: &str| {
                value.trim().parse::<usize>().map_err(|_| format!("{launcher} set {name}={value:?}, not a number"))
            };
            let world_size = parse(size, &world)?;
            let rank_value = var(rank).ok_or_else(|| format!("{launcher} set {size} but not {rank}"))?;
            let rank_index = parse(rank, &rank_value)?;
            if world_size == 0 || rank_index >= world_size {
                return Err(format!("{launcher} set {rank}={rank_index} with {size}={world_size}"));
            }
            let local_rank = var(local).map(|v| parse(local, &v)).transpose()?;
            return Ok(Some(Self { launcher, world_size, rank: rank_index, local_rank }));
        }
        Ok(None)
    }

    /// [`LaunchEnv::from_vars`] over this process's environment.
    ///
    /// # Errors
    /// As [`LaunchEnv::from_vars`].
    pub fn detect() -> Result<Option<Self>, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn reads_each_launcher_and_prefers_mpirun() {
        assert_eq!(LaunchEnv::from_vars(env(&[("HOME", "/root")])), Ok(None));
        let slurm = env(&[("SLURM_STEP_NUM_TASKS", "8"), ("SLURM_PROCID", "5"), ("SLURM_LOCALID", "1")]);
        assert_eq!(
            LaunchEnv::from_vars(slurm),
            Ok(Some(LaunchEnv { launcher: "srun (SLURM)", world_size: 8, rank: 5, local_rank: Some(1) }))
        );
        let both = env(&[
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_PROCID", "5"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_RANK", "1"),
        ]);
        let got = LaunchEnv::from_vars(both).unwrap().unwrap();
        assert_eq!((got.launcher, got.world_size, got.rank, got.local_rank), ("mpirun (Open MPI)", 2, 1, None));
        // The batch script of a SLURM job is no job step: one process.
        assert_eq!(LaunchEnv::from_vars(env(&[("SLURM_NTASKS", "8"), ("SLURM_PROCID", "0")])), Ok(None));
    }

    #[test]
    fn inconsistent_variables_are_errors() {
        let bad_rank = env(&[("PMI_SIZE", "2"), ("PMI_RANK", "2")]);
        assert!(LaunchEnv::from_vars(bad_rank).unwrap_err().contains("PMI_RANK=2"));
        let no_rank = env(&[("OMPI_COMM_WORLD_SIZE", "2")]);
        assert!(LaunchEnv::from_vars(no_rank).unwrap_err().contains("OMPI_COMM_WORLD_RANK"));
        let junk = env(&[("OMPI_COMM_WORLD_SIZE", "two"), ("OMPI_COMM_WORLD_RANK", "0")]);
        assert!(LaunchEnv::from_vars(junk).unwrap_err().contains("not a number"));
    }
}

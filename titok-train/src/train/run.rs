//! The run directory and the checkpoint commit protocol.
//!
//! ```text
//! <run>/config.json                 the resolved training configuration
//! <run>/latest.json                 commit marker: the last complete checkpoint (atomic rename)
//! <run>/checkpoints/model-<step>.bpk, optim-<step>.bpk, scheduler-<step>.bpk
//!                                   burn-train records (model incl. EMA weights, AdamW moments,
//!                                   schedule position), each written atomically by burn-pack
//! <run>/checkpoints/step-<step>/    the EMA weights in the official HF layout
//!                                   (config.json + model.safetensors)
//! <run>/samples/                    validation reconstructions / samples as PNG grids
//! ```
//! A checkpoint counts only once `latest.json` names it, and `latest.json` is written after
//! every other file of that step is complete, so a run killed at any instant (even `kill -9`)
//! resumes from the last complete step. The data order is a pure function of the seed and the
//! step ([`super::stream`]), so the step number is the whole data-order state.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use burn::train::checkpoint::{
    Checkpoint, Checkpointer, CheckpointerError, CheckpointingAction, CheckpointingStrategy, FileCheckpointer,
};
use burn::train::metric::store::EventStoreClient;
use serde::{Deserialize, Serialize};
use titok_model::checkpoint::write_bytes_atomically;

use crate::train::TrainError;

/// What `latest.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Completed optimisation steps.
    pub step: u64,
    /// Run seed (data order and augmentation).
    pub seed: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Training images (to detect a changed dataset on resume).
    pub dataset_len: usize,
    /// Total steps planned.
    pub total_steps: u64,
    /// The HF folder of the EMA weights at this step, relative to the run directory.
    pub weights: String,
}

/// A training run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// Root folder.
    pub root: PathBuf,
}

impl RunDir {
    /// Creates (if needed) the run folder and its sub-folders.
    ///
    /// # Errors
    /// [`TrainError::Io`] when they cannot be created.
    pub fn create(root: &Path) -> Result<Self, TrainError> {
        for sub in ["checkpoints", "samples"] {
            std::fs::create_dir_all(root.join(sub)).map_err(|e| TrainError::io(root, e))?;
        }
        Ok(Self { root: root.to_path_buf() })
    }

    /// `<run>/checkpoints`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `<run>/samples`.
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }

    /// The HF folder of the EMA weights at `step`.
    pub fn weights_dir(&self, step: u64) -> PathBuf {
        self.checkpoints().join(format!("step-{step:07}"))
    }

    /// The last committed checkpoint, if any.
    ///
    /// # Errors
    /// [`TrainError::Resume`] when `latest.json` exists but cannot be parsed or names files
    /// that are missing.
    pub fn latest(&self) -> Result<Option<RunState>, TrainError> {
        let path = self.root.join("latest.json");
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let state: RunState =
            serde_json::from_str(&text).map_err(|e| TrainError::Resume(format!("{}: {e}", path.display())))?;
        for kind in ["model", "optim", "scheduler"] {
            let f = self.checkpoints().join(format!("{kind}-{}.bpk", state.step));
            if !f.exists() {
                return Err(TrainError::Resume(format!(
                    "{} names step {} but {} is missing",
                    path.display(),
                    state.step,
                    f.display()
                )));
            }
        }
        Ok(Some(state))
    }

    /// Commits a checkpoint: writes `latest.json` atomically.
    ///
    /// # Errors
    /// [`TrainError::Io`].
    pub fn commit(&self, state: &RunState) -> Result<(), TrainError> {
        let json = serde_json::to_string_pretty(state).expect("serialisable");
        write_bytes_atomically(&self.root.join("latest.json"), json.as_bytes()).map_err(TrainError::Model)
    }

    /// Removes the HF weights folders other than those of the last `keep` checkpoints taken
    /// every `every` steps up to `step`.
    pub fn prune_weights(&self, step: u64, keep: usize, every: u64) {
        let keep: Vec<u64> = (0..keep.max(1) as u64).map(|i| step.saturating_sub(i * every)).collect();
        let Ok(entries) = std::fs::read_dir(self.checkpoints()) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<u64>().ok())
                && !keep.contains(&step)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A burn-train file checkpointer that reports each completed save, so that the commit marker is
/// written only after the records are on disk (burn-train saves asynchronously).
pub struct NotifyingCheckpointer {
    inner: FileCheckpointer,
    done: Sender<(String, usize)>,
    name: String,
}

impl<R: Checkpoint> Checkpointer<R> for NotifyingCheckpointer {
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let result = Checkpointer::<R>::save(&self.inner, epoch, record);
        let _ = self.done.send((self.name.clone(), epoch));
        result
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        Checkpointer::<R>::delete(&self.inner, epoch)
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        Checkpointer::<R>::restore(&self.inner, epoch)
    }
}

/// Waits for the three records (model, optimizer, scheduler) of a step to be saved.
#[derive(Clone)]
pub struct SaveTracker {
    rx: Arc<Mutex<Receiver<(String, usize)>>>,
}

impl SaveTracker {
    /// Blocks until `model`, `optim` and `scheduler` of `step` were saved.
    pub fn wait(&self, step: usize) {
        let rx = self.rx.lock().expect("tracker");
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 3 {
            match rx.recv() {
                Ok((name, s)) if s == step => {
                    seen.insert(name);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

/// The three burn-train checkpointers of a run plus the tracker of their completion.
pub fn checkpointers(
    run: &RunDir,
) -> (NotifyingCheckpointer, NotifyingCheckpointer, NotifyingCheckpointer, SaveTracker) {
    let (tx, rx) = channel();
    let make = |name: &str| NotifyingCheckpointer {
        inner: FileCheckpointer::new(run.checkpoints(), name),
        done: tx.clone(),
        name: name.to_string(),
    };
    (make("model"), make("optim"), make("scheduler"), SaveTracker { rx: Arc::new(Mutex::new(rx)) })
}

/// Keeps the records of the last `keep` checkpoints (checkpoint "epochs" are step numbers).
#[derive(Debug, Clone)]
pub struct KeepLastSteps {
    keep: usize,
    saved: Vec<usize>,
}

impl KeepLastSteps {
    /// Keeps `keep >= 1` checkpoints, counting those already in `run` (a resumed run).
    pub fn new(keep: usize, run: &RunDir) -> Self {
        let mut saved: Vec<usize> = std::fs::read_dir(run.checkpoints())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.strip_prefix("model-")?.strip_suffix(".bpk")?.parse().ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        saved.sort_unstable();
        Self { keep: keep.max(1), saved }
    }
}

impl CheckpointingStrategy for KeepLastSteps {
    fn checkpointing(&mut self, step: usize, _store: &EventStoreClient) -> Vec<CheckpointingAction> {
        let mut actions = vec![CheckpointingAction::Save];
        self.saved.push(step);
        while self.saved.len() > self.keep {
            actions.push(CheckpointingAction::Delete(self.saved.remove(0)));
        }
        actions
    }
}

//! Helpers shared by the integration tests of `titok-train` (each test file has `mod common;`;
//! each uses a subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// The shared data, weights and fixtures: `TITOK_SHARED_DIR`, else `../shared` beside the clone.
pub fn shared() -> PathBuf {
    std::env::var_os("TITOK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// A fresh folder named after `prefix`, removed when the guard drops.
pub fn scratch(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("titok-train-{prefix}-")).tempdir().unwrap()
}

/// A run folder that does not exist yet (`<scratch>/run`), inside a fresh folder removed when
/// the guard drops.
pub fn scratch_run(prefix: &str) -> (TempDir, PathBuf) {
    let dir = scratch(prefix);
    let path = dir.path().join("run");
    (dir, path)
}

/// The values burn-train logged for a metric in a split (`train`, `valid`), in step order over
/// the intervals (`epoch-N` folders); with `finals`, each interval's closing summary line too.
pub fn logged(run: &Path, split: &str, metric: &str, finals: bool) -> Vec<f64> {
    let mut epochs: Vec<(usize, PathBuf)> = std::fs::read_dir(run.join(split))
        .unwrap_or_else(|e| panic!("{}: {e}", run.join(split).display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_string_lossy().strip_prefix("epoch-")?.parse().ok()?, e.path())))
        .collect();
    epochs.sort();
    epochs
        .iter()
        .flat_map(|(_, dir)| {
            std::fs::read_to_string(dir.join(format!("{metric}.log")))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (value, count) = l.split_once(',')?;
                    if count == "final" && !finals { None } else { value.parse::<f64>().ok() }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A path as a JSON string, for `--set key=<value>` overrides.
pub fn json(path: &Path) -> String {
    serde_json::to_string(path).unwrap()
}

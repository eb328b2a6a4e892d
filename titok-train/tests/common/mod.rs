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

/// A path as a JSON string, for `--set key=<value>` overrides.
pub fn json(path: &Path) -> String {
    serde_json::to_string(path).unwrap()
}

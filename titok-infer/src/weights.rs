//! Finding the weights of the evaluation networks (LPIPS, FID InceptionV3), which are not part
//! of the repository: an explicit path, then an environment variable naming the file, then
//! `$TITOK_SHARED_DIR/weights/<file>`, then `../shared/weights/<file>` beside the workspace the
//! executable was built in, then beside the current folder.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// File name of the LPIPS AlexNet weights in `../shared/weights`.
pub const LPIPS_FILE: &str = "lpips_alexnet.safetensors";
/// Environment variable naming an LPIPS weights file.
pub const LPIPS_ENV: &str = "TITOK_LPIPS_WEIGHTS";
/// Environment variable naming the FID InceptionV3 weights file.
pub const INCEPTION_ENV: &str = "TITOK_INCEPTION_WEIGHTS";
/// Environment variable naming the shared data folder (the one holding `weights/`).
pub const SHARED_ENV: &str = "TITOK_SHARED_DIR";

/// Where a weights file was looked for, for messages.
pub fn search_description(env: &str, file: &str) -> String {
    format!("pass its path, set {env} (or {SHARED_ENV}), or place it at ../shared/weights/{file}")
}

/// The weights file to use: `explicit` (which must exist), else `$env`, else
/// `$TITOK_SHARED_DIR/weights/<file>`, else `../shared/weights/<file>` next to the workspace of
/// the executable or the current folder. `None` when nothing was found.
///
/// # Errors
/// When `explicit` or `$env` names a file that does not exist (a typo should not silently turn
/// a metric off).
pub fn find(explicit: Option<&Path>, env: &str, file: &str) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("{}: no such weights file", p.display());
        }
        return Ok(Some(p.to_path_buf()));
    }
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()).map(PathBuf::from) {
        if !p.is_file() {
            bail!("{env}={}: no such weights file", p.display());
        }
        return Ok(Some(p));
    }
    Ok(candidates(file).into_iter().find(|p| p.is_file()))
}

/// `$TITOK_SHARED_DIR/weights/<file>`, then `<root>/../shared/weights/<file>` for the workspace
/// root of the executable (the nearest ancestor holding a `Cargo.toml`) and for the current
/// folder.
fn candidates(file: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(shared) = std::env::var_os(SHARED_ENV).filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(shared).join("weights").join(file));
    }
    let mut roots = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(ws) = exe.ancestors().skip(1).find(|a| a.join("Cargo.toml").is_file())
    {
        roots.push(ws.to_path_buf());
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    out.extend(roots.into_iter().map(|r| r.join("..").join("shared").join("weights").join(file)));
    out
}

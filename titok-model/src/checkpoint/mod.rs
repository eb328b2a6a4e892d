//! Loading and saving checkpoints: official Hugging Face folders (`config.json` +
//! `model.safetensors` with the official key names), torch `.bin` files of the MaskGIT-VQGAN
//! teacher, and native Burn `.bpk` files.
//!
//! Loading is strict: before any tensor is read, the safetensors header is compared with the
//! tensors the model expects (names through the family's [`keymap::KeyMap`], shapes in the
//! PyTorch layout), and every missing, unexpected or mis-shaped key is reported in one
//! [`TitokError::CheckpointMismatch`]. Tensors stored as f16/bf16 are converted to f32.
//! Writes go to a temporary file renamed into place, so a crash never leaves half a file.

pub mod generator;
pub mod hf_config;
pub mod keymap;
mod not_weights;
mod safetensors_header;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};
use burn::tensor::{DType, Device};

pub use generator::{generator_config, generator_config_json, load_generator, load_generator_weights, save_generator};
pub use hf_config::{HfConfig, titok_config_json};
pub use keymap::{KeyMap, KeyRule};
pub use not_weights::{StandIn, recognise as recognise_stand_in, refuse_stand_in};
pub use safetensors_header::{TensorInfo, read_safetensors_header};

use crate::config::VqganConfig;
use crate::error::{Result, TitokError};
use crate::titok::Titok;
use crate::vqgan::MaskgitVqgan;

/// File name of the weights in a Hugging Face folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the config in a Hugging Face folder.
pub const CONFIG_FILE: &str = "config.json";

/// Storage precision of exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageDType {
    /// 32-bit floats (what the official code writes).
    #[default]
    F32,
    /// 16-bit floats (half the size; converted back to f32 on load).
    F16,
}

/// Names and PyTorch-layout shapes of every tensor `module` expects in an official checkpoint.
pub fn expected_tensors<M: Module>(module: &M, keymap: &KeyMap) -> BTreeMap<String, Vec<usize>> {
    module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| (keymap.to_official(&t.name), t.shape.to_vec()))
        .collect()
}

/// Compares a checkpoint's header with what the model expects.
///
/// # Errors
/// [`TitokError::CheckpointMismatch`] listing every missing, unexpected and mis-shaped key.
pub fn check_fit(
    path: &Path,
    expected: &BTreeMap<String, Vec<usize>>,
    found: &BTreeMap<String, TensorInfo>,
    keymap: &KeyMap,
) -> Result<()> {
    let mut problems = Vec::new();
    for (name, shape) in expected {
        match found.get(name) {
            None => problems.push(format!("  missing:     {name} {shape:?}")),
            Some(info) if &info.shape != shape => {
                problems.push(format!("  wrong shape: {name}: checkpoint {:?}, model expects {shape:?}", info.shape))
            }
            Some(_) => {}
        }
    }
    for (name, info) in found {
        if !expected.contains_key(name) && !keymap.is_ignored(name) {
            problems.push(format!("  unexpected:  {name} {:?}", info.shape));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TitokError::CheckpointMismatch {
            path: path.to_path_buf(),
            problems: format!("{} ({} problems)\n{}", keymap.family, problems.len(), problems.join("\n")),
        })
    }
}

/// Loads official safetensors weights into `module` strictly (see the module docs).
///
/// # Errors
/// [`TitokError::NotWeights`] for a Git LFS pointer or an HTML page in place of the file,
/// [`TitokError::CheckpointRead`] for unreadable or corrupt files,
/// [`TitokError::CheckpointMismatch`] when the tensors do not fit the model.
pub fn load_safetensors<M: Module + ModuleSnapshot>(mut module: M, path: &Path, keymap: &KeyMap) -> Result<M> {
    let found = read_safetensors_header(path)?;
    check_fit(path, &expected_tensors(&module, keymap), &found, keymap)?;
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .allow_partial(true)
        .validate(false);
    for (from, to) in keymap.import_patterns() {
        store = store.with_key_remapping(from, to);
    }
    let result = module
        .load_from(&mut store)
        .map_err(|e| TitokError::CheckpointRead { path: path.to_path_buf(), reason: e.to_string() })?;
    finish_apply(path, keymap, result)?;
    Ok(module)
}

/// Loads a torch-pickle `.bin`/`.pth` state dict into `module` (names through `keymap`).
///
/// # Errors
/// As [`load_safetensors`] (the header check is done by burn-store's apply result).
pub fn load_pytorch<M: Module + ModuleSnapshot>(mut module: M, path: &Path, keymap: &KeyMap) -> Result<M> {
    refuse_stand_in(path)?;
    let mut store = PytorchStore::from_file(path).allow_partial(true).validate(false);
    for (from, to) in keymap.import_patterns() {
        store = store.with_key_remapping(from, to);
    }
    let result = module
        .load_from(&mut store)
        .map_err(|e| TitokError::CheckpointRead { path: path.to_path_buf(), reason: e.to_string() })?;
    finish_apply(path, keymap, result)?;
    Ok(module)
}

fn finish_apply(path: &Path, keymap: &KeyMap, result: burn::store::ApplyResult) -> Result<()> {
    let mut problems: Vec<String> = result.errors.iter().map(|e| format!("  {e}")).collect();
    problems.extend(result.missing.iter().map(|(p, _)| format!("  missing:     {}", keymap.to_official(p))));
    problems.extend(result.unused.iter().filter(|k| !keymap.is_ignored(k)).map(|k| format!("  unexpected:  {k}")));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TitokError::CheckpointMismatch {
            path: path.to_path_buf(),
            problems: format!("{} ({} problems)\n{}", keymap.family, problems.len(), problems.join("\n")),
        })
    }
}

/// Saves `module` as an official safetensors file (official key names, PyTorch layouts,
/// metadata `format: pt`), atomically.
///
/// # Errors
/// [`TitokError::Write`] when the file cannot be written.
pub fn save_safetensors<M: Module + ModuleSnapshot>(
    module: &M,
    path: &Path,
    keymap: &KeyMap,
    dtype: StorageDType,
) -> Result<()> {
    write_atomically(path, |tmp| {
        let store = SafetensorsStore::from_file(tmp).clear_metadata().metadata("format", "pt");
        let mut store = match dtype {
            StorageDType::F32 => store.with_to_adapter(BurnToPyTorchAdapter),
            StorageDType::F16 => store.with_to_adapter(BurnToPyTorchAdapter.chain(FloatCastAdapter::to(DType::F16))),
        };
        for (from, to) in keymap.export_patterns() {
            store = store.with_key_remapping(from, to);
        }
        module.save_into(&mut store).map_err(|e| e.to_string())
    })
}

/// Runs `write` on a temporary path beside `path`, then renames it into place (devices and
/// pipes such as `/dev/null` are written directly).
///
/// # Errors
/// [`TitokError::Write`] with the writer's message or the I/O error.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> std::result::Result<(), String>) -> Result<()> {
    let err = |reason: String| TitokError::Write { path: path.to_path_buf(), reason };
    // A device or pipe (`/dev/null`, `/dev/stdout`, a FIFO) is written in place: renaming a
    // temporary file over it would replace the device with a regular file.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return write(path).map_err(err);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    let file_name = path.file_name().ok_or_else(|| err("not a file path".into()))?;
    let tmp = path.with_file_name(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    let result = write(&tmp)
        .and_then(|()| readable_by_all(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Gives a freshly written output the usual `rw-r--r--` mode: some writers create their file
/// `rw-------` (private temporary files), which would be odd for weights and images.
fn readable_by_all(path: &Path) -> std::result::Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| e.to_string())?.permissions().mode();
        if mode & 0o077 == 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o044)).map_err(|e| e.to_string())?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes bytes atomically.
///
/// # Errors
/// [`TitokError::Write`].
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| e.to_string()))
}

/// Loads an official TiTok Hugging Face folder (`config.json` + `model.safetensors`), e.g. a
/// download of `yucornetto/tokenizer_titok_l32_imagenet`.
///
/// # Errors
/// [`TitokError::ConfigFile`]/[`TitokError::Config`] for a config that cannot be used,
/// [`TitokError::CheckpointRead`]/[`TitokError::CheckpointMismatch`] for the weights.
pub fn load_titok(dir: &Path, device: &Device) -> Result<Titok> {
    let config = HfConfig::from_dir(dir)?.titok()?;
    let model = Titok::new(&config, device)?;
    load_safetensors(model, &dir.join(WEIGHTS_FILE), &keymap::TITOK)
}

/// Saves a TiTok model as an official Hugging Face folder (`config.json` + `model.safetensors`)
/// that [`load_titok`] and the official `TiTok.from_pretrained` read back.
///
/// # Errors
/// [`TitokError::Write`].
pub fn save_titok(model: &Titok, dir: &Path, dtype: StorageDType) -> Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "titok".into());
    let config = titok_config_json(&model.config, &name);
    save_safetensors(model, &dir.join(WEIGHTS_FILE), &keymap::TITOK, dtype)?;
    write_bytes_atomically(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&config).expect("json").as_bytes())
}

/// The MaskGIT-VQGAN configuration of a folder: its `config.json` (keys as in the fixture:
/// `hidden_channels`, `channel_mult`, `num_res_blocks`, `z_channels`, `num_embeddings`,
/// `commitment_cost`) or, without one, the official numbers.
///
/// # Errors
/// [`TitokError::ConfigFile`] for an unreadable or ill-typed config.
pub fn vqgan_config(dir: &Path) -> Result<VqganConfig> {
    if !dir.join(CONFIG_FILE).is_file() {
        return Ok(VqganConfig::official());
    }
    let c = HfConfig::from_dir(dir)?;
    let d = VqganConfig::official();
    let channel_mult = match c.get("channel_mult") {
        None => d.channel_mult.clone(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| c.error(format!("channel_mult: {e}")))?,
    };
    let config = VqganConfig {
        hidden_channels: c.usize_or("hidden_channels", Some(d.hidden_channels))?,
        channel_mult,
        num_res_blocks: c.usize_or("num_res_blocks", Some(d.num_res_blocks))?,
        z_channels: c.usize_or("z_channels", Some(d.z_channels))?,
        codebook_size: c.usize_or("num_embeddings", Some(d.codebook_size))?,
        commitment_cost: c.f64_or("commitment_cost", d.commitment_cost)?,
        norm_groups: d.norm_groups,
    };
    config.validate()?;
    Ok(config)
}

/// Loads a MaskGIT-VQGAN: `path` is a folder (`config.json` optional + `model.safetensors`,
/// `*.safetensors` or `*.bin`) or a weights file (official numbers assumed), e.g. the official
/// `maskgit-vqgan-imagenet-f16-256.bin`.
///
/// # Errors
/// As [`load_titok`].
pub fn load_vqgan(path: &Path, device: &Device) -> Result<MaskgitVqgan> {
    let (dir, weights) = if path.is_dir() {
        (path.to_path_buf(), find_weights(path)?)
    } else {
        (path.parent().map(Path::to_path_buf).unwrap_or_default(), path.to_path_buf())
    };
    let config = if path.is_dir() { vqgan_config(&dir)? } else { VqganConfig::official() };
    let model = MaskgitVqgan::new(&config, device);
    match weights.extension().and_then(|e| e.to_str()) {
        Some("bin" | "pth" | "pt") => load_pytorch(model, &weights, &keymap::MASKGIT_VQGAN),
        _ => load_safetensors(model, &weights, &keymap::MASKGIT_VQGAN),
    }
}

/// Saves a MaskGIT-VQGAN as a folder: `config.json` (fixture keys) + `model.safetensors`
/// (official teacher keys).
///
/// # Errors
/// [`TitokError::Write`].
pub fn save_vqgan(model: &MaskgitVqgan, config: &VqganConfig, dir: &Path, dtype: StorageDType) -> Result<()> {
    save_safetensors(model, &dir.join(WEIGHTS_FILE), &keymap::MASKGIT_VQGAN, dtype)?;
    let json = serde_json::json!({
        "channel_mult": config.channel_mult,
        "num_resolutions": config.channel_mult.len(),
        "dropout": 0.0,
        "hidden_channels": config.hidden_channels,
        "num_channels": 3,
        "num_res_blocks": config.num_res_blocks,
        "z_channels": config.z_channels,
        "num_embeddings": config.codebook_size,
        "embedding_dim": config.z_channels,
        "commitment_cost": config.commitment_cost,
    });
    write_bytes_atomically(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&json).expect("json").as_bytes())
}

fn find_weights(dir: &Path) -> Result<PathBuf> {
    let st = dir.join(WEIGHTS_FILE);
    if st.is_file() {
        return Ok(st);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("safetensors" | "bin" | "pth")))
        .collect();
    candidates.sort();
    candidates.into_iter().next().ok_or_else(|| TitokError::CheckpointRead {
        path: dir.to_path_buf(),
        reason: "no model.safetensors, *.safetensors or *.bin in this folder".into(),
    })
}

/// Saves any module as a native Burn `.bpk` file, atomically.
///
/// # Errors
/// [`TitokError::Write`].
pub fn save_bpk<M: Module + Clone>(module: &M, path: &Path) -> Result<()> {
    write_atomically(path, |tmp| module.clone().save_file(tmp).map_err(|e| e.to_string()))
}

/// Loads a native Burn `.bpk` file into a module of the same structure.
///
/// # Errors
/// [`TitokError::CheckpointRead`] when the file cannot be read or does not fit.
pub fn load_bpk<M: Module>(module: M, path: &Path) -> Result<M> {
    module
        .try_load_file(path)
        .map_err(|e| TitokError::CheckpointRead { path: path.to_path_buf(), reason: e.to_string() })
}

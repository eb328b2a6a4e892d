//! `titok export SRC -o DST [--dtype f16]`: converts a tokenizer or generator between the
//! official Hugging Face layout (folder: `config.json` + `model.safetensors` with the official
//! key names) and Burn's native `.bpk` (one file, plus `NAME.config.json` beside it holding the
//! official config so that the file can be turned back into a folder).
//!
//! Both directions load strictly (every tensor name and shape checked) and write atomically.
//! f16 storage halves the size; loading converts back to f32.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleMapper, Param};
use burn::store::ModuleRecord;
use burn::tensor::{DType, Device, Tensor};
use serde_json::Value;
use titok_model::Titok;
use titok_model::checkpoint::{
    HfConfig, StorageDType, generator_config, generator_config_json, save_generator, save_titok, titok_config_json,
    write_atomically, write_bytes_atomically,
};
use titok_model::generator::{Generator, TokenPredictor};

use super::Outcome;
use crate::cli::{DTypeArg, ExportArgs};
use crate::models::{self, CLASSES_FILE, ModelKind};
use crate::outputs::refuse_special;

/// A loaded model of either kind (one value per command: the size difference does not matter).
#[allow(clippy::large_enum_variant)]
enum AnyModel {
    Tokenizer(Titok),
    Generator(Generator),
}

impl AnyModel {
    fn describe(&self) -> String {
        match self {
            Self::Tokenizer(m) => format!("TiTok tokenizer, {} parameters", m.num_params()),
            Self::Generator(m) => format!("MaskGIT generator, {} parameters", m.num_params()),
        }
    }

    /// The official `config.json` of the model.
    fn config_json(&self, name: &str) -> Value {
        match self {
            Self::Tokenizer(m) => titok_config_json(&m.config, name),
            Self::Generator(m) => generator_config_json(m.config(), name),
        }
    }
}

/// Runs `titok export`.
///
/// # Errors
/// A source that is neither a model folder nor a `.bpk`, weights that do not fit, an output
/// equal to the source, a failed write.
pub fn run(a: &ExportArgs) -> Result<Outcome> {
    let device = Device::flex();
    if same_path(&a.source, &a.output) {
        bail!("refusing to overwrite the source {} (choose another output)", a.source.display());
    }
    let (model, classes) = load(&a.source, a.config.as_deref(), &device)?;
    let dtype = match a.dtype {
        DTypeArg::F32 => StorageDType::F32,
        DTypeArg::F16 => StorageDType::F16,
    };
    let name = a.output.file_stem().map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    if is_bpk(&a.output) {
        let config = config_sidecar(&a.output);
        if same_path(&config, &a.source) || a.config.as_deref().is_some_and(|c| same_path(c, &config)) {
            bail!("refusing to overwrite the input {}", config.display());
        }
        refuse_special(&a.output)?;
        refuse_special(&config)?;
        match &model {
            AnyModel::Tokenizer(m) => save_bpk(m, &a.output, dtype)?,
            AnyModel::Generator(m) => save_bpk(m, &a.output, dtype)?,
        }
        let json = serde_json::to_string_pretty(&model.config_json(&name))?;
        write_bytes_atomically(&config, json.as_bytes())?;
        if let Some(classes) = &classes {
            write_bytes_atomically(&classes_sidecar(&a.output), classes.as_bytes())?;
        }
        println!("wrote {} and {} ({}, {:?})", a.output.display(), config.display(), model.describe(), a.dtype);
    } else {
        match &model {
            AnyModel::Tokenizer(m) => save_titok(m, &a.output, dtype)?,
            AnyModel::Generator(m) => save_generator(m, &a.output, dtype)?,
        }
        if let Some(classes) = &classes {
            write_bytes_atomically(&a.output.join(CLASSES_FILE), classes.as_bytes())?;
        }
        println!("wrote {} ({}, {:?})", a.output.display(), model.describe(), a.dtype);
    }
    Ok(Outcome::done())
}

fn is_bpk(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("bpk"))
}

/// `model.bpk` -> `model.config.json`.
fn config_sidecar(bpk: &Path) -> PathBuf {
    bpk.with_extension("config.json")
}

/// `model.bpk` -> `model.classes.txt`.
fn classes_sidecar(bpk: &Path) -> PathBuf {
    bpk.with_extension("classes.txt")
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Loads a model folder or a `.bpk` (with its config), plus the class names if any.
fn load(source: &Path, config: Option<&Path>, device: &Device) -> Result<(AnyModel, Option<String>)> {
    if source.is_dir() {
        let classes = std::fs::read_to_string(source.join(CLASSES_FILE)).ok();
        let model = match models::kind_of(source)? {
            ModelKind::Tokenizer => AnyModel::Tokenizer(models::tokenizer(Some(source), device)?.model),
            ModelKind::Generator => AnyModel::Generator(models::generator(Some(source), device)?.model),
        };
        return Ok((model, classes));
    }
    if !source.is_file() {
        bail!("{}: no such model folder or .bpk file", source.display());
    }
    if !is_bpk(source) {
        bail!("{}: expected a model folder (config.json + model.safetensors) or a .bpk file", source.display());
    }
    let config_path = config.map_or_else(|| config_sidecar(source), Path::to_path_buf);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("{}: the config of {} (pass --config)", config_path.display(), source.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", config_path.display()))?;
    let hf = HfConfig::from_value(config_path.clone(), json, None)?;
    let model = if hf.get("model.generator").is_some() {
        AnyModel::Generator(load_bpk(Generator::new(&generator_config(&hf)?, device)?, source)?)
    } else if hf.get("model.vq_model").is_some() {
        AnyModel::Tokenizer(load_bpk(Titok::new(&hf.titok()?, device)?, source)?)
    } else {
        bail!("{}: neither a tokenizer nor a generator config", config_path.display());
    };
    let classes = std::fs::read_to_string(classes_sidecar(source)).ok();
    Ok((model, classes))
}

/// Casts every float parameter to a dtype.
struct CastFloats(DType);

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// Saves a module as `.bpk`, its floats stored in `dtype`, atomically.
fn save_bpk<M: Module + Clone>(module: &M, path: &Path, dtype: StorageDType) -> Result<()> {
    let module = match dtype {
        StorageDType::F32 => module.clone(),
        StorageDType::F16 => module.clone().map(&mut CastFloats(DType::F16)),
    };
    write_atomically(path, |tmp| module.into_record().save(tmp).map_err(|e| e.to_string()))?;
    Ok(())
}

/// Loads a `.bpk` into a module of the same structure, strictly (every parameter present with
/// its shape, nothing unused); stored f16 values are converted to the module's f32.
fn load_bpk<M: Module>(module: M, path: &Path) -> Result<M> {
    let record =
        ModuleRecord::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?.cast_to_module_dtype();
    module.try_load_record(record).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

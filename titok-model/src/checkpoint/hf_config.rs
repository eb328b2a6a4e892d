//! The official `config.json` (an OmegaConf dict written by `PyTorchModelHubMixin`):
//! reading with `${...}` interpolations resolved, and conversion to and from [`TitokConfig`].
//!
//! Source: `modeling/titok.py` (which keys are read), `configs/infer/TiTok/*.yaml`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::config::{QuantizeMode, TitokConfig, VitSize, VqganConfig};
use crate::error::{Result, TitokError};

/// Name of the optional fixture side file that defines extra ViT sizes and the pixel decoder
/// width (see `../shared/golden/README.md`).
pub const FIXTURE_META: &str = "fixture_meta.json";

/// A parsed official config with interpolations resolved, plus the optional
/// `fixture_meta.json` found beside it.
#[derive(Debug, Clone)]
pub struct HfConfig {
    /// The config file.
    pub path: PathBuf,
    /// The resolved JSON.
    pub root: Value,
    /// `fixture_meta.json` from the same folder, if present.
    pub meta: Option<Value>,
}

impl HfConfig {
    /// Reads `dir/config.json` (and `dir/fixture_meta.json` when present).
    ///
    /// # Errors
    /// [`TitokError::ConfigFile`] when the file is missing, not JSON, or an interpolation
    /// cannot be resolved.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let root = read_json(&path)?;
        let meta_path = dir.join(FIXTURE_META);
        let meta = if meta_path.is_file() { Some(read_json(&meta_path)?) } else { None };
        Self::from_value(path, root, meta)
    }

    /// Wraps an already parsed config (interpolations are resolved here).
    ///
    /// # Errors
    /// [`TitokError::ConfigFile`] when an interpolation cannot be resolved.
    pub fn from_value(path: PathBuf, mut root: Value, meta: Option<Value>) -> Result<Self> {
        let snapshot = root.clone();
        resolve_interpolations(&mut root, &snapshot, 0)
            .map_err(|reason| TitokError::ConfigFile { path: path.clone(), reason })?;
        Ok(Self { path, root, meta })
    }

    /// The value at a dotted path, e.g. `model.vq_model.codebook_size`.
    pub fn get(&self, dotted: &str) -> Option<&Value> {
        lookup(&self.root, dotted)
    }

    /// An error about this file.
    pub fn error(&self, reason: impl Into<String>) -> TitokError {
        TitokError::ConfigFile { path: self.path.clone(), reason: reason.into() }
    }

    /// A required unsigned integer.
    pub fn usize(&self, dotted: &str) -> Result<usize> {
        self.usize_or(dotted, None)
    }

    /// An unsigned integer with a default when absent.
    pub fn usize_or(&self, dotted: &str, default: Option<usize>) -> Result<usize> {
        match self.get(dotted) {
            None | Some(Value::Null) => default.ok_or_else(|| self.error(format!("missing `{dotted}`"))),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.error(format!("`{dotted}` must be a non-negative integer, got {v}"))),
        }
    }

    /// A float with a default when absent.
    pub fn f64_or(&self, dotted: &str, default: f64) -> Result<f64> {
        match self.get(dotted) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.error(format!("`{dotted}` must be a number, got {v}"))),
        }
    }

    /// A boolean with a default when absent.
    pub fn bool_or(&self, dotted: &str, default: bool) -> Result<bool> {
        match self.get(dotted) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.error(format!("`{dotted}` must be true or false, got {v}"))),
        }
    }

    /// A string with a default when absent.
    pub fn str_or<'a>(&'a self, dotted: &str, default: &'a str) -> Result<&'a str> {
        match self.get(dotted) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.error(format!("`{dotted}` must be a string, got {v}"))),
        }
    }

    /// Resolves a ViT size name: `model.vq_model.size_presets` (our extension), then the
    /// fixture side file's `size_presets`, then the official table (small, base, large).
    ///
    /// # Errors
    /// [`TitokError::ConfigFile`] for an unknown name, listing the known ones.
    pub fn vit_size(&self, name: &str) -> Result<VitSize> {
        let from = |v: Option<&Value>| -> Option<Result<VitSize>> {
            let s = v?.get(name)?;
            Some(
                serde_json::from_value::<VitSize>(s.clone())
                    .map_err(|e| self.error(format!("size preset `{name}`: {e}"))),
            )
        };
        if let Some(s) = from(self.get("model.vq_model.size_presets")) {
            return s;
        }
        if let Some(s) = from(self.meta.as_ref().and_then(|m| m.get("size_presets"))) {
            return s;
        }
        match name {
            "small" | "base" | "large" => Ok(VitSize::from_name(name).expect("official size")),
            _ => {
                let mut known = vec!["small".to_string(), "base".into(), "large".into()];
                for extra in
                    [self.get("model.vq_model.size_presets"), self.meta.as_ref().and_then(|m| m.get("size_presets"))]
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_object)
                {
                    known.extend(extra.keys().cloned());
                }
                Err(self.error(format!("unknown ViT size `{name}`; known sizes: {}", known.join(", "))))
            }
        }
    }

    /// The MaskGIT-VQGAN pixel decoder configuration of a two-stage model: official numbers,
    /// with `hidden_channels` from `model.vq_model.pixel_decoder` (our extension) or the
    /// fixture side file's `pixel_decoder` when present.
    pub fn pixel_vqgan(&self) -> Result<VqganConfig> {
        let hidden = self
            .get("model.vq_model.pixel_decoder.hidden_channels")
            .or_else(|| self.meta.as_ref().and_then(|m| lookup(m, "pixel_decoder.hidden_channels")));
        let mut c = VqganConfig::official();
        if let Some(h) = hidden {
            c.hidden_channels = h
                .as_u64()
                .ok_or_else(|| self.error(format!("pixel decoder hidden_channels must be an integer, got {h}")))?
                as usize;
        }
        Ok(c)
    }

    /// The [`TitokConfig`] described by `model.vq_model` and `dataset.preprocessing`.
    ///
    /// # Errors
    /// [`TitokError::ConfigFile`] for missing or ill-typed fields, unknown size names or
    /// quantize modes; [`TitokError::Config`] when the result does not validate.
    pub fn titok(&self) -> Result<TitokConfig> {
        let vq = "model.vq_model";
        if self.get(vq).is_none() {
            return Err(self.error("no `model.vq_model` section: not a TiTok tokenizer config"));
        }
        let p = |k: &str| format!("{vq}.{k}");
        let enc_patch = self.usize_or(&p("vit_enc_patch_size"), Some(16))?;
        let dec_patch = self.usize_or(&p("vit_dec_patch_size"), Some(16))?;
        if enc_patch != dec_patch {
            return Err(
                self.error(format!("encoder patch size {enc_patch} != decoder patch size {dec_patch} (not supported)"))
            );
        }
        let quantize_mode = match self.str_or(&p("quantize_mode"), "vq")? {
            "vq" => QuantizeMode::Vq,
            "vae" => QuantizeMode::Vae,
            other => return Err(self.error(format!("unknown quantize_mode `{other}` (expected vq or vae)"))),
        };
        let is_legacy = self.bool_or(&p("is_legacy"), true)?;
        let config = TitokConfig {
            image_size: self.usize_or("dataset.preprocessing.crop_size", Some(256))?,
            patch_size: enc_patch,
            encoder: self.vit_size(self.str_or(&p("vit_enc_model_size"), "")?)?,
            decoder: self.vit_size(self.str_or(&p("vit_dec_model_size"), "")?)?,
            num_latent_tokens: self.usize(&p("num_latent_tokens"))?,
            token_size: self.usize(&p("token_size"))?,
            codebook_size: match quantize_mode {
                QuantizeMode::Vq => self.usize(&p("codebook_size"))?,
                QuantizeMode::Vae => self.usize_or(&p("codebook_size"), Some(0))?,
            },
            use_l2_norm: self.bool_or(&p("use_l2_norm"), false)?,
            commitment_cost: self.f64_or(&p("commitment_cost"), 0.25)?,
            quantize_mode,
            is_legacy,
            finetune_decoder: self.bool_or(&p("finetune_decoder"), false)?,
            pixel_vqgan: self.pixel_vqgan()?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The official `config.json` for a TiTok configuration. Sizes without an official name and a
/// non-official pixel-decoder width are written as extensions the official code ignores
/// (`size_presets`, `pixel_decoder`) so that [`HfConfig::titok`] reads them back exactly.
pub fn titok_config_json(config: &TitokConfig, name: &str) -> Value {
    let mut vq = Map::new();
    let size_name = |s: &VitSize, fallback: &str| -> String {
        match s.name() {
            Some(n) if matches!(n, "small" | "base" | "large") => n.to_string(),
            _ => fallback.to_string(),
        }
    };
    let enc = size_name(&config.encoder, "custom_encoder");
    let dec = size_name(&config.decoder, "custom_decoder");
    let mut presets = Map::new();
    for (n, s) in [(&enc, &config.encoder), (&dec, &config.decoder)] {
        if n.starts_with("custom") {
            presets.insert(n.clone(), serde_json::to_value(s).expect("serialisable"));
        }
    }
    if config.quantize_mode == QuantizeMode::Vq {
        vq.insert("codebook_size".into(), json!(config.codebook_size));
    }
    vq.insert("token_size".into(), json!(config.token_size));
    if config.quantize_mode == QuantizeMode::Vq {
        vq.insert("use_l2_norm".into(), json!(config.use_l2_norm));
        vq.insert("commitment_cost".into(), json!(config.commitment_cost));
    }
    vq.insert("vit_enc_model_size".into(), json!(enc));
    vq.insert("vit_dec_model_size".into(), json!(dec));
    vq.insert("vit_enc_patch_size".into(), json!(config.patch_size));
    vq.insert("vit_dec_patch_size".into(), json!(config.patch_size));
    vq.insert("num_latent_tokens".into(), json!(config.num_latent_tokens));
    vq.insert("finetune_decoder".into(), json!(config.finetune_decoder));
    vq.insert("is_legacy".into(), json!(config.is_legacy));
    vq.insert(
        "quantize_mode".into(),
        json!(match config.quantize_mode {
            QuantizeMode::Vq => "vq",
            QuantizeMode::Vae => "vae",
        }),
    );
    if !presets.is_empty() {
        vq.insert("size_presets".into(), Value::Object(presets));
    }
    if config.is_legacy && config.pixel_vqgan != VqganConfig::official() {
        vq.insert("pixel_decoder".into(), json!({ "hidden_channels": config.pixel_vqgan.hidden_channels }));
    }
    json!({
        "experiment": { "tokenizer_checkpoint": format!("{name}.bin"), "output_dir": name },
        "model": { "vq_model": Value::Object(vq) },
        "dataset": { "preprocessing": { "crop_size": config.image_size } }
    })
}

fn read_json(path: &Path) -> Result<Value> {
    super::refuse_stand_in(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| TitokError::ConfigFile { path: path.to_path_buf(), reason: e.to_string() })?;
    serde_json::from_str(&text)
        .map_err(|e| TitokError::ConfigFile { path: path.to_path_buf(), reason: format!("not valid JSON: {e}") })
}

/// The value at a dotted path.
pub fn lookup<'a>(root: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(root, |v, key| v.get(key))
}

/// Replaces every string of the form `${a.b.c}` (OmegaConf interpolation) by the value it
/// points to; strings that merely contain interpolations get them substituted as text.
fn resolve_interpolations(v: &mut Value, root: &Value, depth: usize) -> Result<(), String> {
    if depth > 16 {
        return Err("interpolations nest more than 16 levels (a cycle?)".into());
    }
    match v {
        Value::String(s) if s.contains("${") => {
            if let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')).filter(|i| !i.contains("${")) {
                let mut target =
                    lookup(root, inner).ok_or_else(|| format!("interpolation `{s}` points to nothing"))?.clone();
                resolve_interpolations(&mut target, root, depth + 1)?;
                *v = target;
            } else {
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let end = rest[start..].find('}').ok_or_else(|| format!("unterminated interpolation in `{s}`"))?;
                    let key = &rest[start + 2..start + end];
                    let mut target = lookup(root, key)
                        .ok_or_else(|| format!("interpolation `${{{key}}}` points to nothing"))?
                        .clone();
                    resolve_interpolations(&mut target, root, depth + 1)?;
                    match target {
                        Value::String(t) => out.push_str(&t),
                        other => out.push_str(&other.to_string()),
                    }
                    rest = &rest[start + end + 1..];
                }
                out.push_str(rest);
                *v = Value::String(out);
            }
        }
        Value::Array(items) => {
            for item in items {
                resolve_interpolations(item, root, depth)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                resolve_interpolations(item, root, depth)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolations_resolve_to_typed_values() {
        let root = json!({
            "model": { "vq_model": { "num_latent_tokens": 32 },
                       "generator": { "image_seq_len": "${model.vq_model.num_latent_tokens}",
                                      "name": "seq${model.vq_model.num_latent_tokens}" } }
        });
        let c = HfConfig::from_value("x".into(), root, None).unwrap();
        assert_eq!(c.get("model.generator.image_seq_len"), Some(&json!(32)));
        assert_eq!(c.get("model.generator.name"), Some(&json!("seq32")));
        let bad = json!({ "a": "${b.c}" });
        assert!(HfConfig::from_value("x".into(), bad, None).is_err());
    }

    #[test]
    fn config_json_round_trips_every_preset() {
        for name in TitokConfig::PRESETS {
            let c = TitokConfig::preset(name).unwrap();
            let v = titok_config_json(&c, name);
            let back = HfConfig::from_value("x".into(), v, None).unwrap().titok().unwrap();
            assert_eq!(back, c, "{name}");
        }
        let mut custom = TitokConfig::s128();
        custom.encoder = VitSize::new(96, 3, 6);
        custom.pixel_vqgan.hidden_channels = 32;
        let v = titok_config_json(&custom, "c");
        assert_eq!(HfConfig::from_value("x".into(), v, None).unwrap().titok().unwrap(), custom);
    }

    #[test]
    fn unknown_size_name_is_a_clear_error() {
        let root = json!({ "model": { "vq_model": {
            "vit_enc_model_size": "gigantic", "vit_dec_model_size": "small",
            "num_latent_tokens": 8, "token_size": 12, "codebook_size": 64 } } });
        let err = HfConfig::from_value("x".into(), root, None).unwrap().titok().unwrap_err().to_string();
        assert!(err.contains("unknown ViT size `gigantic`") && err.contains("small, base, large"), "{err}");
    }
}

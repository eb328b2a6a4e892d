//! Official MaskGIT generator folders (`yucornetto/generator_titok_{l32,b64,s128}_imagenet`):
//! `config.json` (the OmegaConf dict: `model.generator.*`, `model.vq_model.codebook_size`,
//! `image_seq_len` as the interpolation `${model.vq_model.num_latent_tokens}`) and
//! `model.safetensors` with the official keys ([`keymap::IMAGEBERT`] / [`keymap::UVITBERT`]).
//! Loading is strict like the tokenizer's; export writes both files back in the official form.
//!
//! Extension keys (ignored by the official code, written only so that a saved folder reloads
//! the same sampler defaults): `model.generator.guidance_scale_pow`,
//! `model.generator.softmax_temperature_annealing`, `model.generator.mask_schedule`.
//!
//! Source: `modeling/maskgit.py` (which keys are read), `configs/infer/TiTok/*.yaml`.

use std::path::Path;

use burn::tensor::Device;
use serde_json::{Value, json};

use super::{
    CONFIG_FILE, HfConfig, StorageDType, WEIGHTS_FILE, keymap, load_pytorch, load_safetensors, save_safetensors,
    write_bytes_atomically,
};
use crate::error::Result;
use crate::generator::{
    Generator, GeneratorConfig, GeneratorKind, GuidanceDecay, ImageBert, MaskSchedule, SamplerConfig, UViTBert,
};

/// The [`GeneratorConfig`] of an official config: `model.generator.*` (sizes default to the
/// released BERT when absent), `model.vq_model.codebook_size`, and `image_seq_len` (or
/// `model.vq_model.num_latent_tokens`).
///
/// # Errors
/// [`crate::TitokError::ConfigFile`] for a missing section or ill-typed field,
/// [`crate::TitokError::Config`] for unknown names or a config that does not validate.
pub fn generator_config(c: &HfConfig) -> Result<GeneratorConfig> {
    let g = "model.generator";
    if c.get(g).is_none() {
        return Err(c.error("no `model.generator` section: not a MaskGIT generator config"));
    }
    let p = |k: &str| format!("{g}.{k}");
    let d = GeneratorConfig::l32();
    let s = SamplerConfig::default();
    let seq_len = match c.get(&p("image_seq_len")) {
        Some(_) => c.usize(&p("image_seq_len"))?,
        None => c.usize("model.vq_model.num_latent_tokens")?,
    };
    let mask_schedule = match c.get(&p("mask_schedule")) {
        None => MaskSchedule::Arccos,
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| c.error(format!("{}: {e}", p("mask_schedule"))))?,
    };
    let config = GeneratorConfig {
        kind: GeneratorKind::from_official(c.str_or(&p("model_type"), "ViT")?)?,
        hidden_size: c.usize_or(&p("hidden_size"), Some(d.hidden_size))?,
        num_hidden_layers: c.usize_or(&p("num_hidden_layers"), Some(d.num_hidden_layers))?,
        num_attention_heads: c.usize_or(&p("num_attention_heads"), Some(d.num_attention_heads))?,
        intermediate_size: c.usize_or(&p("intermediate_size"), Some(d.intermediate_size))?,
        dropout: c.f64_or(&p("dropout"), d.dropout)?,
        attn_drop: c.f64_or(&p("attn_drop"), d.attn_drop)?,
        image_seq_len: seq_len,
        codebook_size: c.usize("model.vq_model.codebook_size")?,
        condition_num_classes: c.usize_or(&p("condition_num_classes"), Some(d.condition_num_classes))?,
        class_label_dropout: c.f64_or(&p("class_label_dropout"), d.class_label_dropout)?,
        sampling: SamplerConfig {
            num_steps: c.usize_or(&p("num_steps"), Some(s.num_steps))?,
            randomize_temperature: c.f64_or(&p("randomize_temperature"), s.randomize_temperature)?,
            guidance_scale: c.f64_or(&p("guidance_scale"), s.guidance_scale)?,
            guidance_decay: GuidanceDecay::from_official(c.str_or(&p("guidance_decay"), "constant")?)?,
            guidance_scale_pow: c.f64_or(&p("guidance_scale_pow"), s.guidance_scale_pow)?,
            // The official ImageNet sampling script always anneals.
            softmax_temperature_annealing: c.bool_or(&p("softmax_temperature_annealing"), true)?,
            mask_schedule,
        },
    };
    config.validate()?;
    Ok(config)
}

/// The official `config.json` of a generator (plus the extension keys of the module docs).
pub fn generator_config_json(config: &GeneratorConfig, name: &str) -> Value {
    let s = &config.sampling;
    json!({
        "experiment": { "generator_checkpoint": format!("{name}.bin"), "output_dir": name },
        "model": {
            "vq_model": { "codebook_size": config.codebook_size, "num_latent_tokens": config.image_seq_len },
            "generator": {
                "model_type": config.kind.official_name(),
                "hidden_size": config.hidden_size,
                "num_hidden_layers": config.num_hidden_layers,
                "num_attention_heads": config.num_attention_heads,
                "intermediate_size": config.intermediate_size,
                "dropout": config.dropout,
                "attn_drop": config.attn_drop,
                "num_steps": s.num_steps,
                "class_label_dropout": config.class_label_dropout,
                "image_seq_len": "${model.vq_model.num_latent_tokens}",
                "condition_num_classes": config.condition_num_classes,
                "randomize_temperature": s.randomize_temperature,
                "guidance_scale": s.guidance_scale,
                "guidance_decay": s.guidance_decay.official_name(),
                "guidance_scale_pow": s.guidance_scale_pow,
                "softmax_temperature_annealing": s.softmax_temperature_annealing,
                "mask_schedule": s.mask_schedule,
            }
        },
        "dataset": { "preprocessing": { "crop_size": 256 } }
    })
}

/// Loads an official generator folder (`config.json` + `model.safetensors`), e.g. a download
/// of `yucornetto/generator_titok_l32_imagenet`; the architecture follows `model_type`.
///
/// # Errors
/// [`crate::TitokError::ConfigFile`]/[`crate::TitokError::Config`] for the config,
/// [`crate::TitokError::CheckpointRead`] for unreadable weights and
/// [`crate::TitokError::CheckpointMismatch`] listing every missing, unexpected or mis-shaped key.
pub fn load_generator(dir: &Path, device: &Device) -> Result<Generator> {
    let config = generator_config(&HfConfig::from_dir(dir)?)?;
    load_generator_weights(&dir.join(WEIGHTS_FILE), &config, device)
}

/// Loads generator weights for a known configuration: an official `model.safetensors`, or a
/// torch-pickle state dict such as `generator_titok_l32.bin` of `fun-research/TiTok` (with
/// e.g. [`GeneratorConfig::l32`]).
///
/// # Errors
/// [`crate::TitokError::Config`] for an invalid config, [`crate::TitokError::CheckpointRead`]
/// and [`crate::TitokError::CheckpointMismatch`] as [`load_generator`].
pub fn load_generator_weights(weights: &Path, config: &GeneratorConfig, device: &Device) -> Result<Generator> {
    let pickle = matches!(weights.extension().and_then(|e| e.to_str()), Some("bin" | "pth" | "pt"));
    Ok(match (config.kind, pickle) {
        (GeneratorKind::Bert, false) => {
            Generator::Bert(load_safetensors(ImageBert::new(config, device)?, weights, &keymap::IMAGEBERT)?)
        }
        (GeneratorKind::Bert, true) => {
            Generator::Bert(load_pytorch(ImageBert::new(config, device)?, weights, &keymap::IMAGEBERT)?)
        }
        (GeneratorKind::UVit, false) => {
            Generator::UVit(load_safetensors(UViTBert::new(config, device)?, weights, &keymap::UVITBERT)?)
        }
        (GeneratorKind::UVit, true) => {
            Generator::UVit(load_pytorch(UViTBert::new(config, device)?, weights, &keymap::UVITBERT)?)
        }
    })
}

/// Saves a generator as an official folder that [`load_generator`] and the official
/// `ImageBert/UViTBert.from_pretrained` read back (official keys, PyTorch layouts).
///
/// # Errors
/// [`crate::TitokError::Write`].
pub fn save_generator(model: &Generator, dir: &Path, dtype: StorageDType) -> Result<()> {
    let weights = dir.join(WEIGHTS_FILE);
    let config = match model {
        Generator::Bert(m) => {
            save_safetensors(m, &weights, &keymap::IMAGEBERT, dtype)?;
            &m.config
        }
        Generator::UVit(m) => {
            save_safetensors(m, &weights, &keymap::UVITBERT, dtype)?;
            &m.config
        }
    };
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "generator".into());
    let json = generator_config_json(config, &name);
    write_bytes_atomically(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&json).expect("json").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_round_trips_every_preset() {
        for name in GeneratorConfig::PRESETS {
            let c = GeneratorConfig::preset(name).unwrap();
            let v = generator_config_json(&c, name);
            let back = generator_config(&HfConfig::from_value("x".into(), v, None).unwrap()).unwrap();
            assert_eq!(back, c, "{name}");
        }
    }

    #[test]
    fn missing_sections_and_bad_names_are_errors() {
        let no_gen = json!({ "model": { "vq_model": { "codebook_size": 64 } } });
        let e = generator_config(&HfConfig::from_value("x".into(), no_gen, None).unwrap()).unwrap_err();
        assert!(e.to_string().contains("model.generator"), "{e}");
        let mut v = generator_config_json(&GeneratorConfig::tiny(), "t");
        v["model"]["generator"]["guidance_decay"] = json!("exponential");
        assert!(generator_config(&HfConfig::from_value("x".into(), v, None).unwrap()).is_err());
    }
}

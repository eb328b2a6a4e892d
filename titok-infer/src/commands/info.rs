//! `titok info [DIR]`: what a model folder holds: configuration, parameter counts, codebook
//! size, token count, resolution, storage precision.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Result;
use burn::module::Module;
use burn::tensor::Device;
use titok_model::Titok;
use titok_model::checkpoint::{HfConfig, WEIGHTS_FILE, read_safetensors_header, titok_config_json};
use titok_model::config::{QuantizeMode, VitSize};
use titok_model::generator::{GeneratorKind, TokenPredictor};

use super::Outcome;
use super::generate::describe_sampler;
use super::reconstruct::compression;
use crate::cli::{GlobalArgs, InfoArgs};
use crate::embedded;
use crate::models::{self, LoadedGenerator, ModelKind};

/// Runs `titok info`.
///
/// # Errors
/// A folder that is not a model, or a model that cannot be loaded.
pub fn run(g: &GlobalArgs, a: &InfoArgs) -> Result<Outcome> {
    // Only shapes are needed: the CPU, whatever --device says.
    let device = Device::flex();
    match &a.folder {
        Some(dir) => match models::kind_of(dir)? {
            ModelKind::Tokenizer => tokenizer_info(Some(dir), &device)?,
            ModelKind::Generator => generator_info(Some(dir), &device)?,
        },
        None => {
            tokenizer_info(g.model.as_deref(), &device)?;
            println!();
            generator_info(g.generator.as_deref(), &device)?;
        }
    }
    Ok(Outcome::done())
}

fn vit(s: &VitSize) -> String {
    format!("ViT width {}, {} layers, {} heads, MLP {}", s.width, s.num_layers, s.num_heads, s.mlp_width())
}

/// Storage dtypes and size of a folder's `model.safetensors`.
fn weights_line(dir: &Path) -> String {
    let path = dir.join(WEIGHTS_FILE);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    match read_safetensors_header(&path) {
        Ok(header) => {
            let dtypes: BTreeSet<&str> = header.values().map(|t| t.dtype.as_str()).collect();
            let dtypes: Vec<&str> = dtypes.into_iter().collect();
            format!(
                "{WEIGHTS_FILE}: {} tensors, {} storage, {:.2} MiB",
                header.len(),
                dtypes.join("+"),
                size as f64 / (1024.0 * 1024.0)
            )
        }
        Err(e) => format!("{WEIGHTS_FILE}: {e}"),
    }
}

fn tokenizer_info(dir: Option<&Path>, device: &Device) -> Result<()> {
    let (tok, weights) = match dir {
        Some(d) => (models::tokenizer(Some(d), device)?, weights_line(d)),
        None => {
            let tmp = embedded::TOKENIZER.materialize()?;
            let t = models::tokenizer(Some(tmp.path()), device)?;
            (
                models::Tokenizer { model: t.model, source: format!("embedded {}", embedded::TOKENIZER.name) },
                weights_line(tmp.path()),
            )
        }
    };
    let m: &Titok = &tok.model;
    let c = &m.config;
    let kind = match (c.quantize_mode, c.is_legacy, c.finetune_decoder) {
        (QuantizeMode::Vae, _, _) => "single-stage VAE (continuous tokens)",
        (QuantizeMode::Vq, false, _) => "single-stage VQ",
        (QuantizeMode::Vq, true, true) => "two-stage (legacy) VQ, stage 2: MaskGIT-VQGAN pixel decoder",
        (QuantizeMode::Vq, true, false) => "two-stage (legacy) VQ, stage 1: decodes to proxy codes",
    };
    let g = c.grid_size();
    println!("tokenizer: {}", tok.source);
    println!("  kind           {kind}");
    println!(
        "  resolution     {s}x{s} px, patch {p} ({g}x{g} = {} patches)",
        g * g,
        s = c.image_size,
        p = c.patch_size
    );
    println!("  tokens         {} per image (1D), {} channels each", c.num_latent_tokens, c.token_size);
    if c.quantize_mode == QuantizeMode::Vq {
        let bits = (c.codebook_size.max(2) as f64).log2().ceil();
        let l2 = if c.use_l2_norm { ", l2-normalised" } else { "" };
        println!("  codebook       {} codes ({bits} bits per token){l2}", c.codebook_size);
    }
    println!("  compression    {}", compression(m));
    println!("  encoder        {}", vit(&c.encoder));
    println!("  decoder        {}", vit(&c.decoder));
    if c.is_legacy {
        let v = &c.pixel_vqgan;
        println!(
            "  proxy codes    MaskGIT-VQGAN codebook {} x {}, hidden channels {}",
            v.codebook_size, v.z_channels, v.hidden_channels
        );
    }
    println!("  weights        {weights}");
    println!("parameters");
    let rows = [
        ("latent tokens", m.latent_tokens.val().dims().iter().product::<usize>()),
        ("encoder", m.encoder.num_params()),
        ("quantizer", m.quantize.as_ref().map_or(0, Module::num_params)),
        ("decoder", m.decoder.num_params()),
        ("pixel codebook", m.pixel_quantize.as_ref().map_or(0, Module::num_params)),
        ("pixel decoder", m.pixel_decoder.as_ref().map_or(0, Module::num_params)),
    ];
    for (name, n) in rows.iter().filter(|(_, n)| *n > 0) {
        println!("  {name:<15}{n}");
    }
    println!("  {:<15}{}", "total", m.num_params());
    let name = dir
        .and_then(|d| d.file_name())
        .map_or_else(|| embedded::TOKENIZER.name.to_string(), |n| n.to_string_lossy().into_owned());
    println!("config (official config.json form)");
    println!("{}", serde_json::to_string_pretty(&titok_config_json(c, &name))?);
    Ok(())
}

fn generator_info(dir: Option<&Path>, device: &Device) -> Result<()> {
    let (gen_, weights, config): (LoadedGenerator, String, HfConfig) = match dir {
        Some(d) => (models::generator(Some(d), device)?, weights_line(d), HfConfig::from_dir(d)?),
        None => {
            let tmp = embedded::GENERATOR.materialize()?;
            (models::generator(None, device)?, weights_line(tmp.path()), HfConfig::from_dir(tmp.path())?)
        }
    };
    let c = gen_.model.config();
    let layout = gen_.model.layout();
    let arch = match c.kind {
        GeneratorKind::Bert => "BERT (official model_type ViT)",
        GeneratorKind::UVit => "U-ViT (official model_type UViT)",
    };
    println!("generator: {}", gen_.source);
    println!(
        "  architecture   {arch}, hidden {}, {} layers, {} heads, MLP {}",
        c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size
    );
    println!("  tokens         {} per image, codebook {} codes", layout.seq_len, layout.codebook_size);
    let first: Vec<&str> = (0..gen_.classes.len().min(10)).map(|i| gen_.classes.name(i)).collect();
    let more = if gen_.classes.len() > 10 { ", ..." } else { "" };
    println!("  classes        {} ({}{more})", layout.num_classes, first.join(", "));
    println!("  vocabulary     {} ids (codes, mask, classes, drop label)", layout.vocab_size());
    println!("  sampling       {}", describe_sampler(&c.sampling, 0).trim_end_matches(", seed 0"));
    println!("  weights        {weights}");
    println!("parameters");
    println!("  {:<15}{}", "total", gen_.model.num_params());
    println!("config.json (resolved)");
    println!("{}", serde_json::to_string_pretty(&config.root)?);
    Ok(())
}

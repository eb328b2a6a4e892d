//! Writes the default models that the `titok` binary embeds, in the official Hugging Face
//! layout, under `assets/models/`:
//!
//! - `titok-cifar10/`: a TiTok tokenizer for 32x32 images, stored in f16. With
//!   `--tokenizer DIR` it is a copy of a trained export (e.g. a training run's
//!   `checkpoints/step-N/`); without it, and only when the folder does not exist yet, a
//!   random-weight stand-in of the CIFAR-10 configuration (`titok-train/configs/cifar10-titok-s32.json`:
//!   patch 4, width 128, 4 + 4 layers, K = 32, 1024 x 16 codebook).
//! - `maskgit-cifar10/`: a class-conditional MaskGIT generator over that tokenizer's tokens
//!   (10 classes) and `classes.txt` with the CIFAR-10 class names. With `--generator DIR` a copy
//!   of a trained one; with `--random-generator` (or when the folder does not exist) a tiny
//!   random-weight BERT (64 wide, 2 layers, 4 heads, MLP 256) matching the tokenizer's codebook
//!   and token count, with the TiTok-L-32 sampling defaults.
//!
//! Build and run (release profile, whole workspace, so that Burn is not rebuilt):
//! `cargo build --release --workspace --examples && target/release/examples/default_assets [--tokenizer DIR] [--generator DIR | --random-generator]`.
//! Rebuild `titok` afterwards: it embeds the files with `include_bytes!`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use titok_model::Titok;
use titok_model::checkpoint::{StorageDType, load_generator, load_titok, save_generator, save_titok};
use titok_model::config::{QuantizeMode, TitokConfig, VitSize, VqganConfig};
use titok_model::generator::{Generator, GeneratorConfig, SamplerConfig, TokenPredictor};

/// The CIFAR-10 class names in label order (sorted class folders of the dataset).
const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

fn main() -> Result<()> {
    let mut tokenizer_src: Option<PathBuf> = None;
    let mut generator_src: Option<PathBuf> = None;
    let mut random_generator = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tokenizer" => tokenizer_src = Some(args.next().context("--tokenizer DIR")?.into()),
            "--generator" => generator_src = Some(args.next().context("--generator DIR")?.into()),
            "--random-generator" => random_generator = true,
            other => bail!(
                "unknown argument {other}; usage: default_assets [--tokenizer DIR] [--generator DIR | --random-generator]"
            ),
        }
    }
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models");
    let tok_dir = models.join("titok-cifar10");
    let gen_dir = models.join("maskgit-cifar10");
    let device = Device::flex();

    let tokenizer = match &tokenizer_src {
        Some(src) => load_titok(src, &device).with_context(|| format!("loading {}", src.display()))?,
        None if tok_dir.join("model.safetensors").is_file() => load_titok(&tok_dir, &device)?,
        None => Titok::new(&cifar10_config(), &device)?,
    };
    if tokenizer_src.is_some() || !tok_dir.join("model.safetensors").is_file() {
        save_titok(&tokenizer, &tok_dir, StorageDType::F16)?;
        println!("wrote {} ({} parameters, f16)", tok_dir.display(), burn::module::Module::num_params(&tokenizer));
    }

    let config = &tokenizer.config;
    let generator = match &generator_src {
        Some(src) => load_generator(src, &device).with_context(|| format!("loading {}", src.display()))?,
        None if !random_generator && gen_dir.join("model.safetensors").is_file() => load_generator(&gen_dir, &device)?,
        None => {
            let g = GeneratorConfig {
                hidden_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                intermediate_size: 256,
                image_seq_len: config.num_latent_tokens,
                codebook_size: config.codebook_size,
                condition_num_classes: CIFAR10_CLASSES.len(),
                sampling: SamplerConfig::l32(),
                ..GeneratorConfig::l32()
            };
            Generator::new(&g, &device)?
        }
    };
    let layout = generator.layout();
    if layout.codebook_size != config.codebook_size || layout.seq_len != config.num_latent_tokens {
        bail!(
            "the generator expects {} tokens of a {}-code codebook, the tokenizer has {} tokens of {}",
            layout.seq_len,
            layout.codebook_size,
            config.num_latent_tokens,
            config.codebook_size
        );
    }
    save_generator(&generator, &gen_dir, StorageDType::F16)?;
    let classes = CIFAR10_CLASSES.join("\n") + "\n";
    titok_model::checkpoint::write_bytes_atomically(&gen_dir.join("classes.txt"), classes.as_bytes())?;
    println!(
        "wrote {} ({} parameters, f16, {} classes)",
        gen_dir.display(),
        burn::module::Module::num_params(&generator),
        layout.num_classes
    );
    Ok(())
}

/// The CIFAR-10 tokenizer configuration of `titok-train/configs/cifar10-titok-s32.json`.
fn cifar10_config() -> TitokConfig {
    let vit = VitSize { width: 128, num_layers: 4, num_heads: 4, mlp_ratio: 4.0 };
    TitokConfig {
        image_size: 32,
        patch_size: 4,
        encoder: vit,
        decoder: vit,
        num_latent_tokens: 32,
        token_size: 16,
        codebook_size: 1024,
        use_l2_norm: true,
        commitment_cost: 0.25,
        quantize_mode: QuantizeMode::Vq,
        is_legacy: false,
        finetune_decoder: false,
        pixel_vqgan: VqganConfig::official(),
    }
}

//! `titok reconstruct IMG|DIR... -o OUT`: image -> tokens -> image, with the reconstruction,
//! a side-by-side PNG and the numbers: tokens per image, bytes of tokens vs pixels, PSNR, SSIM
//! and LPIPS.

use std::path::Path;

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use image::RgbImage;
use titok_data::image_io::{image_grid, tensor_to_images};
use titok_eval::Lpips;
use titok_eval::{RunningMean, psnr, rfid_round, ssim};
use titok_model::Titok;
use titok_model::config::QuantizeMode;

use super::{Outcome, Timer};
use crate::cli::{GlobalArgs, ReconstructArgs};
use crate::inputs::{self, Batch, no_pixels_error};
use crate::models;
use crate::outputs::{OutputGuard, UniqueStems, default_zoom, write_png, zoom};
use crate::weights;

/// Runs `titok reconstruct`.
///
/// # Errors
/// Model loading, or a bad `--lpips-weights` path.
pub fn run(g: &GlobalArgs, a: &ReconstructArgs) -> Result<Outcome> {
    let device = models::device(g.device)?;
    let tok = models::tokenizer(g.model.as_deref(), &device)?;
    let model = &tok.model;
    if !model.config.decodes_to_pixels() {
        return Err(no_pixels_error(&tok.source));
    }
    let size = model.config.image_size as u32;
    let lpips = LpipsMetric::find(a.lpips_weights.as_deref(), size as usize, &device)?;
    let inputs = inputs::collect(&a.inputs);
    let guard = OutputGuard::new(inputs.canonical());
    let mut outcome = Outcome::default();
    for e in &inputs.errors {
        outcome.fail(e);
    }
    println!("{}: {}", tok.source, compression(model));
    let zoom_factor = a.zoom.unwrap_or_else(|| default_zoom(size));
    let bar = titok_data::progress_bar(inputs.files.len() as u64, "reconstruct");
    let timer = Timer::start();
    let (mut mean_psnr, mut mean_ssim, mut mean_lpips) =
        (RunningMean::default(), RunningMean::default(), RunningMean::default());
    let mut stems = UniqueStems::default();
    for chunk in inputs.files.chunks(g.batch_size as usize) {
        let batch = inputs::load_batch(chunk, size, &device, &mut |m| bar.suspend(|| outcome.fail(m)));
        bar.inc(chunk.len() as u64);
        let Some(batch) = batch else { continue };
        let scored = match reconstruct_batch(model, &batch, lpips.model.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                for item in &batch.items {
                    bar.suspend(|| outcome.fail(format!("{}: {e:#}", item.path.display())));
                }
                continue;
            }
        };
        for (i, item) in batch.items.iter().enumerate() {
            let stem = stems.stem(&item.path.to_string_lossy());
            let recon_path = a.output.join(format!("{stem}.recon.png"));
            let compare_path = a.output.join(format!("{stem}.compare.png"));
            let written = write_png(&guard, &recon_path, &scored.images[i]).and_then(|()| {
                let pair = image_grid(&[item.image.clone(), scored.images[i].clone()], 2, 1)?;
                write_png(&guard, &compare_path, &zoom(&pair, zoom_factor))
            });
            if let Err(e) = written {
                bar.suspend(|| outcome.fail(format!("{}: {e:#}", item.path.display())));
                continue;
            }
            mean_psnr.extend([scored.psnr[i]]);
            mean_ssim.extend([scored.ssim[i]]);
            let lpips_text = match &scored.lpips {
                Some(v) => {
                    mean_lpips.extend([v[i]]);
                    format!("{:.4}", v[i])
                }
                None => lpips.missing.clone(),
            };
            bar.suspend(|| {
                println!("{}: {}", item.path.display(), item.describe());
                println!("  PSNR {:.2} dB | SSIM {:.4} | LPIPS {lpips_text}", scored.psnr[i], scored.ssim[i]);
                println!("  wrote {} and {}", recon_path.display(), compare_path.display());
            });
            outcome.succeeded += 1;
        }
    }
    bar.finish_and_clear();
    if outcome.succeeded > 1 {
        let lp = mean_lpips.mean().map_or_else(|| lpips.missing.clone(), |v| format!("{v:.4}"));
        println!(
            "mean over {} images: PSNR {:.2} dB | SSIM {:.4} | LPIPS {lp}",
            outcome.succeeded,
            mean_psnr.mean().unwrap_or(f64::NAN),
            mean_ssim.mean().unwrap_or(f64::NAN)
        );
    }
    timer.summary("reconstructed", outcome.succeeded);
    Ok(outcome)
}

/// `32 tokens of 10 bits = 40 bytes vs 3072 bytes of pixels (3x32x32, 76.8x fewer)`.
pub fn compression(model: &Titok) -> String {
    let c = &model.config;
    let k = c.num_latent_tokens;
    let pixels = 3 * c.image_size * c.image_size;
    match c.quantize_mode {
        QuantizeMode::Vq => {
            let bits = (c.codebook_size.max(2) as f64).log2().ceil() as usize;
            let bytes = (k * bits) as f64 / 8.0;
            format!(
                "{k} tokens per image, {bits} bits each = {bytes} bytes of tokens vs {pixels} bytes of pixels \
                 (3x{s}x{s}, {ratio:.1}x fewer)",
                s = c.image_size,
                ratio = pixels as f64 / bytes
            )
        }
        QuantizeMode::Vae => format!(
            "{k} continuous tokens of {} channels per image (VAE; no discrete ids) vs {pixels} bytes of pixels",
            c.token_size
        ),
    }
}

/// The metrics of one batch and its reconstructions.
struct Scored {
    images: Vec<RgbImage>,
    psnr: Vec<f64>,
    ssim: Vec<f64>,
    lpips: Option<Vec<f64>>,
}

/// Encodes, decodes (from the token ids for VQ models, as `detokenize` does) and scores a batch
/// against its (centre-cropped) inputs; the reconstructions are rounded to 8 bits first, so the
/// numbers describe the saved PNGs.
fn reconstruct_batch(model: &Titok, batch: &Batch, lpips: Option<&Lpips>) -> Result<Scored> {
    let x = batch.pixels.clone(); // [B, 3, S, S]
    let recon = reconstruct_pixels(model, x.clone())?; // [B, 3, S, S], k/255
    let values = |t: Tensor<1>| -> Result<Vec<f64>> {
        Ok(t.try_into_vec_as::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?.into_iter().map(f64::from).collect())
    };
    let psnr = values(psnr(x.clone(), recon.clone())?)?;
    let ssim = values(ssim(x.clone(), recon.clone())?)?;
    let lpips = match lpips {
        Some(l) => Some(values(l.distance(x, recon.clone())?)?),
        None => None,
    };
    Ok(Scored { images: tensor_to_images(recon)?, psnr, ssim, lpips })
}

/// Image -> tokens -> image, rounded to 8 bits: `[B, 3, S, S]` in `[0, 1]` -> same shape,
/// values `k/255`.
///
/// # Errors
/// The model's errors.
pub fn reconstruct_pixels(model: &Titok, x: Tensor<4>) -> Result<Tensor<4>> {
    let enc = model.encode(x)?;
    let decoded = match enc.tokens {
        Some(ids) => model.decode_tokens(ids)?,
        None => model.decode(enc.latents),
    };
    Ok(rfid_round(decoded))
}

/// The LPIPS network when its weights were found, else why not.
pub struct LpipsMetric {
    /// The network.
    pub model: Option<Lpips>,
    /// What to print instead of a value.
    pub missing: String,
}

impl LpipsMetric {
    /// Looks for the weights (see [`weights::find`]) and loads them; LPIPS is skipped, with the
    /// reason, when none are found, they cannot be loaded, or the images are smaller than the
    /// backbone accepts.
    ///
    /// # Errors
    /// When an explicitly named weights file does not exist.
    pub fn find(explicit: Option<&Path>, size: usize, device: &Device) -> Result<Self> {
        let Some(path) = weights::find(explicit, weights::LPIPS_ENV, weights::LPIPS_FILE)? else {
            return Ok(Self { model: None, missing: "n/a (no LPIPS weights)".into() });
        };
        match Lpips::load(&path, device) {
            Ok(l) if size < l.net.min_size() => Ok(Self {
                model: None,
                missing: format!("n/a (images of {size} px are smaller than LPIPS needs, {})", l.net.min_size()),
            }),
            Ok(l) => Ok(Self { model: Some(l), missing: String::new() }),
            Err(e) => {
                eprintln!("warning: LPIPS disabled: {}", crate::inputs::one_line(&e.to_string()));
                Ok(Self { model: None, missing: "n/a (LPIPS weights unreadable)".into() })
            }
        }
    }
}

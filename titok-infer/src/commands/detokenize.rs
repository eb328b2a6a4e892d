//! `titok detokenize tokens.json -o OUT_DIR`: PNGs from token ids.

use anyhow::{Result, bail};
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::RgbImage;
use titok_data::image_io::tensor_to_images;
use titok_eval::rfid_round;
use titok_model::Titok;

use super::{Outcome, Timer};
use crate::cli::{DetokenizeArgs, GlobalArgs};
use crate::inputs::no_pixels_error;
use crate::models;
use crate::outputs::{OutputGuard, UniqueStems, write_png};
use crate::tokens::{self, TokenRow};

/// Runs `titok detokenize`.
///
/// # Errors
/// Model loading or an unreadable token file.
pub fn run(g: &GlobalArgs, a: &DetokenizeArgs) -> Result<Outcome> {
    let device = models::device(g.device)?;
    let tok = models::tokenizer(g.model.as_deref(), &device)?;
    let c = &tok.model.config;
    if tok.model.quantize.is_none() {
        bail!("{}: a VAE tokenizer has no codebook to look token ids up in", tok.source);
    }
    if !c.decodes_to_pixels() {
        return Err(no_pixels_error(&tok.source));
    }
    let rows = tokens::read(&a.tokens)?;
    let mut guard = OutputGuard::default();
    guard.protect(&a.tokens);
    guard.protect(&tokens::names_path(&a.tokens));
    let mut outcome = Outcome::default();
    let mut good = Vec::new();
    for row in rows {
        match row.and_then(|r| tokens::check_row(&r, c.num_latent_tokens, c.codebook_size).map(|()| r)) {
            Ok(r) => good.push(r),
            Err(e) => outcome.fail(e),
        }
    }
    let bar = titok_data::progress_bar(good.len() as u64, "detokenize");
    let timer = Timer::start();
    let mut stems = UniqueStems::default();
    for chunk in good.chunks(g.batch_size as usize) {
        match decode_rows(&tok.model, chunk, &device) {
            Ok(images) => {
                for (row, image) in chunk.iter().zip(images) {
                    let path = a.output.join(format!("{}.png", stems.stem(&row.file)));
                    match write_png(&guard, &path, &image) {
                        Ok(()) => {
                            bar.suspend(|| println!("{} -> {}", row.file, path.display()));
                            outcome.succeeded += 1;
                        }
                        Err(e) => bar.suspend(|| outcome.fail(format!("{}: {e:#}", row.file))),
                    }
                }
            }
            Err(e) => {
                for row in chunk {
                    bar.suspend(|| outcome.fail(format!("{}: {e:#}", row.file)));
                }
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    timer.summary("detokenized", outcome.succeeded);
    Ok(outcome)
}

/// Decodes checked rows to 8-bit images at the model resolution (see [`decode_ids`]).
///
/// # Errors
/// The model's error.
pub fn decode_rows(model: &Titok, rows: &[TokenRow], device: &Device) -> Result<Vec<RgbImage>> {
    let k = model.config.num_latent_tokens;
    let ids: Vec<i64> = rows.iter().flat_map(|r| r.tokens.iter().copied()).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows.len(), k]), device);
    decode_ids(model, ids)
}

/// Decodes `[B, K]` ids to 8-bit images: clamped to `[0, 1]` and rounded to 1/255 with
/// `rfid_round`, exactly as `titok reconstruct` does, so both give the same pixels.
///
/// # Errors
/// The model's error (ids out of range, wrong count).
pub fn decode_ids(model: &Titok, ids: Tensor<2, Int>) -> Result<Vec<RgbImage>> {
    let pixels = rfid_round(model.decode_tokens(ids)?); // [B, 3, S, S], k/255
    Ok(tensor_to_images(pixels)?)
}

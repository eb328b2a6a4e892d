//! `titok tokenize IMG|DIR... [-o tokens.json|tokens.npy]`: token ids per image.

use anyhow::{Result, bail};
use burn::tensor::Int;
use burn::tensor::Tensor;
use titok_model::Titok;

use super::{Outcome, Timer};
use crate::cli::{GlobalArgs, TokenFormat, TokenizeArgs};
use crate::inputs::{self, Batch};
use crate::models;
use crate::outputs::OutputGuard;
use crate::tokens::{self, TokenRow};

/// Runs `titok tokenize`.
///
/// # Errors
/// Model loading, an output that is one of the inputs, or a failed write.
pub fn run(g: &GlobalArgs, a: &TokenizeArgs) -> Result<Outcome> {
    let device = models::device(g.device)?;
    let tok = models::tokenizer(g.model.as_deref(), &device)?;
    if tok.model.quantize.is_none() {
        bail!("{}: a VAE tokenizer has continuous latents, not token ids", tok.source);
    }
    let inputs = inputs::collect(&a.inputs);
    let guard = OutputGuard::new(inputs.canonical());
    let format = tokens::format_for(a.output.as_deref(), a.format);
    // Output problems are reported before any image is processed.
    match &a.output {
        Some(out) if out.is_dir() => {
            bail!("-o {}: a folder; tokenize writes one file (tokens.json or tokens.npy)", out.display())
        }
        Some(out) => guard.check(out)?,
        None if format == TokenFormat::Npy => bail!("--format npy needs an output file (-o tokens.npy)"),
        None => {}
    }
    let mut outcome = Outcome::default();
    for e in &inputs.errors {
        outcome.fail(e);
    }
    let size = tok.model.config.image_size as u32;
    let bar = titok_data::progress_bar(inputs.files.len() as u64, "tokenize");
    let timer = Timer::start();
    let mut rows = Vec::new();
    for chunk in inputs.files.chunks(g.batch_size as usize) {
        let batch = inputs::load_batch(chunk, size, &device, &mut |m| bar.suspend(|| outcome.fail(m)));
        bar.inc(chunk.len() as u64);
        let Some(batch) = batch else { continue };
        match encode_ids(&tok.model, &batch) {
            Ok(ids) => {
                for (item, ids) in batch.items.iter().zip(ids) {
                    bar.suspend(|| eprintln!("{}: {} -> {} tokens", item.path.display(), item.describe(), ids.len()));
                    rows.push(TokenRow::new(item.path.display().to_string(), ids));
                    outcome.succeeded += 1;
                }
            }
            Err(e) => {
                for item in &batch.items {
                    bar.suspend(|| outcome.fail(format!("{}: {e:#}", item.path.display())));
                }
            }
        }
    }
    bar.finish_and_clear();
    if !rows.is_empty() {
        tokens::write(&guard, a.output.as_deref(), format, &rows)?;
        if let Some(out) = &a.output {
            eprintln!(
                "wrote {} rows of {} tokens to {}",
                rows.len(),
                tok.model.config.num_latent_tokens,
                out.display()
            );
        }
    }
    timer.summary("tokenized", outcome.succeeded);
    Ok(outcome)
}

/// Token ids of a batch, one `Vec` of `K` ids per image.
///
/// # Errors
/// The model's error (shape).
pub fn encode_ids(model: &Titok, batch: &Batch) -> Result<Vec<Vec<i64>>> {
    let enc = model.encode(batch.pixels.clone())?;
    let ids = enc.tokens.ok_or_else(|| anyhow::anyhow!("a VAE tokenizer has no token ids"))?;
    ids_to_rows(ids)
}

/// `[B, K]` ids to `B` rows.
///
/// # Errors
/// When the tensor cannot be read back.
pub fn ids_to_rows(ids: Tensor<2, Int>) -> Result<Vec<Vec<i64>>> {
    let [_, k] = ids.dims();
    let values = ids.try_into_vec_as::<i64>().map_err(|e| anyhow::anyhow!("cannot read token ids: {e:?}"))?;
    Ok(values.chunks(k.max(1)).map(<[i64]>::to_vec).collect())
}

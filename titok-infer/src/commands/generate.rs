//! `titok generate --class NAME|ID --num N ... -o grid.png`: class-conditional MaskGIT
//! sampling (or inpainting with `--inpaint IMG --mask SPEC`), decoded by the tokenizer, written
//! as a PNG grid with the token ids as JSON lines next to it (`grid.json`, readable by
//! `titok detokenize`).

use anyhow::{Context, Result, bail};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use image::RgbImage;
use titok_model::generator::{GivenTokens, SamplerConfig, SeededUniform, TokenPredictor, generate, inpaint};

use super::detokenize::decode_ids;
use super::tokenize::ids_to_rows;
use super::{Outcome, Timer};
use crate::cli::{GenerateArgs, GlobalArgs, SamplerArgs};
use crate::inputs;
use crate::mask;
use crate::models::{self, ClassNames};
use crate::outputs::{OutputGuard, default_zoom, sibling, write_bytes, write_png, zoom};
use crate::tokens::{TokenRow, to_jsonl};

/// The sampler settings: the generator's defaults with the command-line overrides.
///
/// # Errors
/// For settings that do not validate (e.g. a negative temperature).
pub fn sampler_config(defaults: &SamplerConfig, a: &SamplerArgs) -> Result<SamplerConfig> {
    let mut c = defaults.clone();
    if let Some(s) = a.steps {
        c.num_steps = s as usize;
    }
    if let Some(g) = a.guidance {
        c.guidance_scale = g;
    }
    if let Some(s) = a.schedule {
        c.guidance_decay = s.into();
    }
    if let Some(t) = a.temperature {
        c.randomize_temperature = t;
    }
    if let Some(m) = a.mask_schedule {
        c.mask_schedule = m.into();
    }
    c.validate()?;
    Ok(c)
}

/// One line describing sampler settings.
pub fn describe_sampler(c: &SamplerConfig, seed: u64) -> String {
    format!(
        "{} steps, guidance {} ({}), temperature {}, mask schedule {:?}, softmax annealing {}, seed {seed}",
        c.num_steps,
        c.guidance_scale,
        c.guidance_decay.official_name(),
        c.randomize_temperature,
        c.mask_schedule,
        if c.softmax_temperature_annealing { "on" } else { "off" },
    )
}

/// Runs `titok generate`.
///
/// # Errors
/// Model loading, mismatched models, bad classes or settings, unwritable outputs.
pub fn run(g: &GlobalArgs, a: &GenerateArgs) -> Result<Outcome> {
    let device = models::device(g.device)?;
    let tok = models::tokenizer(g.model.as_deref(), &device)?;
    let gen_ = models::generator(g.generator.as_deref(), &device)?;
    models::check_pair(&tok.model, &gen_.model)?;
    let sampler = sampler_config(&gen_.model.config().sampling, &a.sampler)?;
    let classes = resolve_classes(&gen_.classes, &a.classes)?;
    let num = a.num as usize;
    let k = tok.model.config.num_latent_tokens;
    let size = tok.model.config.image_size as u32;

    let mut guard = OutputGuard::default();
    let given = match (&a.inpaint, &a.mask) {
        (Some(image), Some(spec)) => {
            if classes.len() != 1 {
                bail!("--inpaint takes exactly one --class (the condition of the edit)");
            }
            guard.protect(image);
            Some(given_tokens(&tok.model, image, spec, size, &device)?)
        }
        _ => None,
    };
    if !a.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        bail!(
            "--output {} must name a .png file (the grid is a PNG; the ids go beside it as .json)",
            a.output.display()
        );
    }
    let json_path = match sibling(&a.output, "json") {
        p if p == a.output => sibling(&a.output, "tokens.json"),
        p => p,
    };
    guard.check(&a.output)?;
    guard.check(&json_path)?;

    eprintln!("generator {}, tokenizer {}", gen_.source, tok.source);
    eprintln!("sampler: {}", describe_sampler(&sampler, a.sampler.seed));
    let labels: Vec<usize> = classes.iter().flat_map(|&c| std::iter::repeat_n(c, num)).collect();
    let mut rng = SeededUniform::new(a.sampler.seed);
    let bar = titok_data::progress_bar(labels.len() as u64, "generate");
    let timer = Timer::start();
    let mut images: Vec<RgbImage> = Vec::new();
    let mut rows: Vec<TokenRow> = Vec::new();
    if let Some((ids, _)) = &given {
        // The first cell of an inpainting grid: the input as the tokenizer sees it.
        images.extend(decode_ids(&tok.model, ids.clone())?);
        rows.push(TokenRow::new(
            format!("{}-original", stem_of(a.inpaint.as_deref())),
            ids_to_rows(ids.clone())?.remove(0),
        ));
    }
    for chunk in labels.chunks(g.batch_size as usize) {
        let b = chunk.len();
        let label_t = Tensor::<1, Int>::from_data(
            TensorData::new(chunk.iter().map(|&c| c as i64).collect::<Vec<_>>(), [b]),
            &device,
        );
        let ids = match &given {
            None => generate(&gen_.model, label_t, &sampler, &mut rng)?,
            Some((ids, keep)) => {
                let g = GivenTokens { ids: ids.clone().expand([b, k]), known: keep.clone().expand([b, k]) };
                inpaint(&gen_.model, label_t, g, &sampler, &mut rng)?
            }
        }; // [b, k]
        images.extend(decode_ids(&tok.model, ids.clone())?);
        for (ids, &c) in ids_to_rows(ids)?.into_iter().zip(chunk) {
            let name =
                format!("sample-{:04}-{}", rows.len() - usize::from(given.is_some()), file_safe(gen_.classes.name(c)));
            rows.push(TokenRow {
                file: name,
                class: Some(c),
                class_name: Some(gen_.classes.name(c).to_string()),
                tokens: ids,
            });
        }
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    let factor = a.zoom.unwrap_or_else(|| default_zoom(size));
    let cells: Vec<RgbImage> = images.iter().map(|im| zoom(im, factor)).collect();
    let columns = a.columns.map_or_else(|| (num + usize::from(given.is_some())).min(16), |c| c as usize);
    let grid = titok_data::image_io::image_grid(&cells, columns, 2)?;
    write_png(&guard, &a.output, &grid).with_context(|| format!("writing {}", a.output.display()))?;
    write_bytes(&guard, &json_path, to_jsonl(&rows).as_bytes())?;
    let names: Vec<String> = classes.iter().map(|&c| format!("{c} ({})", gen_.classes.name(c))).collect();
    println!(
        "{} {} image{} of class{} {} -> {} ({} columns), token ids -> {}",
        if given.is_some() { "inpainted" } else { "generated" },
        labels.len(),
        if labels.len() == 1 { "" } else { "s" },
        if classes.len() == 1 { "" } else { "es" },
        names.join(", "),
        a.output.display(),
        columns.min(cells.len()),
        json_path.display()
    );
    timer.summary("generated", labels.len());
    Ok(Outcome { succeeded: labels.len(), failed: 0 })
}

/// Class ids for the `--class` values (every class when none is given).
///
/// # Errors
/// For an unknown, ambiguous or out-of-range class.
pub fn resolve_classes(names: &ClassNames, queries: &[String]) -> Result<Vec<usize>> {
    if queries.is_empty() {
        return Ok((0..names.len()).collect());
    }
    queries.iter().flat_map(|q| q.split(',')).filter(|q| !q.trim().is_empty()).map(|q| names.resolve(q)).collect()
}

/// The tokens of the image to inpaint (`[1, K]`) and which to keep (`[1, K]`, true = keep).
fn given_tokens(
    model: &titok_model::Titok,
    image: &std::path::Path,
    spec: &str,
    size: u32,
    device: &Device,
) -> Result<(Tensor<2, Int>, Tensor<2, Bool>)> {
    let k = model.config.num_latent_tokens;
    let regenerate = mask::parse(spec, k)?;
    let mut fail = None;
    let batch = inputs::load_batch(&[image.to_path_buf()], size, device, &mut |m| fail = Some(m));
    let Some(batch) = batch else {
        bail!("{}", fail.unwrap_or_else(|| format!("{}: unreadable", image.display())));
    };
    eprintln!(
        "inpainting {}: {}; regenerating {} of {k} tokens",
        image.display(),
        batch.items[0].describe(),
        regenerate.iter().filter(|&&m| m).count()
    );
    let ids = model
        .encode(batch.pixels)?
        .tokens
        .ok_or_else(|| anyhow::anyhow!("a VAE tokenizer has no token ids to inpaint"))?;
    let keep: Vec<bool> = regenerate.iter().map(|&m| !m).collect();
    let keep = Tensor::<2, Bool>::from_data(TensorData::new(keep, [1, k]), device);
    Ok((ids, keep))
}

fn stem_of(path: Option<&std::path::Path>) -> String {
    path.and_then(|p| p.file_stem()).map_or_else(|| "input".into(), |s| s.to_string_lossy().into_owned())
}

/// A name made safe for file names: letters, digits, `-` and `_` kept, the rest `_`.
fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

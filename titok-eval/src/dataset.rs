//! Dataset-level evaluation, what `titok eval` runs (TiTok paper §4, Tables 1-2; official
//! `evaluator/evaluator.py` and the ADM `guided-diffusion/evaluations/evaluator.py`):
//!
//! - [`evaluate_reconstruction`]: reconstruct every image of a dataset with a tokenizer and
//!   measure PSNR, SSIM, LPIPS, rFID (reconstructions against the same centre-cropped inputs,
//!   rounded with [`rfid_round`]) and the codebook usage and entropy of the tokens;
//! - [`evaluate_generation`]: sample class-conditionally with a MaskGIT generator, decode with
//!   the tokenizer and measure gFID against a [`Reference`] (an image folder or tar, or an
//!   `.npz` of statistics), optionally writing the samples as an ADM batch ([`AdmNpzWriter`]);
//! - [`image_stats`] / [`Reference::load`]: FID statistics of any image set, e.g. existing
//!   samples or the reference side.
//!
//! Images go through the eval transform ([`Transform::eval`]: shorter side resized with
//! antialiased bicubic, centre crop to the model resolution) and the batcher's decoding limits;
//! unreadable files are left out and listed in [`DatasetEval::skipped`]. Every loop shows a
//! progress bar on stderr when [`EvalOptions::progress`] is set and stderr is a terminal.

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::ProgressBar;
use titok_model::generator::{Generator, SamplerConfig, SeededUniform, TokenPredictor, generate};
use titok_model::{CodebookStats, Titok};

use super::error::{EvalError, Result};
use super::frechet::{FeatureAccumulator, FidStats};
use super::image_metrics::{psnr, rfid_round, ssim};
use super::inception::{FEATURE_DIM, InceptionV3};
use super::npz::AdmNpzWriter;
use super::report::{CodebookReport, FidKind, FidScore, MetricsReport, RunningMean};
use crate::lpips::Lpips;
use titok_data::image_io::has_image_extension;
use titok_data::{
    FileSummary, ImageBatch, ImageBatcher, ImageFolder, ImageRecord, TarImages, Transform, spread_indices,
};

/// Settings shared by the dataset loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// Images per forward pass (at least 1).
    pub batch_size: usize,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch_size: 16, progress: true }
    }
}

impl EvalOptions {
    fn check(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(EvalError::Input("batch size must be at least 1".into()));
        }
        Ok(())
    }

    fn bar(&self, total: usize, message: &str) -> ProgressBar {
        if self.progress { titok_data::progress_bar(total as u64, message) } else { ProgressBar::hidden() }
    }
}

/// The images of an evaluation set (not decoded yet).
#[derive(Debug, Clone)]
pub struct EvalImages {
    /// The records, in dataset order (or evenly spread when limited).
    pub records: Vec<ImageRecord>,
    /// `path` or `path:split`, for reports.
    pub source: String,
    /// Class names of a labelled set (class folders), else empty.
    pub class_names: Vec<String>,
    /// Image files left out while indexing (empty, or content that is not an image), as
    /// `(name, reason)`; other files (no image extension, hidden) are not listed.
    pub skipped: Vec<(String, String)>,
}

impl EvalImages {
    /// Indexes an image folder (class subfolders or flat) or a `.tar` / `.tar.gz` of one;
    /// `split` selects a sub-folder (e.g. `test`). With `limit`, keeps that many images spread
    /// evenly over the sorted set, so that every class of a class-sorted set is represented.
    ///
    /// # Errors
    /// [`EvalError::Input`] with the data pipeline's message (missing path or split, no
    /// images), or for `limit == Some(0)`.
    pub fn open(path: &Path, split: Option<&str>, limit: Option<usize>) -> Result<Self> {
        if limit == Some(0) {
            return Err(EvalError::Input("an image limit of 0 leaves nothing to evaluate".into()));
        }
        let split = split.filter(|s| !s.is_empty());
        let data_err = |e: titok_data::DataError| EvalError::Input(e.to_string());
        let list = if path.is_file() {
            TarImages::open(path, split).map_err(data_err)?.list().clone()
        } else {
            let root = split.map_or_else(|| path.to_path_buf(), |s| path.join(s));
            ImageFolder::open(&root).map_err(data_err)?.list().clone()
        };
        let (records, class_names) = (list.records().to_vec(), list.class_names().to_vec());
        let skipped = list
            .skipped()
            .iter()
            .filter(|s| has_image_extension(&s.name) && !s.name.split('/').any(|p| p.starts_with('.')))
            .map(|s| (s.name.clone(), s.reason.clone()))
            .collect();
        let records = match limit {
            Some(n) if n < records.len() => spread_indices(records.len(), n).map(|i| records[i].clone()).collect(),
            _ => records,
        };
        let source = match split {
            Some(s) => format!("{}:{s}", path.display()),
            None => path.display().to_string(),
        };
        Ok(Self { records, source, class_names, skipped })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Decoded, transformed batches of `batch_size` (an all-unreadable batch comes out empty).
    fn batches<'a>(
        &'a self,
        batcher: &'a ImageBatcher,
        batch_size: usize,
        device: &'a Device,
    ) -> impl Iterator<Item = (usize, ImageBatch)> + 'a {
        self.records.chunks(batch_size).map(move |chunk| {
            let items: Vec<(ImageRecord, u64)> = chunk.iter().cloned().map(|r| (r, 0)).collect();
            (chunk.len(), batcher.batch_with_epochs(&items, device))
        })
    }
}

/// The result of a dataset evaluation.
#[derive(Debug, Clone)]
pub struct DatasetEval {
    /// The metrics (terminal table and JSON through [`MetricsReport`]).
    pub report: MetricsReport,
    /// Files left out and why (`location`, `reason`).
    pub skipped: Vec<(String, String)>,
    /// Remarks on metrics that could not be computed.
    pub notes: Vec<String>,
    /// Why a metric may not be comparable with the official protocol: lossy or off-size
    /// samples and reference images ([`FileSummary::fid_warnings`]).
    pub warnings: Vec<String>,
    /// Wall time of the loop in seconds.
    pub seconds: f64,
    /// FID statistics of the real images when this run computed them (reconstruction with
    /// Inception and no [`ReconMetrics::real_stats`]), to save for the next run.
    pub real_stats: Option<FidStats>,
}

impl DatasetEval {
    /// Images per second of the loop.
    pub fn images_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.report.images as f64 / self.seconds } else { 0.0 }
    }
}

/// The networks a reconstruction evaluation scores with; a metric whose network is absent is
/// left out of the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReconMetrics<'a> {
    /// The FID network (rFID).
    pub inception: Option<&'a InceptionV3>,
    /// The LPIPS network.
    pub lpips: Option<&'a Lpips>,
    /// FID statistics of the same input images computed before (e.g. saved by `titok eval gen
    /// --save-reference-stats` or `titok eval recon --save-real-stats` on the same images at the
    /// same resolution): only the reconstructions then go through Inception, half the cost.
    /// Their image count `n`, when stored, must equal the number of images read.
    pub real_stats: Option<&'a FidStats>,
}

fn host_values(t: Tensor<1>) -> Result<Vec<f64>> {
    let v = t.try_into_vec_as::<f32>().map_err(|e| EvalError::Input(format!("cannot read values back: {e:?}")))?;
    Ok(v.into_iter().map(f64::from).collect())
}

fn host_ids(t: Tensor<2, Int>) -> Result<Vec<i64>> {
    t.try_into_vec_as::<i64>().map_err(|e| EvalError::Input(format!("cannot read token ids back: {e:?}")))
}

/// Adds ids to a histogram of `counts.len()` codes (ids outside are ignored).
fn count_codes(counts: &mut [u64], ids: &[i64]) {
    for &id in ids {
        if id >= 0 && (id as usize) < counts.len() {
            counts[id as usize] += 1;
        }
    }
}

fn codebook_report(counts: &[u64]) -> CodebookReport {
    let total = counts.iter().sum();
    CodebookReport::new(&CodebookStats::from_counts(counts, total), counts.len())
}

/// The FID of the features in `a` against `b`, or a note when `a` holds fewer than two images.
fn fid_or_note(a: &FeatureAccumulator, b: &FidStats, notes: &mut Vec<String>) -> Result<Option<f64>> {
    if a.count() < 2 {
        notes.push(format!("FID needs at least 2 images, got {}", a.count()));
        return Ok(None);
    }
    Ok(Some(a.stats()?.fid(b)?))
}

/// Reconstructs every image of `images` with `tokenizer` and measures PSNR, SSIM, LPIPS and
/// rFID of the reconstructions against the centre-cropped inputs, plus the codebook usage and
/// entropy of the tokens (VQ tokenizers).
///
/// Reconstructions are decoded from the token ids (VQ) or the posterior mode (VAE), then
/// clamped and rounded to 8 bits ([`rfid_round`], as the official evaluator does) before every
/// metric, so the numbers describe images a user would save.
///
/// # Shapes
/// Images become `[batch, 3, S, S]` in `[0, 1]`, `S = tokenizer.config.image_size`.
///
/// # Errors
/// [`EvalError::Input`] when no image could be read or the tokenizer decodes to proxy codes
/// (two-stage stage 1); the model's and the metrics' errors.
pub fn evaluate_reconstruction(
    tokenizer: &Titok,
    images: &EvalImages,
    metrics: &ReconMetrics<'_>,
    options: &EvalOptions,
    device: &Device,
) -> Result<DatasetEval> {
    options.check()?;
    let config = &tokenizer.config;
    if !config.decodes_to_pixels() {
        return Err(EvalError::Input(
            "a two-stage stage-1 tokenizer decodes to proxy codes, not pixels: evaluate a stage-2 model".into(),
        ));
    }
    // Saved real-side statistics of more images than there are cannot be of these images
    // (fewer can: unreadable files are left out of both runs); the exact count is checked after.
    if let Some(m) = metrics.real_stats.and_then(|s| s.n).filter(|&m| m > images.len()) {
        return Err(real_stats_mismatch(m, images.len()));
    }
    let started = Instant::now();
    let batcher = ImageBatcher::new(Transform::eval(config.image_size as u32));
    let (mut real, mut recon) = (FeatureAccumulator::new(FEATURE_DIM), FeatureAccumulator::new(FEATURE_DIM));
    let (mut m_psnr, mut m_ssim, mut m_lpips) =
        (RunningMean::default(), RunningMean::default(), RunningMean::default());
    let mut counts = tokenizer.quantize.as_ref().map(|_| vec![0u64; config.codebook_size]);
    let bar = options.bar(images.len(), "reconstruct");
    for (n, batch) in images.batches(&batcher, options.batch_size, device) {
        bar.inc(n as u64);
        if batch.is_empty() {
            continue;
        }
        // Stage 1: image -> tokens -> image, rounded like the saved PNGs.
        let x = batch.images; // [b, 3, S, S]
        let enc = tokenizer.encode(x.clone())?;
        let decoded = match enc.tokens {
            Some(ids) => {
                if let Some(c) = counts.as_mut() {
                    count_codes(c, &host_ids(ids.clone())?);
                }
                tokenizer.decode_tokens(ids)?
            }
            None => tokenizer.decode(enc.latents),
        };
        let y = rfid_round(decoded); // [b, 3, S, S], k/255
        // Stage 2: per-image metrics.
        m_psnr.extend(host_values(psnr(x.clone(), y.clone())?)?);
        m_ssim.extend(host_values(ssim(x.clone(), y.clone())?)?);
        if let Some(l) = metrics.lpips {
            let d = l.distance(x.clone(), y.clone()).map_err(|e| EvalError::Input(format!("LPIPS: {e}")))?;
            m_lpips.extend(host_values(d)?);
        }
        // Stage 3: Inception features of both sides (the real side only without saved stats).
        if let Some(inception) = metrics.inception {
            if metrics.real_stats.is_none() {
                real.push(inception.features(x)?)?;
            }
            recon.push(inception.features(y)?)?;
        }
    }
    bar.finish_and_clear();
    let n = m_psnr.count();
    let skipped = [images.skipped.clone(), batcher.skip_log().entries()].concat();
    if n == 0 {
        return Err(no_images(&images.source, &skipped));
    }
    let mut notes = Vec::new();
    let mut real_stats = None;
    let fid = match metrics.inception {
        Some(_) if recon.count() < 2 => {
            notes.push(format!("rFID needs at least 2 images, got {}", recon.count()));
            None
        }
        Some(_) => {
            let reference = match metrics.real_stats {
                Some(saved) => {
                    if let Some(m) = saved.n.filter(|&m| m != n) {
                        return Err(real_stats_mismatch(m, n));
                    }
                    saved.clone()
                }
                None => real_stats.insert(real.stats()?).clone(),
            };
            Some(FidScore {
                kind: FidKind::Reconstruction,
                value: reference.fid(&recon.stats()?)?,
                images: n,
                reference_images: Some(reference.n.unwrap_or(n)),
            })
        }
        None => None,
    };
    let report = MetricsReport {
        name: Some(images.source.clone()),
        fid,
        images: n,
        psnr_db: m_psnr.mean(),
        ssim: m_ssim.mean(),
        lpips: m_lpips.mean(),
        codebook: counts.as_deref().map(codebook_report),
    };
    Ok(DatasetEval {
        report,
        skipped,
        notes,
        warnings: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
        real_stats,
    })
}

fn real_stats_mismatch(saved: usize, read: usize) -> EvalError {
    EvalError::Input(format!(
        "the saved statistics of the real images are of {saved} images but {read} were read: \
         they must come from the same images (same data, split and limit)"
    ))
}

fn no_images(source: &str, skipped: &[(String, String)]) -> EvalError {
    let example = skipped.first().map(|(f, r)| format!(" (e.g. {f}: {r})")).unwrap_or_default();
    EvalError::Input(format!("no image of {source} could be read{example}"))
}

/// FID statistics of an image set, with what was seen of its files.
#[derive(Debug, Clone)]
pub struct ImageStats {
    /// The statistics.
    pub stats: FidStats,
    /// Files left out as unreadable, with the reasons.
    pub skipped: Vec<(String, String)>,
    /// Formats, sizes and decoding notices of the files read.
    pub files: FileSummary,
}

/// FID statistics of an image set at resolution `size` (eval transform), with the files left
/// out and a summary of the files read (for [`FileSummary::fid_warnings`]).
///
/// # Errors
/// [`EvalError::Input`] when fewer than two images could be read; the network's errors.
pub fn image_stats(
    images: &EvalImages,
    size: usize,
    inception: &InceptionV3,
    options: &EvalOptions,
    device: &Device,
) -> Result<ImageStats> {
    options.check()?;
    let batcher = ImageBatcher::new(Transform::eval(size as u32));
    let mut acc = FeatureAccumulator::new(FEATURE_DIM);
    let bar = options.bar(images.len(), "features");
    for (n, batch) in images.batches(&batcher, options.batch_size, device) {
        bar.inc(n as u64);
        if !batch.is_empty() {
            acc.push(inception.features(batch.images)?)?;
        }
    }
    bar.finish_and_clear();
    let skipped = [images.skipped.clone(), batcher.skip_log().entries()].concat();
    if acc.count() < 2 {
        return Err(EvalError::Input(format!(
            "FID statistics need at least 2 images, {} of {} could be read{}",
            acc.count(),
            images.source,
            skipped.first().map(|(f, r)| format!(" (e.g. {f}: {r})")).unwrap_or_default()
        )));
    }
    Ok(ImageStats { stats: acc.stats()?, skipped, files: batcher.notice_log().summary() })
}

/// FID statistics from an `.npz` (see [`FidStats::load_npz`]) checked to be of the FID
/// network's 2048-d pool3 features.
///
/// # Errors
/// As [`FidStats::load_npz`]; [`EvalError::Input`] for features of another width.
pub fn load_inception_stats(path: &Path) -> Result<FidStats> {
    let stats = FidStats::load_npz(path)?;
    if stats.dim() != FEATURE_DIM {
        return Err(EvalError::Input(format!(
            "{}: statistics of {}-d features, the FID network gives {FEATURE_DIM}",
            path.display(),
            stats.dim()
        )));
    }
    Ok(stats)
}

/// The reference side of gFID.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The statistics.
    pub stats: FidStats,
    /// Where they came from.
    pub source: String,
    /// Reference files left out as unreadable.
    pub skipped: Vec<(String, String)>,
    /// Warnings about the reference images (lossy, not at the model's size; see
    /// [`FileSummary::fid_warnings`]); empty for statistics files.
    pub warnings: Vec<String>,
}

impl Reference {
    /// Statistics from a `.npz` with `mu` and `sigma` (ours, pytorch-fid's, the ADM reference
    /// batches'), or computed from an image folder / tar at resolution `size`.
    ///
    /// # Errors
    /// As [`FidStats::load_npz`], [`EvalImages::open`] and [`image_stats`].
    pub fn load(
        path: &Path,
        split: Option<&str>,
        limit: Option<usize>,
        size: usize,
        inception: &InceptionV3,
        options: &EvalOptions,
        device: &Device,
    ) -> Result<Self> {
        let is_npz = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("npz"));
        if is_npz {
            let stats = load_inception_stats(path)?;
            return Ok(Self { stats, source: path.display().to_string(), skipped: Vec::new(), warnings: Vec::new() });
        }
        let images = EvalImages::open(path, split, limit)?;
        let r = image_stats(&images, size, inception, options, device)?;
        let warnings = r.files.fid_warnings("reference images", size as u32);
        Ok(Self { stats: r.stats, source: images.source, skipped: r.skipped, warnings })
    }
}

/// What to generate for gFID.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationPlan {
    /// One class id per sample, in order (e.g. 50 per class, classes in order).
    pub labels: Vec<usize>,
    /// Sampler settings.
    pub sampler: SamplerConfig,
    /// Seed of the sampler ([`SeededUniform`]); the same seed, plan and batch size give the
    /// same samples.
    pub seed: u64,
}

impl GenerationPlan {
    /// `per_class` samples of each of `num_classes` classes, classes in order.
    pub fn per_class(num_classes: usize, per_class: usize, sampler: SamplerConfig, seed: u64) -> Self {
        let labels = (0..num_classes).flat_map(|c| std::iter::repeat_n(c, per_class)).collect();
        Self { labels, sampler, seed }
    }
}

/// Pixels as a saved sample holds them: clamped, `× 255`, truncated to uint8, `/ 255` (the
/// official sampler's conversion, `demo_util.sample_fn`, which the ADM batch also uses).
///
/// # Shapes
/// - `images`: `[batch, 3, H, W]` -> same shape, values `k/255`
pub fn as_saved_samples(images: Tensor<4>) -> Tensor<4> {
    (images.clamp(0.0, 1.0) * 255.0).floor() / 255.0
}

/// Generates the samples of `plan` with `generator`, decodes them with `tokenizer`, and
/// measures gFID against `reference`; the report also gives the codebook usage and entropy of
/// the generated tokens. With `adm`, the samples are also written there as an ADM-evaluator
/// batch (`arr_0`, uint8 NHWC), which appears only when complete.
///
/// # Errors
/// [`EvalError::Input`] for an empty plan or a generator whose tokens the tokenizer cannot
/// decode; the sampler's, model's, network's and writer's errors.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_generation(
    generator: &Generator,
    tokenizer: &Titok,
    plan: &GenerationPlan,
    inception: &InceptionV3,
    reference: &Reference,
    adm: Option<&Path>,
    options: &EvalOptions,
    device: &Device,
) -> Result<DatasetEval> {
    options.check()?;
    let layout = generator.layout();
    let config = &tokenizer.config;
    if plan.labels.is_empty() {
        return Err(EvalError::Input("the generation plan holds no samples".into()));
    }
    if layout.seq_len != config.num_latent_tokens || layout.codebook_size != config.codebook_size {
        return Err(EvalError::Input(format!(
            "the generator makes {} tokens of a {}-code codebook, the tokenizer decodes {} tokens of {}",
            layout.seq_len, layout.codebook_size, config.num_latent_tokens, config.codebook_size
        )));
    }
    let started = Instant::now();
    let s = config.image_size;
    let mut writer = adm.map(|p| AdmNpzWriter::create(p, plan.labels.len(), s, s)).transpose()?;
    let mut rng = SeededUniform::new(plan.seed);
    let mut acc = FeatureAccumulator::new(FEATURE_DIM);
    let mut counts = vec![0u64; layout.codebook_size];
    let bar = options.bar(plan.labels.len(), "generate");
    for chunk in plan.labels.chunks(options.batch_size) {
        let b = chunk.len();
        let labels: Vec<i64> = chunk.iter().map(|&c| c as i64).collect();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), device);
        // Stage 1: tokens, then pixels as a saved sample holds them.
        let ids = generate(generator, labels, &plan.sampler, &mut rng)?; // [b, K]
        count_codes(&mut counts, &host_ids(ids.clone())?);
        let images = as_saved_samples(tokenizer.decode_tokens(ids)?); // [b, 3, S, S]
        // Stage 2: the ADM batch and the Inception features.
        if let Some(w) = writer.as_mut() {
            w.push(images.clone())?;
        }
        acc.push(inception.features(images)?)?;
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    if let Some(w) = writer {
        w.finish()?;
    }
    let n = acc.count();
    let mut notes = Vec::new();
    let fid = fid_or_note(&acc, &reference.stats, &mut notes)?.map(|value| FidScore {
        kind: FidKind::Generation,
        value,
        images: n,
        reference_images: reference.stats.n,
    });
    let report = MetricsReport {
        name: Some(format!("{n} samples vs {}", reference.source)),
        fid,
        images: n,
        codebook: Some(codebook_report(&counts)),
        ..MetricsReport::default()
    };
    Ok(DatasetEval {
        report,
        skipped: Vec::new(),
        notes,
        warnings: reference.warnings.clone(),
        seconds: started.elapsed().as_secs_f64(),
        real_stats: None,
    })
}

/// gFID of existing samples (an image folder or tar, at resolution `size`) against `reference`.
///
/// # Errors
/// As [`image_stats`] and [`FidStats::fid`].
pub fn evaluate_samples(
    samples: &EvalImages,
    size: usize,
    inception: &InceptionV3,
    reference: &Reference,
    options: &EvalOptions,
    device: &Device,
) -> Result<DatasetEval> {
    let started = Instant::now();
    let ImageStats { stats, skipped, files } = image_stats(samples, size, inception, options, device)?;
    let n = stats.n.unwrap_or(0);
    let value = stats.fid(&reference.stats)?;
    let report = MetricsReport {
        name: Some(format!("{} vs {}", samples.source, reference.source)),
        fid: Some(FidScore { kind: FidKind::Generation, value, images: n, reference_images: reference.stats.n }),
        images: n,
        ..MetricsReport::default()
    };
    Ok(DatasetEval {
        report,
        skipped,
        notes: Vec::new(),
        warnings: [files.fid_warnings("samples", size as u32), reference.warnings.clone()].concat(),
        seconds: started.elapsed().as_secs_f64(),
        real_stats: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_histogram_ignores_out_of_range_ids() {
        let mut counts = vec![0u64; 4];
        count_codes(&mut counts, &[0, 1, 1, 3, -1, 4]);
        assert_eq!(counts, vec![1, 2, 0, 1]);
        let r = codebook_report(&counts);
        assert_eq!((r.size, r.used), (4, 3));
        assert!((r.usage - 0.75).abs() < 1e-12);
        // p = (1/4, 1/2, 1/4): 1.5 bits.
        assert!((r.entropy_bits - 1.5).abs() < 1e-12);
    }

    #[test]
    fn saved_samples_are_truncated_to_8_bits() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![-0.5f32, 0.999, 1.5, 0.5], [1, 1, 2, 2]), &device);
        let y = as_saved_samples(x).try_into_vec_as::<f32>().unwrap();
        let want = [0.0, 254.0 / 255.0, 1.0, 127.0 / 255.0];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{y:?}");
        }
    }

    #[test]
    fn plans_list_classes_in_order() {
        let p = GenerationPlan::per_class(3, 2, SamplerConfig::default(), 0);
        assert_eq!(p.labels, vec![0, 0, 1, 1, 2, 2]);
    }
}

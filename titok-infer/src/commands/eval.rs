//! `titok eval recon|gen`: the dataset-level evaluation of `titok_eval::dataset`, with a
//! table on the terminal and an optional JSON report.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use titok_eval::inception::WEIGHTS_FILE as INCEPTION_FILE;
use titok_eval::{
    DatasetEval, EvalImages, EvalOptions, GenerationPlan, InceptionV3, ReconMetrics, Reference, evaluate_generation,
    evaluate_reconstruction, evaluate_samples, load_inception_stats,
};
use titok_model::generator::TokenPredictor;

use super::generate::{describe_sampler, sampler_config};
use super::reconstruct::LpipsMetric;
use super::{Outcome, Timer};
use crate::cli::{EvalCommand, EvalGenArgs, EvalReconArgs, EvalWeightsArgs, GlobalArgs};
use crate::models;
use crate::outputs::{OutputGuard, refuse_special, write_bytes};
use crate::weights;

/// Runs `titok eval recon` or `titok eval gen`.
///
/// # Errors
/// Models or weights that cannot be loaded, data that cannot be read, a failed write.
pub fn run(g: &GlobalArgs, e: &EvalCommand) -> Result<Outcome> {
    match e {
        EvalCommand::Recon(a) => recon(g, a),
        EvalCommand::Gen(a) => gen_(g, a),
    }
}

fn options(g: &GlobalArgs) -> EvalOptions {
    EvalOptions { batch_size: g.batch_size as usize, progress: true }
}

/// Loads the FID network, or explains where its weights are looked for.
fn inception(w: &EvalWeightsArgs, device: &Device) -> Result<Option<InceptionV3>> {
    match weights::find(w.inception.as_deref(), weights::INCEPTION_ENV, INCEPTION_FILE)? {
        Some(path) => {
            Ok(Some(InceptionV3::load(&path, device).with_context(|| format!("loading {}", path.display()))?))
        }
        None => Ok(None),
    }
}

fn recon(g: &GlobalArgs, a: &EvalReconArgs) -> Result<Outcome> {
    let device = models::device(g.device)?;
    let tok = models::tokenizer(g.model.as_deref(), &device)?;
    let size = tok.model.config.image_size;
    let images = EvalImages::open(&a.data, a.split.as_deref(), a.limit)?;
    let lpips = LpipsMetric::find(a.lpips_weights.as_deref(), size, &device)?;
    let inception = if a.no_fid { None } else { inception(&a.weights, &device)? };
    if inception.is_none() && (a.real_stats.is_some() || a.save_real_stats.is_some()) {
        bail!(
            "--real-stats and --save-real-stats need the FID InceptionV3 weights ({INCEPTION_FILE}): {}",
            weights::search_description(weights::INCEPTION_ENV, INCEPTION_FILE)
        );
    }
    let real_stats = a.real_stats.as_deref().map(load_inception_stats).transpose()?;
    if let Some(path) = &a.save_real_stats {
        let mut guard = OutputGuard::default();
        guard.protect(&a.data);
        guard.check(path)?;
        refuse_special(path)?;
    }
    let mut notes = Vec::new();
    if !a.no_fid && inception.is_none() {
        notes.push(format!(
            "rFID: n/a (no Inception weights: {})",
            weights::search_description(weights::INCEPTION_ENV, INCEPTION_FILE)
        ));
    }
    if lpips.model.is_none() {
        notes.push(format!("LPIPS: {}", lpips.missing));
    }
    eprintln!(
        "evaluating {} on {} files of {} (shorter side resized to {size}, centre crop {size}x{size})",
        tok.source,
        images.len(),
        images.source
    );
    let timer = Timer::start();
    let metrics =
        ReconMetrics { inception: inception.as_ref(), lpips: lpips.model.as_ref(), real_stats: real_stats.as_ref() };
    let mut result = evaluate_reconstruction(&tok.model, &images, &metrics, &options(g), &device)?;
    if let (Some(path), Some(stats)) = (&a.save_real_stats, &result.real_stats) {
        stats.save_npz(path)?;
        eprintln!("saved the statistics of the real images to {}", path.display());
    }
    result.report.name = Some(format!("{} on {}", tok.source, images.source));
    result.notes.extend(notes);
    finish(&result, a.weights.json.as_deref(), &timer, "reconstructed")
}

fn gen_(g: &GlobalArgs, a: &EvalGenArgs) -> Result<Outcome> {
    let device = models::device(g.device)?;
    let inception = inception(&a.weights, &device)?.ok_or_else(|| {
        anyhow::anyhow!(
            "gFID needs the FID InceptionV3 weights ({INCEPTION_FILE}): {}",
            weights::search_description(weights::INCEPTION_ENV, INCEPTION_FILE)
        )
    })?;
    let tok = models::tokenizer(g.model.as_deref(), &device)?;
    let size = tok.model.config.image_size;
    let opts = options(g);
    let reference = Reference::load(
        &a.reference,
        a.reference_split.as_deref(),
        a.reference_limit,
        size,
        &inception,
        &opts,
        &device,
    )?;
    for (file, reason) in &reference.skipped {
        eprintln!("warning: reference image left out: {file}: {}", crate::inputs::one_line(reason));
    }
    if let Some(path) = &a.save_reference_stats {
        let mut guard = OutputGuard::default();
        guard.protect(&a.reference);
        guard.check(path)?;
        refuse_special(path)?;
        reference.stats.save_npz(path)?;
        eprintln!("saved the reference statistics to {}", path.display());
    }
    let timer = Timer::start();
    let result = match &a.samples {
        Some(samples) => {
            let images = EvalImages::open(samples, None, None)?;
            eprintln!("scoring {} samples of {} against {}", images.len(), images.source, reference.source);
            evaluate_samples(&images, size, &inception, &reference, &opts, &device)?
        }
        None => {
            let gen_ = models::generator(g.generator.as_deref(), &device)?;
            models::check_pair(&tok.model, &gen_.model)?;
            let sampler = sampler_config(&gen_.model.config().sampling, &a.sampler)?;
            let classes = gen_.model.layout().num_classes;
            let plan = GenerationPlan::per_class(classes, a.num_per_class as usize, sampler, a.sampler.seed);
            if let Some(adm) = &a.adm_npz {
                let mut guard = OutputGuard::default();
                guard.protect(&a.reference);
                guard.check(adm)?;
                refuse_special(adm)?;
            }
            eprintln!(
                "generating {} samples ({} per class, {classes} classes) with {}; {}",
                plan.labels.len(),
                a.num_per_class,
                gen_.source,
                describe_sampler(&plan.sampler, plan.seed)
            );
            let r = evaluate_generation(
                &gen_.model,
                &tok.model,
                &plan,
                &inception,
                &reference,
                a.adm_npz.as_deref(),
                &opts,
                &device,
            )?;
            if let Some(adm) = &a.adm_npz {
                eprintln!("wrote the samples as an ADM batch to {}", adm.display());
            }
            r
        }
    };
    finish(&result, a.weights.json.as_deref(), &timer, "evaluated")
}

/// Prints the table, the notes and skipped files, writes the JSON report.
fn finish(result: &DatasetEval, json: Option<&Path>, timer: &Timer, verb: &str) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    // Reasons from the image reader already start with the file's path.
    let line = |(file, reason): &(String, String)| {
        if reason.starts_with(file.as_str()) { reason.clone() } else { format!("{file}: {reason}") }
    };
    for skipped in &result.skipped {
        outcome.fail(line(skipped));
    }
    print!("{}", result.report.table());
    for n in &result.notes {
        println!("note: {n}");
    }
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(path) = json {
        let mut v = result.report.to_json();
        v["notes"] = serde_json::json!(result.notes);
        v["warnings"] = serde_json::json!(result.warnings);
        v["skipped"] = serde_json::json!(result.skipped.iter().map(line).collect::<Vec<_>>());
        v["seconds"] = serde_json::json!(result.seconds);
        write_bytes(&OutputGuard::default(), path, serde_json::to_string_pretty(&v)?.as_bytes())?;
        eprintln!("wrote the report to {}", path.display());
    }
    if result.report.images == 0 {
        bail!("no image was evaluated");
    }
    outcome.succeeded = result.report.images;
    timer.summary(verb, result.report.images);
    Ok(outcome)
}

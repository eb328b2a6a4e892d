//! The official MaskGIT sampler (`ImageBert.generate`) and inpainting.
//!
//! Starting from all-mask ids, each of the `T` steps (progress `r = (s+1)/T`):
//! 1. runs the model on `[condition, ids]`, and when the step's guidance weight is non-zero also
//!    on `[drop label, ids]` — both as **one `2B` batch** (the official code runs two passes);
//! 2. combines them with the step's guidance ([`SamplerConfig::guidance`]);
//! 3. optionally divides the logits by the annealed softmax temperature `0.5 + 0.8·(1 − r)`;
//! 4. picks `argmax(logits + τ_s·G₁)` with Gumbel noise `G = −log(max(−log(max(U, 1e−20)), 1e−20))`
//!    and `τ_s = τ·(1 − r)`; positions already fixed keep their id;
//! 5. scores each pick by its (annealed, un-noised) logit `+ τ_s·G₂`, `+∞` for fixed positions;
//! 6. re-masks every position whose confidence is `≤` the `n`-th smallest, with
//!    `n = floor(K·schedule(r))` clamped to `[1, masked − 1]` (masked count of batch row 0);
//!    the last step keeps everything.
//!
//! [`inpaint`] (MaskGIT's editing, beyond the official code) starts from given ids at known
//! positions: they are never re-masked, and the schedule runs over each row's unknown
//! positions (`n = floor(U_b·schedule(r))`, clamped per row).
//!
//! Source: `modeling/maskgit.py::ImageBert.generate`; REFERENCE §8.

use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::error::{Result, TitokError};
use crate::generator::predictor::{
    TokenPredictor, check_image_ids, check_labels, condition_tokens, model_input, read_ids,
};
use crate::generator::rng::UniformSource;
use crate::generator::schedule::{SamplerConfig, StepGuidance};

/// Token ids given in advance (inpainting / outpainting).
#[derive(Debug, Clone)]
pub struct GivenTokens {
    /// `[batch, K]` ids; only the entries where `known` is true are used (codes `0..N`).
    pub ids: Tensor<2, Int>,
    /// `[batch, K]`, true where the id is given.
    pub known: Tensor<2, Bool>,
}

/// Options of [`generate_with`].
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Fixed ids (inpainting); `None` is the official unconditional start from all masks.
    pub given: Option<GivenTokens>,
    /// Keep per-step ids and raw logits in [`Generation::steps`].
    pub record_steps: bool,
}

/// What happened in one sampling step (recorded with [`GenerateOptions::record_steps`]).
#[derive(Debug, Clone)]
pub struct StepTrace {
    /// Ids at the start of the step, `[batch, K]` (step 0: all mask, or the given ids).
    pub ids: Tensor<2, Int>,
    /// The step's guidance.
    pub guidance: StepGuidance,
    /// Raw conditional logits `[batch, K, N]`, before guidance and annealing.
    pub cond_logits: Tensor<3>,
    /// Raw unconditional logits `[batch, K, N]` when the step ran that pass.
    pub uncond_logits: Option<Tensor<3>>,
}

/// The result of [`generate_with`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// Final ids `[batch, K]`, all in `0..N`.
    pub ids: Tensor<2, Int>,
    /// One entry per step when recorded, else empty.
    pub steps: Vec<StepTrace>,
}

/// Samples `[batch, K]` token ids for class `labels` (`[batch]`, in `0..C`) with the official
/// sampler. Reproducible: the same `rng` state gives the same ids.
///
/// # Errors
/// [`TitokError::Input`] for labels out of range, [`TitokError::Config`] for invalid settings.
pub fn generate<M: TokenPredictor + ?Sized, U: UniformSource>(
    model: &M,
    labels: Tensor<1, Int>,
    config: &SamplerConfig,
    rng: &mut U,
) -> Result<Tensor<2, Int>> {
    Ok(generate_with(model, labels, config, GenerateOptions::default(), rng)?.ids)
}

/// Fills the unknown positions of `given` (inpainting / outpainting); known ids are kept.
///
/// # Errors
/// As [`generate_with`].
pub fn inpaint<M: TokenPredictor + ?Sized, U: UniformSource>(
    model: &M,
    labels: Tensor<1, Int>,
    given: GivenTokens,
    config: &SamplerConfig,
    rng: &mut U,
) -> Result<Tensor<2, Int>> {
    let options = GenerateOptions { given: Some(given), record_steps: false };
    Ok(generate_with(model, labels, config, options, rng)?.ids)
}

/// The sampler with options (given ids, step recording); see the module docs.
///
/// # Errors
/// [`TitokError::Input`] for labels or given ids out of range or of the wrong shape, a
/// replay source that runs dry; [`TitokError::Config`] for invalid settings.
pub fn generate_with<M: TokenPredictor + ?Sized, U: UniformSource>(
    model: &M,
    labels: Tensor<1, Int>,
    config: &SamplerConfig,
    options: GenerateOptions,
    rng: &mut U,
) -> Result<Generation> {
    config.validate()?;
    let layout = model.layout();
    check_labels(&layout, &labels)?;
    let device = labels.device();
    let [b] = labels.dims();
    if b == 0 {
        return Err(TitokError::Input("generate needs at least one class label".into()));
    }
    let k = layout.seq_len;
    let n = layout.codebook_size;
    let mask_id = layout.mask_id();
    let cond_tokens = condition_tokens(&layout, labels.clone(), None); // [b]
    let uncond_tokens = Tensor::<1, Int>::full([b], layout.drop_label_id(), &device); // [b]

    // Start: all mask, or the given ids at known positions.
    let (mut ids, known) = match options.given {
        None => (Tensor::<2, Int>::full([b, k], mask_id, &device), None),
        Some(g) => {
            if g.ids.dims() != [b, k] || g.known.dims() != [b, k] {
                return Err(TitokError::Input(format!(
                    "given ids {:?} / known {:?} must both be [{b}, {k}]",
                    g.ids.dims(),
                    g.known.dims()
                )));
            }
            let start = g.ids.mask_fill(g.known.clone().bool_not(), mask_id);
            check_image_ids(&layout, &start, true)?;
            (start, Some(g.known))
        }
    };
    // Unknown positions per row: the schedule's sequence length.
    let unknown: Vec<usize> = match &known {
        None => vec![k; b],
        Some(kn) => read_ids(kn.clone().bool_not().int().sum_dim(1))?.into_iter().map(|v| v as usize).collect(),
    };

    let mut steps = Vec::new();
    for step in 0..config.num_steps {
        let is_mask = ids.clone().equal_elem(mask_id); // [b, k]
        let guidance = config.guidance(step);

        // Stage 1: conditional (and unconditional) logits as one batch.
        let (cond, uncond) = if guidance.needs_uncond() {
            let input = Tensor::cat(
                vec![model_input(ids.clone(), cond_tokens.clone()), model_input(ids.clone(), uncond_tokens.clone())],
                0,
            ); // [2b, k+1]
            let both = model.logits(input); // [2b, k, n]
            (both.clone().slice_dim(0, 0..b), Some(both.slice_dim(0, b..2 * b)))
        } else {
            (model.logits(model_input(ids.clone(), cond_tokens.clone())), None)
        }; // [b, k, n]
        if options.record_steps {
            steps.push(StepTrace {
                ids: ids.clone(),
                guidance,
                cond_logits: cond.clone(),
                uncond_logits: uncond.clone(),
            });
        }

        // Stage 2: guidance and softmax-temperature annealing.
        let mut logits = match uncond {
            Some(u) if guidance.around_uncond => u.clone() + (cond - u).mul_scalar(guidance.weight),
            Some(u) => cond.clone() + (cond - u).mul_scalar(guidance.weight),
            None => cond,
        };
        if let Some(t) = config.softmax_temperature(step) {
            logits = logits.div_scalar(t);
        }

        // Stage 3: Gumbel-max choice at masked positions.
        let temp = config.gumbel_temperature(step);
        let noise = gumbel(rng.uniform([b, k, n], &device)?).mul_scalar(temp);
        let picked = (logits.clone() + noise).argmax(2); // [b, k, 1]
        let picked_logits = logits.gather(2, picked.clone()).reshape([b, k]);
        let sampled = ids.clone().mask_where(is_mask.clone(), picked.reshape([b, k])); // [b, k]
        let picked_logits = picked_logits.mask_fill(is_mask.clone().bool_not(), f32::INFINITY);
        let confidence = picked_logits + gumbel(rng.uniform([b, k], &device)?).mul_scalar(temp); // [b, k]

        if step + 1 == config.num_steps {
            ids = sampled;
            break;
        }

        // Stage 4: re-mask the least confident positions.
        let masked: Vec<usize> = read_ids(is_mask.int().sum_dim(1))?.into_iter().map(|v| v as usize).collect(); // per row
        let mask_len: Vec<i64> = (0..b)
            .map(|row| {
                // The official sampler clamps with batch row 0's count for every row.
                let (u, m) = if known.is_some() { (unknown[row], masked[row]) } else { (k, masked[0]) };
                let len = config.mask_schedule.mask_len(u, step, config.num_steps) as i64;
                len.min(m as i64 - 1).max(1)
            })
            .collect();
        let index = mask_len.iter().map(|l| l - 1).collect::<Vec<i64>>();
        let index = Tensor::<2, Int>::from_data(TensorData::new(index, [b, 1]), &device); // [b, 1]
        let cut_off = confidence.clone().sort(1).gather(1, index).expand([b, k]); // [b, k]
        let mut remask = confidence.lower_equal(cut_off);
        if let Some(kn) = &known {
            remask = remask.bool_and(kn.clone().bool_not());
        }
        ids = sampled.mask_fill(remask, mask_id);
    }
    Ok(Generation { ids, steps })
}

/// Gumbel noise of uniforms as the official code computes it:
/// `−log(max(−log(max(u, 1e−20)), 1e−20))`.
fn gumbel<const D: usize>(u: Tensor<D>) -> Tensor<D> {
    u.clamp_min(1e-20).log().neg().clamp_min(1e-20).log().neg()
}

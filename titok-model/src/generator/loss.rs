//! Masked token modelling for generator training: the per-sample masking, the class-label
//! dropout and the MLM loss (cross-entropy with label smoothing, down-weighted on unmasked
//! positions), as pure functions of their inputs and random draws.
//!
//! Source: `modeling/maskgit.py::ImageBert.masking_input_tokens`,
//! `modeling/modules/losses.py::MLMLoss`, `configs/training/generator/maskgit.yaml`;
//! REFERENCE §7e.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::error::{Result, TitokError};
use crate::generator::rng::UniformSource;
use crate::generator::schedule::training_num_masked;

/// Weights of the MLM loss (`losses` section of the official training config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlmLossConfig {
    /// Label smoothing ε of the cross-entropy (0.1).
    pub label_smoothing: f64,
    /// Loss weight of unmasked positions (0.1; masked positions weigh 1).
    pub unmasked_weight: f64,
}

impl Default for MlmLossConfig {
    /// The official values: ε = 0.1, unmasked weight 0.1.
    fn default() -> Self {
        Self { label_smoothing: 0.1, unmasked_weight: 0.1 }
    }
}

/// The MLM loss and its metric.
#[derive(Debug, Clone)]
pub struct MlmLoss {
    /// `Σ ce·w / (Σ w + 1e-8)`, shape `[1]` (differentiable).
    pub loss: Tensor<1>,
    /// Per-token smoothed cross-entropy `[batch, K]`:
    /// `(1 − ε)·(−log p_target) + ε·mean_c(−log p_c)` (PyTorch `label_smoothing`).
    pub per_token: Tensor<2>,
    /// Batch mean of the per-row accuracy on masked positions
    /// (`Σ (argmax = target)·mask / (Σ mask + 1e-8)`), shape `[1]`, in `[0, 1]`.
    pub correct_tokens: Tensor<1>,
}

/// The official `MLMLoss`.
///
/// # Shapes
/// - `logits`: `[batch, K, N]`; `targets`: `[batch, K]` codes `0..N`;
///   `masked`: `[batch, K]`, true where the input token was masked
pub fn mlm_loss(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    masked: Tensor<2, Bool>,
    config: &MlmLossConfig,
) -> MlmLoss {
    let [b, k, _] = logits.dims();
    let eps = config.label_smoothing;
    let log_p = log_softmax(logits.clone(), 2); // [b, k, n]
    let nll = log_p.clone().gather(2, targets.clone().unsqueeze_dim(2)).reshape([b, k]).neg(); // [b, k]
    let smooth = log_p.mean_dim(2).reshape([b, k]).neg(); // [b, k]
    let per_token = nll.mul_scalar(1.0 - eps) + smooth.mul_scalar(eps);
    let m = masked.float(); // [b, k]
    // (1 − m)·w_unmasked + m
    let weights = m.clone().neg().add_scalar(1.0).mul_scalar(config.unmasked_weight) + m.clone();
    let loss = (per_token.clone() * weights.clone()).sum() / weights.sum().add_scalar(1e-8);
    let hit = logits.argmax(2).reshape([b, k]).equal(targets).float(); // [b, k]
    let per_row = (hit * m.clone()).sum_dim(1) / m.sum_dim(1).add_scalar(1e-8); // [b, 1]
    MlmLoss { loss, per_token, correct_tokens: per_row.mean() }
}

/// A masked training input.
#[derive(Debug, Clone)]
pub struct Masking {
    /// `[batch, K]` ids with the masked positions replaced by the mask id.
    pub input_ids: Tensor<2, Int>,
    /// `[batch, K]`, true at masked positions (the loss's `masked`).
    pub mask: Tensor<2, Bool>,
}

/// The official per-sample masking from its random draws: row `b` hides
/// `n_b = max(1, round(K·clamp(arccos(t_b)/(π/2), 1e-6, 1)))` tokens, namely the positions `j`
/// with `argsort(noise_b)[j] < n_b` (as `rand(B, K).argsort(-1) < n`).
///
/// # Shapes
/// - `tokens`: `[batch, K]`; `t`: `batch` draws in `[0, 1)`; `noise`: `[batch, K]` uniforms
///
/// # Errors
/// [`TitokError::Input`] when `t` or `noise` do not match the batch.
pub fn mask_tokens(tokens: Tensor<2, Int>, t: &[f32], noise: Tensor<2>, mask_id: i64) -> Result<Masking> {
    let [b, k] = tokens.dims();
    if t.len() != b || noise.dims() != [b, k] {
        return Err(TitokError::Input(format!(
            "masking draws: {} times and noise {:?} for tokens [{b}, {k}]",
            t.len(),
            noise.dims()
        )));
    }
    let device = tokens.device();
    let counts: Vec<i64> = t.iter().map(|&x| training_num_masked(k, x) as i64).collect();
    let counts = Tensor::<2, Int>::from_data(TensorData::new(counts, [b, 1]), &device).expand([b, k]);
    let mask = noise.argsort(1).lower(counts); // [b, k]
    Ok(Masking { input_ids: tokens.mask_fill(mask.clone(), mask_id), mask })
}

/// [`mask_tokens`] with draws from `rng`: first `[batch]` times, then `[batch, K]` noise.
///
/// # Errors
/// [`TitokError::Input`] when `rng` fails.
pub fn random_masking<U: UniformSource>(tokens: Tensor<2, Int>, mask_id: i64, rng: &mut U) -> Result<Masking> {
    let [b, k] = tokens.dims();
    let device = tokens.device();
    let t = rng
        .uniform([b], &device)?
        .try_into_vec_as::<f32>()
        .map_err(|e| TitokError::Input(format!("cannot read draws: {e:?}")))?;
    let noise = rng.uniform([b, k], &device)?;
    mask_tokens(tokens, &t, noise, mask_id)
}

/// Class-label dropout: `[batch]`, true where a uniform draw is `< prob` (the official
/// `rand < cond_drop_prob`; prob 0 ⇒ never, 1 ⇒ always). Feed it to
/// [`crate::generator::condition_tokens`] or [`crate::generator::TokenPredictor::forward`].
///
/// # Errors
/// [`TitokError::Input`] when `rng` fails.
pub fn class_dropout_mask<U: UniformSource>(
    batch: usize,
    prob: f64,
    rng: &mut U,
    device: &Device,
) -> Result<Tensor<1, Bool>> {
    Ok(rng.uniform([batch], device)?.lower_elem(prob))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::rng::SeededUniform;

    #[test]
    fn masking_hides_the_scheduled_count_per_row() {
        let device = Device::flex();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new((0..32i64).collect::<Vec<_>>(), [4, 8]), &device);
        let t = [0.0f32, 0.5, 0.9, 0.999];
        let m =
            mask_tokens(tokens.clone(), &t, Tensor::random([4, 8], burn::tensor::Distribution::Default, &device), 64)
                .unwrap();
        let counts = m.mask.clone().int().sum_dim(1).try_into_vec_as::<i64>().unwrap();
        let expect: Vec<i64> = t.iter().map(|&x| training_num_masked(8, x) as i64).collect();
        assert_eq!(counts, expect);
        let ids = m.input_ids.try_into_vec_as::<i64>().unwrap();
        let mask = m.mask.int().try_into_vec_as::<i64>().unwrap();
        for (i, (&id, &mk)) in ids.iter().zip(&mask).enumerate() {
            assert_eq!(id, if mk == 1 { 64 } else { i as i64 });
        }
        assert!(mask_tokens(tokens, &t[..2], Tensor::zeros([4, 8], &device), 64).is_err());
    }

    #[test]
    fn class_dropout_extremes_are_deterministic() {
        let device = Device::flex();
        let mut rng = SeededUniform::new(1);
        let never = class_dropout_mask(16, 0.0, &mut rng, &device).unwrap().int().sum().into_scalar::<i64>();
        let always = class_dropout_mask(16, 1.0, &mut rng, &device).unwrap().int().sum().into_scalar::<i64>();
        assert_eq!((never, always), (0, 16));
    }

    #[test]
    fn loss_of_uniform_logits_is_log_n() {
        let device = Device::flex();
        let logits = Tensor::<3>::zeros([2, 4, 16], &device);
        let targets = Tensor::<2, Int>::zeros([2, 4], &device);
        let masked = Tensor::<2, Int>::from_ints([[1, 0, 1, 0], [0, 0, 0, 1]], &device).bool();
        let l = mlm_loss(logits, targets, masked, &MlmLossConfig::default());
        assert!((l.loss.into_scalar::<f64>() - 16f64.ln()).abs() < 1e-5);
        // argmax of all-equal logits is 0 = target: every masked token is "correct".
        assert!((l.correct_tokens.into_scalar::<f64>() - 1.0).abs() < 1e-6);
    }
}

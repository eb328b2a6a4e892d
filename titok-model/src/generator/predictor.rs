//! The common interface of the generators ([`TokenPredictor`]) and the model input:
//! `[condition token, K image tokens]`, with the checks of ids and labels. Below both
//! architectures ([`super::bert`], [`super::uvit`]) and the [`super::model::Generator`] enum over
//! them.
//!
//! Source: `modeling/maskgit.py::ImageBert.forward` (condition shift, drop label, prepending).

use burn::tensor::{Bool, Int, Tensor};

use crate::error::{Result, TitokError};
use crate::generator::config::{GeneratorConfig, TokenLayout};

/// A bidirectional transformer that predicts image codes from `[condition, K tokens]`.
pub trait TokenPredictor {
    /// The id layout (codebook size, classes, `K`).
    fn layout(&self) -> TokenLayout;

    /// The configuration the model was built from.
    fn config(&self) -> &GeneratorConfig;

    /// Code logits of the image positions. Ids are not checked (an id outside the vocabulary
    /// is a backend error); use [`TokenPredictor::forward`] for checked input.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, K + 1]`, condition token first (see [`model_input`])
    /// - returns `[batch, K, N]` raw logits over the `N` image codes
    fn logits(&self, input_ids: Tensor<2, Int>) -> Tensor<3>;

    /// The official `forward(input_ids, condition, cond_drop_prob)` with the drop decision
    /// given explicitly: class labels are shifted to condition tokens, rows where
    /// `drop_label` is true get the drop label, the condition is prepended.
    ///
    /// # Shapes
    /// - `ids`: `[batch, K]` image codes `0..N` or the mask id `N`
    /// - `labels`: `[batch]` classes `0..C`; `drop_label`: `[batch]` (None = keep all)
    /// - returns `[batch, K, N]`
    ///
    /// # Errors
    /// [`TitokError::Input`] for wrong shapes or ids/labels out of range.
    fn forward(
        &self,
        ids: Tensor<2, Int>,
        labels: Tensor<1, Int>,
        drop_label: Option<Tensor<1, Bool>>,
    ) -> Result<Tensor<3>> {
        let layout = self.layout();
        check_image_ids(&layout, &ids, true)?;
        check_labels(&layout, &labels)?;
        if ids.dims()[0] != labels.dims()[0] {
            return Err(TitokError::Input(format!("{} rows of ids but {} labels", ids.dims()[0], labels.dims()[0])));
        }
        let cond = condition_tokens(&layout, labels, drop_label);
        Ok(self.logits(model_input(ids, cond)))
    }
}

/// Condition tokens of class labels: `N + 1 + c`, or the drop label `N + 1 + C` where
/// `drop_label` is true (official `forward`).
///
/// # Shapes
/// - `labels`: `[batch]` classes in `0..C`; `drop_label`: `[batch]`; returns `[batch]`
pub fn condition_tokens(
    layout: &TokenLayout,
    labels: Tensor<1, Int>,
    drop_label: Option<Tensor<1, Bool>>,
) -> Tensor<1, Int> {
    let tokens = labels.add_scalar(layout.class_id(0));
    match drop_label {
        Some(drop) => tokens.mask_fill(drop, layout.drop_label_id()),
        None => tokens,
    }
}

/// The model input `[condition, ids...]`.
///
/// # Shapes
/// - `ids`: `[batch, K]`, `condition`: `[batch]` -> `[batch, K + 1]`
pub fn model_input(ids: Tensor<2, Int>, condition: Tensor<1, Int>) -> Tensor<2, Int> {
    Tensor::cat(vec![condition.unsqueeze_dim::<2>(1), ids], 1)
}

/// Checks class labels: one dimension, values in `0..C` (reads them to the host).
///
/// # Errors
/// [`TitokError::Input`] naming the first bad label.
pub fn check_labels(layout: &TokenLayout, labels: &Tensor<1, Int>) -> Result<()> {
    let values = read_ids(labels.clone())?;
    if let Some(bad) = values.iter().find(|&&c| c < 0 || c as usize >= layout.num_classes) {
        return Err(TitokError::Input(format!("class label {bad} is outside 0..{}", layout.num_classes)));
    }
    Ok(())
}

/// Checks image token ids: shape `[batch, K]` and values in `0..N` (or `0..=N` with
/// `allow_mask`, the mask id being `N`).
///
/// # Errors
/// [`TitokError::Input`] for a wrong length or the first bad id.
pub fn check_image_ids(layout: &TokenLayout, ids: &Tensor<2, Int>, allow_mask: bool) -> Result<()> {
    let [_, k] = ids.dims();
    if k != layout.seq_len {
        return Err(TitokError::Input(format!("{k} image tokens per row, the generator expects {}", layout.seq_len)));
    }
    let max = if allow_mask { layout.mask_id() } else { layout.mask_id() - 1 };
    let values = read_ids(ids.clone())?;
    if let Some(bad) = values.iter().find(|&&v| v < 0 || v > max) {
        return Err(TitokError::Input(format!("image token id {bad} is outside 0..={max}")));
    }
    Ok(())
}

pub(crate) fn read_ids<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    t.try_into_vec_as::<i64>().map_err(|e| TitokError::Input(format!("cannot read ids: {e:?}")))
}

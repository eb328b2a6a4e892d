//! The error of the loss networks (LPIPS here; the perceptual and GAN losses of `titok-train`).

use titok_model::TitokError;

/// Errors of the loss modules.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A loss that needs pretrained weights was requested without a weights file.
    #[error("{what} needs pretrained weights and none were given: {hint}")]
    MissingWeights {
        /// The loss.
        what: &'static str,
        /// Where such weights come from.
        hint: &'static str,
    },
    /// Inputs of the wrong shape (the message names both shapes).
    #[error("invalid input: {0}")]
    Input(String),
    /// A weights file that cannot be read or does not fit the network.
    #[error(transparent)]
    Model(#[from] TitokError),
}

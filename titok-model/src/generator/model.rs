//! The [`Generator`] enum over both architectures, chosen by the configuration.
//!
//! Source: `modeling/maskgit.py` (`ImageBert`, `UViTBert`).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::error::Result;
use crate::generator::bert::ImageBert;
use crate::generator::config::{GeneratorConfig, GeneratorKind, TokenLayout};
use crate::generator::predictor::TokenPredictor;
use crate::generator::uvit::UViTBert;

/// Either generator architecture, chosen by [`GeneratorConfig::kind`].
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Generator {
    /// `ImageBert` (TiTok-L-32, B-64).
    Bert(ImageBert),
    /// `UViTBert` (TiTok-S-128).
    UVit(UViTBert),
}

impl Generator {
    /// A randomly initialised generator of `config.kind`.
    ///
    /// # Errors
    /// [`TitokError::Config`] when `config` does not validate.
    pub fn new(config: &GeneratorConfig, device: &Device) -> Result<Self> {
        Ok(match config.kind {
            GeneratorKind::Bert => Self::Bert(ImageBert::new(config, device)?),
            GeneratorKind::UVit => Self::UVit(UViTBert::new(config, device)?),
        })
    }
}

impl TokenPredictor for Generator {
    fn layout(&self) -> TokenLayout {
        match self {
            Self::Bert(m) => m.layout(),
            Self::UVit(m) => m.layout(),
        }
    }

    fn config(&self) -> &GeneratorConfig {
        match self {
            Self::Bert(m) => &m.config,
            Self::UVit(m) => &m.config,
        }
    }

    fn logits(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        match self {
            Self::Bert(m) => m.logits(input_ids),
            Self::UVit(m) => m.logits(input_ids),
        }
    }
}

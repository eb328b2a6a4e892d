//! The Hugging Face BERT initialisation shared by both generator architectures: weights
//! `N(0, 0.02)`, biases 0.
//!
//! Source: HF `modeling_bert.py::BertPreTrainedModel._init_weights` (`initializer_range`
//! 0.02), used by `modeling/maskgit.py` for `ImageBert` and `UViTBert`.

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// Standard deviation of the HF BERT initialisation (`initializer_range`).
pub const BERT_INIT_STD: f64 = 0.02;

/// A linear layer with the HF init: weight `N(0, 0.02)`, bias 0.
pub(crate) fn init_linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    let mut l = LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Normal { mean: 0.0, std: BERT_INIT_STD })
        .init(device);
    if bias {
        l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    }
    l
}

/// An embedding table with the HF init `N(0, 0.02)`.
pub(crate) fn init_embedding(n: usize, d: usize, device: &Device) -> Embedding {
    EmbeddingConfig::new(n, d).with_initializer(Initializer::Normal { mean: 0.0, std: BERT_INIT_STD }).init(device)
}

//! Diagonal Gaussian posterior of the VAE ("KL") TiTok variants.
//!
//! Source: `modeling/quantizer/quantizer.py::DiagonalGaussianDistribution`; REFERENCE §5.

use burn::tensor::{Distribution, Tensor};

/// A diagonal Gaussian over latent tokens, parameterised by the encoder output.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// Mean `[batch, C, 1, K]`.
    pub mean: Tensor<4>,
    /// Log-variance `[batch, C, 1, K]`, clamped to `[-30, 20]`.
    pub logvar: Tensor<4>,
}

impl DiagonalGaussian {
    /// Splits the encoder output `[batch, 2C, 1, K]` into mean (first `C` channels) and logvar.
    pub fn from_encoder(z: Tensor<4>) -> Self {
        let c2 = z.dims()[1];
        let mean = z.clone().slice_dim(1, 0..c2 / 2);
        let logvar = z.slice_dim(1, c2 / 2..c2).clamp(-30.0, 20.0);
        Self { mean, logvar }
    }

    /// Standard deviation `exp(0.5 · logvar)`, `[batch, C, 1, K]`.
    pub fn std(&self) -> Tensor<4> {
        self.logvar.clone().mul_scalar(0.5).exp()
    }

    /// The mode (= mean).
    pub fn mode(&self) -> Tensor<4> {
        self.mean.clone()
    }

    /// `mean + std · eps` for given standard-normal noise `eps` `[batch, C, 1, K]`.
    pub fn sample_with(&self, eps: Tensor<4>) -> Tensor<4> {
        self.mean.clone() + self.std() * eps
    }

    /// A sample with fresh noise from the device's RNG (seed it with `Device::seed`).
    pub fn sample(&self) -> Tensor<4> {
        let eps = Tensor::random(self.mean.shape(), Distribution::Normal(0.0, 1.0), &self.mean.device());
        self.sample_with(eps)
    }

    /// KL divergence to N(0, I) per token, `[batch, K]`: `0.5 · Σ_c (mean² + var - 1 - logvar)`
    /// (the official code sums dims 1 and 2).
    pub fn kl(&self) -> Tensor<2> {
        let var = self.logvar.clone().exp();
        let [b, _, _, k] = self.mean.dims();
        (self.mean.clone().square() + var - self.logvar.clone())
            .sub_scalar(1.0)
            .sum_dims(&[1, 2])
            .mul_scalar(0.5)
            .reshape([b, k])
    }
}

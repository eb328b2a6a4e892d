//! The TiTok tokenizer: `encode` images to K latent tokens, `decode` them back, and
//! `decode_tokens` from token ids.
//!
//! Source: `modeling/titok.py::TiTok`; REFERENCE §2-5. Two-stage ("legacy") models decode to
//! 1024-way proxy-code logits; with `finetune_decoder` the logits go through a *soft* codebook
//! lookup (softmax-weighted, not argmax) into the MaskGIT-VQGAN pixel decoder.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor};

use crate::config::{QuantizeMode, TitokConfig};
use crate::decoder::{DecoderOutput, TitokDecoder};
use crate::encoder::{EncoderOutput, TitokEncoder};
use crate::error::{Result, TitokError};
use crate::quantizer::{QuantizerLosses, VectorQuantizer};
use crate::vae::DiagonalGaussian;
use crate::vit::embedding_param;
use crate::vqgan::VqganDecoder;

/// What [`Titok::encode`] returns.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// Latents for the decoder, `[batch, C, 1, K]`: the straight-through quantized codes (VQ)
    /// or the posterior mode (VAE; sample from [`Encoding::posterior`] for training).
    pub latents: Tensor<4>,
    /// Token ids `[batch, K]` in `0..codebook_size` (VQ only).
    pub tokens: Option<Tensor<2, Int>>,
    /// Quantizer losses (VQ only).
    pub losses: Option<QuantizerLosses>,
    /// The posterior (VAE only).
    pub posterior: Option<DiagonalGaussian>,
    /// Encoder intermediates (`enc_ln_post`, `z_pre_quant`).
    pub encoder: EncoderOutput,
}

/// What [`Titok::decode_with_intermediates`] returns.
#[derive(Debug, Clone)]
pub struct Decoding {
    /// The ViT decoder's outputs (`dec_ln_post`, proxy-code logits or single-stage pixels).
    pub decoder: DecoderOutput,
    /// Soft codes `[batch, 256, G, G]` fed to the pixel decoder (two-stage stage-2 only).
    pub soft_codes: Option<Tensor<4>>,
    /// Final output, unclamped: pixels `[batch, 3, H, W]` (target `[0, 1]`), or for a two-stage
    /// stage-1 model the proxy-code logits `[batch, N_pixel_codes, G, G]`.
    pub out: Tensor<4>,
}

/// A TiTok tokenizer. Parameter names follow the official state dict (see
/// [`crate::checkpoint`]).
#[derive(Module, Debug)]
pub struct Titok {
    /// Learnable latent tokens `[K, W_enc]`, appended to the patches in the encoder.
    pub latent_tokens: Param<Tensor<2>>,
    /// ViT encoder.
    pub encoder: TitokEncoder,
    /// Vector quantizer (VQ models).
    pub quantize: Option<VectorQuantizer>,
    /// ViT decoder.
    pub decoder: TitokDecoder,
    /// MaskGIT-VQGAN codebook for the soft lookup (two-stage stage-2 models).
    pub pixel_quantize: Option<VectorQuantizer>,
    /// MaskGIT-VQGAN decoder (two-stage stage-2 models).
    pub pixel_decoder: Option<VqganDecoder>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: TitokConfig,
}

impl Titok {
    /// A randomly initialised model (official init for embeddings and codebook).
    ///
    /// # Errors
    /// [`TitokError::Config`] when `config` does not validate.
    pub fn new(config: &TitokConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let w = config.encoder.width;
        let vq = config.quantize_mode == QuantizeMode::Vq;
        let stage2 = config.is_legacy && config.finetune_decoder;
        let pv = &config.pixel_vqgan;
        Ok(Self {
            latent_tokens: embedding_param([config.num_latent_tokens, w], w, device),
            encoder: TitokEncoder::new(config, device),
            quantize: vq.then(|| {
                VectorQuantizer::new(
                    config.codebook_size,
                    config.token_size,
                    config.use_l2_norm,
                    config.commitment_cost,
                    device,
                )
            }),
            decoder: TitokDecoder::new(config, device),
            pixel_quantize: stage2
                .then(|| VectorQuantizer::new(pv.codebook_size, pv.z_channels, false, pv.commitment_cost, device)),
            pixel_decoder: stage2.then(|| VqganDecoder::new(pv, device)),
            config: config.clone(),
        })
    }

    /// Checks that `pixels` is `[batch >= 1, 3, S, S]` with `S = image_size`.
    ///
    /// # Errors
    /// [`TitokError::Input`] naming the expected and actual shape.
    pub fn check_pixels(&self, pixels: &Tensor<4>) -> Result<()> {
        let [b, c, h, w] = pixels.dims();
        let s = self.config.image_size;
        if b == 0 || c != 3 || h != s || w != s {
            return Err(TitokError::Input(format!("expected images [batch, 3, {s}, {s}], got [{b}, {c}, {h}, {w}]")));
        }
        Ok(())
    }

    /// Encodes images to latent tokens.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, S, S]`, RGB in `[0, 1]`, `S = config.image_size`
    /// - see [`Encoding`] for the outputs (`K = num_latent_tokens`)
    ///
    /// # Errors
    /// [`TitokError::Input`] when the shape does not match the model.
    pub fn encode(&self, pixels: Tensor<4>) -> Result<Encoding> {
        self.check_pixels(&pixels)?;
        Ok(self.encode_unchecked(pixels))
    }

    /// [`Titok::encode`] without the shape check (for training loops).
    pub fn encode_unchecked(&self, pixels: Tensor<4>) -> Encoding {
        let encoder = self.encoder.forward(pixels, self.latent_tokens.val());
        match &self.quantize {
            Some(quantize) => {
                let q = quantize.forward(encoder.z.clone());
                Encoding {
                    latents: q.z_quantized,
                    tokens: Some(q.indices),
                    losses: Some(q.losses),
                    posterior: None,
                    encoder,
                }
            }
            None => {
                let posterior = DiagonalGaussian::from_encoder(encoder.z.clone());
                Encoding { latents: posterior.mode(), tokens: None, losses: None, posterior: Some(posterior), encoder }
            }
        }
    }

    /// Decodes latents, keeping the intermediates.
    ///
    /// # Shapes
    /// - `latents`: `[batch, C, 1, K]`
    pub fn decode_with_intermediates(&self, latents: Tensor<4>) -> Decoding {
        let decoder = self.decoder.forward(latents);
        match (&self.pixel_quantize, &self.pixel_decoder) {
            (Some(codebook), Some(pixel_decoder)) => {
                let soft_codes = soft_codebook_lookup(decoder.out.clone(), codebook.embedding.weight.val());
                let out = pixel_decoder.forward(soft_codes.clone());
                Decoding { decoder, soft_codes: Some(soft_codes), out }
            }
            _ => {
                let out = decoder.out.clone();
                Decoding { decoder, soft_codes: None, out }
            }
        }
    }

    /// Decodes latents to pixels `[batch, 3, S, S]` (unclamped; clamp to `[0, 1]` for images),
    /// or, for a two-stage stage-1 model, to proxy-code logits `[batch, N_pixel_codes, G, G]`.
    ///
    /// # Shapes
    /// - `latents`: `[batch, C, 1, K]` (as in [`Encoding::latents`])
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        self.decode_with_intermediates(latents).out
    }

    /// Looks up token ids in the codebook: `[batch, K]` -> latents `[batch, C, 1, K]`.
    ///
    /// # Errors
    /// [`TitokError::Input`] for a VAE model, a wrong token count or an id outside
    /// `0..codebook_size`.
    pub fn tokens_to_latents(&self, ids: Tensor<2, Int>) -> Result<Tensor<4>> {
        let quantize = self
            .quantize
            .as_ref()
            .ok_or_else(|| TitokError::Input("a VAE tokenizer has no codebook: decode latents instead".into()))?;
        let [_, k] = ids.dims();
        if k != self.config.num_latent_tokens {
            return Err(TitokError::Input(format!(
                "expected {} tokens per image, got {k}",
                self.config.num_latent_tokens
            )));
        }
        let n = quantize.codebook_size() as i64;
        let (min, max) = (ids.clone().min().into_scalar::<i64>(), ids.clone().max().into_scalar::<i64>());
        if min < 0 || max >= n {
            let bad = if min < 0 { min } else { max };
            return Err(TitokError::Input(format!("token id {bad} is outside the codebook 0..{n}")));
        }
        Ok(quantize.decode_tokens(ids))
    }

    /// Decodes token ids (`decode_tokens` of the official code): `[batch, K]` ids -> same
    /// output as [`Titok::decode`].
    ///
    /// # Errors
    /// As [`Titok::tokens_to_latents`].
    pub fn decode_tokens(&self, ids: Tensor<2, Int>) -> Result<Tensor<4>> {
        Ok(self.decode(self.tokens_to_latents(ids)?))
    }

    /// Image -> tokens -> image, clamped to `[0, 1]`.
    ///
    /// # Errors
    /// As [`Titok::encode`]; [`TitokError::Input`] for a stage-1 model (it decodes to logits).
    pub fn reconstruct(&self, pixels: Tensor<4>) -> Result<Tensor<4>> {
        if !self.config.decodes_to_pixels() {
            return Err(TitokError::Input("a two-stage stage-1 model decodes to proxy-code logits, not pixels".into()));
        }
        let enc = self.encode(pixels)?;
        Ok(self.decode(enc.latents).clamp(0.0, 1.0))
    }
}

/// Soft codebook lookup of two-stage stage-2 models: softmax over the code axis, then the
/// probability-weighted sum of codebook rows.
///
/// # Shapes
/// - `logits`: `[batch, N, h, w]`; `codebook`: `[N, D]` -> `[batch, D, h, w]`
pub fn soft_codebook_lookup(logits: Tensor<4>, codebook: Tensor<2>) -> Tensor<4> {
    let [b, n, h, w] = logits.dims();
    let d = codebook.dims()[1];
    let probs = softmax(logits, 1).reshape([b, n, h * w]);
    codebook.transpose().unsqueeze::<3>().matmul(probs).reshape([b, d, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The soft lookup is a softmax-weighted mean of codebook rows: peaked logits give the hard
    /// code, flat logits the mean row.
    #[test]
    fn soft_codebook_lookup_weights_rows_by_softmax() {
        let device = Device::flex();
        let codebook = Tensor::<2>::random([5, 3], Distribution::Normal(0.0, 1.0), &device);
        let mut peaked = vec![0.0f32; 5];
        peaked[3] = 100.0;
        let logits = Tensor::<1>::from_floats(peaked.as_slice(), &device).reshape([1, 5, 1, 1]);
        let soft = soft_codebook_lookup(logits, codebook.clone()).reshape([3]);
        let hard = codebook.clone().slice_dim(0, 3..4).reshape([3]);
        assert!((soft - hard).abs().max().into_scalar::<f32>() < 1e-5);
        let flat = Tensor::<4>::zeros([1, 5, 1, 1], &device);
        let soft = soft_codebook_lookup(flat, codebook.clone()).reshape([3]);
        let mean = codebook.mean_dim(0).reshape([3]);
        assert!((soft - mean).abs().max().into_scalar::<f32>() < 1e-5);
    }
}

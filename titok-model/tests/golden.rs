//! Golden parity with the official PyTorch code: every fixture folder under
//! `TITOK_GOLDEN_DIR` (default `../shared/golden`) of a tokenizer kind is loaded through the
//! official-checkpoint loader and every tensor its `io.safetensors` holds is compared.
//!
//! Kinds ([`FixtureKind`]): `titok_legacy_*` (stage 1 or 2 by `finetune_decoder`),
//! `titok_vq_*`, `titok_vae_*`, `maskgit_vqgan_*`; a set without one of them fails. Inputs,
//! ids and final outputs are required; intermediates are compared when stored, and every stored
//! tensor must be compared. Tolerances from `../shared/golden/README.md`: transformer
//! activations and logits atol/rtol 1e-4, conv-decoder pixels atol 5e-4, losses rtol 1e-5,
//! ids exact.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use titok_model::checkpoint::{load_titok, load_vqgan};
use titok_model::golden::{FixtureKind, IoTensors, test_device};
use titok_model::loss::proxy_code_cross_entropy;

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-4;
const PIXEL_ATOL: f64 = 5e-4;
const LOSS_RTOL: f64 = 1e-5;

/// Required tensors (inputs, ids, final outputs) are read with `get`/`assert_*`, which panic
/// when absent; intermediates with `assert_*_if_stored`, compared whenever the fixture has them.
fn check_titok_fixture(dir: &Path, device: &Device) {
    let model = load_titok(dir, device).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut io = IoTensors::load(dir);
    let input: Tensor<4> = io.float("input", device);
    let enc = model.encode(input).unwrap();
    io.assert_close_if_stored("enc_ln_post", || enc.encoder.ln_post.clone(), ATOL, RTOL);
    io.assert_close_if_stored("z_pre_quant", || enc.encoder.z.clone(), ATOL, RTOL);

    if let Some(posterior) = &enc.posterior {
        // VAE: posterior, KL, sample with the stored noise, and decodes of mode and sample.
        io.assert_close_if_stored("posterior_mean", || posterior.mean.clone(), ATOL, RTOL);
        io.assert_close_if_stored("posterior_logvar", || posterior.logvar.clone(), ATOL, RTOL);
        io.assert_close_if_stored("posterior_std", || posterior.std(), ATOL, RTOL);
        io.assert_close_if_stored("kl", || posterior.kl(), ATOL, RTOL);
        let dec = model.decode_with_intermediates(posterior.mode());
        io.assert_close_if_stored("dec_ln_post_mode", || dec.decoder.ln_post.clone(), ATOL, RTOL);
        io.assert_close("decoded_mode", dec.out.clone(), PIXEL_ATOL, 0.0);
        io.assert_close_if_stored("decoded_mode_clamped", || dec.out.clamp(0.0, 1.0), PIXEL_ATOL, 0.0);
        if io.has("sample_eps") {
            let eps: Tensor<4> = io.float("sample_eps", device);
            let sample = posterior.sample_with(eps);
            io.assert_close_if_stored("z_sample", || sample.clone(), ATOL, RTOL);
            io.assert_close_if_stored("decoded_sample", || model.decode(sample), PIXEL_ATOL, 0.0);
        }
        io.assert_all_checked();
        return;
    }

    let tokens = enc.tokens.clone().expect("VQ tokens");
    io.assert_ids("token_ids", tokens.clone());
    io.assert_close_if_stored("z_quantized", || enc.latents.clone(), ATOL, RTOL);
    let losses = enc.losses.as_ref().expect("VQ losses");
    let scalar = |t: &Tensor<1>| t.clone().into_scalar::<f64>();
    io.assert_scalar_if_stored("quantizer_loss", || scalar(&losses.quantizer_loss), LOSS_RTOL);
    io.assert_scalar_if_stored("commitment_loss", || scalar(&losses.commitment_loss), LOSS_RTOL);
    io.assert_scalar_if_stored("codebook_loss", || scalar(&losses.codebook_loss), LOSS_RTOL);

    let dec = model.decode_with_intermediates(enc.latents.clone());
    io.assert_close_if_stored("dec_ln_post", || dec.decoder.ln_post.clone(), ATOL, RTOL);
    let from_tokens = model.decode_tokens(tokens).unwrap();

    if model.config.is_legacy {
        let logits = dec.decoder.out.clone();
        if model.config.finetune_decoder {
            // Stage 2: soft codebook lookup into the MaskGIT-VQGAN pixel decoder.
            io.assert_close_if_stored("decoder_logits", || logits.clone(), ATOL, RTOL);
            io.assert_close_if_stored("soft_codes", || dec.soft_codes.clone().expect("soft codes"), ATOL, RTOL);
            io.assert_close("decoded", dec.out.clone(), PIXEL_ATOL, 0.0);
            io.assert_close_if_stored("decoded_clamped", || dec.out.clamp(0.0, 1.0), PIXEL_ATOL, 0.0);
            io.assert_close_if_stored("decoded_from_tokens", || from_tokens, PIXEL_ATOL, 0.0);
        } else {
            // Stage 1: proxy-code logits (the output), their argmax and the cross-entropy loss.
            io.assert_close("decoder_logits", logits.clone(), ATOL, RTOL);
            io.assert_close_if_stored("decoder_logits_from_tokens", || from_tokens, ATOL, RTOL);
            let [b, n, h, w] = logits.dims();
            let argmax = logits.clone().reshape([b, n, h * w]).argmax(1).reshape([b, h * w]);
            io.assert_ids("proxy_codes_argmax", argmax);
            if io.has("stage1_target_codes") {
                let targets = io.int::<2>("stage1_target_codes", device);
                let ce = proxy_code_cross_entropy(logits, targets).into_scalar::<f64>();
                io.assert_scalar_if_stored("stage1_ce_loss", || ce, LOSS_RTOL);
                io.assert_scalar_if_stored("stage1_total_loss", || ce + scalar(&losses.quantizer_loss), LOSS_RTOL);
            }
        }
    } else {
        io.assert_close_if_stored(
            "dec_pixel_shuffled",
            || dec.decoder.pixel_shuffled.clone().expect("pixel head"),
            ATOL,
            RTOL,
        );
        io.assert_close("decoded", dec.out.clone(), PIXEL_ATOL, 0.0);
        io.assert_close_if_stored("decoded_clamped", || dec.out.clamp(0.0, 1.0), PIXEL_ATOL, 0.0);
        io.assert_close_if_stored("decoded_from_tokens", || from_tokens, PIXEL_ATOL, 0.0);
    }
    io.assert_all_checked();
}

fn check_vqgan_fixture(dir: &Path, device: &Device) {
    let model = load_vqgan(dir, device).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut io = IoTensors::load(dir);
    let input: Tensor<4> = io.float("input", device);
    let enc = model.encoder.forward_with_intermediates(input.clone());
    for (i, t) in enc.down.iter().enumerate() {
        io.assert_close_if_stored(&format!("enc_down{i}_out"), || t.clone(), ATOL, RTOL);
    }
    io.assert_close_if_stored("enc_mid_out", || enc.mid.clone(), ATOL, RTOL);
    io.assert_close_if_stored("encoder_out", || enc.out.clone(), ATOL, RTOL);
    let (quantized, q) = model.quantize_latents(enc.out);
    io.assert_close_if_stored("quantized", || quantized, ATOL, RTOL);
    io.assert_ids("code_ids", q.indices.clone());
    io.assert_ids("code_ids", model.encode(input));

    let dec = model.decoder.forward_with_intermediates(model.codes_to_latents(q.indices.clone()));
    io.assert_close_if_stored("dec_mid_out", || dec.mid.clone(), ATOL, RTOL);
    // Up levels run deepest first: `up[0]` is level L-1.
    let levels = model.decoder.up.len();
    for (j, t) in dec.up.iter().enumerate() {
        io.assert_close_if_stored(&format!("dec_up{}_out", levels - 1 - j), || t.clone(), PIXEL_ATOL, 0.0);
    }
    io.assert_close("decoded", dec.out.clone(), PIXEL_ATOL, 0.0);
    io.assert_close_if_stored("decoded_clamped", || model.decode_codes(q.indices), PIXEL_ATOL, 0.0);
    io.assert_all_checked();
}

#[test]
fn golden_tokenizer_fixtures_match_the_official_code() {
    check_all(&test_device());
}

/// The pixel decoders' parity with the CPU fast path (Winograd 3x3 convolutions) forced on
/// every conv it applies to, the small-image levels included that it skips by default.
#[test]
fn golden_pixel_decoders_match_with_winograd_on_every_level() {
    use titok_kernels::{Conv3x3Path, with_conv3x3_path};
    let device = Device::flex();
    with_conv3x3_path(Conv3x3Path::Winograd, || {
        for dir in FixtureKind::TitokLegacyStage2.all() {
            check_titok_fixture(&dir, &device);
        }
        for dir in FixtureKind::MaskgitVqgan.all() {
            check_vqgan_fixture(&dir, &device);
        }
    });
}

/// The same parity on the wgpu backend (lavapipe in CI): the quantizer runs the fused
/// nearest-code kernel there.
#[cfg(feature = "wgpu")]
#[test]
fn golden_tokenizer_fixtures_match_on_wgpu() {
    check_all(&Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
}

/// Every fixture of every tokenizer kind; each kind must be present in the set.
fn check_all(device: &Device) {
    let titok =
        [FixtureKind::TitokLegacyStage1, FixtureKind::TitokLegacyStage2, FixtureKind::TitokVq, FixtureKind::TitokVae];
    for kind in titok {
        for dir in kind.all() {
            check_titok_fixture(&dir, device);
            eprintln!("parity ok ({kind:?}): {}", dir.display());
        }
    }
    for dir in FixtureKind::MaskgitVqgan.all() {
        check_vqgan_fixture(&dir, device);
        eprintln!("parity ok (MaskgitVqgan): {}", dir.display());
    }
}

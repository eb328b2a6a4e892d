//! Golden parity with the official PyTorch code: every fixture folder under
//! `TITOK_GOLDEN_DIR` (default `../shared/golden`) of a tokenizer kind is loaded through the
//! official-checkpoint loader and every tensor its `io.safetensors` holds is compared.
//!
//! Kinds by folder prefix: `titok_legacy_*_stage1`, `titok_legacy_*_stage2`, `titok_vq_*`,
//! `titok_vae_*`, `maskgit_vqgan_*`. Tolerances from `../shared/golden/README.md`: transformer
//! activations and logits atol/rtol 1e-4, conv-decoder pixels atol 5e-4, losses rtol 1e-5,
//! ids exact.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use titok_model::checkpoint::{load_titok, load_vqgan};
use titok_model::golden::{IoTensors, discover, golden_root, test_device};
use titok_model::loss::proxy_code_cross_entropy;

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-4;
const PIXEL_ATOL: f64 = 5e-4;
const LOSS_RTOL: f64 = 1e-5;

fn root() -> PathBuf {
    golden_root(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"))
}

fn check_titok_fixture(dir: &Path, device: &Device) {
    let model = load_titok(dir, device).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut io = IoTensors::load(dir);
    let input: Tensor<4> = io.float("input", device);
    let enc = model.encode(input).unwrap();
    io.assert_close("enc_ln_post", enc.encoder.ln_post.clone(), ATOL, RTOL);
    io.assert_close("z_pre_quant", enc.encoder.z.clone(), ATOL, RTOL);

    if let Some(posterior) = &enc.posterior {
        // VAE: posterior, KL, sample with the stored noise, and decodes of mode and sample.
        io.assert_close("posterior_mean", posterior.mean.clone(), ATOL, RTOL);
        io.assert_close("posterior_logvar", posterior.logvar.clone(), ATOL, RTOL);
        io.assert_close("posterior_std", posterior.std(), ATOL, RTOL);
        io.assert_close("kl", posterior.kl(), ATOL, RTOL);
        let eps: Tensor<4> = io.float("sample_eps", device);
        let sample = posterior.sample_with(eps);
        io.assert_close("z_sample", sample.clone(), ATOL, RTOL);
        let dec = model.decode_with_intermediates(posterior.mode());
        io.assert_close("dec_ln_post_mode", dec.decoder.ln_post.clone(), ATOL, RTOL);
        io.assert_close("decoded_mode", dec.out.clone(), PIXEL_ATOL, 0.0);
        io.assert_close("decoded_mode_clamped", dec.out.clamp(0.0, 1.0), PIXEL_ATOL, 0.0);
        io.assert_close("decoded_sample", model.decode(sample), PIXEL_ATOL, 0.0);
        io.assert_all_checked();
        return;
    }

    let tokens = enc.tokens.clone().expect("VQ tokens");
    io.assert_ids("token_ids", tokens.clone());
    io.assert_close("z_quantized", enc.latents.clone(), ATOL, RTOL);
    if io.has("quantizer_loss") {
        let l = enc.losses.as_ref().expect("VQ losses");
        io.assert_scalar("quantizer_loss", l.quantizer_loss.clone().into_scalar::<f64>(), LOSS_RTOL);
        io.assert_scalar("commitment_loss", l.commitment_loss.clone().into_scalar::<f64>(), LOSS_RTOL);
        io.assert_scalar("codebook_loss", l.codebook_loss.clone().into_scalar::<f64>(), LOSS_RTOL);
    }

    let dec = model.decode_with_intermediates(enc.latents.clone());
    io.assert_close("dec_ln_post", dec.decoder.ln_post.clone(), ATOL, RTOL);
    let from_tokens = model.decode_tokens(tokens).unwrap();

    if model.config.is_legacy {
        let logits = dec.decoder.out.clone();
        io.assert_close("decoder_logits", logits.clone(), ATOL, RTOL);
        if model.config.finetune_decoder {
            // Stage 2: soft codebook lookup into the MaskGIT-VQGAN pixel decoder.
            io.assert_close("soft_codes", dec.soft_codes.clone().expect("soft codes"), ATOL, RTOL);
            io.assert_close("decoded", dec.out.clone(), PIXEL_ATOL, 0.0);
            io.assert_close("decoded_clamped", dec.out.clamp(0.0, 1.0), PIXEL_ATOL, 0.0);
            io.assert_close("decoded_from_tokens", from_tokens, PIXEL_ATOL, 0.0);
        } else {
            // Stage 1: proxy-code logits, their argmax and the cross-entropy loss.
            io.assert_close("decoder_logits_from_tokens", from_tokens, ATOL, RTOL);
            let [b, n, h, w] = logits.dims();
            let argmax = logits.clone().reshape([b, n, h * w]).argmax(1).reshape([b, h * w]);
            io.assert_ids("proxy_codes_argmax", argmax);
            let targets = io.int::<2>("stage1_target_codes", device);
            let ce = proxy_code_cross_entropy(logits, targets).into_scalar::<f64>();
            io.assert_scalar("stage1_ce_loss", ce, LOSS_RTOL);
            let q = enc.losses.as_ref().unwrap().quantizer_loss.clone().into_scalar::<f64>();
            io.assert_scalar("stage1_total_loss", ce + q, LOSS_RTOL);
        }
    } else {
        io.assert_close(
            "dec_pixel_shuffled",
            dec.decoder.pixel_shuffled.clone().expect("pixel head"),
            ATOL,
            RTOL,
        );
        io.assert_close("decoded", dec.out.clone(), PIXEL_ATOL, 0.0);
        io.assert_close("decoded_clamped", dec.out.clamp(0.0, 1.0), PIXEL_ATOL, 0.0);
        io.assert_close("decoded_from_tokens", from_tokens, PIXEL_ATOL, 0.0);
    }
    io.assert_all_checked();
}

fn check_vqgan_fixture(dir: &Path, device: &Device) {
    let model = load_vqgan(dir, device).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut io = IoTensors::load(dir);
    let input: Tensor<4> = io.float("input", device);
    let enc = model.encoder.forward_with_intermediates(input.clone());
    for (i, t) in enc.down.iter().enumerate() {
        io.assert_close(&format!("enc_down{i}_out"), t.clone(), ATOL, RTOL);
    }
    io.assert_close("enc_mid_out", enc.mid.clone(), ATOL, RTOL);
    io.assert_close("encoder_out", enc.out.clone(), ATOL, RTOL);
    let (quantized, q) = model.quantize_latents(enc.out);
    io.assert_close("quantized", quantized, ATOL, RTOL);
    io.assert_ids("code_ids", q.indices.clone());
    io.assert_ids("code_ids", model.encode(input));

    let dec = model.decoder.forward_with_intermediates(model.codes_to_latents(q.indices.clone()));
    io.assert_close("dec_mid_out", dec.mid.clone(), ATOL, RTOL);
    // Up levels run deepest first: `up[0]` is level L-1.
    let levels = model.decoder.up.len();
    for (j, t) in dec.up.iter().enumerate() {
        let name = format!("dec_up{}_out", levels - 1 - j);
        if io.has(&name) {
            io.assert_close(&name, t.clone(), PIXEL_ATOL, 0.0);
        }
    }
    io.assert_close("decoded", dec.out.clone(), PIXEL_ATOL, 0.0);
    io.assert_close("decoded_clamped", model.decode_codes(q.indices), PIXEL_ATOL, 0.0);
    io.assert_all_checked();
}

#[test]
fn golden_tokenizer_fixtures_match_the_official_code() {
    check_all(&test_device());
}

/// The same parity on the wgpu backend (lavapipe in CI): the quantizer runs the fused
/// nearest-code kernel there.
#[cfg(feature = "wgpu")]
#[test]
fn golden_tokenizer_fixtures_match_on_wgpu() {
    check_all(&Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
}

fn check_all(device: &Device) {
    let device = device.clone();
    let root = root();
    let titok = discover(&root, &["titok_legacy_", "titok_vq_", "titok_vae_"]);
    assert!(titok.len() >= 4, "expected the four TiTok fixtures in {}, found {titok:?}", root.display());
    for dir in &titok {
        let name = dir.file_name().unwrap().to_string_lossy();
        let known = name.starts_with("titok_vq_")
            || name.starts_with("titok_vae_")
            || (name.starts_with("titok_legacy_") && (name.ends_with("_stage1") || name.ends_with("_stage2")));
        if known {
            check_titok_fixture(dir, &device);
            eprintln!("parity ok: {name}");
        }
    }
    let vqgan = discover(&root, &["maskgit_vqgan_"]);
    assert!(!vqgan.is_empty(), "no maskgit_vqgan_* fixture in {}", root.display());
    for dir in &vqgan {
        check_vqgan_fixture(dir, &device);
        eprintln!("parity ok: {}", dir.display());
    }
}

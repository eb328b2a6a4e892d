//! Parity of the perceptual and adversarial losses with the reference code, and gradient
//! checks of both as training losses.
//!
//! Fixtures under `TITOK_GOLDEN_DIR` (default `../shared/golden`, README §8 and §10), every
//! one of each kind (a set without one fails), sizes read from the stored tensor names:
//! - `lpips`: LPIPS-AlexNet distances and per-layer terms of the `lpips` 0.1.4 package at 64
//!   and 256 px, with the weights `$TITOK_SHARED_DIR/weights/lpips_alexnet.safetensors`
//!   (`$LPIPS_ALEX_WEIGHTS` overrides). The VGG16 values of the same fixture are compared only
//!   when `$LPIPS_VGG_WEIGHTS` names a VGG16 LPIPS file (torchvision layout); no such file ships
//!   here, so by default they are reported as skipped.
//! - `discriminator_tiny`: the official `NLayerDiscriminator` (hidden 32) logits at 64 and
//!   160 px, stage-2 and pool intermediates, and the hinge / generator / LeCam losses with the
//!   EMA update.
//!
//! Tolerances (README): logits and activations atol/rtol 1e-4, losses rtol 1e-5; LPIPS
//! distances atol 1e-5 (noise floor 6.5e-8).

use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Distribution, Tensor};
use titok_model::golden::{FixtureKind, IoTensors, shared_weights, stored_sizes, test_device};
use titok_train::discriminator::{Discriminator, DiscriminatorConfig, GN_EPS, GN_GROUPS, LEAKY_SLOPE};
use titok_train::losses::gan::{generator_loss, hinge_d_loss, lecam_loss};
use titok_train::losses::{GanLossConfig, LecamEma, Lpips, LpipsNet};

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-4;
const LOSS_RTOL: f64 = 1e-5;
const LPIPS_ATOL: f64 = 1e-5;

/// `$LPIPS_ALEX_WEIGHTS`, else the shared weights (`$TITOK_SHARED_DIR/weights`).
fn alexnet_weights() -> PathBuf {
    std::env::var_os("LPIPS_ALEX_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared_weights("lpips_alexnet.safetensors"))
}

/// Every stored size (`a_{S}_u8`) of the fixture.
fn check_lpips_net(io: &mut IoTensors, lpips: &Lpips, name: &str, device: &Device) {
    let sizes = stored_sizes(io, "a_", "_u8");
    assert!(!sizes.is_empty(), "{}: no `a_{{S}}_u8` inputs", io.path.display());
    for size in sizes {
        let a: Tensor<4> = io.float(&format!("a_{size}_u8"), device);
        let b: Tensor<4> = io.float(&format!("b_{size}_u8"), device);
        let out = lpips.forward(a, b).unwrap();
        io.assert_close(&format!("lpips_{name}_{size}"), out.distance, LPIPS_ATOL, RTOL);
        io.assert_close(&format!("lpips_{name}_{size}_per_layer"), out.per_layer, LPIPS_ATOL, RTOL);
    }
}

#[test]
fn lpips_matches_the_reference() {
    let device = test_device();
    for dir in FixtureKind::Lpips.all() {
        check_lpips_fixture(&dir, &device);
    }
}

fn check_lpips_fixture(dir: &Path, device: &Device) {
    let device = device.clone();
    let mut io = IoTensors::load(dir);

    let alex = Lpips::load(&alexnet_weights(), &device).unwrap();
    assert_eq!(alex.net, LpipsNet::AlexNet);
    check_lpips_net(&mut io, &alex, "alex", &device);

    match std::env::var_os("LPIPS_VGG_WEIGHTS") {
        Some(path) => {
            let vgg = Lpips::load_net(LpipsNet::Vgg16, Path::new(&path), &device).unwrap();
            check_lpips_net(&mut io, &vgg, "vgg", &device);
        }
        None => {
            let vgg: Vec<String> = io.names().into_iter().filter(|n| n.starts_with("lpips_vgg_")).collect();
            eprintln!("LPIPS_VGG_WEIGHTS not set: VGG16 values not compared (skipped: {vgg:?})");
            io.mark_inputs(&vgg.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    io.assert_all_checked();
}

#[test]
fn lpips_loading_is_strict() {
    let device = Device::flex();
    let weights = alexnet_weights();
    // An AlexNet file does not fit the VGG16 network: the error lists the problems.
    let err = Lpips::load_net(LpipsNet::Vgg16, &weights, &device).unwrap_err().to_string();
    assert!(err.contains("missing:") && err.contains("features.28.weight"), "{err}");
    assert!(err.contains("wrong shape:") && err.contains("features.0.weight"), "{err}");
    // A file that is no LPIPS file at all.
    let disc = FixtureKind::Discriminator.first().join("model.safetensors");
    assert!(Lpips::load(&disc, &device).is_err());
}

#[test]
fn discriminator_and_gan_losses_match_the_official_code() {
    let device = test_device();
    for dir in FixtureKind::Discriminator.all() {
        check_discriminator_fixture(&dir, &device);
        eprintln!("parity ok: {}", dir.display());
    }
}

/// Logits at every stored size (`real_{S}`, `fake_{S}`), the stage and pool intermediates when
/// stored, and the losses, computed (as the official script does) on the smallest size.
fn check_discriminator_fixture(dir: &Path, device: &Device) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let config: DiscriminatorConfig = serde_json::from_value(json.clone()).unwrap();
    // The fixed architecture constants agree with the fixture's record of them.
    assert_eq!(json["groupnorm_groups"], GN_GROUPS);
    assert_eq!(json["groupnorm_eps"], GN_EPS);
    assert_eq!(json["leaky_relu_slope"], LEAKY_SLOPE);
    assert_eq!(json["adaptive_max_pool"], serde_json::json!([16, 16]));

    let d = Discriminator::load(&config, &dir.join("model.safetensors"), device).unwrap();
    let mut io = IoTensors::load(dir);
    let sizes = stored_sizes(&io, "real_", "");
    assert!(!sizes.is_empty(), "{}: no `real_{{S}}` inputs", dir.display());
    let mut first = None;
    for &size in &sizes {
        let real = d.forward_with_intermediates(io.float(&format!("real_{size}"), device)).unwrap();
        for (i, stage) in real.stages.iter().enumerate() {
            io.assert_close_if_stored(&format!("real_{size}_stage{i}_out"), || stage.clone(), ATOL, RTOL);
        }
        io.assert_close_if_stored(&format!("real_{size}_pool_out"), || real.pooled.clone(), ATOL, RTOL);
        io.assert_close(&format!("logits_real_{size}"), real.logits.clone(), ATOL, RTOL);
        let fake = d.forward(io.float(&format!("fake_{size}"), device)).unwrap();
        io.assert_close(&format!("logits_fake_{size}"), fake.clone(), ATOL, RTOL);
        first.get_or_insert((real.logits, fake));
    }

    let (real, fake) = first.expect("one size");
    let scalar = |t: Tensor<1>| t.into_scalar::<f64>();
    io.assert_scalar_if_stored("hinge_d_loss", || scalar(hinge_d_loss(real.clone(), fake.clone())), LOSS_RTOL);
    io.assert_scalar_if_stored("generator_loss", || scalar(generator_loss(fake.clone())), LOSS_RTOL);

    let gan = GanLossConfig {
        discriminator_start: 0,
        discriminator_factor: json["discriminator_factor"].as_f64().unwrap(),
        discriminator_weight: 0.01,
        lecam_weight: json["lecam_regularization_weight"].as_f64().unwrap(),
        lecam_ema_decay: json["lecam_ema_decay"].as_f64().unwrap(),
    };
    io.assert_scalar_if_stored("lecam_weight", || gan.lecam_weight, LOSS_RTOL);
    if io.has("ema_real_logits_mean") {
        let ema_real = io.scalar("ema_real_logits_mean");
        let ema_fake = io.scalar("ema_fake_logits_mean");
        let mut ema = LecamEma::from_values(ema_real, ema_fake, gan.lecam_ema_decay, device);
        let lecam = lecam_loss(real.clone().mean(), fake.clone().mean(), &ema);
        io.assert_scalar_if_stored("lecam_loss_unweighted", || scalar(lecam), LOSS_RTOL);

        let loss = gan.discriminator_loss(0, real, fake, &mut ema);
        io.assert_scalar_if_stored("discriminator_loss_total", || scalar(loss.total), LOSS_RTOL);
        io.assert_scalar_if_stored("lecam_loss_unweighted", || scalar(loss.lecam), LOSS_RTOL);
        io.assert_close_if_stored("ema_real_logits_mean_updated", || ema.real.clone(), 1e-7, LOSS_RTOL);
        io.assert_close_if_stored("ema_fake_logits_mean_updated", || ema.fake.clone(), 1e-7, LOSS_RTOL);
    }

    // Second LeCam case of the official script (README §8): both relu branches active.
    let case2 = LecamEma::from_values(-0.5, 0.7, 0.999, device);
    let mean = |v: f32| Tensor::<1>::from_floats([v], device);
    io.assert_scalar_if_stored(
        "lecam_loss_unweighted_case2",
        || scalar(lecam_loss(mean(1.5), mean(-1.0), &case2)),
        LOSS_RTOL,
    );
    io.assert_all_checked();
}

/// A decoder-like trainable module: `sigmoid(conv3x3(x))`, images in `[0, 1]`.
#[derive(Module, Debug)]
struct TinyDecoder {
    conv: Conv2d,
}

impl TinyDecoder {
    fn new(device: &Device) -> Self {
        let conv = Conv2dConfig::new([3, 3], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
        Self { conv }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        sigmoid(self.conv.forward(x))
    }
}

fn grad_of(param: &Param<Tensor<4>>, grads: &burn::tensor::Gradients) -> Option<Vec<f32>> {
    param.val().grad(grads).map(|g| g.try_into_vec_as::<f32>().unwrap())
}

fn assert_useful(what: &str, g: Option<Vec<f32>>) {
    let g = g.unwrap_or_else(|| panic!("{what}: no gradient"));
    assert!(g.iter().all(|v| v.is_finite()), "{what}: non-finite gradient");
    let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(norm > 1e-6, "{what}: gradient norm {norm}");
}

#[test]
fn lpips_gives_gradients_to_the_decoder_and_none_to_its_weights() {
    let device = Device::flex().autodiff();
    let lpips = Lpips::load(&alexnet_weights(), &device).unwrap();
    let decoder = TinyDecoder::new(&device);
    let input = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let target = Tensor::<4>::random([2, 3, 64, 64], Distribution::Uniform(0.0, 1.0), &device);

    let loss = lpips.loss(decoder.forward(input), target).unwrap();
    let grads = loss.backward();
    assert_useful("decoder conv weight", grad_of(&decoder.conv.weight, &grads));
    for (i, conv) in lpips.convs.iter().enumerate() {
        assert!(!conv.weight.val().is_require_grad(), "LPIPS conv {i} requires grad");
        assert!(grad_of(&conv.weight, &grads).is_none(), "LPIPS conv {i} got a gradient");
    }
    for (i, lin) in lpips.lin.iter().enumerate() {
        assert!(grad_of(&lin.weight, &grads).is_none(), "LPIPS lin {i} got a gradient");
    }
}

/// The LPIPS gradient with respect to an image agrees with a central finite difference along
/// the gradient direction: `(L(x + εd) − L(x − εd)) / 2ε ≈ ‖∇L‖` for `d = ∇L / ‖∇L‖`.
#[test]
fn lpips_gradient_matches_a_finite_difference() {
    let device = Device::flex().autodiff();
    let lpips = Lpips::load(&alexnet_weights(), &device).unwrap();
    let x = Tensor::<4>::random([1, 3, 64, 64], Distribution::Uniform(0.2, 0.8), &device);
    let target = Tensor::<4>::random([1, 3, 64, 64], Distribution::Uniform(0.0, 1.0), &device);
    let xg = x.clone().require_grad();
    let grads = lpips.loss(xg.clone(), target.clone()).unwrap().backward();
    let g = xg.grad(&grads).expect("image gradient");
    let norm = g.clone().square().sum().sqrt().into_scalar::<f64>();
    let dir = Tensor::from_inner(g.clone() / norm);
    let eps = 1e-2;
    let at = |t: Tensor<4>| lpips.loss(t, target.clone()).unwrap().into_scalar::<f64>();
    let numeric = (at(x.clone() + dir.clone() * eps) - at(x - dir * eps)) / (2.0 * eps);
    assert!(norm > 1e-4, "gradient norm {norm}");
    assert!((numeric - norm).abs() < 0.03 * norm, "finite difference {numeric} vs gradient norm {norm}");
}

#[test]
fn gan_losses_train_the_right_parts() {
    let device = Device::flex().autodiff();
    let dir = FixtureKind::Discriminator.first();
    let config: DiscriminatorConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let d = Discriminator::load(&config, &dir.join("model.safetensors"), &device).unwrap();
    let decoder = TinyDecoder::new(&device);
    let input = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let real = Tensor::<4>::random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
    let gan = GanLossConfig::stage2().starting_at(0);

    // Generator step: the discriminator is frozen, the decoder gets the gradient.
    let frozen = d.clone().freeze();
    let fake = decoder.forward(input.clone());
    let loss = gan.weighted_generator_loss(0, frozen.forward(fake).unwrap());
    let grads = loss.backward();
    assert_useful("decoder conv weight (generator loss)", grad_of(&decoder.conv.weight, &grads));
    assert!(grad_of(&frozen.block_in.weight, &grads).is_none(), "frozen discriminator got a gradient");
    assert!(grad_of(&frozen.to_logits_out.weight, &grads).is_none());

    // Discriminator step on detached reconstructions: the discriminator's convs and norms get
    // gradients, its fixed blur kernels and the decoder none.
    let fake = decoder.forward(input).detach();
    let mut ema = LecamEma::new(gan.lecam_ema_decay, &device);
    let loss = gan.discriminator_loss(0, d.forward(real).unwrap(), d.forward(fake).unwrap(), &mut ema);
    let grads = loss.total.backward();
    assert_useful("discriminator stem", grad_of(&d.block_in.weight, &grads));
    assert_useful("discriminator head", grad_of(&d.to_logits_out.weight, &grads));
    for (i, stage) in d.blocks.iter().enumerate() {
        assert_useful(&format!("stage {i} conv"), grad_of(&stage.conv.weight, &grads));
        let gamma = stage.norm.gamma.as_ref().expect("affine GroupNorm").val();
        assert!(gamma.grad(&grads).is_some(), "stage {i} GroupNorm weight");
        let blur = stage.blur.as_ref().expect("blur");
        assert!(grad_of(&blur.kernel, &grads).is_none(), "stage {i} blur kernel got a gradient");
    }
    assert!(grad_of(&decoder.conv.weight, &grads).is_none(), "decoder got a discriminator gradient");
    let [r, f] = ema.values();
    assert!(r != 0.0 && f != 0.0, "LeCam EMA not updated");
}

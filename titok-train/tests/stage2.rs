//! Stage 2 (decoder fine-tuning with L2 + LPIPS + GAN):
//! - the frozen parts (encoder, quantizer, latent tokens) stay bit-identical over training
//!   steps, the trained parts move, and the discriminator is trained only from `gan_start` on;
//! - LPIPS and the GAN losses give finite, non-zero gradients to the decoder side and none to
//!   the frozen parts, the loss networks or (for the generator loss) the discriminator;
//! - single-stage VQ models (decoding to pixels) load without a pixel decoder and train their
//!   decoder only, through the stage-2 runner and its exports;
//! - end to end on CIFAR-10 (CPU, tiny configurations): a MaskGIT-VQGAN teacher, a short
//!   stage 1, then stage 2; the stage-2 reconstructions of validation images have a lower LPIPS
//!   than the stage-1 decode (argmax proxy codes decoded by the teacher) and than stage 2's own
//!   start, and they depend on the image.
//!
//! LPIPS is evaluated (and trained) on images up-sampled from 32 to 64 px
//! (`loss.perceptual_min_size`): at 32 px AlexNet's last three taps are 1x1 maps and the
//! distance is dominated by a few global features.
//!
//! Data and weights come from `../shared` (`TITOK_SHARED_DIR` overrides).

mod common;
use common::{json, logged, scratch, scratch_run, shared};

use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Gradients, Tensor};
use burn::train::TrainStep;
use titok_model::checkpoint::{StorageDType, load_titok, save_titok};
use titok_model::{QuantizeMode, Titok, TitokConfig, VitSize, VqganConfig};
use titok_train::config::TrainConfig;
use titok_train::data::{ImageBatch, ImageBatcher, Transform};
use titok_train::discriminator::DiscriminatorConfig;
use titok_train::losses::GanLossConfig;
use titok_train::losses::{Lpips, PerceptualKind};
use titok_train::losses::{PixelLoss, PixelLossConfig, perceptual_input};
use titok_train::stages::runner::{open_split, spread};
use titok_train::stages::stage2::{Stage2Trainee, load_stage2_model, stage2_optimizer, train_stage2};
use titok_train::stages::tokenizer::train_tokenizer;
use titok_train::stages::vqgan::train_vqgan;
use titok_train::train::optim::AdamWSettings;
use titok_train::train::schedule::WarmupCosine;

fn lpips_weights() -> PathBuf {
    shared().join("weights/lpips_alexnet.safetensors")
}

/// The tiny teacher: f = 4 (`channel_mult [1, 2, 2]`), so 32 px images give 8x8 codes.
fn tiny_vqgan() -> VqganConfig {
    VqganConfig {
        hidden_channels: 32,
        channel_mult: vec![1, 2, 2],
        num_res_blocks: 1,
        z_channels: 32,
        codebook_size: 256,
        ..VqganConfig::official()
    }
}

/// A two-stage TiTok at 32 px with patch 4 (8x8 patches, matching the teacher's code grid).
fn tiny_titok(finetune_decoder: bool) -> TitokConfig {
    let size = VitSize::new(64, 2, 4);
    TitokConfig {
        image_size: 32,
        patch_size: 4,
        encoder: size,
        decoder: size,
        num_latent_tokens: 16,
        token_size: 8,
        codebook_size: 256,
        use_l2_norm: true,
        commitment_cost: 0.25,
        quantize_mode: QuantizeMode::Vq,
        is_legacy: true,
        finetune_decoder,
        pixel_vqgan: tiny_vqgan(),
    }
}

/// The pixel loss of these tests: LPIPS-AlexNet on 64 px, the official discriminator at width
/// 32, GAN from `gan_start`.
fn pixel_loss(l2: f64, perceptual: f64, gan: f64, gan_start: usize, device: &Device) -> PixelLoss {
    let config = PixelLossConfig {
        l2_weight: l2,
        perceptual_weight: perceptual,
        perceptual_kind: PerceptualKind::Lpips,
        perceptual_min_size: 64,
        gan: (gan > 0.0)
            .then(|| GanLossConfig { discriminator_weight: gan, ..GanLossConfig::stage2().starting_at(gan_start) }),
        discriminator: DiscriminatorConfig::tiny(),
        discriminator_lr: WarmupCosine::new(1e-3, 1e-4, 0, 100),
    };
    PixelLoss::new(config, Some(&lpips_weights()), None, 32, device).expect("pixel loss")
}

/// A trainee with a random stage-2 model, on the autodiff device as burn-train runs it.
fn trainee(loss_of: impl Fn(&Device) -> PixelLoss) -> (Stage2Trainee, Device) {
    let device = Device::flex();
    device.seed(7);
    let model = Titok::new(&tiny_titok(true), &device).unwrap();
    let t = Stage2Trainee::new(model, loss_of(&device), 0.999, 1.0).unwrap();
    let ad = device.autodiff();
    (t.train().fork(&ad), ad)
}

fn batch(device: &Device) -> ImageBatch {
    let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), device);
    ImageBatch { images, labels: None, names: vec!["a".into(), "b".into()], indices: vec![0, 1] }
}

/// Every float parameter of a module, as raw values, in visiting order.
fn values<M: Module>(module: &M) -> Vec<Vec<f32>> {
    struct V(Vec<Vec<f32>>);
    impl ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.push(p.val().inner().try_into_vec_as::<f32>().unwrap());
        }
    }
    let mut v = V(Vec::new());
    module.visit(&mut v);
    v.0
}

/// The gradient of every float parameter of a module (`None` where it has none).
fn grads_of<M: Module>(module: &M, grads: &Gradients) -> Vec<Option<Vec<f32>>> {
    struct G<'a>(&'a Gradients, Vec<Option<Vec<f32>>>);
    impl ModuleVisitor for G<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.1.push(p.val().grad(self.0).map(|g| g.try_into_vec_as::<f32>().unwrap()));
        }
    }
    let mut g = G(grads, Vec::new());
    module.visit(&mut g);
    g.1
}

fn assert_useful(what: &str, g: &[Option<Vec<f32>>]) {
    assert!(!g.is_empty(), "{what}: no parameters");
    let mut norm = 0.0f64;
    for (i, g) in g.iter().enumerate() {
        let g = g.as_ref().unwrap_or_else(|| panic!("{what}: parameter {i} has no gradient"));
        assert!(g.iter().all(|v| v.is_finite()), "{what}: parameter {i} has a non-finite gradient");
        norm += g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
    }
    assert!(norm.sqrt() > 1e-8, "{what}: gradient norm {}", norm.sqrt());
}

fn assert_none(what: &str, g: &[Option<Vec<f32>>]) {
    assert!(g.iter().all(Option::is_none), "{what} got a gradient");
}

#[test]
fn frozen_parts_stay_bit_identical_and_the_gan_starts_on_time() {
    let (mut t, ad) = trainee(|d| pixel_loss(1.0, 0.1, 0.1, 2, d));
    let mut optim = stage2_optimizer(&t, AdamWSettings::default());
    let frozen =
        |t: &Stage2Trainee| (values(&t.model.encoder), values(&t.model.quantize), values(&t.model.latent_tokens));
    let trained =
        |t: &Stage2Trainee| (values(&t.model.decoder), values(&t.model.pixel_decoder), values(&t.model.pixel_quantize));
    let disc = |t: &Stage2Trainee| values(&t.loss.adversarial.as_ref().unwrap().discriminator);
    let lecam = |t: &Stage2Trainee| {
        let a = t.loss.adversarial.as_ref().unwrap();
        [a.lecam_real.val().into_scalar::<f32>(), a.lecam_fake.val().into_scalar::<f32>()]
    };
    let frozen0 = frozen(&t);
    let trained0 = trained(&t);
    let lpips0 = values(&t.loss.perceptual);
    let ema_frozen0 = (values(&t.ema.encoder), values(&t.ema.quantize), values(&t.ema.latent_tokens));

    for step in 0..4 {
        let disc_before = disc(&t);
        let out = TrainStep::step(&t, batch(&ad));
        let active = step >= 2;
        assert_eq!(out.item.get("gan").is_some(), active, "generator GAN term at step {step}");
        assert_eq!(out.item.get("d_hinge").is_some(), active, "discriminator loss at step {step}");
        assert!(out.item.get("loss").unwrap().is_finite() && out.item.get("perceptual").unwrap() > 0.0);
        t = t.optimize(&mut optim, 1e-3.into(), out.grads);
        assert_eq!(t.loss.step(), step + 1, "the GAN clock counts optimisation steps");
        let moved = disc(&t) != disc_before;
        assert_eq!(moved, active, "discriminator trained at step {step}: {moved}");
        let [r, f] = lecam(&t);
        assert_eq!(r != 0.0 && f != 0.0, active, "LeCam EMA after step {step}: {r} {f}");
    }

    assert!(frozen(&t) == frozen0, "encoder, quantizer or latent tokens changed");
    let ema_frozen = (values(&t.ema.encoder), values(&t.ema.quantize), values(&t.ema.latent_tokens));
    assert!(ema_frozen == ema_frozen0 && ema_frozen.0 == frozen0.0, "the EMA's frozen parts are copies");
    assert!(values(&t.loss.perceptual) == lpips0, "LPIPS weights changed");
    let (d, pd, pq) = trained(&t);
    assert!(d != trained0.0 && pd != trained0.1 && pq != trained0.2, "decoder, pixel decoder and pixel codebook train");
    assert!(values(&t.ema.decoder) != trained0.0, "the EMA follows the decoder");
    for stage in &t.loss.adversarial.as_ref().unwrap().discriminator.blocks {
        let k = stage.blur.as_ref().unwrap().kernel.val().inner().try_into_vec_as::<f32>().unwrap();
        assert_eq!(k[0], 1.0 / 64.0, "blur kernels are fixed");
    }
}

/// The discriminator side descends its loss: on a fixed batch, with the generator's adversarial
/// weight negligible, a few updates separate real images from reconstructions.
#[test]
fn the_discriminator_learns_to_separate_real_images_from_reconstructions() {
    let (mut t, ad) = trainee(|d| pixel_loss(1.0, 0.0, 1e-9, 0, d));
    let mut optim = stage2_optimizer(&t, AdamWSettings::default());
    let fixed = batch(&ad);
    let mut hinge = Vec::new();
    for _ in 0..8 {
        let out = TrainStep::step(&t, fixed.clone());
        hinge.push(out.item.get("d_hinge").unwrap());
        let gap = out.item.get("logits_real").unwrap() - out.item.get("logits_fake").unwrap();
        hinge.push(gap);
        t = t.optimize(&mut optim, 1e-3.into(), out.grads);
    }
    let (first, last) = ((hinge[0], hinge[1]), (hinge[14], hinge[15]));
    assert!(last.0 < first.0, "hinge loss {} -> {}", first.0, last.0);
    assert!(last.1 > first.1 && last.1 > 0.0, "D(x) - D(x̂) {} -> {}", first.1, last.1);
}

#[test]
fn lpips_and_gan_losses_train_the_decoder_side_only() {
    // LPIPS only.
    let (t, ad) = trainee(|d| pixel_loss(0.0, 1.0, 0.0, 0, d));
    let images = batch(&ad).images;
    let (g, _) = t.generator_loss(images.clone()).unwrap();
    assert!(g.perceptual.is_some() && g.gan.is_none());
    let grads = g.total.backward();
    for (what, m) in
        [("decoder", grads_of(&t.model.decoder, &grads)), ("pixel decoder", grads_of(&t.model.pixel_decoder, &grads))]
    {
        assert_useful(&format!("LPIPS -> {what}"), &m);
    }
    assert_useful("LPIPS -> pixel codebook", &grads_of(&t.model.pixel_quantize, &grads));
    assert_none("encoder (LPIPS)", &grads_of(&t.model.encoder, &grads));
    assert_none("quantizer (LPIPS)", &grads_of(&t.model.quantize, &grads));
    assert_none("latent tokens (LPIPS)", &grads_of(&t.model.latent_tokens, &grads));
    assert_none("LPIPS network", &grads_of(&t.loss.perceptual, &grads));

    // Generator (adversarial) loss only, GAN on from step 0.
    let (t, ad) = trainee(|d| pixel_loss(0.0, 0.0, 1.0, 0, d));
    let images = batch(&ad).images;
    let (g, recon) = t.generator_loss(images.clone()).unwrap();
    assert!(g.perceptual.is_none() && g.gan.is_some());
    let grads = g.total.backward();
    assert_useful("GAN -> decoder", &grads_of(&t.model.decoder, &grads));
    assert_useful("GAN -> pixel decoder", &grads_of(&t.model.pixel_decoder, &grads));
    assert_none("encoder (GAN)", &grads_of(&t.model.encoder, &grads));
    assert_none("latent tokens (GAN)", &grads_of(&t.model.latent_tokens, &grads));
    let adv = t.loss.adversarial.as_ref().unwrap();
    assert_none("discriminator (generator loss)", &grads_of(&adv.discriminator, &grads));

    // Discriminator loss: the discriminator learns, the generator side gets nothing.
    let d = t.loss.discriminator(recon, images.clone()).unwrap().expect("GAN on at step 0");
    let grads = d.loss.total.clone().backward();
    let dg = grads_of(&adv.discriminator, &grads);
    // Every discriminator parameter but the fixed blur kernels has a gradient.
    let trainable: Vec<_> =
        dg.iter().zip(values(&adv.discriminator)).filter(|(_, v)| v.len() != 16).map(|(g, _)| g.clone()).collect();
    assert_useful("hinge + LeCam -> discriminator", &trainable);
    assert_none("decoder (discriminator loss)", &grads_of(&t.model.decoder, &grads));
    assert_none("pixel decoder (discriminator loss)", &grads_of(&t.model.pixel_decoder, &grads));

    // The merged step gradients hold exactly the decoder side, the discriminator and the two
    // LeCam values.
    let out = TrainStep::step(&t, batch(&ad));
    let n_generator = titok_train::train::two_sides::param_ids(&t.model).len();
    let n_disc = titok_train::train::two_sides::param_ids(&adv.discriminator).len();
    assert_eq!(out.grads.len(), n_generator + n_disc + 2);
}

/// A single-stage VQ TiTok (its decoder outputs pixels) of the same size; the pixel-decoder
/// numbers are unused (and read back as the official ones).
fn tiny_single_stage() -> TitokConfig {
    TitokConfig { is_legacy: false, pixel_vqgan: VqganConfig::official(), ..tiny_titok(false) }
}

#[test]
fn single_stage_models_fine_tune_their_decoder_with_the_tokens_fixed() {
    let device = Device::flex();
    device.seed(11);
    let dir = scratch("stage2-single-init");
    let init = dir.path().join("init");
    let model = Titok::new(&tiny_single_stage(), &device).unwrap();
    save_titok(&model, &init, StorageDType::F32).unwrap();

    // Loaded as it is, with no pixel decoder; a pixel decoder is refused.
    let loaded = load_stage2_model(&init, None, &device).unwrap();
    assert!(loaded.pixel_decoder.is_none() && loaded.pixel_quantize.is_none());
    assert!(values(&loaded) == values(&model), "the single-stage weights load unchanged");
    let err = load_stage2_model(&init, Some(&init), &device).unwrap_err().to_string();
    assert!(err.contains("single-stage") && err.contains("pixel_decoder"), "{err}");

    // Training steps (GAN from step 1): the model's encoder side stays bit-identical, its
    // decoder moves, the discriminator trains from step 1.
    let ad = device.clone().autodiff();
    let mut t =
        Stage2Trainee::new(loaded, pixel_loss(1.0, 0.1, 0.1, 1, &device), 0.999, 1.0).unwrap().train().fork(&ad);
    let mut optim = stage2_optimizer(&t, AdamWSettings::default());
    let frozen =
        |t: &Stage2Trainee| (values(&t.model.encoder), values(&t.model.quantize), values(&t.model.latent_tokens));
    let (frozen0, decoder0) = (frozen(&t), values(&t.model.decoder));
    for step in 0..3 {
        let out = TrainStep::step(&t, batch(&ad));
        assert_eq!(out.item.get("d_hinge").is_some(), step >= 1, "discriminator loss at step {step}");
        t = t.optimize(&mut optim, 1e-3.into(), out.grads);
    }
    assert!(frozen(&t) == frozen0, "encoder, quantizer or latent tokens changed");
    assert!(values(&t.model.decoder) != decoder0, "the decoder did not train");

    // A short stage-2 run on CIFAR-10 (GAN on from step 3): the exported EMA model has the
    // init's encoder side bit for bit and a new decoder; the discriminator's loss is logged
    // for steps 4-6 only.
    let (_guard, run) = scratch_run("single");
    const STEPS: u64 = 6;
    let sets = vec![
        format!("model.init={}", json(&init)),
        format!("data.path={}", json(&shared().join("data/cifar10-jpg.tar.gz"))),
        "data.image_size=32".into(),
        "data.valid_images=8".into(),
        "data.num_workers=1".into(),
        "run.batch_size=8".into(),
        format!("run.total_steps={STEPS}"),
        format!("run.checkpoint_every={STEPS}"),
        format!("run.valid_every={STEPS}"),
        "run.ema_decay=0".into(),
        "optim.lr=1e-3".into(),
        "optim.warmup_steps=0".into(),
        format!("loss.perceptual_weights={}", json(&lpips_weights())),
        "loss.gan_start=3".into(),
        "loss.discriminator_channels=32".into(),
    ];
    let config = TrainConfig::load_with_defaults(TrainConfig::stage2_recipe(), None, &sets).unwrap();
    let trained = train_stage2(config, &run, std::slice::from_ref(&device)).unwrap();
    let export = load_titok(&run.join(format!("checkpoints/step-{STEPS:07}")), &device).unwrap();
    assert_eq!(export.config, tiny_single_stage());
    assert!(values(&export) == values(&trained), "the export is the returned EMA model");
    assert!(values(&export.encoder) == values(&model.encoder), "encoder changed");
    assert!(values(&export.quantize) == values(&model.quantize), "codebook changed");
    assert!(values(&export.latent_tokens) == values(&model.latent_tokens), "latent tokens changed");
    assert!(values(&export.decoder) != values(&model.decoder), "the decoder did not train");
    assert!(run.join(format!("samples/recon-{STEPS:07}.png")).is_file());
    let hinge = logged(&run, "train", "Discriminator_hinge", true);
    let finite: Vec<bool> = hinge.iter().map(|v| v.is_finite()).collect();
    // One line per step, then the interval's mean.
    assert_eq!(finite, [false, false, false, true, true, true, true], "discriminator loss per step: {hinge:?}");
}

/// Mean LPIPS (AlexNet, at 64 px) and PSNR of reconstructions against images.
fn lpips_psnr(lpips: &Lpips, recon: Tensor<4>, images: Tensor<4>) -> (f64, f64) {
    let recon = recon.clamp(0.0, 1.0);
    let d = lpips.distance(perceptual_input(recon.clone(), 64), perceptual_input(images.clone(), 64)).unwrap();
    let psnr = titok_train::eval::psnr(recon, images).unwrap().mean().into_scalar::<f64>();
    (d.mean().into_scalar::<f64>(), psnr)
}

#[test]
fn stage_two_lowers_the_lpips_of_the_stage_one_decode_on_cifar10() {
    let device = Device::flex();
    let data = shared().join("data/cifar10-jpg.tar.gz");
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let sets = |steps: u64, batch: usize| -> Vec<String> {
        vec![
            format!("data.path={}", json(&data)),
            "data.valid_images=16".into(),
            "data.num_workers=2".into(),
            format!("run.batch_size={batch}"),
            format!("run.total_steps={steps}"),
            format!("run.checkpoint_every={steps}"),
            format!("run.valid_every={steps}"),
            "run.log_every=100".into(),
            "optim.warmup_steps=20".into(),
        ]
    };
    const VQ_STEPS: u64 = 120;
    const S1_STEPS: u64 = 600;
    const S2_STEPS: u64 = 120;

    // The MaskGIT-VQGAN teacher.
    let (_vq_run_guard, vq_run) = scratch_run("vqgan");
    let config = TrainConfig::load(Some(&configs.join("cifar10-vqgan-tiny.json")), &sets(VQ_STEPS, 16)).unwrap();
    assert_eq!(config.model.vqgan.as_ref(), Some(&tiny_vqgan()));
    let teacher = train_vqgan(config, &vq_run, std::slice::from_ref(&device)).unwrap();
    let teacher_dir = vq_run.join(format!("checkpoints/step-{VQ_STEPS:07}"));

    // A short stage 1 on its proxy codes. With the official quantizer weight (1.0) and lr, a
    // run this short keeps every image on the same codes (the commitment and codebook terms
    // pull the barely image-dependent encoder outputs onto shared codes) and the decoder learns
    // only the marginal code distribution; without them and at 1e-3 the tokens and the decoded
    // codes depend on the image after ~400 steps.
    let (_s1_run_guard, s1_run) = scratch_run("stage1");
    let mut s = sets(S1_STEPS, 16);
    s.push(format!("teacher={}", json(&teacher_dir)));
    s.push("optim.lr=1e-3".into());
    s.push("loss.quantizer_weight=0".into());
    let config = TrainConfig::load(Some(&configs.join("cifar10-titok-tiny-stage1.json")), &s).unwrap();
    assert_eq!(config.titok().unwrap(), tiny_titok(false));
    let stage1 = train_tokenizer(config, true, &s1_run, std::slice::from_ref(&device)).unwrap();
    let stage1_dir = s1_run.join(format!("checkpoints/step-{S1_STEPS:07}"));

    // Stage 2 from the exported stage-1 weights and the teacher's decoder.
    let (_s2_run_guard, s2_run) = scratch_run("stage2");
    let mut s = sets(S2_STEPS, 16);
    s.push(format!("model.init={}", json(&stage1_dir)));
    s.push(format!("pixel_decoder={}", json(&teacher_dir)));
    s.push(format!("loss.perceptual_weights={}", json(&lpips_weights())));
    s.push(format!("loss.gan_start={}", S2_STEPS / 2));
    let config = TrainConfig::load_with_defaults(
        TrainConfig::stage2_recipe(),
        Some(&configs.join("cifar10-titok-tiny-stage2.json")),
        &s,
    )
    .unwrap();
    let start = load_stage2_model(&stage1_dir, Some(&teacher_dir), &device).unwrap();
    let stage2 = train_stage2(config, &s2_run, std::slice::from_ref(&device)).unwrap();
    assert!(s2_run.join(format!("checkpoints/step-{S2_STEPS:07}/model.safetensors")).is_file());
    assert!(s2_run.join(format!("samples/recon-{S2_STEPS:07}.png")).is_file());

    // Validation images (CIFAR-10 test split, centre crops).
    let test = open_split(&data, "test").unwrap();
    let images = ImageBatcher::new(Transform::eval(32)).batch(spread(&test.records, 64), &device).images;
    let lpips = Lpips::load(&lpips_weights(), &device).unwrap();

    // Stage-1 decode: argmax proxy codes through the teacher's decoder.
    let logits = stage1.decode(stage1.encode(images.clone()).unwrap().latents); // [b, 256, 8, 8]
    let [b, n, h, w] = logits.dims();
    let codes = logits.reshape([b, n, h * w]).argmax(1).reshape([b, h * w]);
    let (lp1, ps1) = lpips_psnr(&lpips, teacher.decode_codes(codes), images.clone());
    // Teacher reconstruction (its own codes), the bound of the stage-1 decode.
    let (lpt, pst) = lpips_psnr(&lpips, teacher.decode_codes(teacher.encode(images.clone())), images.clone());
    // Stage 2 before training (soft lookup of the stage-1 logits) and after.
    let (lp0, ps0) = lpips_psnr(&lpips, start.reconstruct(images.clone()).unwrap(), images.clone());
    let recon2 = stage2.reconstruct(images.clone()).unwrap();
    let (lp2, ps2) = lpips_psnr(&lpips, recon2.clone(), images.clone());
    let spread = |x: Tensor<4>| (x.clone() - x.mean_dim(0)).square().mean().into_scalar::<f64>();
    let (var2, var_data) = (spread(recon2), spread(images.clone()));
    eprintln!(
        "LPIPS@64 / PSNR on 64 CIFAR-10 test images:\n  teacher (own codes)   {lpt:.4} / {pst:.2} dB\n  \
         stage-1 decode        {lp1:.4} / {ps1:.2} dB\n  stage 2 at step 0     {lp0:.4} / {ps0:.2} dB\n  \
         stage 2 after {S2_STEPS} steps {lp2:.4} / {ps2:.2} dB (variance across images {var2:.2e}, data {var_data:.2e})"
    );
    // The stage-2 reconstructions depend on the image (a decoder that ignored its tokens would
    // give one image for all, variance 0).
    assert!(var2 > 0.01 * var_data, "stage-2 reconstructions barely depend on the image: {var2} vs {var_data}");
    assert!(lp2 < lp1, "stage 2 LPIPS {lp2} is not below the stage-1 decode's {lp1}");
    assert!(lp2 < lp0, "stage 2 LPIPS {lp2} is not below its start {lp0}");

    for d in [vq_run, s1_run, s2_run] {
        let _ = std::fs::remove_dir_all(d);
    }
}

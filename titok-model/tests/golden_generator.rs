//! Golden parity of the MaskGIT generators with the official PyTorch code, plus checkpoint
//! round trips, strict loading, and sampler invariants (reproducibility, inpainting).
//!
//! Fixtures are discovered under `TITOK_GOLDEN_DIR` (default `../shared/golden`) by kind
//! ([`FixtureKind`], folder prefix; a set without one of them fails):
//! `imagebert_*`, `uvitbert_*` (logits with and without the drop label, the model inputs,
//! final and per-step ids, `has_uncond` and raw per-step logits of every stored `generate`
//! run; τ > 0 runs replay the stored uniforms) and `mlm_loss` (loss, per-token smoothed
//! cross-entropy, masked accuracy, training and sampling mask schedules). Every tensor of each
//! `io.safetensors` is checked. Tolerances from the fixture README: logits atol/rtol 1e-4,
//! losses rtol 1e-5, ids exact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::ModuleSnapshot;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use titok_model::TitokError;
use titok_model::checkpoint::{
    HfConfig, StorageDType, load_generator, load_generator_weights, read_safetensors_header, save_generator,
};
use titok_model::generator::{
    GenerateOptions, Generator, GeneratorConfig, GivenTokens, GuidanceDecay, MaskSchedule, MlmLossConfig,
    ReplayUniform, SamplerConfig, SeededUniform, TokenPredictor, condition_tokens, generate, generate_with, inpaint,
    mlm_loss, model_input, random_masking, training_mask_ratio, training_num_masked,
};
use titok_model::golden::{FixtureKind, IoTensors, test_device};

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-4;
const LOSS_RTOL: f64 = 1e-5;

/// Every generator fixture; both kinds must be present.
fn generator_fixtures() -> Vec<PathBuf> {
    [FixtureKind::ImageBert, FixtureKind::UvitBert].into_iter().flat_map(FixtureKind::all).collect()
}

/// A fresh folder (created; removed when the guard drops).
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("titok-generation-test-{name}-")).tempdir().unwrap()
}

/// The `generate` kwargs shared by a fixture's runs (`fixture_meta.json`), with the official
/// defaults where absent.
fn base_sampler(dir: &Path) -> SamplerConfig {
    let mut c = SamplerConfig::default();
    let meta = dir.join("fixture_meta.json");
    if let Ok(text) = std::fs::read_to_string(&meta) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let kw = &v["generate_kwargs"];
        let f = |k: &str, d: f64| kw[k].as_f64().unwrap_or(d);
        c.guidance_scale = f("guidance_scale", c.guidance_scale);
        c.guidance_scale_pow = f("guidance_scale_pow", c.guidance_scale_pow);
        c.randomize_temperature = f("randomize_temperature", c.randomize_temperature);
        c.num_steps = kw["num_sample_steps"].as_u64().map(|n| n as usize).unwrap_or(c.num_steps);
    }
    c
}

/// The settings of a run named `gen_<decay>[_tau<X>p<Y>]_<anneal|noanneal>`.
fn run_config(run: &str, base: &SamplerConfig) -> SamplerConfig {
    let body = run.strip_prefix("gen_").unwrap();
    let (body, anneal) = match body.strip_suffix("_noanneal") {
        Some(b) => (b, false),
        None => (body.strip_suffix("_anneal").unwrap_or_else(|| panic!("run name {run}")), true),
    };
    let (decay, tau) = match body.find("_tau") {
        Some(i) => (&body[..i], body[i + 4..].replace('p', ".").parse::<f64>().unwrap()),
        None => (body, base.randomize_temperature),
    };
    SamplerConfig {
        randomize_temperature: tau,
        guidance_decay: GuidanceDecay::from_official(&decay.replace('_', "-")).unwrap(),
        softmax_temperature_annealing: anneal,
        ..base.clone()
    }
}

fn all_true(n: usize, device: &Device) -> Tensor<1, Bool> {
    Tensor::<1, Int>::ones([n], device).bool()
}

fn check_generator_fixture(dir: &Path, device: &Device) {
    let model = load_generator(dir, device).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let layout = model.layout();
    let mut io = IoTensors::load(dir);

    // Model inputs and logits with and without the drop label.
    let ids = io.int::<2>("input_ids", device);
    let cond = io.int::<1>("condition", device);
    let b = cond.dims()[0];
    // The model inputs are intermediates: compared when stored.
    if io.has("full_input_ids_cond") {
        io.assert_ids("full_input_ids_cond", model_input(ids.clone(), condition_tokens(&layout, cond.clone(), None)));
    }
    if io.has("full_input_ids_drop_label") {
        let drop = Some(all_true(b, device));
        io.assert_ids(
            "full_input_ids_drop_label",
            model_input(ids.clone(), condition_tokens(&layout, cond.clone(), drop)),
        );
    }
    io.assert_close("logits_cond", model.forward(ids.clone(), cond.clone(), None).unwrap(), ATOL, RTOL);
    io.assert_close("logits_drop_label", model.forward(ids, cond, Some(all_true(b, device))).unwrap(), ATOL, RTOL);

    // Every stored generate run.
    let labels = io.int::<1>("gen_condition", device);
    let base = base_sampler(dir);
    let runs: Vec<String> = io
        .names()
        .into_iter()
        .filter(|n| n.starts_with("gen_") && n.ends_with("_ids") && !n.ends_with("_step_ids"))
        .map(|n| n.strip_suffix("_ids").unwrap().to_string())
        .collect();
    assert!(!runs.is_empty(), "{}: no generate runs", dir.display());
    for run in &runs {
        let config = run_config(run, &base);
        let options = GenerateOptions { given: None, record_steps: true };
        let generation = if io.has(&format!("{run}_uniform_logits")) {
            let token: Tensor<4> = io.float(&format!("{run}_uniform_logits"), device);
            let conf: Tensor<3> = io.float(&format!("{run}_uniform_conf"), device);
            let mut replay = ReplayUniform::from_sampler_run(token, conf).unwrap();
            let generation = generate_with(&model, labels.clone(), &config, options, &mut replay).unwrap();
            assert_eq!(replay.remaining(), 0, "{run}: not every stored uniform was used");
            generation
        } else {
            assert_eq!(config.randomize_temperature, 0.0, "{run}: a τ > 0 run needs stored uniforms");
            generate_with(&model, labels.clone(), &config, options, &mut SeededUniform::new(0)).unwrap()
        };
        io.assert_ids(&format!("{run}_ids"), generation.ids.clone());
        assert_eq!(generation.steps.len(), config.num_steps);
        if io.has(&format!("{run}_step_ids")) {
            let step_ids: Vec<Tensor<2, Int>> = generation.steps.iter().map(|s| s.ids.clone()).collect();
            io.assert_ids(&format!("{run}_step_ids"), Tensor::stack::<3>(step_ids, 0));
        }
        if io.has(&format!("{run}_has_uncond")) {
            let has: Vec<i64> = generation.steps.iter().map(|s| s.uncond_logits.is_some() as i64).collect();
            let t = has.len();
            io.assert_ids(&format!("{run}_has_uncond"), Tensor::<1, Int>::from_data(TensorData::new(has, [t]), device));
        }
        if io.has(&format!("{run}_step_cond_logits")) {
            let c: Vec<Tensor<3>> = generation.steps.iter().map(|s| s.cond_logits.clone()).collect();
            io.assert_close(&format!("{run}_step_cond_logits"), Tensor::stack::<4>(c, 0), ATOL, RTOL);
            let u: Vec<Tensor<3>> = generation
                .steps
                .iter()
                .map(|s| s.uncond_logits.clone().unwrap_or_else(|| s.cond_logits.zeros_like()))
                .collect();
            io.assert_close(&format!("{run}_step_uncond_logits"), Tensor::stack::<4>(u, 0), ATOL, RTOL);
        }
        eprintln!("  {}: {run} ok", dir.file_name().unwrap().to_string_lossy());
    }
    io.assert_all_checked();
}

#[test]
fn generator_fixtures_match_the_official_code() {
    let device = test_device();
    for dir in generator_fixtures() {
        check_generator_fixture(&dir, &device);
        eprintln!("parity ok: {}", dir.display());
    }
}

/// The same parity on the wgpu backend (lavapipe in CI): model, guidance and the sampler's
/// sort / argmax / gather decisions.
#[cfg(feature = "wgpu")]
#[test]
fn generator_fixtures_match_on_wgpu() {
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    for dir in generator_fixtures() {
        check_generator_fixture(&dir, &device);
        eprintln!("wgpu parity ok: {}", dir.display());
    }
}

#[test]
fn mlm_loss_and_mask_schedules_match_the_official_code() {
    let device = test_device();
    for dir in FixtureKind::MlmLoss.all() {
        let c = HfConfig::from_dir(&dir).unwrap();
        let config = MlmLossConfig {
            label_smoothing: c.f64_or("losses.label_smoothing", 0.1).unwrap(),
            unmasked_weight: c.f64_or("losses.loss_weight_unmasked_token", 0.1).unwrap(),
        };
        let mut io = IoTensors::load(&dir);
        let logits: Tensor<3> = io.float("logits", &device);
        let targets = io.int::<2>("targets", &device);
        let masked = io.int::<2>("weights_mask", &device).bool();
        let l = mlm_loss(logits, targets, masked, &config);
        io.assert_close_if_stored("per_token_ce_smoothed", || l.per_token, 1e-5, 1e-5);
        io.assert_scalar("loss", l.loss.into_scalar::<f64>(), LOSS_RTOL);
        io.assert_scalar("correct_tokens", l.correct_tokens.into_scalar::<f64>(), LOSS_RTOL);

        // Training schedule: ratio and masked counts per sequence length.
        let t: Vec<f32> = io.get("train_t").values.iter().map(|&v| v as f32).collect();
        let ratio: Vec<f32> = t.iter().map(|&x| training_mask_ratio(x)).collect();
        let n = ratio.len();
        io.assert_close("train_mask_ratio", Tensor::<1>::from_data(TensorData::new(ratio, [n]), &device), 1e-7, 1e-6);
        for name in io.names() {
            if let Some(l) = name.strip_prefix("train_num_masked_seq") {
                let seq: usize = l.parse().unwrap();
                let counts: Vec<i64> = t.iter().map(|&x| training_num_masked(seq, x) as i64).collect();
                io.assert_ids(&name, Tensor::<1, Int>::from_data(TensorData::new(counts, [n]), &device));
            }
            // Sampling schedule before the clamp: gen_mask_len_unclamped_seq{L}_T{T}.
            if let Some(rest) = name.strip_prefix("gen_mask_len_unclamped_seq") {
                let (seq, steps) = rest.split_once("_T").unwrap();
                let (seq, steps): (usize, usize) = (seq.parse().unwrap(), steps.parse().unwrap());
                let lens: Vec<i64> = (0..steps).map(|s| MaskSchedule::Arccos.mask_len(seq, s, steps) as i64).collect();
                io.assert_ids(&name, Tensor::<1, Int>::from_data(TensorData::new(lens, [steps]), &device));
            }
        }
        io.assert_all_checked();
    }
}

/// All parameters of a module as name -> values.
fn params<M: Module + ModuleSnapshot>(m: &M) -> BTreeMap<String, Vec<f32>> {
    m.collect(None, None, false)
        .into_iter()
        .map(|t| {
            let bytes = t.to_bytes().unwrap();
            (t.name.clone(), bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
        })
        .collect()
}

fn generator_params(g: &Generator) -> BTreeMap<String, Vec<f32>> {
    match g {
        Generator::Bert(m) => params(m),
        Generator::UVit(m) => params(m),
    }
}

#[test]
fn generator_folders_round_trip_exactly_with_official_keys() {
    let device = Device::flex();
    for src in generator_fixtures() {
        let name = src.file_name().unwrap().to_string_lossy().to_string();
        let model = load_generator(&src, &device).unwrap();
        let out_guard = scratch(&name);
        let out = out_guard.path().to_path_buf();
        save_generator(&model, &out, StorageDType::F32).unwrap();
        let a = read_safetensors_header(&src.join("model.safetensors")).unwrap();
        let b = read_safetensors_header(&out.join("model.safetensors")).unwrap();
        assert_eq!(a, b, "{name}: exported header differs from the official one");
        let back = load_generator(&out, &device).unwrap();
        assert_eq!(back.config(), model.config(), "{name}: config changed");
        let (p, q) = (generator_params(&model), generator_params(&back));
        assert_eq!(p.len(), a.len(), "{name}: one Burn parameter per official tensor");
        assert_eq!(p, q, "{name}: parameters differ after the round trip");
        // The weights alone with a known config load the same model.
        let direct = load_generator_weights(&src.join("model.safetensors"), model.config(), &device).unwrap();
        assert_eq!(generator_params(&direct), p, "{name}: load_generator_weights differs");
    }
}

/// Rewrites a safetensors file keeping the tensors `keep` accepts, renamed by `rename`.
fn rewrite(path: &Path, keep: impl Fn(&str) -> bool, rename: impl Fn(&str) -> String) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| keep(n)).map(|(n, v)| (rename(&n), v)).collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, out).unwrap();
}

#[test]
fn bad_generator_checkpoints_are_mismatch_errors() {
    let device = Device::flex();
    let src = FixtureKind::ImageBert.first();
    let copy = |tag: &str| {
        let guard = scratch(tag);
        let dir = guard.path().to_path_buf();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        (guard, dir)
    };
    // A missing and an unexpected key.
    let (_missing, dir) = copy("missing");
    rewrite(
        &dir.join("model.safetensors"),
        |n| n != "model.lm_head.bias",
        |n| n.replace("encoder.layer.0.output.dense.weight", "encoder.layer.0.output.dense.kernel"),
    );
    match load_generator(&dir, &device) {
        Err(TitokError::CheckpointMismatch { problems, .. }) => {
            assert!(problems.contains("missing:     model.lm_head.bias"), "{problems}");
            assert!(problems.contains("missing:     model.encoder.layer.0.output.dense.weight"), "{problems}");
            assert!(problems.contains("unexpected:  model.encoder.layer.0.output.dense.kernel"), "{problems}");
        }
        other => panic!("expected CheckpointMismatch, got {other:?}"),
    }
    // A config that does not fit the weights: one more image token -> position table too short.
    let (_shape, dir2) = copy("shape");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir2.join("config.json")).unwrap()).unwrap();
    let k = cfg["model"]["vq_model"]["num_latent_tokens"].as_u64().unwrap();
    cfg["model"]["vq_model"]["num_latent_tokens"] = serde_json::json!(k + 1);
    std::fs::write(dir2.join("config.json"), cfg.to_string()).unwrap();
    match load_generator(&dir2, &device) {
        Err(TitokError::CheckpointMismatch { problems, .. }) => {
            assert!(problems.contains("wrong shape: model.embeddings.position_embeddings.weight"), "{problems}")
        }
        other => panic!("expected CheckpointMismatch, got {other:?}"),
    }
    // Not a generator folder at all.
    let tok = FixtureKind::TitokVq.first();
    assert!(matches!(load_generator(&tok, &device), Err(TitokError::ConfigFile { .. })));
}

#[test]
fn sampling_is_reproducible_per_seed_and_inpainting_keeps_given_tokens() {
    let device = Device::flex();
    for dir in generator_fixtures() {
        let model = load_generator(&dir, &device).unwrap();
        let layout = model.layout();
        let (b, k) = (3, layout.seq_len);
        let c = layout.num_classes as i64;
        let labels = Tensor::<1, Int>::from_ints([1 % c, c / 2, c - 1], &device);
        let config = SamplerConfig { randomize_temperature: 3.0, ..SamplerConfig::l32() };
        let run = |seed| generate(&model, labels.clone(), &config, &mut SeededUniform::new(seed)).unwrap();
        let a = run(11).try_into_vec_as::<i64>().unwrap();
        assert_eq!(a, run(11).try_into_vec_as::<i64>().unwrap(), "same seed, same ids");
        assert_ne!(a, run(12).try_into_vec_as::<i64>().unwrap(), "another seed, other ids");
        assert!(a.iter().all(|&id| (0..layout.codebook_size as i64).contains(&id)));

        // Nothing known: the per-row inpainting schedule equals the official sampler.
        let none =
            GivenTokens { ids: Tensor::zeros([b, k], &device), known: Tensor::<2, Int>::zeros([b, k], &device).bool() };
        let free = inpaint(&model, labels.clone(), none, &config, &mut SeededUniform::new(11)).unwrap();
        assert_eq!(free.try_into_vec_as::<i64>().unwrap(), a);

        // Given left half (outpainting the right half) and a different known set per row.
        let given_ids: Vec<i64> = (0..b * k).map(|i| (i as i64 * 7) % layout.codebook_size as i64).collect();
        let known: Vec<i64> = (0..b * k).map(|i| ((i % k) < k / 2 || (i / k == 2 && i % 3 == 0)) as i64).collect();
        let given = GivenTokens {
            ids: Tensor::from_data(TensorData::new(given_ids.clone(), [b, k]), &device),
            known: Tensor::<2, Int>::from_data(TensorData::new(known.clone(), [b, k]), &device).bool(),
        };
        let out = inpaint(&model, labels.clone(), given.clone(), &config, &mut SeededUniform::new(3))
            .unwrap()
            .try_into_vec_as::<i64>()
            .unwrap();
        for i in 0..b * k {
            if known[i] == 1 {
                assert_eq!(out[i], given_ids[i], "given token {i} changed");
            } else {
                assert!((0..layout.codebook_size as i64).contains(&out[i]), "token {i} = {}", out[i]);
            }
        }
        // Everything known: nothing to do.
        let all = GivenTokens { ids: given.ids.clone(), known: Tensor::<2, Int>::ones([b, k], &device).bool() };
        let same = inpaint(&model, labels.clone(), all, &config, &mut SeededUniform::new(3)).unwrap();
        assert_eq!(same.try_into_vec_as::<i64>().unwrap(), given_ids);

        // Bad input is an error, not a panic.
        let bad = Tensor::<1, Int>::from_ints([1 % c, c, 2 % c], &device);
        assert!(matches!(generate(&model, bad, &config, &mut SeededUniform::new(0)), Err(TitokError::Input(_))));
        let empty = Tensor::<1, Int>::from_data(TensorData::new(Vec::<i64>::new(), [0]), &device);
        assert!(matches!(generate(&model, empty, &config, &mut SeededUniform::new(0)), Err(TitokError::Input(_))));
    }
}

/// Counts float parameters with and without a non-zero gradient.
struct GradCheck<'a> {
    grads: &'a burn::tensor::Gradients,
    with: usize,
    without: Vec<String>,
}

impl ModuleVisitor for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match param.val().grad(self.grads) {
            Some(g) if g.clone().abs().sum().into_scalar::<f64>() > 0.0 => self.with += 1,
            _ => self.without.push(format!("{:?}", param.val().dims())),
        }
    }
}

#[test]
fn mlm_training_step_reaches_every_parameter_and_eval_is_deterministic() {
    let device = Device::flex().autodiff();
    for mut config in [
        GeneratorConfig::tiny(),
        GeneratorConfig { kind: titok_model::generator::GeneratorKind::UVit, ..GeneratorConfig::tiny() },
    ] {
        config.num_hidden_layers = 2;
        let model = Generator::new(&config, &device).unwrap();
        let layout = model.layout();
        let (b, k) = (4, layout.seq_len);
        let mut rng = SeededUniform::new(5);
        let targets = Tensor::<2, Int>::from_data(
            TensorData::new((0..(b * k) as i64).map(|i| (i * 13) % 64).collect::<Vec<_>>(), [b, k]),
            &device,
        );
        let masking = random_masking(targets.clone(), layout.mask_id(), &mut rng).unwrap();
        let labels = Tensor::<1, Int>::from_ints([3, 4, 5, 6], &device);
        let drop = Tensor::<1, Int>::from_ints([0, 1, 0, 0], &device).bool();
        let logits = model.forward(masking.input_ids.clone(), labels.clone(), Some(drop)).unwrap();
        let loss = mlm_loss(logits, targets, masking.mask, &MlmLossConfig::default());
        let grads = loss.loss.backward();
        let mut check = GradCheck { grads: &grads, with: 0, without: vec![] };
        model.visit(&mut check);
        // Only the rows of ids never fed to the model (word embeddings) and the unused
        // token-type row could lack gradient; every parameter tensor must get one.
        assert!(check.without.is_empty(), "{:?}: parameters without gradient: {:?}", config.kind, check.without);
        assert!(check.with > 10);

        // Without autodiff (inference), dropout is off: two forwards agree exactly.
        let eval = model.valid();
        let ids = masking.input_ids.inner();
        let labels = labels.inner();
        let x = eval.forward(ids.clone(), labels.clone(), None).unwrap().try_into_vec_as::<f32>().unwrap();
        let y = eval.forward(ids, labels, None).unwrap().try_into_vec_as::<f32>().unwrap();
        assert_eq!(x, y);
    }
}

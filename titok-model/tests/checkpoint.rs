//! Checkpoint loading and export: exact round trips (HF folder and `.bpk`), the exported key
//! set equals the official one, and bad checkpoints give clear errors instead of panics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleSnapshot;
use burn::tensor::{Device, Tensor};
use titok_model::checkpoint::{
    StorageDType, load_bpk, load_titok, load_vqgan, read_safetensors_header, save_bpk, save_titok, save_vqgan,
    vqgan_config,
};
use titok_model::golden::FixtureKind;
use titok_model::{Titok, TitokError, VqganConfig};

/// Every TiTok fixture of every kind (each kind must be present).
fn titok_fixtures() -> Vec<PathBuf> {
    [FixtureKind::TitokLegacyStage1, FixtureKind::TitokLegacyStage2, FixtureKind::TitokVq, FixtureKind::TitokVae]
        .into_iter()
        .flat_map(FixtureKind::all)
        .collect()
}

fn name_of(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// A fresh folder (created; removed when the guard drops).
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("titok-ckpt-test-{name}-")).tempdir().unwrap()
}

/// All parameters of a module as name -> values.
fn params<M: Module + ModuleSnapshot>(m: &M) -> BTreeMap<String, Vec<f32>> {
    m.collect(None, None, false)
        .into_iter()
        .map(|t| {
            assert_eq!(t.dtype, burn::tensor::DType::F32, "{}", t.name);
            let bytes = t.to_bytes().unwrap();
            (t.name.clone(), bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn hf_folder_round_trip_is_exact_and_keeps_official_keys() {
    let device = Device::flex();
    for src in titok_fixtures() {
        let name = name_of(&src);
        let model = load_titok(&src, &device).unwrap();
        let out_guard = scratch(&name);
        let out = out_guard.path().to_path_buf();
        save_titok(&model, &out, StorageDType::F32).unwrap();
        // Same key set and shapes as the official file.
        let a = read_safetensors_header(&src.join("model.safetensors")).unwrap();
        let b = read_safetensors_header(&out.join("model.safetensors")).unwrap();
        assert_eq!(a, b, "{name}: exported header differs from the official one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join("model.safetensors")).unwrap().permissions().mode();
            assert_eq!(mode & 0o044, 0o044, "{name}: exported weights are not readable by others: {mode:o}");
        }
        // Load -> save -> load is exact.
        let back = load_titok(&out, &device).unwrap();
        assert_eq!(back.config, model.config);
        assert_eq!(params(&back), params(&model), "{name}: parameters differ after the round trip");
    }
}

#[test]
fn f16_export_loads_back_close() {
    let device = Device::flex();
    for src in titok_fixtures() {
        let name = name_of(&src);
        let model = load_titok(&src, &device).unwrap();
        let out_guard = scratch(&format!("f16-{name}"));
        let out = out_guard.path().to_path_buf();
        save_titok(&model, &out, StorageDType::F16).unwrap();
        let h = read_safetensors_header(&out.join("model.safetensors")).unwrap();
        assert!(h.values().all(|t| t.dtype == "F16"), "{name}");
        let back = load_titok(&out, &device).unwrap();
        let (a, b) = (params(&model), params(&back));
        for (k, v) in &a {
            let w = &b[k];
            let max = v.iter().zip(w).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0.0f32, f32::max);
            assert!(max < 2e-3, "{name}: {k}: relative f16 error {max}");
        }
    }
}

#[test]
fn bpk_round_trip_is_exact() {
    let device = Device::flex();
    for src in titok_fixtures() {
        let name = name_of(&src);
        let model = load_titok(&src, &device).unwrap();
        let out_guard = scratch(&format!("bpk-{name}"));
        let out = out_guard.path().to_path_buf();
        save_bpk(&model, &out.join("model.bpk")).unwrap();
        let fresh = Titok::new(&model.config, &device).unwrap();
        let back = load_bpk(fresh, &out.join("model.bpk")).unwrap();
        assert_eq!(params(&back), params(&model), "{name}");
    }
}

#[test]
fn vqgan_round_trip_is_exact() {
    let device = Device::flex();
    for src in FixtureKind::MaskgitVqgan.all() {
        let name = name_of(&src);
        let model = load_vqgan(&src, &device).unwrap();
        let config = vqgan_config(&src).unwrap();
        let out_guard = scratch(&format!("vqgan-{name}"));
        let out = out_guard.path().to_path_buf();
        save_vqgan(&model, &config, &out, StorageDType::F32).unwrap();
        let back = load_vqgan(&out, &device).unwrap();
        assert_eq!(vqgan_config(&out).unwrap(), config, "{name}: config changed");
        assert_eq!(params(&back), params(&model), "{name}");
        // A bare weights file loads with the official numbers assumed: a fixture with other
        // numbers does not fit them, one with the official numbers loads the same weights.
        let bare = load_vqgan(&src.join("model.safetensors"), &device);
        if config == VqganConfig::official() {
            assert_eq!(params(&bare.unwrap()), params(&model), "{name}: bare weights file");
        } else {
            let err = bare.unwrap_err();
            assert!(matches!(err, TitokError::CheckpointMismatch { .. }), "{name}: {err}");
        }
    }
}

/// Writes a copy of a safetensors file with tensors edited by `edit`.
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let device = Device::flex();
    let src = FixtureKind::TitokVq.first();
    let model = load_titok(&src, &device).unwrap();
    let (k, codebook, size) = (model.config.num_latent_tokens, model.config.codebook_size, model.config.image_size);
    let width = read_safetensors_header(&src.join("model.safetensors")).unwrap()["decoder.ln_post.bias"].shape[0];

    // Truncated (corrupt) weights file.
    let dir_guard = scratch("truncated");
    let dir = dir_guard.path().to_path_buf();
    copy_dir(&src, &dir);
    let w = dir.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_titok(&dir, &device).unwrap_err();
    assert!(matches!(err, TitokError::CheckpointRead { .. }) && err.to_string().contains("truncated"), "{err}");
    std::fs::write(&w, b"definitely not safetensors").unwrap();
    let err = load_titok(&dir, &device).unwrap_err();
    assert!(matches!(err, TitokError::CheckpointRead { .. }), "{err}");

    // One key renamed: reported as missing and unexpected, by name.
    let dir_guard = scratch("renamed");
    let dir = dir_guard.path().to_path_buf();
    copy_dir(&src, &dir);
    rewrite(&src.join("model.safetensors"), &dir.join("model.safetensors"), |t| {
        let e = t.iter_mut().find(|e| e.0 == "encoder.ln_pre.weight").unwrap();
        e.0 = "encoder.ln_pre.scale".into();
    });
    let msg = load_titok(&dir, &device).unwrap_err().to_string();
    assert!(
        msg.contains("missing:     encoder.ln_pre.weight") && msg.contains("unexpected:  encoder.ln_pre.scale"),
        "{msg}"
    );

    // One tensor of the wrong shape.
    let dir_guard = scratch("shape");
    let dir = dir_guard.path().to_path_buf();
    copy_dir(&src, &dir);
    let half = width / 2;
    rewrite(&src.join("model.safetensors"), &dir.join("model.safetensors"), |t| {
        let e = t.iter_mut().find(|e| e.0 == "decoder.ln_post.bias").unwrap();
        e.1 = vec![half];
        e.2.truncate(half * 4);
    });
    let msg = load_titok(&dir, &device).unwrap_err().to_string();
    let expected = format!("wrong shape: decoder.ln_post.bias: checkpoint [{half}], model expects [{width}]");
    assert!(msg.contains(&expected), "{msg}");

    // A config that does not fit the weights (2K latent tokens vs K rows).
    let edit_config = |dir: &Path, edit: &dyn Fn(&mut serde_json::Value)| {
        let path = dir.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut cfg);
        std::fs::write(&path, cfg.to_string()).unwrap();
    };
    let dir_guard = scratch("config-fit");
    let dir = dir_guard.path().to_path_buf();
    copy_dir(&src, &dir);
    edit_config(&dir, &|c| c["model"]["vq_model"]["num_latent_tokens"] = serde_json::json!(2 * k));
    let msg = load_titok(&dir, &device).unwrap_err().to_string();
    assert!(msg.contains("latent_tokens") && msg.contains("wrong shape"), "{msg}");

    // A config with an unknown size name.
    let dir_guard = scratch("size");
    let dir = dir_guard.path().to_path_buf();
    copy_dir(&src, &dir);
    edit_config(&dir, &|c| c["model"]["vq_model"]["vit_enc_model_size"] = serde_json::json!("huge"));
    let err = load_titok(&dir, &device).unwrap_err();
    assert!(
        matches!(err, TitokError::ConfigFile { .. }) && err.to_string().contains("unknown ViT size `huge`"),
        "{err}"
    );

    // Token ids outside the codebook.
    let mut ids: Vec<i64> = (0..k as i64).map(|i| i % codebook as i64).collect();
    ids[k - 1] = codebook as i64;
    let ids = Tensor::<2, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(ids, [1, k]), &device);
    let msg = model.decode_tokens(ids).unwrap_err().to_string();
    assert!(msg.contains(&format!("token id {codebook} is outside the codebook 0..{codebook}")), "{msg}");
    let wrong = Tensor::<4>::zeros([1, 3, size / 2, size / 2], &device);
    let msg = model.encode(wrong).unwrap_err().to_string();
    assert!(msg.contains(&format!("expected images [batch, 3, {size}, {size}]")), "{msg}");
}

#[test]
fn atomic_writes_leave_devices_alone() {
    let null = Path::new("/dev/null");
    if !null.exists() {
        return; // not a Unix system
    }
    titok_model::checkpoint::write_bytes_atomically(null, b"discarded").unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(null).unwrap().file_type().is_char_device(), "/dev/null is still a device");
    let dir_guard = scratch("atomic");
    let dir = dir_guard.path().to_path_buf();
    let target = dir.join("out.bin");
    titok_model::checkpoint::write_bytes_atomically(&target, b"abc").unwrap();
    titok_model::checkpoint::write_bytes_atomically(&target, b"defg").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"defg");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name() != "out.bin").collect();
    assert!(leftovers.is_empty(), "no temporary files left behind");
}

//! Support for the golden parity fixtures (`../shared/golden`, produced by running the
//! official PyTorch code): discovery by kind through `TITOK_GOLDEN_DIR`, the shared weights
//! through `TITOK_SHARED_DIR`, reading `io.safetensors`, comparing tensors within tolerances
//! (required ones always, optional intermediates when stored), and the test device.
//!
//! Suites must run on any fixture set the official scripts write: they find folders by
//! [`FixtureKind`], read sizes and counts from the stored tensors and configs, and fail when a
//! set holds no fixture of a kind they test.
//!
//! Public so that every crate's parity tests share one implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// The shared folder (data, weights, golden fixtures): `$TITOK_SHARED_DIR`, else `../shared`
/// beside the workspace.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("TITOK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// A file of the shared weights folder: `<shared>/weights/<file>` (LPIPS, FID InceptionV3).
/// Weights are never looked up relative to a fixture folder.
pub fn shared_weights(file: &str) -> PathBuf {
    shared_dir().join("weights").join(file)
}

/// The golden fixture root: `$TITOK_GOLDEN_DIR`, else `<shared>/golden`.
pub fn golden_dir() -> PathBuf {
    std::env::var_os("TITOK_GOLDEN_DIR").map(PathBuf::from).unwrap_or_else(|| shared_dir().join("golden"))
}

/// Fixture folders under `root` whose name starts with one of `prefixes`, sorted.
///
/// # Panics
/// When `root` cannot be listed (the fixtures are required for parity tests).
pub fn discover(root: &Path, prefixes: &[&str]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("golden fixtures not found at {} ({e}); set TITOK_GOLDEN_DIR", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            prefixes.iter().any(|pre| name.starts_with(pre))
        })
        .collect();
    dirs.sort();
    dirs
}

/// The kinds of fixture the official scripts write, recognised by folder prefix (and, for the
/// two legacy TiTok stages, by `finetune_decoder` in `config.json`, not by the folder name).
/// Source: `../shared/golden/README.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixtureKind {
    /// `titok_legacy_*` with `finetune_decoder: false`: proxy-code logits (stage 1).
    TitokLegacyStage1,
    /// `titok_legacy_*` with `finetune_decoder: true`: MaskGIT-VQGAN pixel decoder (stage 2).
    TitokLegacyStage2,
    /// `titok_vq_*`: single-stage VQ TiTok.
    TitokVq,
    /// `titok_vae_*`: TiTok with a diagonal-Gaussian bottleneck.
    TitokVae,
    /// `maskgit_vqgan_*`: the 2D MaskGIT-VQGAN (proxy-code teacher).
    MaskgitVqgan,
    /// `imagebert_*`: the MaskGIT ImageBert generator.
    ImageBert,
    /// `uvitbert_*`: the U-ViT generator.
    UvitBert,
    /// `discriminator_*`: NLayerDiscriminator and the GAN losses.
    Discriminator,
    /// `mlm_loss*`: the generator training loss and mask schedules.
    MlmLoss,
    /// `lpips*`: LPIPS distances.
    Lpips,
    /// `fid*`: InceptionV3 features and FID.
    Fid,
}

impl FixtureKind {
    /// The folder-name prefix of the kind.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::TitokLegacyStage1 | Self::TitokLegacyStage2 => "titok_legacy_",
            Self::TitokVq => "titok_vq_",
            Self::TitokVae => "titok_vae_",
            Self::MaskgitVqgan => "maskgit_vqgan_",
            Self::ImageBert => "imagebert_",
            Self::UvitBert => "uvitbert_",
            Self::Discriminator => "discriminator_",
            Self::MlmLoss => "mlm_loss",
            Self::Lpips => "lpips",
            Self::Fid => "fid",
        }
    }

    /// Whether the folder `dir` (already matching the prefix) is of this kind.
    fn accepts(self, dir: &Path) -> bool {
        let finetune = || {
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Official default (`finetune_decoder` absent): True.
            v["model"]["vq_model"]["finetune_decoder"].as_bool().unwrap_or(true)
        };
        match self {
            Self::TitokLegacyStage1 => !finetune(),
            Self::TitokLegacyStage2 => finetune(),
            _ => true,
        }
    }

    /// Every fixture of this kind under [`golden_dir`], sorted.
    ///
    /// # Panics
    /// When the set holds none: a suite that tests a kind must not pass on a set without it.
    pub fn all(self) -> Vec<PathBuf> {
        let root = golden_dir();
        let dirs: Vec<PathBuf> = discover(&root, &[self.prefix()]).into_iter().filter(|d| self.accepts(d)).collect();
        assert!(
            !dirs.is_empty(),
            "the fixture set {} holds no {self:?} fixture (folders `{}*`); the suite tests that kind",
            root.display(),
            self.prefix()
        );
        dirs
    }

    /// The first fixture of this kind (for tests that need one model of the kind).
    ///
    /// # Panics
    /// As [`FixtureKind::all`].
    pub fn first(self) -> PathBuf {
        self.all().swap_remove(0)
    }
}

/// Sizes `S` of the stored tensors named `{prefix}{S}{suffix}`, ascending (e.g. `real_` and
/// `""` give the discriminator's input sizes, `a_` and `_u8` LPIPS's).
pub fn stored_sizes(io: &IoTensors, prefix: &str, suffix: &str) -> Vec<usize> {
    let mut sizes: Vec<usize> =
        io.names().iter().filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The device parity tests run on: `$TITOK_TEST_DEVICE` = `flex` (default) or `wgpu`
/// (when compiled with the `wgpu` feature).
///
/// # Panics
/// For an unknown or not compiled-in device name.
pub fn test_device() -> Device {
    match std::env::var("TITOK_TEST_DEVICE").as_deref().unwrap_or("flex") {
        "flex" | "cpu" => Device::flex(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        other => panic!("TITOK_TEST_DEVICE={other} is not a compiled-in device (flex, wgpu with --features wgpu)"),
    }
}

/// One stored tensor, converted to f64 (floats) or i64 (ids, bools, bytes).
#[derive(Debug, Clone)]
pub struct Stored {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values as f64 (for every dtype).
    pub values: Vec<f64>,
    /// True for integer, bool and uint8 tensors.
    pub integral: bool,
}

/// The tensors of an `io.safetensors`, with a record of which were compared.
#[derive(Debug)]
pub struct IoTensors {
    /// The file.
    pub path: PathBuf,
    tensors: BTreeMap<String, Stored>,
    checked: BTreeSet<String>,
}

impl IoTensors {
    /// Reads `dir/io.safetensors`.
    ///
    /// # Panics
    /// When the file cannot be read or holds an unsupported dtype.
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("io.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let (values, integral): (Vec<f64>, bool) = match view.dtype() {
                Dtype::F32 => {
                    (data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(), false)
                }
                Dtype::F64 => {
                    (data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(), false)
                }
                Dtype::I64 => {
                    (data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(), true)
                }
                Dtype::I32 => {
                    (data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(), true)
                }
                Dtype::U8 | Dtype::BOOL => (data.iter().map(|&b| b as f64).collect(), true),
                other => panic!("{}: tensor {name} has unsupported dtype {other:?}", path.display()),
            };
            tensors.insert(name, Stored { shape: view.shape().to_vec(), values, integral });
        }
        Self { path, tensors, checked: BTreeSet::new() }
    }

    /// Whether a tensor is stored.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names of all stored tensors.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// A stored tensor (marks it as used).
    ///
    /// # Panics
    /// When it is not stored.
    pub fn get(&mut self, name: &str) -> &Stored {
        self.checked.insert(name.to_string());
        self.tensors.get(name).unwrap_or_else(|| panic!("{}: no tensor `{name}`", self.path.display()))
    }

    /// A stored tensor as a float tensor on `device` (uint8 images are divided by 255).
    pub fn float<const D: usize>(&mut self, name: &str, device: &Device) -> Tensor<D> {
        let scale = if name.ends_with("_u8") { 1.0 / 255.0 } else { 1.0 };
        let s = self.get(name).clone();
        let values: Vec<f32> = s.values.iter().map(|&v| (v * scale) as f32).collect();
        Tensor::from_data(TensorData::new(values, s.shape), device)
    }

    /// A stored integer tensor on `device`.
    pub fn int<const D: usize>(&mut self, name: &str, device: &Device) -> Tensor<D, Int> {
        let s = self.get(name).clone();
        let values: Vec<i64> = s.values.iter().map(|&v| v as i64).collect();
        Tensor::from_data(TensorData::new(values, s.shape), device)
    }

    /// A stored scalar.
    pub fn scalar(&mut self, name: &str) -> f64 {
        self.get(name).values[0]
    }

    /// Compares a float tensor with the stored one: `|a - e| <= atol + rtol·|e|` everywhere.
    ///
    /// # Panics
    /// On a shape mismatch or any element outside the tolerance (the message gives the worst).
    pub fn assert_close<const D: usize>(&mut self, name: &str, actual: Tensor<D>, atol: f64, rtol: f64) {
        let actual_shape = actual.dims().to_vec();
        let values = actual.try_into_vec_as::<f32>().expect("f32 data");
        let path = self.path.display().to_string();
        let expected = self.get(name);
        assert_eq!(actual_shape, expected.shape, "{path}: `{name}` shape");
        assert_values_close(&format!("{path}: `{name}`"), &values, &expected.values, atol, rtol);
    }

    /// [`IoTensors::assert_close`] when the fixture stores `name` (an optional intermediate),
    /// else nothing. Returns whether it compared. `actual` is only computed when needed.
    pub fn assert_close_if_stored<const D: usize>(
        &mut self,
        name: &str,
        actual: impl FnOnce() -> Tensor<D>,
        atol: f64,
        rtol: f64,
    ) -> bool {
        let stored = self.has(name);
        if stored {
            self.assert_close(name, actual(), atol, rtol);
        }
        stored
    }

    /// Compares ids exactly.
    ///
    /// # Panics
    /// On any difference.
    pub fn assert_ids<const D: usize>(&mut self, name: &str, actual: Tensor<D, Int>) {
        let actual_shape = actual.dims().to_vec();
        let values = actual.try_into_vec_as::<i64>().expect("i64 data");
        let path = self.path.display().to_string();
        let expected = self.get(name);
        assert_eq!(actual_shape, expected.shape, "{path}: `{name}` shape");
        let exp: Vec<i64> = expected.values.iter().map(|&v| v as i64).collect();
        assert_eq!(values, exp, "{path}: `{name}` ids differ");
    }

    /// Compares a scalar with relative tolerance `rtol`.
    ///
    /// # Panics
    /// When outside the tolerance.
    pub fn assert_scalar(&mut self, name: &str, actual: f64, rtol: f64) {
        let path = self.path.display().to_string();
        let e = self.scalar(name);
        assert!((actual - e).abs() <= rtol * e.abs() + 1e-7, "{path}: `{name}` = {actual}, expected {e}");
    }

    /// [`IoTensors::assert_scalar`] when the fixture stores `name`, else nothing.
    pub fn assert_scalar_if_stored(&mut self, name: &str, actual: impl FnOnce() -> f64, rtol: f64) -> bool {
        let stored = self.has(name);
        if stored {
            self.assert_scalar(name, actual(), rtol);
        }
        stored
    }

    /// Marks tensors as used without comparing them (inputs).
    pub fn mark_inputs(&mut self, names: &[&str]) {
        for n in names {
            if self.has(n) {
                self.checked.insert(n.to_string());
            }
        }
    }

    /// Stored tensors that no comparison used.
    pub fn unchecked(&self) -> Vec<String> {
        self.tensors.keys().filter(|k| !self.checked.contains(*k)).cloned().collect()
    }

    /// Panics when a stored tensor was neither compared nor marked as an input: every tensor a
    /// fixture holds must be checked.
    pub fn assert_all_checked(&self) {
        let left = self.unchecked();
        assert!(left.is_empty(), "{}: tensors not compared: {left:?}", self.path.display());
    }
}

/// Asserts `|a - e| <= atol + rtol·|e|` element-wise.
///
/// # Panics
/// With the worst element when any is outside the tolerance, or on a length mismatch.
pub fn assert_values_close(what: &str, actual: &[f32], expected: &[f64], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    // (index, excess over the tolerance, |Δ|); a non-finite value is an infinite excess.
    let mut worst = (0usize, f64::NEG_INFINITY, 0.0f64);
    let mut max_abs = 0.0f64;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let d = (a as f64 - e).abs();
        let excess = if d.is_finite() { d - (atol + rtol * e.abs()) } else { f64::INFINITY };
        max_abs = max_abs.max(d);
        if excess > worst.1 {
            worst = (i, excess, d);
        }
    }
    assert!(
        worst.1 <= 0.0,
        "{what}: element {} = {} expected {} (|Δ| {:.3e} > atol {atol:.0e} + rtol {rtol:.0e}); max |Δ| {max_abs:.3e}",
        worst.0,
        actual[worst.0],
        expected[worst.0],
        worst.2
    );
}

//! The default models compiled into the binary (`include_bytes!` of `assets/models/`), so that
//! `titok reconstruct photo.png -o out/` works without downloading anything, and the ImageNet
//! class names for official 1000-class generators.
//!
//! The checkpoint loaders of `titok_model::checkpoint` read folders (and check every tensor
//! name and shape against the model before loading). An embedded model is therefore written to
//! a private temporary folder, loaded from there with the same strict checks as any other
//! folder, and the folder is removed again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

/// One embedded model folder: its name and its files.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedModel {
    /// The folder name under `assets/models/`.
    pub name: &'static str,
    /// `(file name, bytes)` of every file of the folder.
    pub files: &'static [(&'static str, &'static [u8])],
}

/// The default tokenizer: TiTok for 32x32 images (`assets/models/titok-cifar10`).
pub const TOKENIZER: EmbeddedModel = EmbeddedModel {
    name: "titok-cifar10",
    files: &[
        ("config.json", include_bytes!("../../assets/models/titok-cifar10/config.json")),
        ("model.safetensors", include_bytes!("../../assets/models/titok-cifar10/model.safetensors")),
    ],
};

/// The default generator: a class-conditional MaskGIT over the default tokenizer's tokens, with
/// the CIFAR-10 class names (`assets/models/maskgit-cifar10`).
pub const GENERATOR: EmbeddedModel = EmbeddedModel {
    name: "maskgit-cifar10",
    files: &[
        ("config.json", include_bytes!("../../assets/models/maskgit-cifar10/config.json")),
        ("model.safetensors", include_bytes!("../../assets/models/maskgit-cifar10/model.safetensors")),
        ("classes.txt", include_bytes!("../../assets/models/maskgit-cifar10/classes.txt")),
    ],
};

/// The 1,000 ImageNet class names in class-index order (torchvision, BSD-3-Clause), for
/// official generators that come without a `classes.txt`.
pub const IMAGENET_CLASSES: &str = include_str!("../../assets/labels/imagenet_classes.txt");

/// A temporary folder holding an embedded model's files; removed on drop.
#[derive(Debug)]
pub struct Materialized {
    dir: PathBuf,
}

impl Materialized {
    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Materialized {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl EmbeddedModel {
    /// Writes the files to a fresh temporary folder (unique per process and call).
    ///
    /// # Errors
    /// When the temporary folder cannot be created or written.
    pub fn materialize(&self) -> Result<Materialized> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("titok-{}-{}-{unique}", self.name, std::process::id()));
        // Own the folder before writing into it, so that drop cleans up after a failure too.
        let materialized = Materialized { dir: dir.clone() };
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, bytes) in self.files {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(materialized)
    }

    /// The bytes of one of the files, if present.
    pub fn file(&self, name: &str) -> Option<&'static [u8]> {
        self.files.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}

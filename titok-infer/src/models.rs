//! The session: the chosen device and the models (from `--model` / `--generator` folders or
//! the embedded defaults), and the class names of a generator.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use titok_model::Titok;
use titok_model::checkpoint::{HfConfig, load_generator, load_titok};
use titok_model::device::{DeviceRequest, select_device};
use titok_model::generator::{Generator, TokenPredictor};

use crate::embedded::{self, EmbeddedModel};

/// Picks the device for a request and says which on stderr.
///
/// # Errors
/// When the requested backend is not compiled in or does not answer.
pub fn device(request: DeviceRequest) -> Result<Device> {
    let (device, name) = select_device(request).map_err(|e| anyhow::anyhow!("device: {e}"))?;
    eprintln!("device: {name}");
    Ok(device)
}

/// What a model folder holds, judged from its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A TiTok tokenizer (`model.vq_model`).
    Tokenizer,
    /// A MaskGIT generator (`model.generator`).
    Generator,
}

/// The kind of the model folder `dir`.
///
/// # Errors
/// When `config.json` is missing or unreadable, or describes neither kind.
pub fn kind_of(dir: &Path) -> Result<ModelKind> {
    if !dir.is_dir() {
        bail!("{}: not a model folder (expected config.json + model.safetensors)", dir.display());
    }
    let config = HfConfig::from_dir(dir)?;
    if config.get("model.generator").is_some() {
        Ok(ModelKind::Generator)
    } else if config.get("model.vq_model").is_some() {
        Ok(ModelKind::Tokenizer)
    } else {
        bail!(
            "{}: config.json describes neither a TiTok tokenizer (model.vq_model) nor a MaskGIT generator (model.generator)",
            dir.display()
        )
    }
}

/// A loaded tokenizer and where it came from.
#[derive(Debug)]
pub struct Tokenizer {
    /// The model.
    pub model: Titok,
    /// The folder, or `embedded <name>`.
    pub source: String,
}

/// Loads the tokenizer of `--model`, or the embedded default.
///
/// # Errors
/// The loader's error (config, missing or mismatched tensors) with the folder named.
pub fn tokenizer(dir: Option<&Path>, device: &Device) -> Result<Tokenizer> {
    match dir {
        Some(dir) => {
            if matches!(kind_of(dir), Ok(ModelKind::Generator)) {
                bail!("{}: this is a MaskGIT generator folder; pass it with --generator, not --model", dir.display());
            }
            let model = load_titok(dir, device).with_context(|| format!("loading the tokenizer {}", dir.display()))?;
            Ok(Tokenizer { model, source: dir.display().to_string() })
        }
        None => {
            let tmp = embedded::TOKENIZER.materialize()?;
            let model = load_titok(tmp.path(), device).context("loading the embedded tokenizer")?;
            Ok(Tokenizer { model, source: format!("embedded {}", embedded::TOKENIZER.name) })
        }
    }
}

/// A loaded generator, its class names and where it came from.
#[derive(Debug)]
pub struct LoadedGenerator {
    /// The model.
    pub model: Generator,
    /// One name per class, in class-id order.
    pub classes: ClassNames,
    /// The folder, or `embedded <name>`.
    pub source: String,
}

/// Loads the generator of `--generator`, or the embedded default.
///
/// # Errors
/// The loader's error with the folder named; a `classes.txt` whose line count differs from the
/// generator's class count.
pub fn generator(dir: Option<&Path>, device: &Device) -> Result<LoadedGenerator> {
    let (model, labels, source) = match dir {
        Some(dir) => {
            if matches!(kind_of(dir), Ok(ModelKind::Tokenizer)) {
                bail!("{}: this is a TiTok tokenizer folder; pass it with --model, not --generator", dir.display());
            }
            let model =
                load_generator(dir, device).with_context(|| format!("loading the generator {}", dir.display()))?;
            let labels = std::fs::read_to_string(dir.join(CLASSES_FILE)).ok();
            (model, labels, dir.display().to_string())
        }
        None => {
            let e: &EmbeddedModel = &embedded::GENERATOR;
            let tmp = e.materialize()?;
            let model = load_generator(tmp.path(), device).context("loading the embedded generator")?;
            let labels = e.file(CLASSES_FILE).map(|b| String::from_utf8_lossy(b).into_owned());
            (model, labels, format!("embedded {}", e.name))
        }
    };
    let n = model.layout().num_classes;
    let classes = ClassNames::for_generator(n, labels.as_deref(), dir.map(|d| d.join(CLASSES_FILE)))?;
    Ok(LoadedGenerator { model, classes, source })
}

/// File name of the class names beside a generator.
pub const CLASSES_FILE: &str = "classes.txt";

/// Class names in class-id order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassNames {
    names: Vec<String>,
    /// Whether the names are only numbers (no label file).
    pub numbered: bool,
}

impl ClassNames {
    /// The names for a generator of `n` classes: its `classes.txt` text, else the ImageNet
    /// names for 1000 classes, else `class 0`, `class 1`, ...
    ///
    /// # Errors
    /// When a label file has another number of names than the generator has classes.
    pub fn for_generator(n: usize, labels: Option<&str>, file: Option<PathBuf>) -> Result<Self> {
        let parse =
            |t: &str| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect::<Vec<_>>();
        if let Some(text) = labels {
            let names = parse(text);
            if names.len() != n {
                let where_ = file.map(|f| f.display().to_string()).unwrap_or_else(|| CLASSES_FILE.into());
                bail!("{where_} names {} classes, the generator has {n}", names.len());
            }
            return Ok(Self { names, numbered: false });
        }
        if n == 1000 {
            return Ok(Self { names: parse(embedded::IMAGENET_CLASSES), numbered: false });
        }
        Ok(Self { names: (0..n).map(|i| format!("class {i}")).collect(), numbered: true })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The name of class `id`.
    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    /// Resolves a class given as an id or a name: an exact name (any case), else the one name
    /// containing it.
    ///
    /// # Errors
    /// For an id out of range, an unknown name, or a part that several names contain.
    pub fn resolve(&self, query: &str) -> Result<usize> {
        let q = query.trim();
        if let Ok(id) = q.parse::<usize>() {
            if id >= self.len() {
                bail!("class id {id} is outside 0..{}", self.len());
            }
            return Ok(id);
        }
        let lower = q.to_lowercase();
        if let Some(i) = self.names.iter().position(|n| n.to_lowercase() == lower) {
            return Ok(i);
        }
        let hits: Vec<usize> = (0..self.len()).filter(|&i| self.names[i].to_lowercase().contains(&lower)).collect();
        match hits.as_slice() {
            [one] => Ok(*one),
            [] if self.numbered => bail!("the generator has no class names: give a class id 0..{}", self.len()),
            [] => {
                let some: Vec<&str> = self.names.iter().take(10).map(String::as_str).collect();
                bail!("unknown class `{q}`; classes are e.g. {} ({} in all)", some.join(", "), self.len())
            }
            many => {
                let some: Vec<String> = many.iter().take(8).map(|&i| format!("{i} {}", self.names[i])).collect();
                bail!("class `{q}` is ambiguous: {} ...; give the full name or the id", some.join(", "))
            }
        }
    }
}

/// Checks that a generator produces tokens the tokenizer can decode.
///
/// # Errors
/// When the token count or codebook size differ.
pub fn check_pair(tokenizer: &Titok, generator: &Generator) -> Result<()> {
    let layout = generator.layout();
    let c = &tokenizer.config;
    if layout.seq_len != c.num_latent_tokens || layout.codebook_size != c.codebook_size {
        bail!(
            "the generator makes {} tokens from a {}-code codebook, but the tokenizer uses {} tokens of {} codes: \
             pass a matching --model / --generator pair",
            layout.seq_len,
            layout.codebook_size,
            c.num_latent_tokens,
            c.codebook_size
        );
    }
    if !c.decodes_to_pixels() {
        bail!("the tokenizer is a two-stage stage-1 model and cannot decode tokens to pixels");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_resolve_by_id_name_or_unique_part() {
        let c = ClassNames::for_generator(3, Some("golden retriever\nLabrador retriever\ncat\n"), None).unwrap();
        assert_eq!(c.resolve("2").unwrap(), 2);
        assert_eq!(c.resolve("Golden Retriever").unwrap(), 0);
        assert_eq!(c.resolve("labrador").unwrap(), 1);
        assert!(c.resolve("retriever").unwrap_err().to_string().contains("ambiguous"));
        assert!(c.resolve("3").unwrap_err().to_string().contains("outside 0..3"));
        assert!(c.resolve("dog").unwrap_err().to_string().contains("unknown class"));
        assert!(ClassNames::for_generator(2, Some("a\nb\nc\n"), None).is_err());
        let imagenet = ClassNames::for_generator(1000, None, None).unwrap();
        assert_eq!((imagenet.name(0), imagenet.name(999)), ("tench", "toilet tissue"));
        let numbered = ClassNames::for_generator(4, None, None).unwrap();
        assert!(numbered.resolve("cat").unwrap_err().to_string().contains("no class names"));
    }
}

//! The token cache of generator training: a dataset encoded once with a TiTok tokenizer, so
//! that the generator trains on ids instead of running the tokenizer every step (the official
//! code offers the same as pre-tokenised JSONL, `scripts/train_maskgit.py`).
//!
//! Every image is centre-cropped ([`Transform::eval`]) and encoded together with its mirror
//! image, the official generator recipe's horizontal-flip augmentation (`Resize -> CenterCrop
//! -> RandomHorizontalFlip`, REFERENCE §7e): training picks one of the two views per visit.
//!
//! File layout: one safetensors file (written atomically) that any safetensors reader opens:
//! ```text
//! ids     [num_images, views, K]   U16 (codebook <= 65536) or U32; view 0 = image, 1 = mirror
//! labels  [num_images]             U32 class index (0 when the dataset is unlabelled)
//! metadata["titok_token_cache"]    the JSON of [`TokenCacheHeader`]
//! ```
//! A cache records the fingerprint of the tokenizer that wrote it ([`tokenizer_fingerprint`]);
//! [`TokenCache::check_source`] refuses a cache built with another tokenizer or from other data.

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use fnv::FnvHasher;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use titok_model::Titok;
use titok_model::checkpoint::write_bytes_atomically;

use crate::error::DataError;
use crate::progress::progress_bar;
use crate::{ImageBatcher, ImageRecord, Transform};

/// The safetensors metadata key holding the [`TokenCacheHeader`] JSON.
pub const METADATA_KEY: &str = "titok_token_cache";

/// Version of the header layout (2: safetensors; 1 was a custom binary format).
pub const VERSION: u32 = 2;

/// What a token cache holds and where it came from (the JSON header of the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCacheHeader {
    /// Header layout version ([`VERSION`]).
    pub version: u32,
    /// Images stored (unreadable images of the dataset are left out).
    pub num_images: usize,
    /// Views per image: 2 (image and mirror) or 1 (image only).
    pub views: usize,
    /// Tokens per image `K`.
    pub seq_len: usize,
    /// Codebook size `N` of the tokenizer (every id is in `0..N`).
    pub codebook_size: usize,
    /// Bytes per stored id: 2 or 4.
    pub id_bytes: usize,
    /// Class names, in label order; empty when the dataset is unlabelled.
    pub class_names: Vec<String>,
    /// [`tokenizer_fingerprint`] of the tokenizer that encoded the images.
    pub tokenizer_fingerprint: String,
    /// Resolution the images were cropped to.
    pub image_size: usize,
    /// The dataset (folder or archive), as an absolute path when it could be resolved.
    pub source: String,
    /// The split (sub-folder) that was encoded; empty = the whole dataset.
    pub split: String,
    /// Images of the split that could not be read and were left out.
    pub skipped: usize,
}

/// Token ids in their storage width.
#[derive(Debug, Clone, PartialEq)]
enum Ids {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Ids {
    fn get(&self, i: usize) -> u32 {
        match self {
            Self::U16(v) => u32::from(v[i]),
            Self::U32(v) => v[i],
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
        }
    }
}

/// Token ids and class labels of a dataset, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCache {
    /// What the cache holds.
    pub header: TokenCacheHeader,
    /// `[num_images, views, K]`, row-major.
    ids: Ids,
    /// `[num_images]`.
    labels: Vec<u32>,
}

/// How to encode a dataset into a [`TokenCache`].
#[derive(Debug, Clone)]
pub struct TokenizeOptions {
    /// Encode the mirror image too (the official flip augmentation).
    pub flips: bool,
    /// Images per tokenizer forward pass.
    pub batch_size: usize,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// [`tokenizer_fingerprint`] of the tokenizer, recorded in the header.
    pub fingerprint: String,
    /// Dataset path recorded in the header (see [`TokenCacheHeader::source`]).
    pub source: String,
    /// Split recorded in the header.
    pub split: String,
}

impl TokenCache {
    /// Encodes `records` with a VQ `tokenizer` (centre crop at the tokenizer's resolution, and
    /// the mirror image when `options.flips`), in batches, in record order. Unreadable images
    /// are reported by the data pipeline, counted in the header and left out.
    ///
    /// # Errors
    /// [`DataError::Input`] for a VAE tokenizer (no token ids), [`DataError::Model`] when
    /// encoding fails, [`DataError::TokenCache`] when no image could be read or only some records
    /// carry a label.
    pub fn encode(
        tokenizer: &Titok,
        records: &[ImageRecord],
        class_names: &[String],
        options: &TokenizeOptions,
        device: &Device,
    ) -> Result<Self, DataError> {
        let config = &tokenizer.config;
        if tokenizer.quantize.is_none() {
            return Err(DataError::Input("the generator needs a VQ tokenizer (token ids); this one is a VAE".into()));
        }
        let labelled = !class_names.is_empty() && records.iter().all(|r| r.label.is_some());
        if !class_names.is_empty() && !labelled {
            return Err(DataError::TokenCache("some images of the dataset have a class label and some do not".into()));
        }
        let k = config.num_latent_tokens;
        let views = if options.flips { 2 } else { 1 };
        let batcher = ImageBatcher::new(Transform::eval(config.image_size as u32));
        let bar = options.progress.then(|| progress_bar(records.len() as u64, "tokenizing"));

        let (mut ids, mut labels) = (Vec::with_capacity(records.len() * views * k), Vec::with_capacity(records.len()));
        let mut done = 0;
        for chunk in records.chunks(options.batch_size.max(1)) {
            let items: Vec<(ImageRecord, u64)> = chunk.iter().map(|r| (r.clone(), 0)).collect();
            let batch = batcher.batch_with_epochs(&items, device);
            if let Some(bar) = &bar {
                bar.inc(chunk.len() as u64);
                // Also a log line every 10% (the bar is hidden when stderr is not a terminal).
                if (done + chunk.len()) * 10 / records.len() > done * 10 / records.len() {
                    tracing::info!(done = done + chunk.len(), total = records.len(), "tokenizing");
                }
            }
            done += chunk.len();
            if batch.is_empty() {
                continue;
            }
            let b = batch.len();
            let pixels = if options.flips {
                let mirror = batch.images.clone().flip([3]);
                Tensor::cat(vec![batch.images, mirror], 0) // [2b, 3, S, S]
            } else {
                batch.images // [b, 3, S, S]
            };
            let tokens = tokenizer.encode(pixels)?.tokens.expect("a VQ tokenizer returns token ids"); // [views·b, K]
            let tokens = tokens
                .try_into_vec_as::<i64>()
                .map_err(|e| DataError::TokenCache(format!("cannot read token ids: {e:?}")))?;
            for (row, index) in batch.indices.iter().enumerate() {
                for view in 0..views {
                    let start = (view * b + row) * k;
                    ids.extend(tokens[start..start + k].iter().map(|&t| t as u32));
                }
                let record = chunk.iter().find(|r| r.index == *index).expect("the batch holds records of the chunk");
                labels.push(record.label.unwrap_or(0) as u32);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let num_images = labels.len();
        if num_images == 0 {
            return Err(DataError::TokenCache(format!("none of the {} images could be read", records.len())));
        }
        let skipped = records.len() - num_images;
        if skipped > 0 {
            tracing::warn!(skipped, "images left out of the token cache");
        }
        let header = TokenCacheHeader {
            version: VERSION,
            num_images,
            views,
            seq_len: k,
            codebook_size: config.codebook_size,
            id_bytes: 0, // set by `new`
            class_names: class_names.to_vec(),
            tokenizer_fingerprint: options.fingerprint.clone(),
            image_size: config.image_size,
            source: options.source.clone(),
            split: options.split.clone(),
            skipped,
        };
        Self::new(header, ids, labels)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.header.num_images
    }

    /// Whether the cache holds no image (never true for a built or loaded cache).
    pub fn is_empty(&self) -> bool {
        self.header.num_images == 0
    }

    /// Views per image (2 with mirrors).
    pub fn views(&self) -> usize {
        self.header.views
    }

    /// Tokens per image `K`.
    pub fn seq_len(&self) -> usize {
        self.header.seq_len
    }

    /// Class names (empty for an unlabelled dataset).
    pub fn class_names(&self) -> &[String] {
        &self.header.class_names
    }

    /// Appends the `K` ids of image `index`, view `view` (0 = image, 1 = mirror) to `out`.
    ///
    /// # Panics
    /// When `index` or `view` is out of range.
    pub fn extend_ids(&self, index: usize, view: usize, out: &mut Vec<i64>) {
        assert!(
            index < self.len() && view < self.views(),
            "image {index} view {view} of {} x {}",
            self.len(),
            self.views()
        );
        let k = self.seq_len();
        let start = (index * self.views() + view) * k;
        out.extend((start..start + k).map(|i| i64::from(self.ids.get(i))));
    }

    /// The class label of image `index`.
    pub fn label(&self, index: usize) -> usize {
        self.labels[index] as usize
    }

    /// A cache of the given images, first view only (e.g. held-out validation images).
    ///
    /// # Panics
    /// When an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut ids = Vec::with_capacity(indices.len() * self.seq_len());
        for &i in indices {
            self.extend_ids(i, 0, &mut ids);
        }
        let ids = match self.ids {
            Ids::U16(_) => Ids::U16(ids.into_iter().map(|v| v as u16).collect()),
            Ids::U32(_) => Ids::U32(ids.into_iter().map(|v| v as u32).collect()),
        };
        let header = TokenCacheHeader { num_images: indices.len(), views: 1, skipped: 0, ..self.header.clone() };
        Self { header, ids, labels: indices.iter().map(|&i| self.labels[i]).collect() }
    }

    /// Refuses a cache that was not built by this tokenizer from this data.
    ///
    /// # Errors
    /// [`DataError::TokenCache`] naming what differs (tokenizer fingerprint, dataset, split,
    /// resolution, flips) and how to proceed.
    pub fn check_source(&self, path: &Path, expected: &TokenCacheHeader) -> Result<(), DataError> {
        let h = &self.header;
        let mismatch = |what: &str, cached: &str, wanted: &str| {
            Err(DataError::TokenCache(format!(
                "token cache {} was built {what} {cached}, this run uses {wanted}; delete the file or set \
                 data.token_cache to another path",
                path.display()
            )))
        };
        if h.tokenizer_fingerprint != expected.tokenizer_fingerprint {
            return mismatch(
                "with another tokenizer: fingerprint",
                &h.tokenizer_fingerprint,
                &format!("a tokenizer with fingerprint {}", expected.tokenizer_fingerprint),
            );
        }
        if h.source != expected.source || h.split != expected.split {
            return mismatch(
                "from",
                &format!("{} split '{}'", h.source, h.split),
                &format!("{} split '{}'", expected.source, expected.split),
            );
        }
        if h.image_size != expected.image_size || h.views != expected.views {
            return mismatch(
                "at",
                &format!("{} px with {} view(s)", h.image_size, h.views),
                &format!("{} px with {} view(s)", expected.image_size, expected.views),
            );
        }
        Ok(())
    }

    /// Writes the cache atomically (a temporary file renamed into place) as safetensors.
    ///
    /// # Errors
    /// [`DataError::Model`] wrapping the write error.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let h = &self.header;
        let (dtype, ids): (Dtype, Vec<u8>) = match &self.ids {
            Ids::U16(v) => (Dtype::U16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Ids::U32(v) => (Dtype::U32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        let labels: Vec<u8> = self.labels.iter().flat_map(|x| x.to_le_bytes()).collect();
        let view =
            |dtype, shape: Vec<usize>, data| TensorView::new(dtype, shape, data).expect("sizes follow the header");
        let tensors = [
            ("ids", view(dtype, vec![h.num_images, h.views, h.seq_len], &ids)),
            ("labels", view(Dtype::U32, vec![h.num_images], &labels)),
        ];
        let metadata = HashMap::from([(METADATA_KEY.to_string(), serde_json::to_string(h).expect("serialisable"))]);
        let bytes = safetensors::serialize(tensors, Some(metadata))
            .map_err(|e| DataError::TokenCache(format!("cannot serialise the token cache: {e}")))?;
        Ok(write_bytes_atomically(path, &bytes)?)
    }

    /// Reads a cache and checks it: safetensors layout, header version, shapes and dtypes, every
    /// id below the codebook size and every label below the number of classes.
    ///
    /// # Errors
    /// [`DataError::Io`] when the file cannot be read, [`DataError::TokenCache`] for a file that is
    /// not a token cache, truncated, or holds out-of-range values.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: path.to_path_buf(), source: e })?;
        let bad = |reason: String| DataError::TokenCache(format!("token cache {}: {reason}", path.display()));
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file (truncated or corrupt): {e}")))?;
        let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let json =
            metadata.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)).ok_or_else(|| {
                bad(format!("a safetensors file without the `{METADATA_KEY}` header: not a token cache"))
            })?;
        let header: TokenCacheHeader =
            serde_json::from_str(json).map_err(|e| bad(format!("unreadable header: {e}")))?;
        if header.version != VERSION {
            return Err(bad(format!("version {} (this build reads version {VERSION})", header.version)));
        }
        if !matches!(header.id_bytes, 2 | 4) || !matches!(header.views, 1 | 2) || header.seq_len == 0 {
            return Err(bad(format!(
                "impossible layout: {} bytes per id, {} views, K = {}",
                header.id_bytes, header.views, header.seq_len
            )));
        }
        let tensor = |name: &str, dtype: Dtype, shape: &[usize]| {
            let t = file.tensor(name).map_err(|_| bad(format!("no `{name}` tensor")))?;
            if t.dtype() != dtype || t.shape() != shape {
                return Err(bad(format!(
                    "`{name}` is {:?} {:?}, the header implies {dtype:?} {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data())
        };
        let id_dtype = if header.id_bytes == 2 { Dtype::U16 } else { Dtype::U32 };
        let ids = tensor("ids", id_dtype, &[header.num_images, header.views, header.seq_len])?;
        let ids = if header.id_bytes == 2 {
            Ids::U16(ids.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
        } else {
            Ids::U32(ids.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        let labels = tensor("labels", Dtype::U32, &[header.num_images])?;
        let labels: Vec<u32> = labels.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Self::checked(header, ids, labels).map_err(|e| bad(e.to_string()))
    }

    /// A cache from its parts: `ids` `[num_images, views, K]` row-major, `labels`
    /// `[num_images]`; stored as u16 when the codebook allows it.
    ///
    /// # Errors
    /// [`DataError::TokenCache`] when the lengths disagree with the header, an id is outside the
    /// codebook or a label outside the classes.
    pub fn new(header: TokenCacheHeader, ids: Vec<u32>, labels: Vec<u32>) -> Result<Self, DataError> {
        let wide = header.codebook_size > 1 << 16;
        let header = TokenCacheHeader { id_bytes: if wide { 4 } else { 2 }, ..header };
        let ids = match ids.iter().find(|&&v| v as usize >= header.codebook_size) {
            Some(bad) => {
                return Err(DataError::TokenCache(format!(
                    "token id {bad} is outside the codebook 0..{}",
                    header.codebook_size
                )));
            }
            None if wide => Ids::U32(ids),
            None => Ids::U16(ids.into_iter().map(|v| v as u16).collect()),
        };
        Self::checked(header, ids, labels)
    }

    fn checked(header: TokenCacheHeader, ids: Ids, labels: Vec<u32>) -> Result<Self, DataError> {
        let h = &header;
        if ids.len() != h.num_images * h.views * h.seq_len || labels.len() != h.num_images {
            return Err(DataError::TokenCache(format!(
                "{} ids and {} labels for {} images x {} views x {} tokens",
                ids.len(),
                labels.len(),
                h.num_images,
                h.views,
                h.seq_len
            )));
        }
        if let Some(bad_id) = (0..ids.len()).map(|i| ids.get(i)).find(|&v| v as usize >= h.codebook_size) {
            return Err(DataError::TokenCache(format!(
                "token id {bad_id} is outside the codebook 0..{}",
                h.codebook_size
            )));
        }
        let classes = h.class_names.len().max(1);
        if let Some(bad_label) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(DataError::TokenCache(format!("label {bad_label} is outside the {classes} classes")));
        }
        Ok(Self { header, ids, labels })
    }
}

/// A fingerprint of what determines a tokenizer's token ids: the encoder-side configuration
/// (resolution, patch size, encoder size, `K`, token size, codebook size, L2 norm, quantize
/// mode, legacy layout) and the values of the latent tokens, the encoder and the codebook, as a
/// 64-bit FNV-1a hash in hex. The decoder is left out: a stage-2 fine-tune of a tokenizer (frozen
/// encoder and codebook) produces the same tokens and shares the fingerprint.
pub fn tokenizer_fingerprint(tokenizer: &Titok) -> String {
    let c = &tokenizer.config;
    let mut hash = FnvHasher::default();
    let config = serde_json::json!([
        c.image_size,
        c.patch_size,
        c.encoder,
        c.num_latent_tokens,
        c.token_size,
        c.codebook_size,
        c.use_l2_norm,
        c.quantize_mode,
        c.is_legacy,
    ]);
    hash.write(config.to_string().as_bytes());
    let mut visitor = HashParams { hash };
    visitor.visit_float(&tokenizer.latent_tokens);
    tokenizer.encoder.visit(&mut visitor);
    if let Some(q) = &tokenizer.quantize {
        q.visit(&mut visitor);
    }
    format!("{:016x}", visitor.hash.finish())
}

/// Hashes the shape and f32 values of every float parameter it visits.
struct HashParams {
    hash: FnvHasher,
}

impl ModuleVisitor for HashParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        for d in value.dims() {
            self.hash.write(&(d as u64).to_le_bytes());
        }
        // A parameter that cannot be read hashes as its shape only (never the case on the
        // host backends; the fingerprint then still separates different shapes).
        if let Ok(values) = value.try_into_vec_as::<f32>() {
            for v in values {
                self.hash.write(&v.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(codebook: usize) -> TokenCache {
        let ids: Vec<u32> = (0..3 * 2 * 4).map(|i| (i * 7 % codebook) as u32).collect();
        let header = TokenCacheHeader {
            version: VERSION,
            num_images: 3,
            views: 2,
            seq_len: 4,
            codebook_size: codebook,
            id_bytes: 0,
            class_names: vec!["a".into(), "b".into()],
            tokenizer_fingerprint: "0123".into(),
            image_size: 32,
            source: "/data".into(),
            split: "train".into(),
            skipped: 0,
        };
        TokenCache::new(header, ids, vec![1, 0, 1]).unwrap()
    }

    /// A file path in a fresh folder removed when the guard drops.
    fn scratch(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::Builder::new().prefix("titok-token-cache-").tempdir().unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }

    #[test]
    fn save_load_round_trip_in_both_widths() {
        for codebook in [64, 100_000] {
            let c = cache(codebook);
            let (_guard, path) = scratch(&format!("rt{codebook}.safetensors"));
            c.save(&path).unwrap();
            let back = TokenCache::load(&path).unwrap();
            assert_eq!(back, c);
            let mut row = Vec::new();
            back.extend_ids(1, 1, &mut row);
            let want: Vec<i64> = (12..16).map(|i| (i * 7 % codebook) as i64).collect();
            assert_eq!(row, want, "image 1, mirror view");
            assert_eq!(back.label(2), 1);
            let sub = back.subset(&[2, 0]);
            assert_eq!((sub.len(), sub.views(), sub.label(0)), (2, 1, 1));
            let mut first = Vec::new();
            sub.extend_ids(0, 0, &mut first);
            let mut want = Vec::new();
            back.extend_ids(2, 0, &mut want);
            assert_eq!(first, want);
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn corrupt_and_mismatched_caches_are_refused() {
        let c = cache(64);
        let (_guard, path) = scratch("bad.safetensors");
        c.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // Any safetensors reader sees the two tensors.
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("ids").unwrap().shape(), [3, 2, 4]);
        assert_eq!(file.tensor("labels").unwrap().dtype(), Dtype::U32);
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(TokenCache::load(&path).unwrap_err().to_string().contains("truncated or corrupt"));
        std::fs::write(&path, b"PNG\0\0\0\0\0\0\0\0\0\0").unwrap();
        assert!(TokenCache::load(&path).unwrap_err().to_string().contains("not a safetensors file"));
        // Model weights are safetensors too, but not a token cache.
        let weights = [("ids", TensorView::new(Dtype::U16, vec![3, 2, 4], &bytes[..48]).unwrap())];
        std::fs::write(&path, safetensors::serialize(weights, None).unwrap()).unwrap();
        assert!(TokenCache::load(&path).unwrap_err().to_string().contains("not a token cache"));
        let mut other = c.header.clone();
        other.tokenizer_fingerprint = "4567".into();
        let e = c.check_source(&path, &other).unwrap_err().to_string();
        assert!(e.contains("another tokenizer") && e.contains("4567"), "{e}");
        let mut other = c.header.clone();
        other.split = "test".into();
        assert!(c.check_source(&path, &other).unwrap_err().to_string().contains("split 'test'"));
        assert!(c.check_source(&path, &c.header).is_ok());
        // An id outside the codebook.
        let mut wrong = c.clone();
        wrong.header.codebook_size = 8;
        wrong.save(&path).unwrap();
        assert!(TokenCache::load(&path).unwrap_err().to_string().contains("outside the codebook 0..8"));
        std::fs::remove_file(path).unwrap();
        // Parts that do not fit the header.
        let h = c.header.clone();
        assert!(TokenCache::new(h.clone(), vec![0; 5], vec![0; 3]).unwrap_err().to_string().contains("5 ids"));
        assert!(TokenCache::new(h.clone(), vec![64; 24], vec![0; 3]).unwrap_err().to_string().contains("token id 64"));
        assert!(TokenCache::new(h, vec![0; 24], vec![0, 2, 0]).unwrap_err().to_string().contains("label 2"));
    }
}

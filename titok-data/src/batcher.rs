//! Decoding, transforms and stacking in a burn [`Batcher`], so that
//! `DataLoaderBuilder::num_workers(n)` runs them on `n` threads.
//!
//! Bad files never stop a run: an item that cannot be read, decoded or transformed is reported
//! once (`tracing::warn!` with its location and the reason), counted in the shared
//! [`SkipLog`], and left out of its batch, which is then smaller. **A batch whose items all
//! failed comes out empty** (`images` is `[0, 3, S, S]`, [`ImageBatch::is_empty`] is true);
//! training and evaluation loops must skip such a batch (losses of an empty batch are NaN).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::RgbImage;

use super::error::{DataError, Result};
use super::image_io::{DecodeLimits, decode_image_with, extend_chw};
use super::notices::NoticeLog;
use super::record::ImageRecord;
use super::transform::Transform;

/// A batch of images ready for the model.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// RGB images `[batch, 3, size, size]`, values in `[0, 1]`.
    pub images: Tensor<4>,
    /// Class ids `[batch]` when every item of the dataset is labelled, else `None`.
    pub labels: Option<Tensor<1, Int>>,
    /// Display names of the images, `[batch]`.
    pub names: Vec<String>,
    /// Dataset indices of the images, `[batch]`.
    pub indices: Vec<usize>,
}

impl ImageBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether every item of the batch failed to load (skip the batch).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The files skipped while batching: each is reported and counted once, however many epochs
/// meet it. Shared between clones of a batcher and with the training loop.
#[derive(Debug, Default)]
pub struct SkipLog {
    count: AtomicUsize,
    reasons: Mutex<HashMap<String, String>>,
}

impl SkipLog {
    /// Number of distinct files skipped so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The skipped files and reasons, sorted by location.
    pub fn entries(&self) -> Vec<(String, String)> {
        let reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        let mut entries: Vec<_> = reasons.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        entries.sort();
        entries
    }

    /// Records a failure; warns and counts only the first time a location fails.
    fn record(&self, location: String, error: &DataError) {
        let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        if let std::collections::hash_map::Entry::Vacant(entry) = reasons.entry(location) {
            tracing::warn!(file = %entry.key(), reason = %error, "skipping unreadable image");
            entry.insert(error.to_string());
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Which epoch an item's random crop and flip are drawn for.
#[derive(Debug)]
struct EpochClock {
    /// The fixed epoch, or [`Self::COUNTED`].
    fixed: AtomicU64,
    /// Counted mode: the epoch of an index's first visit.
    base: AtomicU64,
    /// Counted mode: how often each dataset index has been batched.
    visits: Mutex<Vec<u32>>,
}

impl EpochClock {
    const COUNTED: u64 = u64::MAX;

    /// Epochs of the items with these indices (one lock per batch).
    fn epochs(&self, indices: &[usize]) -> Vec<u64> {
        let fixed = self.fixed.load(Ordering::Acquire);
        if fixed != Self::COUNTED {
            return vec![fixed; indices.len()];
        }
        let base = self.base.load(Ordering::Acquire);
        let mut visits = self.visits.lock().unwrap_or_else(PoisonError::into_inner);
        indices
            .iter()
            .map(|&i| {
                if visits.len() <= i {
                    visits.resize(i + 1, 0);
                }
                visits[i] += 1;
                base + u64::from(visits[i] - 1)
            })
            .collect()
    }
}

/// Turns [`ImageRecord`]s into an [`ImageBatch`]: read -> decode (with limits; EXIF
/// orientation applied, ICC profiles converted to sRGB, noted in the [`NoticeLog`]) -> RGB ->
/// [`Transform`] -> `[B, 3, S, S]` in `[0, 1]`.
///
/// The random crop/flip of an item is drawn from `(transform.seed, epoch, record.index)`, so
/// it does not depend on the worker or the number of workers. The epoch is either
/// - **set explicitly** with [`Self::set_epoch`] before each pass (manual loops; clones share
///   it), or
/// - **counted** (the default, [`Self::count_epochs_from`]): an item's epoch is the number of
///   times its index was batched before, plus a base. This needs no hook in the loop (burn-train
///   `Learner`), and is exact as long as each pass visits every index once; pass the resumed
///   epoch as base after a restart.
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    transform: Transform,
    limits: DecodeLimits,
    clock: Arc<EpochClock>,
    skips: Arc<SkipLog>,
    notices: Arc<NoticeLog>,
}

impl ImageBatcher {
    /// A batcher applying `transform`, counting epochs from 0, with default decode limits.
    pub fn new(transform: Transform) -> Self {
        let clock = EpochClock {
            fixed: AtomicU64::new(EpochClock::COUNTED),
            base: AtomicU64::new(0),
            visits: Mutex::new(Vec::new()),
        };
        Self {
            transform,
            limits: DecodeLimits::default(),
            clock: Arc::new(clock),
            skips: Arc::default(),
            notices: Arc::default(),
        }
    }

    /// Uses other decoding limits.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The transform.
    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// Fixes the epoch used for every following item (this batcher and its clones).
    pub fn set_epoch(&self, epoch: u64) {
        assert_ne!(epoch, EpochClock::COUNTED, "epoch u64::MAX is reserved");
        self.clock.fixed.store(epoch, Ordering::Release);
    }

    /// Switches to counted epochs: the next visit of every index is epoch `base`.
    pub fn count_epochs_from(&self, base: u64) {
        let mut visits = self.clock.visits.lock().unwrap_or_else(PoisonError::into_inner);
        visits.clear();
        self.clock.base.store(base, Ordering::Release);
        self.clock.fixed.store(EpochClock::COUNTED, Ordering::Release);
    }

    /// The shared log of skipped files.
    pub fn skip_log(&self) -> Arc<SkipLog> {
        self.skips.clone()
    }

    /// Number of distinct files skipped so far.
    pub fn skipped(&self) -> usize {
        self.skips.count()
    }

    /// The shared log of what decoding noticed (orientations, colour conversions, animations,
    /// formats and sizes).
    pub fn notice_log(&self) -> Arc<NoticeLog> {
        self.notices.clone()
    }

    /// Loads one item as the batcher does: read, decode, transform for `epoch`.
    ///
    /// # Errors
    /// Any [`DataError`] of reading, decoding or transforming, naming the item's location.
    pub fn load(&self, record: &ImageRecord, epoch: u64) -> Result<RgbImage> {
        let location = record.location();
        let bytes = record.source.read()?;
        let decoded = decode_image_with(&bytes, &location, self.limits)?;
        self.notices.record(&location, &decoded);
        self.transform.apply(&decoded.image, epoch, record.index).map_err(|e| match e {
            DataError::TooLarge { reason, .. } => DataError::TooLarge { name: location, reason },
            DataError::Input(reason) => DataError::Decode { name: location, reason },
            other => other,
        })
    }
}

impl Batcher<ImageRecord, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageRecord>, device: &Device) -> ImageBatch {
        let indices: Vec<usize> = items.iter().map(|r| r.index).collect();
        let epochs = self.clock.epochs(&indices);
        let items: Vec<(ImageRecord, u64)> = items.into_iter().zip(epochs).collect();
        self.batch_with_epochs(&items, device)
    }
}

impl ImageBatcher {
    /// Batches items whose epochs are given explicitly (the training stream of `titok-train`
    /// knows the epoch of every step), ignoring the batcher's clock.
    pub fn batch_with_epochs(&self, items: &[(ImageRecord, u64)], device: &Device) -> ImageBatch {
        let labelled = !items.is_empty() && items.iter().all(|(r, _)| r.label.is_some());
        let s = self.transform.size as usize;

        let mut pixels = Vec::with_capacity(items.len() * 3 * s * s);
        let (mut names, mut kept, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (record, epoch) in items.iter().map(|(r, e)| (r, *e)) {
            match self.load(record, epoch) {
                Ok(image) => {
                    extend_chw(&image, &mut pixels); // [3, S, S]
                    names.push(record.name.to_string());
                    kept.push(record.index);
                    labels.push(record.label.unwrap_or(0) as i64);
                }
                Err(error) => self.skips.record(record.location(), &error),
            }
        }

        let b = names.len();
        let images = Tensor::<4>::from_data(TensorData::new(pixels, [b, 3, s, s]), device); // [B, 3, S, S]
        let labels = labelled.then(|| Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), device)); // [B]
        ImageBatch { images, labels, names, indices: kept }
    }
}

//! Datasets (image folders and tar archives), transforms and batching.
//!
//! The pipeline, as in the official TiTok training (REFERENCE §7):
//! 1. **Index** a dataset once: [`ImageFolder`] (a folder on disk) or [`TarImages`] (a `.tar`
//!    indexed in place, or a `.tar.gz` read once into memory), with a split selector (`train`,
//!    `test`) and labels from the class folders ([`LabelSource`]). Items are cheap
//!    [`ImageRecord`]s (a shared byte range or a path, a label, a name, the dataset index); both
//!    datasets implement `burn::data::dataset::Dataset<ImageRecord>`.
//! 2. **Batch** with [`ImageBatcher`] (a burn `Batcher`, so `DataLoaderBuilder::num_workers`
//!    parallelises it): read -> decode to RGB with limits, EXIF orientation applied, ICC
//!    profiles converted to sRGB ([`image_io`]) -> [`Transform`]
//!    (resize the shorter side with a bit-exact port of Pillow's antialiased bicubic,
//!    [`resize_bicubic`] -> random/centre crop -> flip) ->
//!    [`ImageBatch`] `{ images: [B, 3, S, S] in [0, 1], labels, names }`. Unreadable files are
//!    reported once, counted ([`SkipLog`]) and left out.
//! 3. **Order**: crops and flips depend only on `(seed, epoch, index)` and [`epoch_order`] only
//!    on `(seed, epoch)`, so a resumed run sees the same data.
//! 4. **Tokens** (generator training): [`TokenCache`] encodes a dataset once with a TiTok
//!    tokenizer into a safetensors file of ids and labels ([`token_cache`]).
//!
//! ```no_run
//! use burn::data::dataloader::DataLoaderBuilder;
//! use burn::data::dataset::transform::SelectionDataset;
//! use titok_data::{ImageBatcher, TarImages, Transform, epoch_order};
//! let train = TarImages::open("../shared/data/cifar10-jpg.tar.gz", Some("train"))?;
//! let batcher = ImageBatcher::new(Transform::train(32, 42));
//! let epoch = 0;
//! batcher.set_epoch(epoch);
//! let order = epoch_order(train.list().records().len(), 42, epoch);
//! let loader = DataLoaderBuilder::new(batcher.clone())
//!     .batch_size(64)
//!     .num_workers(4)
//!     .build(SelectionDataset::from_indices_checked(train, order));
//! for batch in loader.iter() {
//!     let batch = batch.expect("records are in memory");
//!     if batch.is_empty() { continue; } // every file of this batch was unreadable
//!     // batch.images: [64, 3, 32, 32]
//! }
//! # Ok::<(), titok_data::DataError>(())
//! ```
//!
//! Note for bit-exact resume: burn's multi-worker loader hands each worker a contiguous chunk
//! of the (already ordered) dataset and yields batches in completion order, so with more than
//! one worker the *contents* of each batch are fixed but the order in which batches arrive is
//! not. The training stream of `titok-train` (`train::stream`) keeps the step order with several workers
//! and passes each item's epoch to [`ImageBatcher::batch_with_epochs`].

mod batcher;
mod color;
mod error;
mod folder;
pub mod image_io;
mod image_list;
mod notices;
mod progress;
mod record;
mod resample;
mod rng;
mod spread;
mod tar;
pub mod token_cache;
mod transform;

pub use self::tar::TarImages;
pub use batcher::{ImageBatch, ImageBatcher, SkipLog};
pub use color::{IccHandling, convert_to_srgb};
pub use error::{DataError, Result};
pub use folder::ImageFolder;
pub use image_list::{ImageList, IndexOptions, LabelSource, Skipped};
pub use notices::{FileSummary, NoticeLog};
pub use progress::progress_bar;
pub use record::{ImageRecord, ImageSource, MAX_ENCODED_BYTES};
pub use resample::resize_bicubic;
pub use rng::{ItemRng, epoch_order};
pub use spread::spread_indices;
pub use token_cache::{TokenCache, TokenCacheHeader, TokenizeOptions, tokenizer_fingerprint};
pub use transform::{Crop, CropFlip, MAX_ASPECT_RATIO, Transform, resize_shorter_side};

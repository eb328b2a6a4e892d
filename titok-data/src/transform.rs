//! The official TiTok image transforms (REFERENCE §7a, §8; torchvision on PIL images):
//! - train: `Resize(S, bicubic, antialias)` of the shorter side -> `RandomCrop(S)` ->
//!   `RandomHorizontalFlip(0.5)`;
//! - eval: `Resize(S)` -> `CenterCrop(S)`;
//! - MaskGIT generator training: `Resize(S)` -> `CenterCrop(S)` -> `RandomHorizontalFlip`.
//!
//! Resampling is [`resize_bicubic`], a bit-exact port of Pillow's `BICUBIC` resize (the cubic
//! with `a = -0.5`, its support stretched by the scale factor when shrinking, i.e.
//! antialiased). `image`'s `CatmullRom` filter is the same curve with the same antialiasing
//! (`sratio` in `imageops::sample`), but its f32 vertical-first passes differ from Pillow by
//! 1 grey level in ~15% of the values of a photo (up to 10 on synthetic patterns), hence the
//! port. Output sizes follow torchvision: the longer side becomes `floor(S * long / short)`;
//! the centre crop offset is `round((side - S) / 2)` with Python's round-half-to-even.
//! Together with the decoder this reproduces torchvision's eval preprocessing up to the JPEG
//! decoder: zune-jpeg and libjpeg-turbo differ by a few grey levels (chroma upsampling).
//!
//! Random draws come from [`ItemRng`](super::rng::ItemRng) seeded by `(seed, epoch, index)`, so
//! a crop and flip are reproducible by any worker and after a resume.

use image::RgbImage;
use image::imageops;
use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::resample::resize_bicubic;
use super::rng::{AUGMENT_STREAM, ItemRng};

/// Longest accepted `long side / short side` ratio: resizing the short side of a 1 x 16384
/// strip to 256 px would allocate gigabytes.
pub const MAX_ASPECT_RATIO: u32 = 32;

/// How the `S x S` window is cut out of the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    /// A uniformly random window (training).
    Random,
    /// The centred window (evaluation).
    Center,
}

/// An image transform: resize the shorter side to `size`, crop `size x size`, maybe flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transform {
    /// Output side `S` in pixels.
    pub size: u32,
    /// Random or centre crop.
    pub crop: Crop,
    /// Flip horizontally with probability 0.5.
    pub hflip: bool,
    /// Seed of the random crops and flips.
    pub seed: u64,
}

/// The random choices for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropFlip {
    /// Left edge of the window in the resized image.
    pub left: u32,
    /// Top edge of the window in the resized image.
    pub top: u32,
    /// Whether the window is mirrored left-right.
    pub flip: bool,
}

impl Transform {
    /// The training transform of the official stage-1/2 and single-stage recipes.
    pub fn train(size: u32, seed: u64) -> Self {
        Self { size, crop: Crop::Random, hflip: true, seed }
    }

    /// The evaluation transform (deterministic).
    pub fn eval(size: u32) -> Self {
        Self { size, crop: Crop::Center, hflip: false, seed: 0 }
    }

    /// The MaskGIT generator recipe: centre crop, random flip.
    pub fn center_flip(size: u32, seed: u64) -> Self {
        Self { size, crop: Crop::Center, hflip: true, seed }
    }

    /// The size of an image of `width x height` after the shorter side is resized to `size`
    /// (torchvision's rule: the longer side is truncated).
    pub fn resized_dims(&self, width: u32, height: u32) -> (u32, u32) {
        let s = u64::from(self.size);
        if width <= height {
            (self.size, (s * u64::from(height) / u64::from(width)) as u32)
        } else {
            ((s * u64::from(width) / u64::from(height)) as u32, self.size)
        }
    }

    /// The crop window and flip for an item, for a resized image of `width x height`
    /// (both at least `size`). Depends only on `(seed, epoch, index)` and the dimensions.
    pub fn crop_flip(&self, width: u32, height: u32, epoch: u64, index: usize) -> CropFlip {
        let (dx, dy) = (width - self.size, height - self.size);
        // Always draw in the same order, so the flip does not depend on the crop mode.
        let mut rng = ItemRng::new(self.seed, AUGMENT_STREAM, epoch, index as u64);
        let (random_left, random_top, coin) = (rng.below_or_equal(dx), rng.below_or_equal(dy), rng.coin());
        let (left, top) = match self.crop {
            Crop::Random => (random_left, random_top),
            Crop::Center => (center_offset(dx), center_offset(dy)),
        };
        CropFlip { left, top, flip: self.hflip && coin }
    }

    /// Applies the transform to an RGB image: `[H, W]` -> `[size, size]`.
    ///
    /// # Errors
    /// [`DataError::Input`] for a zero-sized image or `size == 0`; [`DataError::TooLarge`] for
    /// an aspect ratio above [`MAX_ASPECT_RATIO`].
    pub fn apply(&self, image: &RgbImage, epoch: u64, index: usize) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 || self.size == 0 {
            return Err(DataError::Input(format!("cannot transform a {w}x{h} image to {}", self.size)));
        }
        if w.max(h) / w.min(h) > MAX_ASPECT_RATIO {
            return Err(DataError::TooLarge {
                name: format!("{w}x{h} image"),
                reason: format!("aspect ratio above {MAX_ASPECT_RATIO}:1"),
            });
        }
        let resized = resize_shorter_side(image, self.size);
        let (rw, rh) = resized.dimensions();
        let p = self.crop_flip(rw, rh, epoch, index);
        let mut out = if (rw, rh) == (self.size, self.size) {
            resized
        } else {
            imageops::crop_imm(&resized, p.left, p.top, self.size, self.size).to_image()
        };
        if p.flip {
            imageops::flip_horizontal_in_place(&mut out);
        }
        Ok(out)
    }
}

/// Resizes so that the shorter side is `size` (Pillow's antialiased bicubic; see the module
/// docs). Returns a copy when the shorter side already is `size`.
pub fn resize_shorter_side(image: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let (nw, nh) = Transform::eval(size).resized_dims(w, h);
    resize_bicubic(image, nw, nh)
}

/// torchvision's centre-crop offset `int(round(d / 2))`, with round-half-to-even.
fn center_offset(d: u32) -> u32 {
    (f64::from(d) / 2.0).round_ties_even() as u32
}

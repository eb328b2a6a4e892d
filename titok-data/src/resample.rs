//! Bicubic resampling exactly as Pillow does it (`libImaging/Resample.c`, `Image.BICUBIC`), the
//! resize behind torchvision's `Resize` on PIL images in the official pipeline.
//!
//! - Kernel: the cubic convolution with `a = -0.5` (Keys; `image`'s `CatmullRom` is the same
//!   curve), support 2.
//! - Antialiasing: when shrinking by `scale > 1`, the kernel is stretched by `scale` and its
//!   support becomes `2 * scale` (the same rule as `image::imageops::resize`).
//! - Arithmetic: weights normalised in f64, converted to 22-bit fixed point, accumulated in
//!   i32 with rounding, clamped to 8 bits; horizontal pass first (over the rows the vertical
//!   pass needs), 8-bit rounding between the passes, then the vertical pass.
//!
//! `image::imageops::resize(.., CatmullRom)` uses the same kernel and support but runs the
//! vertical pass first in f32 without the intermediate rounding, so it differs from Pillow by a
//! grey level here and there; this port is bit-exact (checked against Pillow 13 in the tests).

use image::RgbImage;

/// Fixed-point precision of the weights (`32 - 8 - 2` in Pillow).
const PRECISION_BITS: u32 = 22;

/// Pillow's `bicubic_filter`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The taps of one output position: first input index and fixed-point weights.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole input range.
fn taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero.
            let first = ((center - support + 0.5) as i64).max(0);
            let end = ((center + support + 0.5) as i64).min(in_size as i64);
            let ss = 1.0 / filter_scale;
            let raw: Vec<f64> = (first..end).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let fixed = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 }
                })
                .collect();
            Taps { first: first as usize, weights }
        })
        .collect()
}

/// Pillow's `clip8`: the rounded accumulator back to 8 bits.
fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// One output pixel: `sum_k weights[k] * pixel(first + k)` over 3 channels, where `pixel(i)`
/// starts at byte `base + i * stride` of `src`.
fn convolve(src: &[u8], base: usize, stride: usize, first: usize, weights: &[i32], out: &mut [u8]) {
    let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
    for (k, &w) in weights.iter().enumerate() {
        let at = base + (first + k) * stride;
        for c in 0..3 {
            acc[c] += i32::from(src[at + c]) * w;
        }
    }
    for c in 0..3 {
        out[c] = clip8(acc[c]);
    }
}

/// Resizes an RGB image to `width x height` with Pillow's bicubic filter, bit-exact.
/// Returns a copy when the size does not change; an empty image for a zero target size.
pub fn resize_bicubic(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (out_w, out_h) == (in_w, in_h) || in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return if (out_w, out_h) == (in_w, in_h) { image.clone() } else { RgbImage::new(width, height) };
    }
    let vertical = taps(in_h, out_h);
    // Horizontal pass over the input rows the vertical pass reads: [rows.start, rows.end).
    let (src, src_w, row0) = if out_w != in_w {
        let rows = vertical[0].first..vertical.last().map_or(in_h, |t| t.first + t.weights.len());
        let horizontal = taps(in_w, out_w);
        let mut tmp = vec![0u8; rows.len() * out_w * 3];
        let input = image.as_raw();
        for (r, y) in rows.clone().enumerate() {
            for (x, t) in horizontal.iter().enumerate() {
                let at = (r * out_w + x) * 3;
                convolve(input, y * in_w * 3, 3, t.first, &t.weights, &mut tmp[at..at + 3]);
            }
        }
        (tmp, out_w, rows.start)
    } else {
        (image.as_raw().clone(), in_w, 0)
    };
    if out_h == in_h {
        return RgbImage::from_raw(width, height, src).expect("sized for the output");
    }
    let mut out = vec![0u8; out_w * out_h * 3];
    for (y, t) in vertical.iter().enumerate() {
        for x in 0..out_w {
            let at = (y * out_w + x) * 3;
            convolve(&src, x * 3, src_w * 3, t.first - row0, &t.weights, &mut out[at..at + 3]);
        }
    }
    RgbImage::from_raw(width, height, out).expect("sized for the output")
}

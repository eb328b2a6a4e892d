//! The one image-tensor resizer: bilinear resizing exactly as
//! `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`, with
//! `antialias=False` (the FID Inception input, [`Filter::Bilinear`]) or `antialias=True` (the
//! perceptual losses, [`Filter::BilinearAntialias`]), written as two matrix products (one
//! `[n_out, n_in]` weight matrix per axis) so that every backend computes the same thing and
//! gradients flow through it.
//!
//! For an output index `o` along an axis of `n_in -> n_out` pixels, the source coordinate is
//! `s = max((o + 0.5)·n_in/n_out − 0.5, 0)`; it reads `i0 = ⌊s⌋` and `i1 = min(i0 + 1, n_in − 1)`
//! with weights `1 − (s − i0)` and `s − i0` (PyTorch's `area_pixel_compute_source_index` and
//! `UpSampleKernel`). Without antialiasing a down-sampling step skips pixels, as PyTorch does.

use burn::tensor::{Device, Tensor, TensorData};

/// The `[n_out, n_in]` matrix `W` with `y = W x` resizing one axis. The weights are computed
/// in f32 with PyTorch's operation order (`UpSampleKernel.cpp` for float tensors), so the
/// fractional positions round as they do there (up to ~1e-5 at 299 pixels otherwise).
pub fn interpolation_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let scale = n_in as f32 / n_out as f32;
    let mut w = vec![0.0f32; n_out * n_in];
    for o in 0..n_out {
        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
        let l1 = (src - i0 as f32).clamp(0.0, 1.0);
        w[o * n_in + i0] += 1.0 - l1;
        w[o * n_in + i1] += l1;
    }
    w
}

/// Resampling weights `[out, in]` of PyTorch's `interpolate(mode="bilinear",
/// align_corners=False, antialias=True)` along one axis (a triangle filter widened by the
/// down-scaling factor, as PIL does).
pub fn antialias_weights(input: usize, output: usize) -> Vec<f32> {
    let scale = input as f64 / output as f64;
    let (support, inv) = if scale >= 1.0 { (scale, 1.0 / scale) } else { (1.0, 1.0) };
    let mut w = vec![0f32; output * input];
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // `as i64` truncates toward zero like the C++ `int` cast.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let taps: Vec<f64> = (lo..hi).map(|j| (1.0 - ((j as f64 - center + 0.5) * inv).abs()).max(0.0)).collect();
        let total: f64 = taps.iter().sum();
        for (j, t) in (lo..hi).zip(taps) {
            w[i * input + j] = if total > 0.0 { (t / total) as f32 } else { 0.0 };
        }
    }
    w
}

/// The resampling filter of [`resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `antialias=False`: two taps per output pixel, a down-sampling step skips pixels
    /// ([`interpolation_matrix`]).
    Bilinear,
    /// `antialias=True`: the triangle filter widened by the down-scaling factor
    /// ([`antialias_weights`]).
    BilinearAntialias,
}

impl Filter {
    /// The `[n_out, n_in]` weight matrix of one axis.
    fn matrix(self, n_in: usize, n_out: usize, device: &Device) -> Tensor<2> {
        let w = match self {
            Self::Bilinear => interpolation_matrix(n_in, n_out),
            Self::BilinearAntialias => antialias_weights(n_in, n_out),
        };
        Tensor::from_data(TensorData::new(w, [n_out, n_in]), device)
    }
}

/// Resizes images with PyTorch's bilinear `align_corners=False` rule and `filter`'s
/// antialiasing; differentiable. Same-size input is returned unchanged.
///
/// # Shapes
/// - `x`: `[batch, C, H, W]` -> `[batch, C, size[0], size[1]]`
pub fn resize(x: Tensor<4>, size: [usize; 2], filter: Filter) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [oh, ow] = size;
    if [h, w] == size {
        return x;
    }
    let device = x.device();
    let rows = x.reshape([b * c * h, w]).matmul(filter.matrix(w, ow, &device).transpose()); // [b·c·h, ow]
    let cols = rows.reshape([b * c, h, ow]).swap_dims(1, 2).reshape([b * c * ow, h]); // [b·c·ow, h]
    let out = cols.matmul(filter.matrix(h, oh, &device).transpose()); // [b·c·ow, oh]
    out.reshape([b * c, ow, oh]).swap_dims(1, 2).reshape([b, c, oh, ow])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_follow_the_torch_rule() {
        for (n_in, n_out) in [(256, 299), (299, 256), (4, 8), (8, 3), (5, 5)] {
            let w = interpolation_matrix(n_in, n_out);
            for o in 0..n_out {
                let s: f32 = w[o * n_in..(o + 1) * n_in].iter().sum();
                assert!((s - 1.0).abs() < 1e-6, "{n_in}->{n_out} row {o}");
            }
        }
        // 4 -> 8 (scale 0.5): output 0 clamps to source 0, output 3 sits at 1.25.
        let w = interpolation_matrix(4, 8);
        assert_eq!(&w[0..4], &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(&w[3 * 4..4 * 4], &[0.0, 0.75, 0.25, 0.0]);
        assert_eq!(&w[7 * 4..8 * 4], &[0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn resize_of_a_separable_ramp_is_the_ramp_at_the_source_coordinates() {
        let device = Device::flex();
        let (h, w) = (6, 10);
        let values: Vec<f32> = (0..2 * h * w).map(|i| ((i / w) % h) as f32 * 10.0 + (i % w) as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [1, 2, h, w]), &device);
        let y = resize(x, [9, 4], Filter::Bilinear).try_into_vec_as::<f32>().unwrap();
        let src = |o: usize, n_in: usize, n_out: usize| {
            (((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0)).min(n_in as f64 - 1.0)
        };
        for ch in 0..2 {
            for i in 0..9 {
                for j in 0..4 {
                    let want = src(i, h, 9) * 10.0 + src(j, w, 4);
                    let got = y[(ch * 9 + i) * 4 + j] as f64;
                    assert!((got - want).abs() < 1e-4, "({i},{j}): {got} vs {want}");
                }
            }
        }
    }

    /// Hand-computed from PyTorch's antialias formula: 4 -> 2 takes 3 taps with triangle
    /// weights (0.75, 0.75, 0.25) / 1.75; same size is the identity.
    #[test]
    fn antialias_resize_weights() {
        let w = antialias_weights(4, 2);
        let e = [0.75 / 1.75, 0.75 / 1.75, 0.25 / 1.75, 0.0, 0.0, 0.25 / 1.75, 0.75 / 1.75, 0.75 / 1.75];
        for (a, b) in w.iter().zip(e) {
            assert!((a - b as f32).abs() < 1e-6, "{w:?}");
        }
        let id = antialias_weights(5, 5);
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(id[i * 5 + j], if i == j { 1.0 } else { 0.0 });
            }
        }
        let device = Device::flex();
        // Pillow 12 `Image.resize((5, 1), BILINEAR)` of a mode-F row i^1.5, i = 0..13 (the same
        // filter as PyTorch's antialias path): 13 -> 5 down-sampling with 5- and 6-tap windows.
        let row: Vec<f32> = (0..13).map(|i| (i as f32).powf(1.5)).collect();
        let x = Tensor::<4>::from_data(TensorData::new(row, [1, 1, 1, 13]), &device);
        let got = resize(x, [1, 5], Filter::BilinearAntialias).try_into_vec_as::<f32>().unwrap();
        let pillow = [1.4063765, 6.3948464, 14.872779, 25.51803, 36.242_56];
        for (a, b) in got.iter().zip(pillow) {
            assert!((a - b).abs() < 1e-4, "{got:?}");
        }
        let x = Tensor::<4>::full([1, 2, 9, 13], 0.25, &device);
        let y = resize(x, [4, 7], Filter::BilinearAntialias);
        assert_eq!(y.dims(), [1, 2, 4, 7]);
        assert!((y - 0.25).abs().max().into_scalar::<f32>() < 1e-6);
    }
}

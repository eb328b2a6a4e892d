//! Bilinear resizing exactly as `torch.nn.functional.interpolate(mode="bilinear",
//! align_corners=False, antialias=False)`, written as two matrix products so that every
//! backend computes the same thing.
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

fn matrix(n_in: usize, n_out: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(interpolation_matrix(n_in, n_out), [n_out, n_in]), device)
}

/// Resizes images with PyTorch's bilinear `align_corners=False`, `antialias=False` rule.
/// Same-size input is returned unchanged.
///
/// # Shapes
/// - `x`: `[batch, C, H, W]` -> `[batch, C, size[0], size[1]]`
pub fn resize_bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [oh, ow] = size;
    if [h, w] == size {
        return x;
    }
    let device = x.device();
    let rows = x.reshape([b * c * h, w]).matmul(matrix(w, ow, &device).transpose()); // [b·c·h, ow]
    let cols = rows.reshape([b * c, h, ow]).swap_dims(1, 2).reshape([b * c * ow, h]); // [b·c·ow, h]
    let out = cols.matmul(matrix(h, oh, &device).transpose()); // [b·c·ow, oh]
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
        let y = resize_bilinear(x, [9, 4]).try_into_vec_as::<f32>().unwrap();
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
}

//! Per-image reconstruction metrics on images in `[0, 1]` (data range 1): PSNR and SSIM, plus
//! the rounding the official rFID evaluator applies to reconstructions.
//!
//! SSIM follows Wang et al. 2004 ("Image Quality Assessment: From Error Visibility to
//! Structural Similarity") and its reference `ssim.m`: an 11x11 Gaussian window (σ = 1.5,
//! normalised) applied without padding ("valid"), `C1 = (0.01·L)²`, `C2 = (0.03·L)²`, `L = 1`,
//! local statistics with the window weights (biased), the SSIM map averaged over positions and
//! channels (as `pytorch_msssim.ssim`; skimage pads instead and differs near the borders).

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use super::error::{EvalError, Result};

/// Side of the SSIM window.
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation of the SSIM Gaussian window (pixels).
pub const SSIM_SIGMA: f64 = 1.5;
/// SSIM luminance constant `(0.01·L)²` for `L = 1`.
pub const SSIM_C1: f64 = 0.01 * 0.01;
/// SSIM contrast constant `(0.03·L)²` for `L = 1`.
pub const SSIM_C2: f64 = 0.03 * 0.03;

/// What the official rFID evaluator does to reconstructions before scoring them: clamp to
/// `[0, 1]` and round to the nearest of the 256 uint8 levels (`evaluator/evaluator.py`:
/// `torch.round(torch.clamp(x·255, 0, 255)) / 255`, ties to even).
///
/// # Shapes
/// - `images`: `[batch, C, H, W]`, any range -> same shape, values `k/255`
pub fn rfid_round(images: Tensor<4>) -> Tensor<4> {
    (images.clamp(0.0, 1.0) * 255.0).round() / 255.0
}

fn check_pair(a: &Tensor<4>, b: &Tensor<4>, what: &str) -> Result<()> {
    if a.dims() != b.dims() || a.dims()[0] == 0 {
        return Err(EvalError::Input(format!(
            "{what} compares images of equal shape, got {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    Ok(())
}

/// PSNR in dB per image: `10·log10(1 / MSE)` with the MSE over channels and pixels (data
/// range 1). Identical images give `+∞`.
///
/// # Shapes
/// - `a`, `b`: `[batch, C, H, W]` in `[0, 1]` -> `[batch]`
///
/// # Errors
/// [`EvalError::Input`] when the shapes differ or the batch is empty.
pub fn psnr(a: Tensor<4>, b: Tensor<4>) -> Result<Tensor<1>> {
    check_pair(&a, &b, "PSNR")?;
    let [n, c, h, w] = a.dims();
    let mse = (a - b).powi_scalar(2).reshape([n, c * h * w]).mean_dim(1).reshape([n]); // [batch]
    Ok(mse.log() * (-10.0 / std::f64::consts::LN_10))
}

/// The normalised 1-D Gaussian of the SSIM window.
pub fn ssim_gaussian() -> Vec<f64> {
    let half = (SSIM_WINDOW / 2) as f64;
    let g: Vec<f64> =
        (0..SSIM_WINDOW).map(|i| (-((i as f64 - half).powi(2)) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp()).collect();
    let sum: f64 = g.iter().sum();
    g.into_iter().map(|v| v / sum).collect()
}

/// Separable "valid" Gaussian filtering of every channel.
///
/// # Shapes
/// - `x`: `[batch, C, H, W]` -> `[batch, C, H − 10, W − 10]`
fn gaussian_filter(x: Tensor<4>, device: &Device) -> Tensor<4> {
    let channels = x.dims()[1];
    let g: Vec<f32> = ssim_gaussian().into_iter().map(|v| v as f32).collect();
    let k = SSIM_WINDOW;
    let taps = Tensor::<1>::from_data(TensorData::new(g, [k]), device);
    let horizontal = taps.clone().reshape([1, 1, 1, k]).expand([channels, 1, 1, k]);
    let vertical = taps.reshape([1, 1, k, 1]).expand([channels, 1, k, 1]);
    let depthwise = ConvOptions::new([1, 1], [0, 0], [1, 1], channels);
    let x = conv2d(x, horizontal, None, depthwise.clone()); // [batch, C, H, W − 10]
    conv2d(x, vertical, None, depthwise) // [batch, C, H − 10, W − 10]
}

/// SSIM per image (mean of the SSIM map over positions and channels).
///
/// # Shapes
/// - `a`, `b`: `[batch, C, H, W]` in `[0, 1]`, `H, W ≥ 11` -> `[batch]`, in `[−1, 1]`
///
/// # Errors
/// [`EvalError::Input`] when the shapes differ, the batch is empty or the images are smaller
/// than the 11x11 window.
pub fn ssim(a: Tensor<4>, b: Tensor<4>) -> Result<Tensor<1>> {
    check_pair(&a, &b, "SSIM")?;
    let [n, c, h, w] = a.dims();
    if h < SSIM_WINDOW || w < SSIM_WINDOW {
        return Err(EvalError::Input(format!(
            "SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}"
        )));
    }
    let device = a.device();
    // Local (co)variances are E[xy] − μxμy: in f32 that cancels badly on flat regions, where
    // C2 = 9e-4 makes the error visible. They do not change when each image is shifted by a
    // constant, so both are centred on their own per-channel mean first (exact for flat
    // images); the means are added back for the luminance term.
    let mean_a = a.clone().mean_dim(2).mean_dim(3); // [n, c, 1, 1]
    let mean_b = b.clone().mean_dim(2).mean_dim(3);
    let (a, b) = (a - mean_a.clone(), b - mean_b.clone());
    // One filtering pass over the five maps x, y, x², y², xy stacked on channels.
    let stacked = Tensor::cat(vec![a.clone(), b.clone(), a.clone() * a.clone(), b.clone() * b.clone(), a * b], 1); // [n, 5c, h, w]
    let filtered = gaussian_filter(stacked, &device); // [n, 5c, h', w']
    let part = |i: usize| filtered.clone().narrow(1, i * c, c); // [n, c, h', w']
    let (mu_a0, mu_b0) = (part(0), part(1)); // local means of the centred images
    let var_a = part(2) - mu_a0.clone() * mu_a0.clone();
    let var_b = part(3) - mu_b0.clone() * mu_b0.clone();
    let cov = part(4) - mu_a0.clone() * mu_b0.clone();
    let (mu_a, mu_b) = (mu_a0 + mean_a, mu_b0 + mean_b);
    let luminance =
        (mu_a.clone() * mu_b.clone() * 2.0 + SSIM_C1) / (mu_a.clone() * mu_a + mu_b.clone() * mu_b + SSIM_C1);
    let structure = (cov * 2.0 + SSIM_C2) / (var_a + var_b + SSIM_C2);
    let map = luminance * structure; // [n, c, h', w']
    let [_, _, hh, ww] = map.dims();
    Ok(map.reshape([n, c * hh * ww]).mean_dim(1).reshape([n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_window_is_normalised_and_symmetric() {
        let g = ssim_gaussian();
        assert_eq!(g.len(), 11);
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((g[0] - g[10]).abs() < 1e-15 && g[5] > g[4]);
        // exp(-25/4.5) relative to the centre.
        assert!((g[0] / g[5] - (-25.0f64 / 4.5).exp()).abs() < 1e-12);
    }

    #[test]
    fn rfid_round_clamps_and_quantises() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![-0.2f32, 0.5, 1.7, 0.3], [1, 1, 2, 2]), &device);
        let y = rfid_round(x).try_into_vec_as::<f32>().unwrap();
        // Ties go to even: 0.5·255 = 127.5 -> 128, and 0.3f32·255 = 76.5 (f32) -> 76.
        let want = [0.0, 128.0 / 255.0, 1.0, 76.0 / 255.0];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{y:?}");
        }
    }
}

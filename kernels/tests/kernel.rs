//! `nearest_code` against an f64 host brute force, on every compiled-in device: Flex (the matmul
//! path) always, wgpu (the fused CubeCL kernel, lavapipe in CI) with the `wgpu` feature.
//!
//! Acceptance (the kernel issue): the index equals the f64 truth unless the returned code's true
//! distance is within 1e-6 relative of the best one (exact f64 ties must give the lowest index);
//! the returned distance is within 1e-5 (relative to `max(1, d)`) of the returned code's true
//! distance. Sizes cover non-multiples of the tiles and `K·D > 65,536`, past lavapipe's per-invocation
//! loop cap, to prove the tiling.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use titok_kernels::{
    NearestCode, NearestCodeError, NearestCodePath, nearest_code, nearest_code_reference, try_nearest_code,
};

/// Relative band inside which two true distances count as a near tie.
const TIE_RTOL: f64 = 1e-6;
/// Distance tolerance, relative to `max(1, d)`.
const DIST_TOL: f64 = 1e-5;

fn devices() -> Vec<(&'static str, Device)> {
    let mut devices = vec![("flex", Device::flex())];
    #[cfg(feature = "wgpu")]
    devices.push(("wgpu", Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)));
    devices
}

/// Deterministic xorshift generator with a Box-Muller normal sampler.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f32 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }

    fn normals(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.normal()).collect()
    }
}

/// f64 truth for one row: every code's squared distance.
fn true_distances(z: &[f32], codebook: &[f32], d: usize, l2: bool) -> Vec<f64> {
    let normalize = |x: &[f32]| -> Vec<f64> {
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        if !l2 {
            return x;
        }
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        x.iter().map(|v| v / norm).collect()
    };
    let zn = normalize(z);
    codebook.chunks(d).map(|c| normalize(c).iter().zip(&zn).map(|(c, z)| (z - c) * (z - c)).sum()).collect()
}

fn to_device(values: &[f32], rows: usize, d: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [rows, d]), device)
}

fn read(result: NearestCode) -> (Vec<i64>, Vec<f32>) {
    let indices = result.indices.try_into_vec_as::<i64>().expect("indices");
    let distances = result.distances.try_into_vec_as::<f32>().expect("distances");
    (indices, distances)
}

/// Runs `nearest_code` on `device` and checks every row against the f64 truth.
fn check_case(label: &str, device: &Device, z: &[f32], codebook: &[f32], d: usize, l2: bool) -> (Vec<i64>, Vec<f32>) {
    let (n, k) = (z.len() / d, codebook.len() / d);
    let result = nearest_code(to_device(z, n, d, device), to_device(codebook, k, d, device), l2);
    assert_eq!(result.indices.dims(), [n], "{label}: indices shape");
    assert_eq!(result.distances.dims(), [n], "{label}: distances shape");
    assert_eq!(result.distances.dtype(), DType::F32, "{label}: distances dtype");
    let (indices, distances) = read(result);
    for row in 0..n {
        let truth = true_distances(&z[row * d..(row + 1) * d], codebook, d, l2);
        let (best, best_d) =
            truth.iter().enumerate().fold((0, f64::INFINITY), |acc, (j, &v)| if v < acc.1 { (j, v) } else { acc });
        let got = indices[row];
        assert!((0..k as i64).contains(&got), "{label} row {row}: index {got} outside 0..{k}");
        let got_d = truth[got as usize];
        if got as usize != best {
            assert!(
                got_d != best_d,
                "{label} row {row}: exact tie between codes {best} and {got} must go to the lowest index"
            );
            assert!(
                got_d - best_d <= TIE_RTOL * best_d,
                "{label} row {row}: index {got} (true d {got_d}) but code {best} is nearer (true d {best_d})"
            );
        }
        let err = (distances[row] as f64 - got_d).abs();
        assert!(
            err <= DIST_TOL * got_d.max(1.0),
            "{label} row {row}: distance {} vs true {got_d} (err {err:e})",
            distances[row]
        );
    }
    (indices, distances)
}

fn random_case(label: &str, device: &Device, seed: u64, n: usize, k: usize, d: usize, l2: bool) {
    let mut rng = Rng(seed);
    let z = rng.normals(n * d);
    let codebook = rng.normals(k * d);
    check_case(&format!("{label} N={n} K={k} D={d} l2={l2}"), device, &z, &codebook, d, l2);
}

#[test]
fn routes_cube_devices_to_the_kernel_and_flex_to_matmul() {
    assert_eq!(NearestCodePath::for_device(&Device::flex()), NearestCodePath::Matmul);
    assert_eq!(NearestCodePath::for_device(&Device::flex().autodiff()), NearestCodePath::Matmul);
    #[cfg(feature = "wgpu")]
    {
        let wgpu = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        assert_eq!(NearestCodePath::for_device(&wgpu), NearestCodePath::FusedKernel);
        assert_eq!(NearestCodePath::for_device(&wgpu.autodiff()), NearestCodePath::FusedKernel);
    }
}

/// Random normal latents and codes, sizes off every tile multiple (row blocks of 256 or 512,
/// code tiles of 32, chunks of 8 columns), plain and l2 mode.
#[test]
fn random_cases_match_the_f64_truth() {
    for (name, device) in devices() {
        for (seed, (n, k, d)) in
            [(1, 1, 1), (7, 5, 3), (65, 67, 17), (130, 300, 12), (33, 1000, 64), (3, 129, 256)].into_iter().enumerate()
        {
            random_case(name, &device, 11 + seed as u64, n, k, d, false);
            random_case(name, &device, 101 + seed as u64, n, k, d, true);
        }
    }
}

/// The kernel's tile edges (`kernels/src/tiles.rs`): several row blocks with a partial last one
/// (512 rows per block for `D <= 16`, 256 above), a codebook one code past a tile of 32, widths
/// that leave a partial `vec4` of columns (13, 14, 15 pad to 16) and, when streamed, a partial
/// last chunk of 8 columns (18 = 8 + 8 + 2, 30 = 3 x 8 + 6).
#[test]
fn row_blocks_codebook_tiles_and_column_chunks_at_their_edges() {
    for (name, device) in devices() {
        for (seed, (n, k, d, l2)) in [
            (1061, 33, 13, false),
            (1061, 33, 14, false),
            (1061, 33, 15, true),
            (517, 33, 18, false),
            (517, 65, 30, true),
        ]
        .into_iter()
        .enumerate()
        {
            random_case(name, &device, 301 + seed as u64, n, k, d, l2);
        }
    }
}

/// `K·D` far beyond lavapipe's 65,535 loop iterations per invocation: the nearest codes are
/// planted near the end of the codebook, so a unit that stopped early would miss them.
#[test]
fn tiling_holds_past_the_lavapipe_loop_cap() {
    for (name, device) in devices() {
        for (n, k, d) in [(70, 2100, 40), (5, 4099, 70), (2, 65_536, 512)] {
            let mut rng = Rng(7 + k as u64);
            let mut z = rng.normals(n * d);
            let codebook = rng.normals(k * d);
            for row in 0..n {
                let target = k - 1 - 3 * row;
                for col in 0..d {
                    z[row * d + col] = codebook[target * d + col] + 1e-3 * rng.normal();
                }
            }
            let label = format!("{name} N={n} K={k} D={d} (K·D = {})", k * d);
            let (indices, _) = check_case(&label, &device, &z, &codebook, d, false);
            let expected: Vec<i64> = (0..n).map(|row| (k - 1 - 3 * row) as i64).collect();
            assert_eq!(indices, expected, "{label}: planted codes");
        }
    }
}

#[test]
fn single_row_code_and_column() {
    for (name, device) in devices() {
        let (indices, distances) = check_case(&format!("{name} 1x1x1"), &device, &[2.5], &[-1.0], 1, false);
        assert_eq!((indices, distances), (vec![0], vec![12.25]));
        // One code: every row maps to it.
        let (indices, _) =
            check_case(&format!("{name} K=1"), &device, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[0.5, 0.5], 2, false);
        assert_eq!(indices, vec![0, 0, 0]);
        // One row against many codes.
        let codebook: Vec<f32> = (0..300).map(|i| i as f32 * 0.25).collect();
        let (indices, distances) = check_case(&format!("{name} N=1"), &device, &[37.3], &codebook, 1, false);
        assert_eq!(indices, vec![149]);
        assert!((distances[0] - 0.0025).abs() < 1e-5, "{name}: {}", distances[0]);
    }
}

/// Equidistant codes and duplicated rows: the lowest index wins, also when the tied codes fall in
/// different units, tiles and cubes of the kernel.
#[test]
fn exact_ties_and_duplicate_rows_go_to_the_lowest_index() {
    for (name, device) in devices() {
        // The latent (0, 0) is at distance exactly 1 from each of the unit codes 3, 70 and 200.
        let k = 260;
        let mut codebook = vec![5.0f32; k * 2];
        for (j, (x, y)) in [(3, (1.0, 0.0)), (70, (0.0, 1.0)), (200, (-1.0, 0.0))] {
            codebook[j * 2] = x;
            codebook[j * 2 + 1] = y;
        }
        // Code 17 duplicated at 18, 90 and 259; latents equal to it.
        for j in [17, 18, 90, 259] {
            codebook[j * 2] = 2.0;
            codebook[j * 2 + 1] = -3.0;
        }
        let mut z = vec![];
        for row in 0..150 {
            z.extend(if row % 2 == 0 { [0.0, 0.0] } else { [2.0, -3.0] });
        }
        let (indices, distances) = check_case(&format!("{name} ties"), &device, &z, &codebook, 2, false);
        for (row, (&i, &dist)) in indices.iter().zip(&distances).enumerate() {
            let expected = if row % 2 == 0 { (3, 1.0) } else { (17, 0.0) };
            assert_eq!((i, dist), expected, "{name} row {row}");
        }
    }
}

/// Codes of magnitude ~2e3 (`||z||² ≈ 6e7`, f32 ulp there ≈ 4), latents within ~0.04 of a code
/// and a decoy code 0.5 further: the expanded `||z||² + ||c||² - 2 z·c` of the matmul path cannot
/// separate 0.002 from 0.25 at that scale, the kernel's direct `Σ (z - c)²` can. Every device
/// checks the plain planted case; CubeCL devices also the decoys.
#[test]
fn large_magnitudes_keep_small_distances_exact() {
    let (n, k, d) = (40, 300, 16);
    let mut rng = Rng(3);
    let mut codebook: Vec<f32> = rng.normals(k * d).iter().map(|v| 2000.0 + 100.0 * v).collect();
    let target = |row: usize| (row * 7) % 280;
    let mut z = vec![0.0f32; n * d];
    for row in 0..n {
        for col in 0..d {
            z[row * d + col] = codebook[target(row) * d + col] + 1e-2 * rng.normal();
        }
    }
    let expected: Vec<i64> = (0..n).map(|row| target(row) as i64).collect();
    for (name, device) in devices() {
        let (indices, _) = check_case(&format!("{name} large"), &device, &z, &codebook, d, false);
        assert_eq!(indices, expected, "{name}");
    }

    // Decoys: code 280 + r sits 0.5 from row r's code (and after it, so ties cannot help).
    for row in 0..(k - 280).min(n) {
        for col in 0..d {
            codebook[(280 + row) * d + col] = codebook[target(row) * d + col] + if col == 0 { 0.5 } else { 0.0 };
        }
    }
    for (name, device) in devices() {
        if NearestCodePath::for_device(&device) != NearestCodePath::FusedKernel {
            continue;
        }
        let (indices, _) = check_case(&format!("{name} large + decoys"), &device, &z, &codebook, d, false);
        assert_eq!(indices, expected, "{name}");
    }
}

/// l2 mode (`F.normalize`, eps 1e-12): a zero vector stays zero, so a zero latent is at distance
/// 0 from a zero code and exactly 1 from every other code; scaling a row does not change its code.
#[test]
fn l2_mode_handles_zero_vectors() {
    let d = 5;
    let mut rng = Rng(5);
    let mut codebook = rng.normals(20 * d);
    codebook[..d].fill(0.0); // code 0 is the zero vector
    let mut z = rng.normals(6 * d);
    z[..d].fill(0.0); // row 0 is the zero vector
    for col in 0..d {
        z[d + col] = 1e4 * codebook[7 * d + col]; // row 1 is a scaled code 7
        z[2 * d + col] = 1e-3 * codebook[11 * d + col]; // row 2 is a shrunk code 11
    }
    // Axis codes whose normalisation is exact: the zero latent ties at exactly 1 with all of them.
    let axes: Vec<f32> = (0..3 * d).map(|i| if i % d == (i / d + 1) % d { (i / d + 2) as f32 } else { 0.0 }).collect();
    for (name, device) in devices() {
        let (indices, distances) = check_case(&format!("{name} l2 zeros"), &device, &z, &codebook, d, true);
        assert_eq!((indices[0], distances[0]), (0, 0.0), "{name}: zero latent vs zero code");
        assert_eq!(indices[1], 7, "{name}: direction of code 7");
        assert_eq!(indices[2], 11, "{name}: direction of code 11");
        assert!(distances[1] < 1e-5 && distances[2] < 1e-5, "{name}: {distances:?}");
        assert!(distances.iter().all(|&v| (0.0..=4.0 + 1e-5).contains(&v)), "{name}: {distances:?}");

        let (indices, distances) = check_case(&format!("{name} l2 axes"), &device, &z[..d], &axes, d, true);
        assert_eq!((indices, distances), (vec![0], vec![1.0]), "{name}: exact tie at 1 goes to code 0");
    }
}

/// Half-precision inputs are read as half and accumulated in f32 (where the device has f16).
#[test]
fn half_precision_inputs() {
    for (name, device) in devices() {
        if !device.supports_dtype(DType::F16) {
            eprintln!("{name}: no f16 support, skipped");
            continue;
        }
        let (n, k, d) = (50, 200, 24);
        let mut rng = Rng(9);
        // Values exactly representable in f16, so the f64 truth of the f32 values applies.
        let round = |v: Vec<f32>| v.iter().map(|&x| burn::backend::f16::from_f32(x).to_f32()).collect::<Vec<_>>();
        let (z, codebook) = (round(rng.normals(n * d)), round(rng.normals(k * d)));
        let zt = to_device(&z, n, d, &device).cast(DType::F16);
        let ct = to_device(&codebook, k, d, &device).cast(DType::F16);
        let (indices, distances) = read(nearest_code(zt, ct, false));
        let (expected, _) = check_case(&format!("{name} f16 as f32"), &device, &z, &codebook, d, false);
        assert_eq!(indices, expected, "{name}");
        for row in 0..n {
            let truth = true_distances(&z[row * d..(row + 1) * d], &codebook, d, false)[indices[row] as usize];
            assert!((distances[row] as f64 - truth).abs() <= DIST_TOL * truth.max(1.0), "{name} row {row}");
        }
    }
}

/// Inputs that come out of lazy (fused) ops, and a codebook that is a transposed view.
#[test]
fn lazy_and_strided_inputs() {
    let (n, k, d) = (90, 150, 20);
    let mut rng = Rng(13);
    let z = rng.normals(n * d);
    let codebook = rng.normals(k * d);
    for (name, device) in devices() {
        let (expected, _) = check_case(&format!("{name} plain"), &device, &z, &codebook, d, false);
        let z_lazy = to_device(&z, n, d, &device).mul_scalar(2.0).add_scalar(1.0).sub_scalar(1.0).div_scalar(2.0);
        let c_t: Tensor<2> = Tensor::from_data(
            TensorData::new((0..d * k).map(|i| codebook[(i % k) * d + i / k]).collect::<Vec<f32>>(), [d, k]),
            &device,
        );
        let (indices, _) = read(nearest_code(z_lazy, c_t.transpose(), false));
        assert_eq!(indices, expected, "{name}");
    }
}

/// Autodiff inputs (a training step) are accepted; the outputs stay in the caller's autodiff
/// mode but are untracked, and equal the plain call.
#[test]
fn accepts_autodiff_inputs() {
    let (n, k, d) = (20, 40, 8);
    let mut rng = Rng(17);
    let z = rng.normals(n * d);
    let codebook = rng.normals(k * d);
    for (name, device) in devices() {
        let (expected, expected_d) = check_case(&format!("{name} plain"), &device, &z, &codebook, d, false);
        let ad = device.clone().autodiff();
        let zt = to_device(&z, n, d, &ad).require_grad();
        let ct = to_device(&codebook, k, d, &ad).require_grad();
        let result = nearest_code(zt.clone() * 1.0, ct, false);
        assert!(result.indices.is_autodiff() && result.distances.is_autodiff(), "{name}: caller's mode");
        assert!(!result.distances.is_require_grad(), "{name}: distances are untracked");
        // The indices pick codes inside a graph; gradients still reach z through other terms.
        let loss = (zt.clone() * 2.0).sum() + result.distances.clone().sum();
        let grads = loss.backward();
        let dz = zt.grad(&grads).expect("z keeps its gradient").try_into_vec_as::<f32>().unwrap();
        assert!(dz.iter().all(|&g| g == 2.0), "{name}: distances must not feed the graph");
        assert_eq!(read(result), (expected, expected_d), "{name}");
    }
}

/// Flex's matmul path finds exactly the reference's indices (same ops, same order).
#[test]
fn flex_matmul_matches_the_reference_indices() {
    let device = Device::flex();
    let (n, k, d) = (500, 700, 12);
    let mut rng = Rng(19);
    let z = to_device(&rng.normals(n * d), n, d, &device);
    let codebook = to_device(&rng.normals(k * d), k, d, &device);
    for l2 in [false, true] {
        let fast = nearest_code(z.clone(), codebook.clone(), l2).indices.try_into_vec_as::<i64>().unwrap();
        let reference =
            nearest_code_reference(z.clone(), codebook.clone(), l2).indices.try_into_vec_as::<i64>().unwrap();
        assert_eq!(fast, reference, "l2={l2}");
    }
}

#[test]
fn bad_input_is_an_error_and_no_rows_is_empty() {
    for (name, device) in devices() {
        let z = Tensor::<2>::zeros([3, 4], &device);
        let err = try_nearest_code(z.clone(), Tensor::zeros([5, 3], &device), false).unwrap_err();
        assert_eq!(err, NearestCodeError::WidthMismatch { z: 4, codebook: 3 }, "{name}");
        let err = try_nearest_code(z.clone(), Tensor::zeros([0, 4], &device), false).unwrap_err();
        assert_eq!(err, NearestCodeError::EmptyCodebook, "{name}");
        let err = try_nearest_code(Tensor::zeros([3, 0], &device), Tensor::zeros([5, 0], &device), false).unwrap_err();
        assert_eq!(err, NearestCodeError::ZeroWidth, "{name}");
        let empty = try_nearest_code(Tensor::zeros([0, 4], &device), Tensor::ones([5, 4], &device), false).unwrap();
        assert_eq!((empty.indices.dims(), empty.distances.dims()), ([0], [0]), "{name}");
        let _: Tensor<1, Int> = empty.indices;
    }
    #[cfg(feature = "wgpu")]
    {
        let wgpu = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        let err =
            try_nearest_code(Tensor::zeros([2, 4], &Device::flex()), Tensor::zeros([5, 4], &wgpu), false).unwrap_err();
        assert!(matches!(err, NearestCodeError::DeviceMismatch { .. }), "{err}");
    }
}

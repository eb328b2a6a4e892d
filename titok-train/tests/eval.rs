//! Evaluation metrics: parity with the golden fixture `fid` (network input, pool3 features,
//! FID of the 200-image feature sets and of the full-rank small case, means), rFID identity
//! and blur, PSNR/SSIM against hand-computed values, streaming statistics against the two-pass
//! formulas, `.npy`/`.npz` format and round trips, the report.
//!
//! Fixture discovery: every `fid*` fixture under `TITOK_GOLDEN_DIR` (default
//! `../shared/golden`), counts and widths read from the stored tensors; weights:
//! `TITOK_WEIGHTS_DIR`, else `$TITOK_SHARED_DIR/weights` (default `../shared/weights`). Tolerances from the fixture README: FID of
//! the 200-image sets 1e-3 absolute, `fid_small` 1e-6; features as conv activations.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use nalgebra::{DMatrix, DVector};
use titok_model::golden::{FixtureKind, IoTensors, shared_weights, test_device};
use titok_train::eval::npz::{decode_npy, encode_npy, npy_header};
use titok_train::eval::{
    AdmNpzWriter, CodebookReport, EvalError, FeatureAccumulator, FidKind, FidScore, FidStats, InceptionV3,
    MetricsReport, NpyArray, NpyData, NpzReader, RunningMean, frechet_distance, inception::WEIGHTS_FILE, psnr,
    read_npz, rfid_round, ssim, write_npz,
};

/// Network input: resize + scaling in f32 with PyTorch's weight arithmetic (measured 2.4e-7).
const INPUT_ATOL: f64 = 1e-6;
/// pool3 features (values up to ~5 after 94 conv layers; measured 6.4e-6): the README's
/// activation tolerance.
const FEATURE_ATOL: f64 = 1e-4;
const FEATURE_RTOL: f64 = 1e-4;
/// README: FID of the rank-deficient 200-image sets, 1e-3 absolute.
const FID_ATOL: f64 = 1e-3;
/// README: the full-rank case agrees to 1e-12 across methods.
const FID_SMALL_ATOL: f64 = 1e-6;

/// Every `fid*` fixture (the set must hold one).
fn fid_fixtures() -> Vec<PathBuf> {
    FixtureKind::Fid.all()
}

/// `$TITOK_WEIGHTS_DIR/<file>`, else the shared weights (`$TITOK_SHARED_DIR/weights`).
fn weights_path() -> PathBuf {
    match std::env::var_os("TITOK_WEIGHTS_DIR") {
        Some(dir) => PathBuf::from(dir).join(WEIGHTS_FILE),
        None => shared_weights(WEIGHTS_FILE),
    }
}

/// A fresh folder (created; removed when the guard drops).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("titok-eval-{name}-")).tempdir().unwrap()
}

/// The stored features of `images_u8`: `features_img{n}`, whatever `n` the fixture has.
fn features_name(io: &IoTensors) -> String {
    io.names()
        .into_iter()
        .find(|n| n.starts_with("features_img"))
        .unwrap_or_else(|| panic!("{}: no `features_img*` tensor", io.path.display()))
}

/// Feature rows of a stored `[n, d]` tensor as f32.
fn rows(io: &mut IoTensors, name: &str) -> (Vec<f32>, usize) {
    let s = io.get(name);
    (s.values.iter().map(|&v| v as f32).collect(), s.shape[1])
}

/// Accumulates rows in uneven chunks, so that block merging is exercised.
fn stats_in_chunks(rows: &[f32], dim: usize, chunk: usize) -> FidStats {
    let mut acc = FeatureAccumulator::new(dim);
    for c in rows.chunks(chunk * dim) {
        acc.push_rows(c).unwrap();
    }
    acc.stats().unwrap()
}

fn assert_f64_close(what: &str, actual: &[f64], expected: &[f64], atol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let worst = actual.iter().zip(expected).map(|(a, e)| (a - e).abs()).fold(0.0, f64::max);
    assert!(worst <= atol, "{what}: max |Δ| {worst:e} > {atol:e}");
}

/// 3x3 box blur with replicate padding, per channel.
fn box_blur(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let v = x.try_into_vec_as::<f32>().unwrap();
    let mut out = vec![0.0f32; v.len()];
    for p in 0..n * c {
        for i in 0..h {
            for j in 0..w {
                let mut s = 0.0;
                for di in -1i64..=1 {
                    for dj in -1i64..=1 {
                        let ii = (i as i64 + di).clamp(0, h as i64 - 1) as usize;
                        let jj = (j as i64 + dj).clamp(0, w as i64 - 1) as usize;
                        s += v[(p * h + ii) * w + jj];
                    }
                }
                out[(p * h + i) * w + j] = s / 9.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(out, [n, c, h, w]), &Device::flex())
}

/// Golden parity: network input of image 0, the 4 feature vectors, then rFID of the images
/// against themselves (~0) and against a blurred copy (clearly larger).
#[test]
fn golden_inception_input_features_and_rfid_identity_vs_blur() {
    let device = test_device();
    let model = InceptionV3::load(&weights_path(), &device).unwrap_or_else(|e| panic!("{e}"));
    for dir in fid_fixtures() {
        check_inception_fixture(&model, &dir, &device);
    }
}

fn check_inception_fixture(model: &InceptionV3, dir: &Path, device: &Device) {
    let device = device.clone();
    let mut io = IoTensors::load(dir);
    let images: Tensor<4> = io.float("images_u8", &device); // [n, 3, S, S]

    let input = InceptionV3::preprocess(images.clone()).unwrap();
    // The network input of image 0 is an intermediate: compared when stored.
    if io.has("inception_input_299_img0") {
        let first = input.clone().slice_dim(0, 0..1).try_into_vec_as::<f32>().unwrap();
        let worst = first
            .iter()
            .zip(&io.get("inception_input_299_img0").values)
            .map(|(&a, &e)| (a as f64 - e).abs())
            .fold(0.0, f64::max);
        eprintln!("inception_input_299_img0: max |Δ| {worst:.2e}");
        io.assert_close("inception_input_299_img0", input.clone().slice_dim(0, 0..1), INPUT_ATOL, 0.0);
    }
    let features = model.forward(input).unwrap(); // [n, 2048]
    let name = features_name(&io);
    io.assert_close(&name, features.clone(), FEATURE_ATOL, FEATURE_RTOL);
    let got = features.clone().try_into_vec_as::<f32>().unwrap();
    let worst = got.iter().zip(&io.get(&name).values).map(|(&a, &e)| (a as f64 - e).abs()).fold(0.0, f64::max);
    eprintln!("{name}: max |Δ| {worst:.2e}");

    // uint8 images are already on the 1/255 grid: the rFID rounding leaves them alone.
    let rounded = rfid_round(images.clone());
    let max_change = (rounded - images.clone()).abs().max().into_scalar::<f32>();
    assert!(max_change < 1e-6, "rfid_round moved uint8 images by {max_change}");

    // Identity: the rounded images are the images, so their statistics are the same.
    let dim = features.dims()[1];
    let real = FidStats::from_rows(&features.try_into_vec_as::<f32>().unwrap(), dim).unwrap();
    let identity = real.fid(&real.clone()).unwrap();
    assert!(identity.abs() < 1e-6, "rFID of images vs themselves = {identity}");

    let blurred = box_blur(images).to_device(&device);
    let blurred = model.features(rfid_round(blurred)).unwrap();
    let blurred = FidStats::from_rows(&blurred.try_into_vec_as::<f32>().unwrap(), dim).unwrap();
    let blur = real.fid(&blurred).unwrap();
    eprintln!("rFID identity {identity:.3e}, vs 3x3 box blur {blur:.3}");
    assert!(blur > 1.0, "rFID against a blurred copy = {blur}, identity {identity}");
}

/// Golden parity of the statistics and FID on stored feature sets.
#[test]
fn golden_fid_of_feature_sets_and_means() {
    for dir in fid_fixtures() {
        check_fid_fixture(&dir);
    }
}

/// Row counts and widths come from the stored feature sets.
fn check_fid_fixture(dir: &Path) {
    let mut io = IoTensors::load(dir);
    let (a, d) = rows(&mut io, "set_a_features");
    let (b, _) = rows(&mut io, "set_b_features");
    let (na, nb) = (a.len() / d, b.len() / d);
    let sa = stats_in_chunks(&a, d, 37);
    let sb = stats_in_chunks(&b, d, nb);
    assert_eq!((sa.n, sb.n), (Some(na), Some(nb)));
    for (name, stats) in [("mu_a", &sa), ("mu_b", &sb)] {
        if io.has(name) {
            assert_f64_close(name, stats.mu.as_slice(), &io.get(name).values.clone(), 1e-12);
        }
    }
    let fid = sa.fid(&sb).unwrap();
    let expected = io.scalar("fid_a_b");
    eprintln!("fid_a_b = {fid:.7} (fixture, scipy sqrtm: {expected:.7})");
    assert!((fid - expected).abs() <= FID_ATOL, "fid_a_b = {fid}, expected {expected}");

    // The full-rank sanity case, when stored.
    if io.has("fid_small") {
        let (a, d) = rows(&mut io, "small_a_features");
        let (b, _) = rows(&mut io, "small_b_features");
        let small = stats_in_chunks(&a, d, 7).fid(&stats_in_chunks(&b, d, b.len() / d)).unwrap();
        let expected = io.scalar("fid_small");
        eprintln!("fid_small = {small:.11} (fixture: {expected:.11})");
        assert!((small - expected).abs() <= FID_SMALL_ATOL, "fid_small = {small}, expected {expected}");
    }
    // Compared by the Inception test.
    let network: Vec<String> = io
        .names()
        .into_iter()
        .filter(|n| n == "images_u8" || n.starts_with("inception_input_") || n.starts_with("features_img"))
        .collect();
    io.mark_inputs(&network.iter().map(String::as_str).collect::<Vec<_>>());
    io.assert_all_checked();
}

/// Streaming statistics equal the two-pass mean and unbiased covariance for any chunking, and
/// merging accumulators equals accumulating everything.
#[test]
fn accumulator_matches_two_pass_statistics() {
    let (n, d) = (613, 9);
    let data: Vec<f32> =
        (0..n * d).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.3) * (1 + i % d) as f32 + 5.0).collect();
    let x = DMatrix::from_row_slice(n, d, &data.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let mean = x.row_mean().transpose();
    let centred = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
    let cov = centred.transpose() * &centred / (n as f64 - 1.0);
    for chunk in [1, 5, 256, 300, n] {
        let s = stats_in_chunks(&data, d, chunk);
        assert_eq!(s.n, Some(n));
        assert!((&s.mu - &mean).amax() < 1e-12, "chunk {chunk}: mean");
        assert!((&s.sigma - &cov).amax() < 1e-11 * cov.amax(), "chunk {chunk}: covariance");
    }
    let mut left = FeatureAccumulator::new(d);
    left.push_rows(&data[..100 * d]).unwrap();
    let mut right = FeatureAccumulator::new(d);
    right
        .push(Tensor::<2>::from_data(TensorData::new(data[100 * d..].to_vec(), [n - 100, d]), &Device::flex()))
        .unwrap();
    left.merge(&right).unwrap();
    assert_eq!(left.count(), n);
    assert!((&left.stats().unwrap().sigma - &cov).amax() < 1e-11 * cov.amax());

    let mut one = FeatureAccumulator::new(d);
    one.push_rows(&data[..d]).unwrap();
    assert!(matches!(one.stats(), Err(EvalError::Input(_))), "one vector has no covariance");
    assert!(one.push_rows(&data[..d + 1]).is_err(), "partial row");
    assert!(one.push_rows(&[f32::NAN; 9]).is_err(), "NaN");
    assert!(one.push(Tensor::<2>::zeros([2, 4], &Device::flex())).is_err(), "width");
}

/// Closed forms: commuting covariances give `‖Δμ‖² + Σ (√a_i − √b_i)²`; identical statistics
/// give 0; bad inputs give errors.
#[test]
fn frechet_distance_closed_forms_and_errors() {
    // A rotation Q (Householder) shared by both covariances: Σ = Q diag Qᵀ commute.
    let d = 6;
    let v = DVector::from_fn(d, |i, _| (i as f64 + 1.0).sqrt());
    let q = DMatrix::identity(d, d) - (&v * v.transpose()) * (2.0 / v.norm_squared());
    let (ea, eb) = ([4.0, 1.0, 0.25, 9.0, 0.0, 2.0], [1.0, 1.0, 1.0, 4.0, 0.5, 0.0]);
    let sa = &q * DMatrix::from_diagonal(&DVector::from_row_slice(&ea)) * q.transpose();
    let sb = &q * DMatrix::from_diagonal(&DVector::from_row_slice(&eb)) * q.transpose();
    let (ma, mb) = (DVector::from_element(d, 0.5), DVector::from_fn(d, |i, _| i as f64));
    let dm: f64 = (0..d).map(|i| (0.5 - i as f64).powi(2)).sum();
    let want = dm + ea.iter().zip(&eb).map(|(a, b): (&f64, &f64)| (a.sqrt() - b.sqrt()).powi(2)).sum::<f64>();
    let got = frechet_distance(&ma, &sa, &mb, &sb).unwrap();
    // Directions where one covariance is 0 contribute √(rounding noise) ~ 1e-8.
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    let a = FidStats::new(ma.clone(), sa.clone(), None).unwrap();
    assert!(a.fid(&a).unwrap() < 1e-10);

    // Dead features (always 0) and fewer samples than dimensions: FID is unchanged by the
    // dead dimensions, and finite.
    let (n, live, dead) = (15, 30, 10);
    let value =
        |i: usize, j: usize, s: usize| ((i * 31 + j * 17 + s * 7) % 23) as f32 / 23.0 + (j % 3) as f32 * 0.1 * s as f32;
    let full = |s: usize| -> Vec<f32> {
        (0..n)
            .flat_map(|i| (0..live + dead).map(move |j| if j % 4 == 1 && j / 4 < dead { 0.0 } else { value(i, j, s) }))
            .collect()
    };
    let reduced = |s: usize| -> Vec<f32> {
        full(s)
            .chunks(live + dead)
            .flat_map(|r| {
                r.iter().enumerate().filter(|(j, _)| !(j % 4 == 1 && j / 4 < dead)).map(|(_, v)| *v).collect::<Vec<_>>()
            })
            .collect()
    };
    let with_dead = FidStats::from_rows(&full(1), live + dead)
        .unwrap()
        .fid(&FidStats::from_rows(&full(2), live + dead).unwrap())
        .unwrap();
    let without =
        FidStats::from_rows(&reduced(1), live).unwrap().fid(&FidStats::from_rows(&reduced(2), live).unwrap()).unwrap();
    assert!(with_dead.is_finite() && with_dead > 0.1 && (with_dead - without).abs() < 1e-9, "{with_dead} vs {without}");

    let small = DMatrix::<f64>::identity(3, 3);
    assert!(matches!(frechet_distance(&ma, &sa, &DVector::zeros(3), &small), Err(EvalError::Input(_))));
    let mut nan = sa.clone();
    nan[(0, 1)] = f64::NAN;
    assert!(frechet_distance(&ma, &nan, &mb, &sb).is_err());
    let not_psd = -DMatrix::<f64>::identity(d, d);
    assert!(matches!(frechet_distance(&ma, &not_psd, &mb, &sb), Err(EvalError::Numerical(_))));
    assert!(FidStats::new(ma, small, None).is_err());
}

/// PSNR against values computed by hand.
#[test]
fn psnr_against_hand_computed_values() {
    let device = Device::flex();
    let full = |v: f32, shape: [usize; 4]| Tensor::<4>::full(shape, v, &device);
    // MSE 0.01 -> 20 dB.
    let p = psnr(full(0.5, [2, 3, 4, 4]), full(0.6, [2, 3, 4, 4])).unwrap().try_into_vec_as::<f32>().unwrap();
    assert!(p.iter().all(|&v| (v - 20.0).abs() < 1e-4), "{p:?}");
    // One pixel off by 1 in 16: MSE 1/16 -> 10·log10(16) = 12.0412 dB; identical -> +inf.
    let mut one = vec![0.0f32; 32];
    one[5] = 1.0;
    let b = Tensor::<4>::from_data(TensorData::new(one, [2, 1, 4, 4]), &device);
    let p = psnr(full(0.0, [2, 1, 4, 4]), b).unwrap().try_into_vec_as::<f32>().unwrap();
    assert!((p[0] as f64 - 10.0 * 16f64.log10()).abs() < 1e-4, "{p:?}");
    assert!(p[1].is_infinite() && p[1] > 0.0, "{p:?}");
    assert!(psnr(full(0.0, [1, 3, 4, 4]), full(0.0, [1, 3, 4, 5])).is_err());
}

/// SSIM reference computed directly in f64: 11x11 window `g gᵀ`, valid positions.
fn ssim_reference(a: &[f32], b: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    let g = titok_train::eval::image_metrics::ssim_gaussian();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    (0..n)
        .map(|img| {
            let mut total = 0.0;
            let mut count = 0;
            for ch in 0..c {
                let at = |v: &[f32], i: usize, j: usize| v[((img * c + ch) * h + i) * w + j] as f64;
                for i in 0..=h - 11 {
                    for j in 0..=w - 11 {
                        let (mut ma, mut mb, mut aa, mut bb, mut ab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                        for u in 0..11 {
                            for v in 0..11 {
                                let k = g[u] * g[v];
                                let (x, y) = (at(a, i + u, j + v), at(b, i + u, j + v));
                                ma += k * x;
                                mb += k * y;
                                aa += k * x * x;
                                bb += k * y * y;
                                ab += k * x * y;
                            }
                        }
                        let (va, vb, cov) = (aa - ma * ma, bb - mb * mb, ab - ma * mb);
                        total += (2.0 * ma * mb + c1) * (2.0 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                        count += 1;
                    }
                }
            }
            total / count as f64
        })
        .collect()
}

/// SSIM against values computed by hand (constant images) and by a direct f64 implementation.
#[test]
fn ssim_against_hand_computed_values() {
    let device = Device::flex();
    // Constant images: no structure term, SSIM = (2ab + C1) / (a² + b² + C1).
    let a = Tensor::<4>::full([1, 3, 12, 13], 0.5, &device);
    let b = Tensor::<4>::full([1, 3, 12, 13], 0.6, &device);
    let s = ssim(a.clone(), b).unwrap().into_scalar::<f32>() as f64;
    let want = (2.0 * 0.5 * 0.6 + 1e-4) / (0.25 + 0.36 + 1e-4);
    assert!((s - want).abs() < 1e-6, "{s} vs {want}");
    let s = ssim(a.clone(), a).unwrap().into_scalar::<f32>();
    assert!((s - 1.0).abs() < 1e-6);

    let shape = [2, 3, 16, 20];
    let x = Tensor::<4>::random(shape, Distribution::Uniform(0.0, 1.0), &device);
    let noise = Tensor::<4>::random(shape, Distribution::Normal(0.0, 0.1), &device);
    for y in [(x.clone() + noise).clamp(0.0, 1.0), x.clone().neg() + 1.0, x.clone() * 0.5 + 0.2] {
        let got = ssim(x.clone(), y.clone()).unwrap().try_into_vec_as::<f32>().unwrap();
        let want =
            ssim_reference(&x.clone().try_into_vec_as::<f32>().unwrap(), &y.try_into_vec_as::<f32>().unwrap(), shape);
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
    assert!(ssim(Tensor::<4>::zeros([1, 3, 10, 32], &device), Tensor::<4>::zeros([1, 3, 10, 32], &device)).is_err());
    assert!(ssim(Tensor::<4>::zeros([1, 3, 16, 16], &device), Tensor::<4>::zeros([2, 3, 16, 16], &device)).is_err());
}

fn replace_bytes(mut v: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = v.windows(from.len()).position(|w| w == from).expect("pattern present");
    v[at..at + from.len()].copy_from_slice(to);
    v
}

/// The `.npy` layout numpy writes: magic, version 1.0, `u16` header length, the sorted dict
/// with growth padding, total prefix a multiple of 64 ending in `\n`, little-endian data.
#[test]
fn npy_bytes_follow_the_numpy_format() {
    let h = npy_header("<f8", &[3]);
    assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
    assert_eq!(h.len(), 128, "np.save(np.zeros(3)) has a 128-byte prefix");
    assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
    let text = std::str::from_utf8(&h[10..]).unwrap();
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
    assert!(text.starts_with(dict), "{text:?}");
    assert!(text[dict.len()..text.len() - 1].bytes().all(|c| c == b' ') && text.ends_with('\n'));

    for (descr, shape) in [("<f8", vec![2048, 2048]), ("|u1", vec![50000, 256, 256, 3]), ("<i8", vec![])] {
        let h = npy_header(descr, &shape);
        assert_eq!(h.len() % 64, 0, "{descr} {shape:?}");
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with(&format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (")));
    }
    assert!(std::str::from_utf8(&npy_header("|u1", &[2, 4, 4, 3])[10..]).unwrap().contains("'shape': (2, 4, 4, 3), }"));
    // 0-d: no growth padding, only the alignment spaces.
    let scalar = String::from_utf8(npy_header("<i8", &[])[10..].to_vec()).unwrap();
    let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (), }";
    assert!(
        scalar.starts_with(dict) && scalar[dict.len()..].trim_end_matches('\n').bytes().all(|c| c == b' '),
        "{scalar:?}"
    );

    let a = NpyArray::new(vec![2, 2], NpyData::F64(vec![1.0, -2.5, 3.0, 1e-300])).unwrap();
    let bytes = encode_npy(&a);
    assert_eq!(&bytes[bytes.len() - 32..bytes.len() - 24], &1.0f64.to_le_bytes());
    assert_eq!(decode_npy(&bytes).unwrap(), a);
    let u = NpyArray::new(vec![3], NpyData::U8(vec![0, 7, 255])).unwrap();
    assert_eq!(&encode_npy(&u)[128..], &[0, 7, 255]);
    assert!(NpyArray::new(vec![2, 2], NpyData::U8(vec![1])).is_err());

    // Readable variants and clear errors.
    let mut f4 = npy_header("<f4", &[2]);
    f4.extend_from_slice(&1.5f32.to_le_bytes());
    f4.extend_from_slice(&(-2.0f32).to_le_bytes());
    assert_eq!(decode_npy(&f4).unwrap().to_f64(), vec![1.5, -2.0]);
    assert!(decode_npy(b"not an npy file").unwrap_err().contains("magic"));
    let fortran = replace_bytes(npy_header("<f8", &[1]), b"False", b"True ");
    assert!(decode_npy(&fortran).unwrap_err().contains("fortran"));
    let mut big = replace_bytes(npy_header("<f8", &[1]), b"<f8", b">f8");
    big.extend_from_slice(&[0; 8]);
    assert!(decode_npy(&big).unwrap_err().contains(">f8"));
    let mut short = npy_header("<f8", &[4]);
    short.extend_from_slice(&[0; 8]);
    assert!(decode_npy(&short).unwrap_err().contains("truncated"));
}

/// `.npz` round trips: arrays, FID statistics (with and without `n`), ADM sample batches; the
/// archive holds uncompressed `NAME.npy` entries.
#[test]
fn npz_round_trips_and_adm_batches() {
    let dir_guard = temp_dir("npz");
    let dir = dir_guard.path().to_path_buf();
    let path = dir.join("arrays.npz");
    let mu = NpyArray::new(vec![3], NpyData::F64(vec![0.1, 0.2, 0.3])).unwrap();
    let img = NpyArray::new(vec![1, 2, 2, 3], NpyData::U8((0..12).collect())).unwrap();
    let ids = NpyArray::scalar_i64(-7);
    write_npz(&path, &[("mu", &mu), ("arr_0", &img), ("n", &ids)]).unwrap();
    let back = read_npz(&path).unwrap();
    assert_eq!(back.keys().collect::<Vec<_>>(), ["arr_0", "mu", "n"]);
    assert_eq!((&back["mu"], &back["arr_0"], &back["n"]), (&mu, &img, &ids));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let entry = zip.by_name("mu.npy").unwrap();
    assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
    assert_eq!(entry.size() as usize, encode_npy(&mu).len());
    drop(entry);
    assert!(write_npz(&dir.join("dup.npz"), &[("a", &mu), ("a", &mu)]).is_err());
    assert!(matches!(NpzReader::open(&path).unwrap().read("sigma"), Err(EvalError::Npz { .. })));
    assert!(NpzReader::open(&dir.join("missing.npz")).is_err());

    // FID statistics: exact round trip; row-major sigma; `n` optional.
    let sigma = DMatrix::from_row_slice(3, 3, &[2.0, 0.5, 0.1, 0.5, 1.0, 0.2, 0.1, 0.2, 3.0]);
    let stats = FidStats::new(DVector::from_row_slice(&[1.0, 2.0, 3.0]), sigma, Some(4096)).unwrap();
    let stats_path = dir.join("stats.npz");
    stats.save_npz(&stats_path).unwrap();
    assert_eq!(FidStats::load_npz(&stats_path).unwrap(), stats);
    let stored = read_npz(&stats_path).unwrap();
    assert_eq!(stored["sigma"].shape, [3, 3]);
    assert_eq!(stored["sigma"].data.descr(), "<f8");
    let s = FidStats { n: None, ..stats.clone() };
    s.save_npz(&stats_path).unwrap();
    assert_eq!(FidStats::load_npz(&stats_path).unwrap().n, None);
    write_npz(&stats_path, &[("mu", &mu), ("sigma", &img)]).unwrap();
    assert!(FidStats::load_npz(&stats_path).is_err(), "sigma of the wrong shape");

    // ADM batch: 3 images of 4x5 pushed as 2 + 1, stored NHWC uint8 by truncation.
    let device = Device::flex();
    let adm = dir.join("samples.npz");
    let mut w = AdmNpzWriter::create(&adm, 3, 4, 5).unwrap();
    let values: Vec<f32> = (0..3 * 3 * 4 * 5).map(|i| (i as f32 / 59.0) * 1.2 - 0.1).collect();
    let images = Tensor::<4>::from_data(TensorData::new(values.clone(), [3, 3, 4, 5]), &device);
    w.push(images.clone().slice_dim(0, 0..2)).unwrap();
    assert!(w.push(Tensor::<4>::zeros([1, 3, 5, 5], &device)).is_err(), "wrong size");
    w.push(images.slice_dim(0, 2..3)).unwrap();
    assert!(w.push_u8_nhwc(&[0; 60], 1).is_err(), "more than announced");
    assert_eq!(w.finish().unwrap(), adm);
    let arr = NpzReader::open(&adm).unwrap().read("arr_0").unwrap();
    assert_eq!(arr.shape, [3, 4, 5, 3]);
    let NpyData::U8(bytes) = &arr.data else { panic!("arr_0 is {:?}", arr.data.descr()) };
    for (n, y, x, c) in [(0, 0, 0, 0), (1, 2, 3, 1), (2, 3, 4, 2), (0, 3, 1, 2)] {
        let v = values[((n * 3 + c) * 4 + y) * 5 + x];
        let want = (v.clamp(0.0, 1.0) * 255.0).floor() as u8;
        assert_eq!(bytes[((n * 4 + y) * 5 + x) * 3 + c], want, "pixel {n},{y},{x},{c}");
    }
    // An unfinished batch leaves no file behind.
    let partial = dir.join("partial.npz");
    let mut w = AdmNpzWriter::create(&partial, 2, 4, 5).unwrap();
    w.push_u8_nhwc(&[1; 60], 1).unwrap();
    assert!(matches!(w.finish(), Err(EvalError::Input(_))));
    assert!(!partial.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The report shows counts next to FID, warns below 2,048 images, and serialises to JSON.
#[test]
fn report_table_json_and_warnings() {
    let mut mean = RunningMean::default();
    assert_eq!(mean.mean(), None);
    mean.extend([20.0, 22.0, 24.5]);
    assert_eq!((mean.count(), mean.mean()), (3, Some(22.166666666666668)));

    let stats = titok_model::CodebookStats::from_ids([0, 1, 2, 3, 0, 1], 8);
    let mut report = MetricsReport {
        name: Some("titok_l32".into()),
        fid: Some(FidScore {
            kind: FidKind::Reconstruction,
            value: 1.7123,
            images: 50_000,
            reference_images: Some(50_000),
        }),
        images: 50_000,
        psnr_db: mean.mean(),
        ssim: Some(0.61),
        lpips: None,
        codebook: Some(CodebookReport::new(&stats, 8)),
    };
    assert!(report.warnings().is_empty());
    let table = report.table();
    assert!(
        table.contains("rFID") && table.contains("1.7123") && table.contains("50000 vs 50000 reference"),
        "{table}"
    );
    assert!(table.contains("4 / 8 codes") && !table.contains("LPIPS") && !table.contains("warning"), "{table}");
    let json = report.to_json();
    assert_eq!(json["fid"]["kind"], "rFID");
    assert_eq!(json["fid"]["images"], 50_000);
    assert_eq!(json["codebook"]["used"], 4);
    assert_eq!(json["lpips"], serde_json::Value::Null);
    assert_eq!(json["warnings"].as_array().unwrap().len(), 0);
    let back: MetricsReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);

    report.fid = Some(FidScore { kind: FidKind::Generation, value: 24.0, images: 2, reference_images: None });
    report.lpips = Some(0.25);
    let table = report.table();
    assert!(
        table.contains("gFID") && table.contains("2 vs reference statistics") && table.contains("LPIPS"),
        "{table}"
    );
    assert!(table.contains("warning: gFID on 2 evaluated images (< 2048)"), "{table}");
    assert_eq!(report.to_json()["warnings"].as_array().unwrap().len(), 1);
}

/// Loading is strict: a missing file or another network's weights are clear errors.
#[test]
fn inception_loading_errors_are_clear() {
    let device = Device::flex();
    let missing = InceptionV3::load(Path::new("/nonexistent/fid.safetensors"), &device);
    assert!(matches!(missing, Err(EvalError::Checkpoint(_))));
    let other = weights_path().with_file_name("lpips_alexnet.safetensors");
    if other.is_file() {
        let err = InceptionV3::load(&other, &device).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("net.layers.mixed_10"), "{err}");
    }
}

/// Statistics files are validated on load: a rank-deficient covariance of real features
/// (the fixture's feature set: 200 images, 2048-d, with rounding-level negative eigenvalues) and its f32-rounded copy
/// load; an asymmetric, an indefinite and a non-finite `sigma` are errors naming the file.
#[test]
fn fid_statistics_are_validated_when_loaded() {
    let dir_guard = temp_dir("fidcheck");
    let dir = dir_guard.path().to_path_buf();
    let mut io = IoTensors::load(&fid_fixtures()[0]);
    let (a, d) = rows(&mut io, "set_a_features");
    let real = FidStats::from_rows(&a, d).unwrap();
    let path = dir.join("real.npz");
    real.save_npz(&path).unwrap();
    assert_eq!(FidStats::load_npz(&path).unwrap(), real);
    // pytorch-fid style f32 storage of the same statistics.
    let mu32 = NpyArray::new(vec![d], NpyData::F32(real.mu.iter().map(|&v| v as f32).collect())).unwrap();
    let sigma32 =
        NpyArray::new(vec![d, d], NpyData::F32(real.sigma.transpose().iter().map(|&v| v as f32).collect())).unwrap();
    write_npz(&path, &[("mu", &mu32), ("sigma", &sigma32)]).unwrap();
    let loaded = FidStats::load_npz(&path).unwrap();
    assert!((loaded.fid(&real).unwrap()).abs() < 1e-3);

    let small = |sigma: DMatrix<f64>, name: &str| -> String {
        let p = dir.join(name);
        FidStats { mu: DVector::zeros(sigma.nrows()), sigma, n: Some(10) }.save_npz(&p).unwrap();
        let err = FidStats::load_npz(&p).unwrap_err().to_string();
        assert!(err.contains(name), "the error names the file: {err}");
        err
    };
    let mut asym = DMatrix::identity(4, 4);
    asym[(0, 1)] = 0.3;
    assert!(small(asym, "asym.npz").contains("not symmetric"));
    let indefinite = DMatrix::from_row_slice(3, 3, &[1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, -0.01]);
    let err = small(indefinite, "indefinite.npz");
    assert!(err.contains("not positive semi-definite (smallest eigenvalue -"), "{err}");
    let mut nan = DMatrix::identity(3, 3);
    nan[(2, 2)] = f64::NAN;
    assert!(small(nan, "nan.npz").contains("NaN"));
    // Exactly singular but PSD (a dead feature, a rank-1 block) is a valid covariance.
    let singular = DMatrix::from_row_slice(3, 3, &[1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    let p = dir.join("singular.npz");
    FidStats { mu: DVector::zeros(3), sigma: singular, n: Some(2) }.save_npz(&p).unwrap();
    assert!(FidStats::load_npz(&p).is_ok());
}

//! Fréchet distance between Gaussians fitted to Inception features (FID, Heusel et al. 2017,
//! "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium").
//!
//! `FID = ‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa Σb)^½`, everything in f64, Σ the unbiased
//! (N − 1) covariance as `np.cov`. The trace of the matrix square root is computed soundly
//! without a non-symmetric `sqrtm`: `Σa Σb` is similar to the symmetric positive semi-definite
//! `Σa^½ Σb Σa^½`, so `tr (Σa Σb)^½ = Σ_i √λ_i(Σa^½ Σb Σa^½)`. `Σa^½` comes from a symmetric
//! eigen-decomposition of `Σa` (eigenvalues clamped at 0); the product is formed as `Rᵀ Σb R`
//! with `R = V diag(√λ)` (same eigenvalues), and only its eigenvalues are computed. The official
//! evaluators (TiTok's `evaluator.py` via torch-fidelity, pytorch-fid, ADM) use
//! `scipy.linalg.sqrtm(Σa Σb)` instead; the two agree to ~1e-5 even for rank-deficient
//! covariances (golden fixture `fid`).

use std::path::Path;

use burn::tensor::Tensor;
use nalgebra::{DMatrix, DVector, SymmetricEigen};

use super::error::{EvalError, Result};
use super::npz::{NpyArray, NpyData, NpzReader, write_npz};

/// Rows buffered before they are folded into the running statistics (one matrix product each).
const BLOCK_ROWS: usize = 256;

/// Streaming mean and covariance of feature vectors in f64.
///
/// Rows are buffered in blocks; each block's mean and centred scatter matrix are merged into
/// the running ones with Chan et al.'s pairwise update (`M2 = M2a + M2b + δδᵀ·na·nb/n`), so
/// the result equals the two-pass `np.mean` / `np.cov` up to rounding, at any batch size.
#[derive(Debug, Clone)]
pub struct FeatureAccumulator {
    dim: usize,
    n: usize,
    mean: DVector<f64>,
    m2: DMatrix<f64>,
    pending: Vec<f64>,
}

impl FeatureAccumulator {
    /// An empty accumulator for `dim`-dimensional features (2048 for FID).
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            n: 0,
            mean: DVector::zeros(dim),
            m2: DMatrix::zeros(dim, dim),
            pending: Vec::with_capacity(BLOCK_ROWS.min(4096) * dim),
        }
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of feature vectors seen.
    pub fn count(&self) -> usize {
        self.n + self.pending.len() / self.dim.max(1)
    }

    /// Adds feature vectors given row-major, `rows.len() / dim` of them.
    ///
    /// # Errors
    /// [`EvalError::Input`] when the length is not a multiple of `dim` or a value is not finite.
    pub fn push_rows(&mut self, rows: &[f32]) -> Result<()> {
        self.check_rows(rows.len(), rows.iter().all(|v| v.is_finite()))?;
        for row in rows.chunks_exact(self.dim) {
            self.pending.extend(row.iter().map(|&v| v as f64));
            if self.pending.len() >= BLOCK_ROWS * self.dim {
                self.flush();
            }
        }
        Ok(())
    }

    /// Adds feature vectors given row-major in f64.
    ///
    /// # Errors
    /// As [`FeatureAccumulator::push_rows`].
    pub fn push_rows_f64(&mut self, rows: &[f64]) -> Result<()> {
        self.check_rows(rows.len(), rows.iter().all(|v| v.is_finite()))?;
        for row in rows.chunks_exact(self.dim) {
            self.pending.extend_from_slice(row);
            if self.pending.len() >= BLOCK_ROWS * self.dim {
                self.flush();
            }
        }
        Ok(())
    }

    /// Adds a batch of features from a tensor (read back to the host).
    ///
    /// # Shapes
    /// - `features`: `[batch, dim]`
    ///
    /// # Errors
    /// [`EvalError::Input`] for another width or non-finite values.
    pub fn push(&mut self, features: Tensor<2>) -> Result<()> {
        let [_, d] = features.dims();
        if d != self.dim {
            return Err(EvalError::Input(format!("features of width {d}, accumulator expects {}", self.dim)));
        }
        let rows = features
            .try_into_vec_as::<f32>()
            .map_err(|e| EvalError::Input(format!("cannot read features back: {e:?}")))?;
        self.push_rows(&rows)
    }

    /// Adds everything another accumulator has seen (e.g. one per device).
    ///
    /// # Errors
    /// [`EvalError::Input`] when the dimensions differ.
    pub fn merge(&mut self, other: &FeatureAccumulator) -> Result<()> {
        if other.dim != self.dim {
            return Err(EvalError::Input(format!("cannot merge features of width {} into {}", other.dim, self.dim)));
        }
        self.flush();
        let mut other = other.clone();
        other.flush();
        self.combine(other.n, &other.mean, &other.m2);
        Ok(())
    }

    /// The statistics so far: mean, unbiased covariance and count.
    ///
    /// # Errors
    /// [`EvalError::Input`] with fewer than 2 vectors (no covariance).
    pub fn stats(&self) -> Result<FidStats> {
        let mut all = self.clone();
        all.flush();
        if all.n < 2 {
            return Err(EvalError::Input(format!("FID statistics need at least 2 feature vectors, got {}", all.n)));
        }
        let mut sigma = all.m2 / (all.n as f64 - 1.0);
        symmetrize(&mut sigma);
        Ok(FidStats { mu: all.mean, sigma, n: Some(all.n) })
    }

    fn check_rows(&self, len: usize, finite: bool) -> Result<()> {
        if self.dim == 0 || len % self.dim != 0 {
            return Err(EvalError::Input(format!("{len} values are not whole rows of width {}", self.dim)));
        }
        if !finite {
            return Err(EvalError::Input("feature vectors hold NaN or infinite values".into()));
        }
        Ok(())
    }

    /// Folds the buffered rows into the running statistics.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let rows = self.pending.len() / self.dim;
        // Row-major [rows, dim] is column-major [dim, rows]: columns are feature vectors.
        let mut xt = DMatrix::from_column_slice(self.dim, rows, &self.pending);
        self.pending.clear();
        let mean = xt.column_mean(); // [dim]
        for mut col in xt.column_iter_mut() {
            col -= &mean;
        }
        let mut m2 = DMatrix::zeros(self.dim, self.dim);
        m2.gemm(1.0, &xt, &xt.transpose(), 0.0); // Σ (x − m)(x − m)ᵀ, [dim, dim]
        self.combine(rows, &mean, &m2);
    }

    /// Chan et al.'s merge of a group `(nb, mean_b, m2_b)` into the running statistics.
    fn combine(&mut self, nb: usize, mean_b: &DVector<f64>, m2_b: &DMatrix<f64>) {
        if nb == 0 {
            return;
        }
        let na = self.n;
        let n = na + nb;
        let delta = mean_b - &self.mean;
        self.m2 += m2_b;
        self.m2.ger(na as f64 * nb as f64 / n as f64, &delta, &delta, 1.0);
        self.mean.axpy(nb as f64 / n as f64, &delta, 1.0);
        self.n = n;
    }
}

/// Gaussian statistics of a feature set: the inputs of the Fréchet distance.
#[derive(Debug, Clone, PartialEq)]
pub struct FidStats {
    /// Mean `[dim]`.
    pub mu: DVector<f64>,
    /// Unbiased covariance `[dim, dim]` (symmetric, positive semi-definite).
    pub sigma: DMatrix<f64>,
    /// Number of feature vectors (images) behind the statistics; `None` when unknown (a
    /// statistics file without `n`, such as the ADM reference batches).
    pub n: Option<usize>,
}

impl FidStats {
    /// Statistics from parts, validated.
    ///
    /// # Errors
    /// [`EvalError::Input`] when `sigma` is not `[dim, dim]` or a value is not finite.
    pub fn new(mu: DVector<f64>, sigma: DMatrix<f64>, n: Option<usize>) -> Result<Self> {
        let d = mu.len();
        if sigma.shape() != (d, d) {
            return Err(EvalError::Input(format!("mu has {d} entries but sigma is {:?}", sigma.shape())));
        }
        if !mu.iter().chain(sigma.iter()).all(|v| v.is_finite()) {
            return Err(EvalError::Input("FID statistics hold NaN or infinite values".into()));
        }
        Ok(Self { mu, sigma, n })
    }

    /// Statistics of a feature set given row-major (`[n, dim]` f32).
    ///
    /// # Errors
    /// As [`FeatureAccumulator::push_rows`] and [`FeatureAccumulator::stats`].
    pub fn from_rows(rows: &[f32], dim: usize) -> Result<Self> {
        let mut acc = FeatureAccumulator::new(dim);
        acc.push_rows(rows)?;
        acc.stats()
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// The Fréchet distance to `other` (see [`frechet_distance`]).
    ///
    /// # Errors
    /// As [`frechet_distance`].
    pub fn fid(&self, other: &FidStats) -> Result<f64> {
        frechet_distance(&self.mu, &self.sigma, &other.mu, &other.sigma)
    }

    /// Saves `mu` (`<f8 [dim]`), `sigma` (`<f8 [dim, dim]`) and, when known, `n` (`<i8` scalar)
    /// as an `.npz` that numpy, pytorch-fid and [`FidStats::load_npz`] read.
    ///
    /// # Errors
    /// [`EvalError::Npz`] when the file cannot be written.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let d = self.dim();
        let mu = NpyArray::new(vec![d], NpyData::F64(self.mu.as_slice().to_vec()))?;
        // nalgebra is column-major; the transpose's storage is the row-major (C order) data.
        let sigma = NpyArray::new(vec![d, d], NpyData::F64(self.sigma.transpose().as_slice().to_vec()))?;
        let n = self.n.map(|n| NpyArray::scalar_i64(n as i64));
        let mut arrays = vec![("mu", &mu), ("sigma", &sigma)];
        if let Some(n) = &n {
            arrays.push(("n", n));
        }
        write_npz(path, &arrays)
    }

    /// Loads statistics from an `.npz` holding `mu` and `sigma` (any float type; `n`
    /// optional): files of [`FidStats::save_npz`], pytorch-fid, or the ADM reference batches
    /// (whose `arr_0` images are not read).
    ///
    /// # Errors
    /// [`EvalError::Npz`] when the file or an array is missing or unreadable,
    /// [`EvalError::Input`] when the shapes do not fit together.
    pub fn load_npz(path: &Path) -> Result<Self> {
        let mut reader = NpzReader::open(path)?;
        let mu = reader.read("mu")?;
        let sigma = reader.read("sigma")?;
        let n = if reader.contains("n") {
            let n = reader.read("n")?.to_f64();
            match n.as_slice() {
                [v] if *v >= 0.0 => Some(*v as usize),
                _ => return Err(EvalError::Npz { path: path.to_path_buf(), reason: format!("`n` is not a count: {n:?}") }),
            }
        } else {
            None
        };
        let d = mu.data.len();
        if mu.shape.len() != 1 || sigma.shape != [d, d] {
            return Err(EvalError::Npz {
                path: path.to_path_buf(),
                reason: format!("mu {:?} and sigma {:?} do not fit ([d] and [d, d])", mu.shape, sigma.shape),
            });
        }
        Self::new(DVector::from_vec(mu.to_f64()), DMatrix::from_row_slice(d, d, &sigma.to_f64()), n)
    }
}

/// `(S + Sᵀ) / 2`, in place.
fn symmetrize(m: &mut DMatrix<f64>) {
    let t = m.transpose();
    *m += t;
    *m *= 0.5;
}

/// Eigenvalues below `-NEGATIVE_TOLERANCE · λmax` mean the matrix is not a covariance.
const NEGATIVE_TOLERANCE: f64 = 1e-6;

/// Symmetric eigen-decomposition with a clear error instead of a panic.
fn eigen(m: DMatrix<f64>, what: &str) -> Result<SymmetricEigen<f64, nalgebra::Dyn>> {
    let d = m.nrows();
    SymmetricEigen::try_new(m, f64::EPSILON, 1000 * d.max(1))
        .ok_or_else(|| EvalError::Numerical(format!("the eigen-decomposition of {what} did not converge")))
}

fn check_psd(eigenvalues: &DVector<f64>, what: &str) -> Result<()> {
    let max = eigenvalues.iter().fold(0.0f64, |m, &l| m.max(l.abs()));
    let min = eigenvalues.min();
    if min < -NEGATIVE_TOLERANCE * max {
        return Err(EvalError::Numerical(format!(
            "{what} is not positive semi-definite (eigenvalue {min:e}, largest {max:e})"
        )));
    }
    Ok(())
}

/// The Fréchet distance between `N(mu1, sigma1)` and `N(mu2, sigma2)` in f64.
///
/// Eigenvalues that rounding made slightly negative are clamped at 0, and so is the result.
/// Cost: one eigen-decomposition with vectors, two matrix products and one eigenvalue-only
/// decomposition of `dim × dim` matrices (2048: about 11 s on one core).
///
/// # Errors
/// [`EvalError::Input`] for mismatched or non-finite inputs, [`EvalError::Numerical`] when a
/// covariance has clearly negative eigenvalues or a decomposition fails.
pub fn frechet_distance(
    mu1: &DVector<f64>,
    sigma1: &DMatrix<f64>,
    mu2: &DVector<f64>,
    sigma2: &DMatrix<f64>,
) -> Result<f64> {
    let d = mu1.len();
    if mu2.len() != d || sigma1.shape() != (d, d) || sigma2.shape() != (d, d) || d == 0 {
        return Err(EvalError::Input(format!(
            "FID statistics do not match: mu {} vs {}, sigma {:?} vs {:?}",
            d,
            mu2.len(),
            sigma1.shape(),
            sigma2.shape()
        )));
    }
    if !mu1.iter().chain(mu2.iter()).chain(sigma1.iter()).chain(sigma2.iter()).all(|v| v.is_finite()) {
        return Err(EvalError::Input("FID statistics hold NaN or infinite values".into()));
    }
    let (mut sa, mut sb) = (sigma1.clone(), sigma2.clone());
    symmetrize(&mut sa);
    symmetrize(&mut sb);

    // Σa = V diag(λ) Vᵀ  ->  R = V diag(√λ), so R Rᵀ = Σa and Rᵀ Σb R ~ Σa^½ Σb Σa^½.
    let ea = eigen(sa.clone(), "sigma1")?;
    check_psd(&ea.eigenvalues, "sigma1")?;
    let mut r = ea.eigenvectors;
    for (mut col, &l) in r.column_iter_mut().zip(ea.eigenvalues.iter()) {
        col *= l.max(0.0).sqrt();
    }
    let mut m = r.transpose() * &sb * &r; // [d, d]
    eprintln!("DEBUG r finite {} |RRt - Sa| {:e} M finite {} trM {} trSaSb {}", r.iter().all(|v| v.is_finite()), (&r * r.transpose() - &sa).amax(), m.iter().all(|v| v.is_finite()), m.trace(), (&sa * &sb).trace());
    symmetrize(&mut m);
    let em = m.symmetric_eigenvalues();
    { let e2 = SymmetricEigen::try_new(m.clone(), f64::EPSILON, 1000 * d).map(|e| e.eigenvalues); eprintln!("DEBUG em finite {} sum {} | vec path {:?}", em.iter().all(|v| v.is_finite()), em.sum(), e2.map(|e| (e.iter().all(|v| v.is_finite()), e.sum()))); 
      let zr = (0..d).filter(|&i| m.row(i).iter().all(|&v| v == 0.0)).count(); let sbz = (0..d).filter(|&i| sb.row(i).iter().all(|&v| v == 0.0)).count(); let saz = (0..d).filter(|&i| sa.row(i).iter().all(|&v| v == 0.0)).count(); eprintln!("DEBUG zero rows M {zr} Sb {sbz} Sa {saz} amax {:e} camax {:e}", m.amax(), m.camax()); }
    check_psd(&em, "sigma1^1/2 sigma2 sigma1^1/2 (is sigma2 a covariance?)")?;
    let tr_covmean: f64 = em.iter().map(|&l| l.max(0.0).sqrt()).sum();

    let diff = mu1 - mu2;
    let fid = diff.dot(&diff) + sa.trace() + sb.trace() - 2.0 * tr_covmean;
    eprintln!("DEBUG dmu {} tra {} trb {} trcov {} ea [{:e}, {:e}] em [{:e}, {:e}]", diff.dot(&diff), sa.trace(), sb.trace(), tr_covmean, ea.eigenvalues.min(), ea.eigenvalues.max(), em.min(), em.max());
    Ok(fid.max(0.0))
}

//! The fused nearest-codebook CubeCL kernel in GEMM form: `argmin_j (||c_j||² - 2 z·c_j)` without
//! an `N x K` matrix, then an exact re-check of the best two candidates.
//!
//! # Work split
//! One cube owns a block of `BM = units * rows_per_unit` latent rows and walks the whole codebook
//! in tiles of `BN = codes_per_tile` codes. Unit `u` owns the rows `row0 + u + i * units`
//! (`i < rows_per_unit`) and keeps them in registers; **every unit reads the same code at the
//! same time**. The code tile lives in shared memory as `[BN][depth / 4]` four-column vectors
//! (`vec4`), indexed by compile-time constants only, so a GPU serves each read as one broadcast
//! (no bank conflicts) and one read feeds `4 * rows_per_unit` FMAs. Registers are compile-time
//! lists of scalar variables (`Sequence`), not arrays.
//!
//! * `D <= 16` (TiTok widths 12 and 16; `depth = D` rounded up to 4): a unit loads its rows
//!   once, then for each code of a tile computes the dot products and folds the score into its
//!   running minima.
//! * Wider rows stream `depth` columns per chunk; the unit keeps `rows x BN` partial dots in
//!   registers across the chunks of a tile (the usual GEMM K-loop) and scores after the last.
//!
//! Why `vec4` and many rows per unit: lavapipe (CI's software Vulkan) turns every memory
//! instruction into a loop over its SIMD lanes, so the number of loads per FMA decides its speed.
//! Measured at `N = 2048`, `K = 1024`, `D = 64`: scalar shared reads with 2 rows per unit took
//! 690 ms, `vec4` reads 107 ms, `vec4` with 4 rows and 8-column chunks 54 ms (the tile sweep is in
//! the book's kernel chapter).

//! # Scores and the exact re-check
//! Per code the kernel reads `bias_j` and `scale_j` from [`row_norms_kernel`], run over the
//! codebook at every call: plain mode `||c||²` and `1`, l2 mode `||ĉ||²` and
//! `1 / max(||c||, 1e-12)`. The score of row `z` (scaled by its own `1 / max(||z||, 1e-12)` in
//! l2 mode, `ẑ`) is
//! `bias_j - 2 scale_j (ẑ·c_j)`: the squared distance minus the row's constant `||ẑ||²`. Each
//! unit keeps the best two `(score, code)` per row; padding codes past `K` score `f32::MAX` and
//! never enter. After the last tile the unit recomputes both candidates' distances directly,
//! `Σ (ẑ - ĉ)²` in f32, and returns the nearer (the lower index on equal distances). The direct
//! sum has no cancellation, so the returned distance is accurate to a few ulps of itself; the
//! re-check also repairs the expanded form's error (`~1e-7 (||z||² + ||c||²)`) whenever the
//! true winner is among the two best scores (test `large_magnitudes_keep_small_distances_exact`).
//!
//! # Ties
//! Every unit visits the codes in increasing order and replaces a candidate only on a strict
//! `<`, so among equal scores the lower index is kept; the re-check compares
//! `(distance, index)` lexicographically.
//!
//! # Why per-invocation work stays bounded
//! Only three loops run over runtime extents: codebook tiles, the depth chunks of each tile, and
//! the re-check's `2 * rows_per_unit * D` columns; everything else is unrolled at compile time
//! ([`TileConfig::loop_iterations`]). Mesa's lavapipe silently ends every loop of an invocation
//! after 65,535 iterations in total (`LP_MAX_TGSI_LOOP_ITERATIONS`, `../shared/BURN-NOTES.md` §2);
//! the tile table keeps the count under [`crate::tiles::LOOP_BUDGET`].

use burn_cubecl::cubecl;
use cubecl::prelude::*;

pub(crate) use crate::tiles::TileConfig;

/// Candidate slot that holds no code yet.
const NO_CODE: u32 = u32::MAX;

/// Squared norm and scale of every row of `x: [R, D]`, read as f32.
///
/// * plain mode: `sq_norm = Σ x²`, `scale = 1`
/// * l2 mode: `scale = 1 / max(||x||, 1e-12)` (as `F.normalize`), `sq_norm = Σ x² · scale²`,
///   the squared norm of the normalised row (1, or 0 for a zero row)
///
/// One unit per row; launch `ceil(R / CUBE_DIM_X)` cubes (linearised over `CUBE_POS_X +
/// CUBE_POS_Y * CUBE_COUNT_X`). Runs `D` loop iterations per unit.
#[cube(launch_unchecked)]
pub(crate) fn row_norms_kernel<F: Float>(
    x: &Tensor<F>,
    sq_norm: &mut Tensor<f32>,
    scale: &mut Tensor<f32>,
    #[comptime] l2_normalize: bool,
    #[define(F)] _dtype: ElemType,
) {
    let rows = x.shape(0);
    let d = x.shape(1);
    let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    if row < rows {
        let mut sum = 0.0f32;
        for col in 0..d {
            let v = f32::cast_from(x[row * x.stride(0) + col * x.stride(1)]);
            sum += v * v;
        }
        if l2_normalize {
            let mut norm = sum.sqrt();
            if norm < 1e-12f32 {
                norm = 1e-12f32;
            }
            let inv = 1.0f32 / norm;
            sq_norm[row] = sum * inv * inv;
            scale[row] = inv;
        } else {
            sq_norm[row] = sum;
            scale[row] = 1.0f32;
        }
    }
}

/// Nearest codebook row and its squared distance for every latent row.
///
/// * `z`: latents `[N, D]`, f32/f16/bf16 (accumulated in f32), read through its strides.
/// * `codebook`: `[K, D]`, same dtype, `K >= 1`.
/// * `code_sq_norm`, `code_scale`: `[K]` f32 from [`row_norms_kernel`] on the codebook.
/// * `z_scale`: `[N]` f32, the rows' `scale` from [`row_norms_kernel`] (read in l2 mode only).
/// * `out_index`: `[N]`, index in `0..K` (lowest index on ties).
/// * `out_distance`: `[N]` f32, the squared distance to that code (of the normalised rows in l2
///   mode).
///
/// Launch with `CubeDim::new_1d(units)` and at least `ceil(N / BM)` cubes (linearised over
/// `CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X`); cubes past the last row block write nothing. Every
/// global access is guarded, so an unchecked launch is sound.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn nearest_code_kernel<F: Float, I: Int>(
    z: &Tensor<F>,
    codebook: &Tensor<F>,
    code_sq_norm: &Tensor<f32>,
    code_scale: &Tensor<f32>,
    z_scale: &Tensor<f32>,
    out_index: &mut Tensor<I>,
    out_distance: &mut Tensor<f32>,
    #[comptime] tile: TileConfig,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let n = z.shape(0);
    let d = z.shape(1);
    let k = codebook.shape(0);

    let units = tile.units;
    let tm = tile.rows_per_unit;
    let bn = tile.codes_per_tile;
    let depth = tile.depth;
    let bm = comptime!(tile.block_rows());
    let code_loads = comptime!((tile.codes_per_tile * tile.depth / 4).div_ceil(tile.units));
    let norm_loads = comptime!(tile.codes_per_tile.div_ceil(tile.units));

    let unit = UNIT_POS_X as usize;
    let cube = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    let row0 = cube * bm;

    // Code tile `[BN][depth / 4]` of vec4, per-code bias `||c||²` and `2 · scale`.
    let quads = comptime!(tile.depth / 4);
    let mut cs = Shared::<[Vector<f32, Const<4>>]>::new_slice(comptime!(tile.codes_per_tile * tile.depth / 4));
    let mut bias_s = Shared::<[f32]>::new_slice(bn);
    let mut scale_s = Shared::<[f32]>::new_slice(bn);

    // Row scale: `1 / max(||z||, 1e-12)` in l2 mode, 1 otherwise.
    let mut row_scale = filled::<f32>(tm, 1.0f32);
    if tile.l2_normalize {
        #[unroll]
        for i in 0..tm {
            let row = row0 + unit + i * units;
            let scale = z_scale[clamp_max(row, n - 1)];
            *row_scale.index_mut(i) = scale;
        }
    }

    // The best two (score, code) per row.
    let max_score = f32::max_value();
    let mut best1 = filled::<f32>(tm, max_score);
    let mut best2 = filled::<f32>(tm, max_score);
    let no_code = NO_CODE;
    let mut code1 = filled::<u32>(tm, no_code);
    let mut code2 = filled::<u32>(tm, no_code);

    // The unit's rows, one chunk of `depth` columns: `zr[i * depth + kk]`, scaled.
    let mut zr = filled::<f32>(comptime!(tile.rows_per_unit * tile.depth), 0.0f32);
    if tile.resident_rows {
        load_rows::<F>(z, &mut zr, row0, unit, n, 0, d, &row_scale, units, tm, depth);
    }

    let tiles = k.div_ceil(bn);
    let chunks = d.div_ceil(depth);
    for t in 0..tiles {
        let code0 = t * bn;
        // Partial dots `acc[i * BN + j]` of the streamed case, kept across the chunks.
        let mut acc = filled::<f32>(
            comptime!(if tile.resident_rows { 0 } else { tile.rows_per_unit * tile.codes_per_tile }),
            0.0f32,
        );

        for ch in 0..chunks {
            let col0 = ch * depth;
            // Nobody may still read the previous tile or chunk when it is overwritten.
            sync_cube();
            #[unroll]
            for l in 0..code_loads {
                let e = unit + l * units;
                if e < bn * quads {
                    let code = code0 + e / quads;
                    let col = col0 + (e % quads) * 4;
                    let mut quad = Vector::<f32, Const<4>>::empty();
                    #[unroll]
                    for q in 0..4 {
                        let mut value = 0.0f32;
                        if code < k && col + q < d {
                            value =
                                f32::cast_from(codebook[code * codebook.stride(0) + (col + q) * codebook.stride(1)]);
                        }
                        quad.insert(q, value);
                    }
                    cs[e] = quad;
                }
            }
            if ch == 0 {
                #[unroll]
                for l in 0..norm_loads {
                    let j = unit + l * units;
                    if j < bn {
                        let code = code0 + j;
                        // Padding codes: a score no real code can lose to.
                        let mut bias = f32::max_value();
                        let mut scale = 0.0f32;
                        if code < k {
                            bias = code_sq_norm[code];
                            scale = 2.0f32 * code_scale[code];
                        }
                        bias_s[j] = bias;
                        scale_s[j] = scale;
                    }
                }
            }
            if !tile.resident_rows {
                load_rows::<F>(z, &mut zr, row0, unit, n, col0, d, &row_scale, units, tm, depth);
            }
            sync_cube();

            if tile.resident_rows {
                // One chunk holds the rows: dot, score and fold code by code.
                #[unroll]
                for j in 0..bn {
                    let mut dot = filled::<f32>(tm, 0.0f32);
                    add_code_dots(&cs, &zr, &mut dot, j, quads, depth, tm, 1usize, 0usize);
                    let code = (code0 + j) as u32;
                    #[unroll]
                    for i in 0..tm {
                        let score = bias_s[j] - scale_s[j] * *dot.index(i);
                        fold_candidate(score, code, &mut best1, &mut code1, &mut best2, &mut code2, i);
                    }
                }
            } else {
                #[unroll]
                for j in 0..bn {
                    add_code_dots(&cs, &zr, &mut acc, j, quads, depth, tm, bn, j);
                }
            }
        }

        if !tile.resident_rows {
            #[unroll]
            for j in 0..bn {
                let code = (code0 + j) as u32;
                #[unroll]
                for i in 0..tm {
                    let score = bias_s[j] - scale_s[j] * *acc.index(i * bn + j);
                    fold_candidate(score, code, &mut best1, &mut code1, &mut best2, &mut code2, i);
                }
            }
        }
    }

    // Exact re-check of the two candidates; the nearer wins, the lower index on equal distance.
    #[unroll]
    for i in 0..tm {
        let row = row0 + unit + i * units;
        let first = *code1.index(i);
        let second = *code2.index(i);
        let scale = *row_scale.index(i);
        if row < n {
            // Only non-finite inputs leave a row without a candidate; code 0 keeps it in range.
            let mut best = first;
            if best == NO_CODE {
                best = 0u32;
            }
            let mut best_distance = exact_distance::<F>(z, codebook, code_scale, row, best as usize, d, scale);
            if second != NO_CODE {
                let distance = exact_distance::<F>(z, codebook, code_scale, row, second as usize, d, scale);
                if distance < best_distance || (distance == best_distance && second < best) {
                    best = second;
                    best_distance = distance;
                }
            }
            out_index[row] = I::cast_from(best);
            out_distance[row] = best_distance;
        }
    }
}

/// `len` registers holding `value`: a compile-time list of scalar variables. Unlike an unrolled
/// `Array`, it hands the shader compiler plain values to allocate (lavapipe compiles the kernel
/// several times faster).
#[cube]
#[allow(unused_mut)] // `let mut` makes each entry a mutable kernel variable, not a constant
fn filled<T: CubePrimitive>(#[comptime] len: usize, value: T) -> Sequence<T> {
    let mut values = Sequence::<T>::new();
    #[unroll]
    for _ in 0..len {
        let mut entry = value;
        values.push(entry);
    }
    values
}

/// Adds the dot products of code `j` of the shared tile (`[BN][quads]` vec4) with the unit's
/// `rows` rows of one chunk (`zr[i * depth + kk]`) into `sums[i * stride + offset]`: every `vec4`
/// read from shared memory feeds `4 * rows` FMAs.
#[cube]
#[allow(clippy::too_many_arguments)]
fn add_code_dots(
    cs: &Shared<[Vector<f32, Const<4>>]>,
    zr: &Sequence<f32>,
    sums: &mut Sequence<f32>,
    #[comptime] j: usize,
    #[comptime] quads: usize,
    #[comptime] depth: usize,
    #[comptime] rows: usize,
    #[comptime] stride: usize,
    #[comptime] offset: usize,
) {
    #[unroll]
    for kq in 0..quads {
        let quad = cs[j * quads + kq];
        #[unroll]
        for q in 0..4 {
            let c = quad.extract(q);
            #[unroll]
            for i in 0..rows {
                *sums.index_mut(i * stride + offset) += *zr.index(i * depth + kq * 4 + q) * c;
            }
        }
    }
}

/// Loads columns `col0..col0 + depth` (clipped to `cols`) of the unit's rows
/// `row0 + unit + i * units` (clipped to `rows`) into `zr[i * depth + kk]`, as f32 times the
/// row's scale; missing entries are 0, which adds nothing to any dot product.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_rows<F: Float>(
    z: &Tensor<F>,
    zr: &mut Sequence<f32>,
    row0: usize,
    unit: usize,
    rows: usize,
    col0: usize,
    cols: usize,
    row_scale: &Sequence<f32>,
    #[comptime] units: usize,
    #[comptime] tm: usize,
    #[comptime] depth: usize,
) {
    #[unroll]
    for i in 0..tm {
        let row = row0 + unit + i * units;
        #[unroll]
        for kk in 0..depth {
            let col = col0 + kk;
            let mut value = 0.0f32;
            if row < rows && col < cols {
                value = f32::cast_from(z[row * z.stride(0) + col * z.stride(1)]) * *row_scale.index(i);
            }
            *zr.index_mut(i * depth + kk) = value;
        }
    }
}

/// Folds `(score, code)` into row `i`'s best two candidates; codes arrive in increasing order,
/// so the strict `<` keeps the lower index among equal scores.
#[cube]
fn fold_candidate(
    score: f32,
    code: u32,
    best1: &mut Sequence<f32>,
    code1: &mut Sequence<u32>,
    best2: &mut Sequence<f32>,
    code2: &mut Sequence<u32>,
    #[comptime] i: usize,
) {
    let first = score < *best1.index(i);
    let second = score < *best2.index(i);
    *best2.index_mut(i) = select(first, *best1.index(i), select(second, score, *best2.index(i)));
    *code2.index_mut(i) = select(first, *code1.index(i), select(second, code, *code2.index(i)));
    *best1.index_mut(i) = select(first, score, *best1.index(i));
    *code1.index_mut(i) = select(first, code, *code1.index(i));
}

/// `Σ (z_row · z_scale - c_code · scale_code)²` over the `d` columns, in f32 (plain mode: both
/// scales are 1).
#[cube]
#[allow(clippy::too_many_arguments)]
fn exact_distance<F: Float>(
    z: &Tensor<F>,
    codebook: &Tensor<F>,
    code_scale: &Tensor<f32>,
    row: usize,
    code: usize,
    d: usize,
    z_scale: f32,
) -> f32 {
    let c_scale = code_scale[code];
    let mut sum = 0.0f32;
    for col in 0..d {
        let zv = f32::cast_from(z[row * z.stride(0) + col * z.stride(1)]) * z_scale;
        let cv = f32::cast_from(codebook[code * codebook.stride(0) + col * codebook.stride(1)]) * c_scale;
        let diff = zv - cv;
        sum += diff * diff;
    }
    sum
}

//! The fused nearest-codebook CubeCL kernel: `argmin_j ||z_i - c_j||²` without an `N x K` matrix.
//!
//! # Work split
//! One cube owns a block of `BM = rows_per_unit * row_lanes` latent rows and walks the whole
//! codebook in tiles of `BN = codes_per_unit * code_lanes` codes. The cube's units form a
//! `code_lanes x row_lanes` grid (`UNIT_POS_X`, `UNIT_POS_Y`); each unit owns a register
//! micro-tile of `rows_per_unit x codes_per_unit` (row, code) pairs, strided by the lane counts
//! so that neighbouring units read neighbouring shared-memory words:
//!
//! ```text
//! rows  of unit (x, y): row0 + y + i * row_lanes,    i < rows_per_unit
//! codes of unit (x, y): code0 + x + j * code_lanes,  j < codes_per_unit
//! ```
//!
//! For every codebook tile the feature dimension `D` is streamed through shared memory in chunks
//! of `depth` columns (`zs: [depth][BM]`, `cs: [depth][BN]`, padded by one word against bank
//! conflicts); each unit accumulates its pairs in registers, then folds them into a running
//! `(distance, index)` minimum per row. When `D <= 16` (the TiTok widths 12 and 16;
//! `depth = D`) the latent block is loaded once and each unit keeps its rows in registers, so
//! only the codebook streams. After the last tile the `code_lanes` partial minima of a row are merged by a tree
//! reduction in shared memory.
//!
//! # Why per-invocation work stays bounded
//! Only two loops run over runtime extents: tiles (`ceil(K / BN)`) and depth chunks
//! (`ceil(D / depth)`); everything inside them is unrolled at compile time. A unit therefore
//! runs `ceil(K / BN) * ceil(D / depth)` loop iterations: 16,384 at K = 65,536, D = 512 with
//! `depth` 32 (32,768 where shared memory limits `depth` to 16). This matters on Mesa's
//! lavapipe, whose shader compiler silently ends every loop of an invocation after 65,535
//! iterations in total (`LP_MAX_TGSI_LOOP_ITERATIONS`, see `BURN-NOTES.md` §2).
//!
//! # Exactness
//! * Plain mode accumulates `(z - c)²` directly in f32: no `||z||² + ||c||² - 2 z·c`
//!   cancellation, so distances are accurate even for large magnitudes.
//! * l2 mode normalises on the fly: it accumulates `z·c`, `||z||²` and `||c||²` and returns
//!   `||ẑ||² + ||ĉ||² - 2 ẑ·ĉ` with `ẑ = z / max(||z||, 1e-12)` (like `F.normalize`), clamped at 0.
//! * Ties go to the lowest index: a unit visits its codes in increasing order with a strict `<`,
//!   and the cross-unit merge compares `(distance, index)` lexicographically, which is
//!   associative, so the tree order cannot change the winner.

use burn_cubecl::cubecl;
use cubecl::prelude::*;

/// Index of a unit that has not seen any code yet (it owns no code of a short codebook).
const NO_CODE: u32 = u32::MAX;

/// Compile-time tile shape of [`nearest_code_kernel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TileConfig {
    /// Units along the codes of a tile (`CUBE_DIM_X`); a power of two.
    pub code_lanes: usize,
    /// Units along the rows of a block (`CUBE_DIM_Y`).
    pub row_lanes: usize,
    /// Codes per unit and tile.
    pub codes_per_unit: usize,
    /// Rows per unit.
    pub rows_per_unit: usize,
    /// Feature columns per shared-memory chunk.
    pub depth: usize,
    /// `D == depth`: the latent block is loaded once and each unit keeps its rows in registers.
    pub resident_rows: bool,
    /// Normalise latents and codes on the fly (cosine codes).
    pub l2_normalize: bool,
}

impl TileConfig {
    /// Latent rows per cube (`BM`).
    pub fn block_rows(&self) -> usize {
        self.rows_per_unit * self.row_lanes
    }

    /// Codes per tile (`BN`).
    pub fn block_codes(&self) -> usize {
        self.codes_per_unit * self.code_lanes
    }

    /// Units per cube.
    pub fn units(&self) -> usize {
        self.code_lanes * self.row_lanes
    }

    /// Shared memory the kernel declares, in bytes (f32 tiles + u32 reduction indices).
    pub fn shared_bytes(&self) -> usize {
        4 * (self.z_tile_len() + self.c_tile_len() + self.block_rows() * self.code_lanes)
    }

    /// Words of the latent tile; it doubles as the distance buffer of the final reduction.
    fn z_tile_len(&self) -> usize {
        (self.depth * (self.block_rows() + 1)).max(self.block_rows() * self.code_lanes)
    }

    /// Words of the codebook tile.
    fn c_tile_len(&self) -> usize {
        self.depth * (self.block_codes() + 1)
    }
}

/// Nearest codebook row and its squared distance for every latent row.
///
/// * `z`: latents `[N, D]`, f32/f16/bf16 (accumulated in f32); read through its strides, but
///   contiguous rows give coalesced loads (the launcher makes them so).
/// * `codebook`: `[K, D]`, same dtype, `K >= 1`.
/// * `out_index`: `[N]`, index in `0..K` (lowest index on ties).
/// * `out_distance`: `[N]` f32, the minimum squared distance.
///
/// Launch with `CubeDim::new_2d(code_lanes, row_lanes)` and at least `ceil(N / BM)` cubes
/// (linearised over `CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X`); cubes past the last row block
/// write nothing. Every global access is guarded, so an unchecked launch is sound.
#[cube(launch_unchecked)]
pub(crate) fn nearest_code_kernel<F: Float, I: Int>(
    z: &Tensor<F>,
    codebook: &Tensor<F>,
    out_index: &mut Tensor<I>,
    out_distance: &mut Tensor<f32>,
    #[comptime] tile: TileConfig,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let n = z.shape(0);
    let d = z.shape(1);
    let k = codebook.shape(0);

    let code_lanes = tile.code_lanes;
    let row_lanes = tile.row_lanes;
    let tm = tile.rows_per_unit;
    let tn = tile.codes_per_unit;
    let depth = tile.depth;
    let bm = comptime!(tile.block_rows());
    let bn = comptime!(tile.block_codes());
    let units = comptime!(tile.units());
    let zs_stride = comptime!(tile.block_rows() + 1);
    let cs_stride = comptime!(tile.block_codes() + 1);
    let z_loads = comptime!((tile.depth * tile.block_rows()).div_ceil(tile.units()));
    let c_loads = comptime!((tile.depth * tile.block_codes()).div_ceil(tile.units()));

    let ux = UNIT_POS_X as usize;
    let uy = UNIT_POS_Y as usize;
    let unit = uy * code_lanes + ux;
    let cube = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    let row0 = cube * bm;

    let mut zs = Shared::<[f32]>::new_slice(comptime!(tile.z_tile_len()));
    let mut cs = Shared::<[f32]>::new_slice(comptime!(tile.c_tile_len()));
    let mut red_index = Shared::<[u32]>::new_slice(comptime!(tile.block_rows() * tile.code_lanes));

    // Running minimum of this unit's rows over the codes it has visited.
    let mut best_distance = Array::<f32>::new(tm);
    let mut best_index = Array::<u32>::new(tm);
    #[unroll]
    for i in 0..tm {
        best_distance[i] = f32::max_value();
        best_index[i] = NO_CODE;
    }

    // Resident rows (D <= 16, depth = D): the unit's rows live in registers for the whole kernel.
    let mut z_regs = Array::<f32>::new(comptime!(if tile.resident_rows {
        tile.rows_per_unit * tile.depth
    } else {
        1
    }));
    if tile.resident_rows {
        load_tile::<F>(z, &mut zs, row0, n, 0, d, unit, units, z_loads, bm, zs_stride, depth);
        sync_cube();
        #[unroll]
        for kk in 0..depth {
            #[unroll]
            for i in 0..tm {
                z_regs[i * depth + kk] = zs[kk * zs_stride + uy + i * row_lanes];
            }
        }
    }

    let tiles = (k + bn - 1) / bn;
    let chunks = (d + depth - 1) / depth;
    for t in 0..tiles {
        let code0 = t * bn;
        // Per pair: Σ(z - c)² (plain) or Σ z·c (l2); per row / code: Σ z², Σ c² (l2 only).
        let mut acc = Array::<f32>::new(comptime!(tile.rows_per_unit * tile.codes_per_unit));
        let mut z_sq = Array::<f32>::new(tm);
        let mut c_sq = Array::<f32>::new(tn);
        #[unroll]
        for p in 0..tm * tn {
            acc[p] = 0.0;
        }
        #[unroll]
        for i in 0..tm {
            z_sq[i] = 0.0;
        }
        #[unroll]
        for j in 0..tn {
            c_sq[j] = 0.0;
        }

        for ch in 0..chunks {
            let col0 = ch * depth;
            // Nobody may still read the previous chunk when it is overwritten.
            sync_cube();
            if !tile.resident_rows {
                load_tile::<F>(z, &mut zs, row0, n, col0, d, unit, units, z_loads, bm, zs_stride, depth);
            }
            load_tile::<F>(
                codebook, &mut cs, code0, k, col0, d, unit, units, c_loads, bn, cs_stride, depth,
            );
            sync_cube();

            #[unroll]
            for kk in 0..depth {
                let mut zv = Array::<f32>::new(tm);
                #[unroll]
                for i in 0..tm {
                    if tile.resident_rows {
                        zv[i] = z_regs[i * depth + kk];
                    } else {
                        zv[i] = zs[kk * zs_stride + uy + i * row_lanes];
                    }
                }
                #[unroll]
                for j in 0..tn {
                    let cv = cs[kk * cs_stride + ux + j * code_lanes];
                    #[unroll]
                    for i in 0..tm {
                        if tile.l2_normalize {
                            acc[i * tn + j] += zv[i] * cv;
                        } else {
                            let diff = zv[i] - cv;
                            acc[i * tn + j] += diff * diff;
                        }
                    }
                    if tile.l2_normalize {
                        c_sq[j] += cv * cv;
                    }
                }
                if tile.l2_normalize {
                    #[unroll]
                    for i in 0..tm {
                        z_sq[i] += zv[i] * zv[i];
                    }
                }
            }
        }

        // Fold this tile into the running minima; codes rise with j, so `<` keeps the lowest.
        #[unroll]
        for j in 0..tn {
            let code = code0 + ux + j * code_lanes;
            if code < k {
                #[unroll]
                for i in 0..tm {
                    let mut dist = acc[i * tn + j];
                    if tile.l2_normalize {
                        dist = normalized_distance(acc[i * tn + j], z_sq[i], c_sq[j]);
                    }
                    if dist < best_distance[i] || best_index[i] == NO_CODE {
                        best_distance[i] = dist;
                        best_index[i] = code as u32;
                    }
                }
            }
        }
    }

    // Merge the `code_lanes` partial minima of each row: slot (row, lane) in shared memory.
    sync_cube();
    #[unroll]
    for i in 0..tm {
        let slot = (uy + i * row_lanes) * code_lanes + ux;
        zs[slot] = best_distance[i];
        red_index[slot] = best_index[i];
    }
    sync_cube();
    #[unroll]
    for level in 0..comptime!(tile.code_lanes.trailing_zeros() as usize) {
        let stride = code_lanes >> (level + 1);
        if ux < stride {
            #[unroll]
            for i in 0..tm {
                let slot = (uy + i * row_lanes) * code_lanes + ux;
                let other = slot + stride;
                if is_better(zs[other], red_index[other], zs[slot], red_index[slot]) {
                    zs[slot] = zs[other];
                    red_index[slot] = red_index[other];
                }
            }
        }
        sync_cube();
    }

    if ux == 0 {
        #[unroll]
        for i in 0..tm {
            let local = uy + i * row_lanes;
            let row = row0 + local;
            if row < n {
                out_index[row] = I::cast_from(red_index[local * code_lanes]);
                out_distance[row] = zs[local * code_lanes];
            }
        }
    }
}

/// Loads rows `first..first + block` (clipped to `rows`), columns `col0..col0 + depth`
/// (clipped to `cols`) of a `[rows, cols]` tensor into `tile[col][row]` (row stride `stride`),
/// as f32; missing entries are 0, which adds nothing to any distance or norm.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_tile<F: Float>(
    source: &Tensor<F>,
    tile: &mut Shared<[f32]>,
    first: usize,
    rows: usize,
    col0: usize,
    cols: usize,
    unit: usize,
    #[comptime] units: usize,
    #[comptime] loads: usize,
    #[comptime] block: usize,
    #[comptime] stride: usize,
    #[comptime] depth: usize,
) {
    #[unroll]
    for l in 0..loads {
        let e = unit + l * units;
        if e < block * depth {
            let r = e / depth;
            let kk = e % depth;
            let row = first + r;
            let col = col0 + kk;
            let mut value = 0.0f32;
            if row < rows && col < cols {
                value = f32::cast_from(source[row * source.stride(0) + col * source.stride(1)]);
            }
            tile[kk * stride + r] = value;
        }
    }
}

/// `||ẑ - ĉ||²` from `z·c`, `||z||²`, `||c||²`, with `x̂ = x / max(||x||, 1e-12)`; `>= 0`.
#[cube]
fn normalized_distance(dot: f32, z_sq: f32, c_sq: f32) -> f32 {
    let mut z_norm = z_sq.sqrt();
    if z_norm < 1e-12f32 {
        z_norm = 1e-12f32;
    }
    let mut c_norm = c_sq.sqrt();
    if c_norm < 1e-12f32 {
        c_norm = 1e-12f32;
    }
    let a = 1.0f32 / z_norm;
    let b = 1.0f32 / c_norm;
    let mut dist = z_sq * a * a + c_sq * b * b - 2.0f32 * dot * a * b;
    if dist < 0.0f32 {
        dist = 0.0f32;
    }
    dist
}

/// Whether candidate `(d, i)` beats the incumbent `(best_d, best_i)`: any code beats none, then
/// smaller distance, then lower index.
#[cube]
fn is_better(d: f32, i: u32, best_d: f32, best_i: u32) -> bool {
    i != NO_CODE && (best_i == NO_CODE || d < best_d || (d == best_d && i < best_i))
}

//! Tile shapes of the fused nearest-code kernel: a small table by `(D, K)`, fitted to the
//! device's limits, its parallelism and lavapipe's per-invocation loop budget.
//!
//! | width `D` | rows per unit | codes per tile | depth (chunk) | units | latent rows per cube |
//! |---|---|---|---|---|---|
//! | `<= 16` (TiTok: 12, 16) | 8 | 32 (fewer for `K < 32`) | `D` rounded up to 4 (one chunk: rows stay in registers) | 64 | 512 |
//! | `> 16` | 4 | 32 | 8 (streamed; deeper past the loop budget) | 64 | 256 |
//!
//! Why these numbers: every unit of a cube reads the same code at the same time, so one
//! shared-memory broadcast of four columns (a `vec4`) feeds `4 x rows per unit` FMAs; the unit's
//! own rows sit in registers. Narrow rows fit whole (`8 x 16` floats); wide rows stream `depth`
//! columns at a time and keep `rows x codes` partial dots (`4 x 32`) in registers across the
//! chunks. Both keep a unit at about 180 live 32-bit registers, within NVIDIA's 255 (chunks
//! deepened for lavapipe's loop budget, at `K x D` in the tens of millions, hold more and spill
//! on a GPU, which has no such budget). The values were
//! picked on lavapipe (`N = 2048`, `K = 1024`; the book's kernel chapter has the sweep), where every
//! memory instruction is a per-lane loop and operand reuse decides the speed. Grids with fewer
//! row blocks than the device has cores (SMs) take fewer rows per unit; small codebooks take
//! narrower tiles so padding codes cost nothing.

/// What [`tile_config`] needs to know about the device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeviceLimits {
    /// Units per cube the device allows.
    pub max_units: usize,
    /// Shared memory per cube, in bytes.
    pub max_shared_bytes: usize,
    /// Row blocks worth launching at least (streaming multiprocessors or CPU cores; 1 if unknown).
    pub parallelism: usize,
}

/// Compile-time tile shape of [`crate::kernel::nearest_code_kernel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TileConfig {
    /// Units per cube (`CUBE_DIM_X`).
    pub units: usize,
    /// Latent rows owned by one unit (`rows: row0 + unit + i * units`).
    pub rows_per_unit: usize,
    /// Codes per codebook tile, read by every unit of the cube (`BN`).
    pub codes_per_tile: usize,
    /// Feature columns per shared-memory chunk, a multiple of 4 (read as `vec4`).
    pub depth: usize,
    /// `D <= depth`: the rows are loaded once and stay in registers; only the codebook streams.
    pub resident_rows: bool,
    /// Normalise latents and codes (cosine codes): changes the exact re-check and the row scale.
    pub l2_normalize: bool,
}

/// Widths up to this keep a unit's rows resident in registers (one chunk).
pub(crate) const RESIDENT_DEPTH: usize = 16;
/// Rows per unit of the resident (`D <= 16`) and the streamed case.
const RESIDENT_ROWS_PER_UNIT: usize = 8;
const STREAM_ROWS_PER_UNIT: usize = 4;
/// Codes per tile (both cases), for codebooks of at least this size.
const CODES_PER_TILE: usize = 32;
/// Feature chunk of the streamed case (a multiple of 4: the code tile is read as `vec4`).
const STREAM_DEPTH: usize = 8;
/// Units per cube (two NVIDIA warps, eight lavapipe AVX2 subgroups).
const UNITS: usize = 64;
/// Loop iterations one invocation may run on lavapipe before its loops silently stop
/// (`LP_MAX_TGSI_LOOP_ITERATIONS` = 65,535, shared by all loops; `../shared/BURN-NOTES.md` §2),
/// with margin.
pub(crate) const LOOP_BUDGET: usize = 60_000;

impl TileConfig {
    /// Latent rows per cube (`BM`).
    pub fn block_rows(&self) -> usize {
        self.units * self.rows_per_unit
    }

    /// Shared memory the kernel declares, in bytes: the code tile `[BN][depth]` and the per-code
    /// bias and scale `[BN]`, all f32.
    pub fn shared_bytes(&self) -> usize {
        4 * (self.codes_per_tile * self.depth + 2 * self.codes_per_tile)
    }

    /// Runtime loop iterations of one invocation for `K` codes of width `D`: the codebook tiles,
    /// the depth chunks of every tile, and the exact re-check of two candidates per row
    /// (everything else is unrolled at compile time). lavapipe counts every loop's iterations.
    pub fn loop_iterations(&self, k: usize, d: usize) -> usize {
        k.div_ceil(self.codes_per_tile) * (d.div_ceil(self.depth) + 1) + 2 * self.rows_per_unit * d
    }
}

/// The tile for `N` rows and `K` codes of width `D`, shrunk when the device allows fewer units
/// per cube or less shared memory, or when fewer than `parallelism` row blocks (the device's SMs
/// or cores) would be launched, and deepened when lavapipe's loop budget would be exceeded.
pub(crate) fn tile_config(n: usize, d: usize, k: usize, l2_normalize: bool, device: DeviceLimits) -> TileConfig {
    let resident_rows = d <= RESIDENT_DEPTH;
    let mut tile = TileConfig {
        units: UNITS,
        rows_per_unit: if resident_rows { RESIDENT_ROWS_PER_UNIT } else { STREAM_ROWS_PER_UNIT },
        // The codebook rounded up to a multiple of 8 when it is smaller than a tile.
        codes_per_tile: k.next_multiple_of(8).clamp(8, CODES_PER_TILE),
        depth: if resident_rows { d.next_multiple_of(4).max(4) } else { STREAM_DEPTH },
        resident_rows,
        l2_normalize,
    };
    while tile.rows_per_unit > 1 && n.div_ceil(tile.block_rows()) < device.parallelism {
        tile.rows_per_unit /= 2;
    }
    while tile.units > device.max_units.max(1) {
        tile.units /= 2;
    }
    while tile.shared_bytes() > device.max_shared_bytes && tile.codes_per_tile > 8 {
        tile.codes_per_tile /= 2;
    }
    if !resident_rows {
        // Wider chunks trade shared memory for fewer iterations (e.g. K = 65,536, D = 512); where
        // shared memory runs out, fewer rows per unit shorten the exact re-check.
        while tile.loop_iterations(k, d) > LOOP_BUDGET {
            let deeper = TileConfig { depth: tile.depth * 2, ..tile };
            if tile.depth < d && deeper.shared_bytes() <= device.max_shared_bytes {
                tile = deeper;
            } else if tile.rows_per_unit > 1 {
                tile.rows_per_unit /= 2;
            } else {
                break;
            }
        }
    }
    tile
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: DeviceLimits = DeviceLimits { max_units: 1024, max_shared_bytes: 48 * 1024, parallelism: 1 };

    /// The default tiles fit in 16 KiB of shared memory (Vulkan's guaranteed minimum) and in the
    /// loop budget at the largest supported size; small limits shrink them.
    #[test]
    fn tiles_fit_the_device_limits_and_the_loop_budget() {
        let vulkan_minimum = DeviceLimits { max_units: 256, max_shared_bytes: 16 * 1024, parallelism: 1 };
        for d in [1, 5, 12, 16, 17, 64, 256, 512] {
            for k in [1, 5, 64, 1000, 4096, 65_536] {
                let tile = tile_config(4096, d, k, false, vulkan_minimum);
                assert!(tile.shared_bytes() <= 16 * 1024, "D={d} K={k}: {tile:?}");
                assert!(tile.loop_iterations(k, d) <= LOOP_BUDGET, "D={d} K={k}: {tile:?}");
                assert_eq!(tile.resident_rows, d <= RESIDENT_DEPTH);
                assert_eq!(tile.depth % 4, 0, "the code tile is read as vec4");
                if tile.resident_rows {
                    assert!(tile.depth >= d && tile.depth < d + 4, "one chunk holds the row: {tile:?}");
                }
                assert!(tile.codes_per_tile >= 8 && tile.codes_per_tile.is_multiple_of(8));
                assert!(tile.codes_per_tile <= k.next_multiple_of(8), "no tile wider than the codebook");
            }
        }
        // K = 65,536 at D = 512: chunks of 8 and 16 exceed the budget, 32 fit:
        // 2048 tiles x (1 + 16 chunks) + 2 x 4 x 512 re-check iterations.
        let big = tile_config(4096, 512, 65_536, false, GPU);
        assert_eq!((big.codes_per_tile, big.depth, big.rows_per_unit), (32, 32, 4));
        assert_eq!(big.loop_iterations(65_536, 512), 2048 * 17 + 4096);
        let wide = tile_config(4096, 4096, 65_536, false, GPU);
        assert!(wide.depth > STREAM_DEPTH && wide.loop_iterations(65_536, 4096) <= LOOP_BUDGET, "{wide:?}");
        assert!(wide.shared_bytes() <= 48 * 1024, "{wide:?}");
        let small_device = DeviceLimits { max_units: 32, max_shared_bytes: 1024, parallelism: 1 };
        let small = tile_config(4096, 512, 4096, true, small_device);
        assert!(small.units <= 32 && small.shared_bytes() <= 1024, "{small:?}");
        assert!(small.l2_normalize);
    }

    /// Too few row blocks for the device's cores: rows per unit halve until the grid fills the
    /// device or a unit owns one row.
    #[test]
    fn small_batches_take_fewer_rows_per_unit() {
        let h200 = DeviceLimits { parallelism: 132, ..GPU };
        // 131,072 rows at 8 per unit: 256 blocks of 512, enough for 132 SMs.
        assert_eq!(tile_config(131_072, 12, 4096, false, h200).rows_per_unit, 8);
        // 32,768 rows: 64 blocks at 8, 128 at 4, 256 at 2.
        assert_eq!(tile_config(32_768, 12, 4096, false, h200).rows_per_unit, 2);
        // A TiTok batch of 4 x 32 latent tokens cannot fill the device: one row per unit.
        assert_eq!(tile_config(128, 12, 4096, false, h200).rows_per_unit, 1);
        assert_eq!(tile_config(128, 64, 4096, false, GPU).rows_per_unit, 4);
    }
}

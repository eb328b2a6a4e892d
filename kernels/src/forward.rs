//! Launch of the fused kernel: the [`NearestCodeBackend`] impl of Burn's CubeCL backend (wgpu,
//! cuda, any CubeCL runtime), plus the output metadata the lazy `Fusion` wrapper needs.

use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, IntDType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim};

use crate::NearestCodeBackend;
use crate::kernel::{TileConfig, nearest_code_kernel};

/// Units along the codes of a tile (power of two) and along the rows of a block.
const CODE_LANES: usize = 16;
const ROW_LANES: usize = 16;
/// Register micro-tile of a unit: rows x codes.
const ROWS_PER_UNIT: usize = 4;
const CODES_PER_UNIT: usize = 4;
/// Widths up to this keep the latent block resident (in registers); wider ones stream it.
const RESIDENT_DEPTH: usize = 16;
/// Feature chunk of the streamed case when shared memory allows (fewer barriers), else 16.
const STREAM_DEPTH: usize = 32;
/// Largest cube count along one grid axis on every API (WebGPU, Vulkan, CUDA y/z).
const MAX_CUBES_PER_AXIS: usize = 65_535;

/// Output metadata for the lazy `Fusion` path: indices `[N]` (`index_dtype`), distances `[N]` f32.
pub(crate) fn nearest_code_meta(
    z: &TensorSpec,
    _codebook: &TensorSpec,
    _l2_normalize: &bool,
    index_dtype: &IntDType,
) -> (TensorSpec, TensorSpec) {
    let n = z.shape[0];
    (
        TensorSpec::new(Shape::new([n]), DType::from(*index_dtype)),
        TensorSpec::new(Shape::new([n]), DType::F32),
    )
}

impl NearestCodeBackend for CubeBackend {
    fn nearest_code(
        z: FloatTensor<Self>,
        codebook: FloatTensor<Self>,
        l2_normalize: bool,
        index_dtype: IntDType,
    ) -> (IntTensor<Self>, FloatTensor<Self>) {
        launch_nearest_code(z, codebook, l2_normalize, index_dtype)
    }
}

/// The tile shape for width `d`, shrunk when the device allows fewer units or less shared memory.
pub(crate) fn tile_config(d: usize, l2_normalize: bool, max_units: usize, max_shared_bytes: usize) -> TileConfig {
    let resident_rows = d <= RESIDENT_DEPTH;
    let mut tile = TileConfig {
        code_lanes: CODE_LANES,
        row_lanes: ROW_LANES,
        codes_per_unit: CODES_PER_UNIT,
        rows_per_unit: ROWS_PER_UNIT,
        depth: if resident_rows { d.max(1) } else { STREAM_DEPTH },
        resident_rows,
        l2_normalize,
    };
    if tile.shared_bytes() > max_shared_bytes && !resident_rows {
        tile.depth = RESIDENT_DEPTH;
    }
    while (tile.units() > max_units || tile.shared_bytes() > max_shared_bytes) && tile.row_lanes > 1 {
        tile.row_lanes /= 2;
        if tile.code_lanes > 1 && (tile.units() > max_units || tile.shared_bytes() > max_shared_bytes) {
            tile.code_lanes /= 2;
        }
    }
    tile
}

/// Nearest code of every row of `z` on a CubeCL device.
///
/// # Shapes
/// - `z`: `[N, D]`, `codebook`: `[K, D]`, same dtype (f32, f16 or bf16), `K >= 1`
/// - returns indices `[N]` (`index_dtype`) and squared distances `[N]` (f32)
pub(crate) fn launch_nearest_code(
    z: CubeTensor,
    codebook: CubeTensor,
    l2_normalize: bool,
    index_dtype: IntDType,
) -> (CubeTensor, CubeTensor) {
    // The kernel indexes row-major; fusion may hand over strided views.
    let z = into_contiguous(z); // [N, D]
    let codebook = into_contiguous(codebook); // [K, D]
    let [n, d] = z.shape().dims::<2>();
    let k = codebook.shape()[0];

    let client = z.client.clone();
    let device = z.device.clone();
    let float_dtype = z.dtype;
    let index_dtype = DType::from(index_dtype);
    let indices = empty_device_dtype(client.clone(), device.clone(), Shape::new([n]), index_dtype); // [N]
    let distances = empty_device_dtype(client.clone(), device, Shape::new([n]), DType::F32); // [N]
    if n == 0 {
        return (indices, distances);
    }

    let hardware = &client.properties().hardware;
    let tile = tile_config(
        d,
        l2_normalize,
        hardware.max_units_per_cube as usize,
        hardware.max_shared_memory_size,
    );
    let cubes = n.div_ceil(tile.block_rows());
    let cubes_x = cubes.min(MAX_CUBES_PER_AXIS);
    let cubes_y = cubes.div_ceil(cubes_x);
    debug_assert!(k >= 1 && cubes_y <= MAX_CUBES_PER_AXIS);

    // SAFETY: every global read and write in the kernel is guarded by the tensor extents, and the
    // shared-memory indices are bounded by the comptime tile shape.
    unsafe {
        nearest_code_kernel::launch_unchecked(
            &client,
            CubeCount::Static(cubes_x as u32, cubes_y as u32, 1),
            CubeDim::new_2d(tile.code_lanes as u32, tile.row_lanes as u32),
            z.into_tensor_arg(),
            codebook.into_tensor_arg(),
            indices.clone().into_tensor_arg(),
            distances.clone().into_tensor_arg(),
            tile,
            [dtype_to_storage_type(float_dtype), dtype_to_storage_type(index_dtype)],
        );
    }
    (indices, distances)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default tile (256 units) fits in 16 KiB of shared memory, Vulkan's guaranteed minimum;
    /// devices with fewer units or less shared memory get a smaller tile with power-of-two lanes.
    #[test]
    fn tile_fits_the_device_limits() {
        for d in [1, 12, 16, 17, 64, 512] {
            let tile = tile_config(d, false, 256, 16 * 1024);
            assert_eq!((tile.code_lanes, tile.row_lanes), (CODE_LANES, ROW_LANES), "D={d}");
            assert!(tile.shared_bytes() <= 16 * 1024, "D={d}: {} B", tile.shared_bytes());
            assert_eq!(tile.depth, d.min(RESIDENT_DEPTH), "D={d}");
            assert_eq!(tile.resident_rows, d <= RESIDENT_DEPTH);
            // With 32 KiB (lavapipe; NVIDIA has 48) wide rows stream in chunks of 32.
            let wide = tile_config(d, false, 1024, 32 * 1024);
            assert_eq!(wide.depth, if d <= RESIDENT_DEPTH { d } else { STREAM_DEPTH }, "D={d}");
            assert!(wide.shared_bytes() <= 32 * 1024);
        }
        let small = tile_config(512, true, 64, 6 * 1024);
        assert!(small.units() <= 64 && small.shared_bytes() <= 6 * 1024, "{small:?}");
        assert!(small.code_lanes.is_power_of_two() && small.l2_normalize);
    }
}

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
use crate::kernel::{nearest_code_kernel, row_norms_kernel};
use crate::tiles::{DeviceLimits, tile_config};

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
    (TensorSpec::new(Shape::new([n]), DType::from(*index_dtype)), TensorSpec::new(Shape::new([n]), DType::F32))
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
    let max_units = hardware.max_units_per_cube as usize;
    let limits = DeviceLimits {
        max_units,
        max_shared_bytes: hardware.max_shared_memory_size,
        parallelism: hardware.num_streaming_multiprocessors.or(hardware.num_cpu_cores).unwrap_or(1) as usize,
    };
    let tile = tile_config(n, d, k, l2_normalize, limits);
    let storage = dtype_to_storage_type(float_dtype);

    // At every call, over the codebook (and the latents in l2 mode): norms and scales, [K] / [N].
    let (code_sq_norm, code_scale) = row_norms(&codebook, l2_normalize, max_units);
    let z_scale = if l2_normalize {
        row_norms(&z, true, max_units).1
    } else {
        code_scale.clone() // never read in plain mode
    };

    let (cubes_x, cubes_y) = grid(n.div_ceil(tile.block_rows()));
    // SAFETY: every global read and write in the kernel is guarded by the tensor extents, and the
    // shared-memory indices are bounded by the comptime tile shape.
    unsafe {
        nearest_code_kernel::launch_unchecked(
            &client,
            CubeCount::Static(cubes_x, cubes_y, 1),
            CubeDim::new_1d(tile.units as u32),
            z.into_tensor_arg(),
            codebook.into_tensor_arg(),
            code_sq_norm.into_tensor_arg(),
            code_scale.into_tensor_arg(),
            z_scale.into_tensor_arg(),
            indices.clone().into_tensor_arg(),
            distances.clone().into_tensor_arg(),
            tile,
            [storage, dtype_to_storage_type(index_dtype)],
        );
    }
    (indices, distances)
}

/// Squared norms and scales `[R]` (f32) of the rows of `x: [R, D]` ([`row_norms_kernel`]).
fn row_norms(x: &CubeTensor, l2_normalize: bool, max_units: usize) -> (CubeTensor, CubeTensor) {
    let rows = x.shape()[0];
    let client = x.client.clone();
    let sq_norm = empty_device_dtype(client.clone(), x.device.clone(), Shape::new([rows]), DType::F32);
    let scale = empty_device_dtype(client.clone(), x.device.clone(), Shape::new([rows]), DType::F32);
    let units = max_units.clamp(1, 256);
    let (cubes_x, cubes_y) = grid(rows.div_ceil(units));
    // SAFETY: the kernel guards every access by the tensor extents.
    unsafe {
        row_norms_kernel::launch_unchecked(
            &client,
            CubeCount::Static(cubes_x, cubes_y, 1),
            CubeDim::new_1d(units as u32),
            x.clone().into_tensor_arg(),
            sq_norm.clone().into_tensor_arg(),
            scale.clone().into_tensor_arg(),
            l2_normalize,
            dtype_to_storage_type(x.dtype),
        );
    }
    (sq_norm, scale)
}

/// `cubes` laid out as `(x, y)` within the per-axis limit; kernels linearise `x + y * X`.
fn grid(cubes: usize) -> (u32, u32) {
    let x = cubes.clamp(1, MAX_CUBES_PER_AXIS);
    let y = cubes.div_ceil(x).max(1);
    debug_assert!(y <= MAX_CUBES_PER_AXIS);
    (x as u32, y as u32)
}

//! Device-resident gradient all-reduce on CUDA with NCCL (feature `nccl`), across processes.
//!
//! Burn's own NCCL support (CubeCL's collectives) mints the communicator id inside one process,
//! so it cannot span machines. Here rank 0 mints an `ncclUniqueId`, MPI broadcasts its 128 bytes,
//! every rank joins one communicator on its GPU (`ncclCommInitRank`), and each step's flat
//! gradient buffer is averaged in place on the device (`ncclAllReduce`, `ncclAvg`): no host copy.
//! The CUDA primary context is the one CubeCL's CUDA runtime uses, so the device pointers of
//! Burn's buffers are valid in NCCL's calls.
//!
//! Type-checked in CI (`DOCS_RS=1 cargo check --features titok-train/nccl`); not yet run on GPUs.
//! Running it needs NVIDIA GPUs, the CUDA driver and `libnccl` (loaded at run time).

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::sync::{Mutex, OnceLock};

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DispatchDevice, TensorMetadata, backend_extension};
use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl;
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl_runtime::runtime::Runtime;
use cudarc::driver::result as cuda;
use cudarc::nccl::result as nccl;
use cudarc::nccl::sys::{ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};

use super::ProcessGroup;
use crate::train::TrainError;

/// This process's NCCL communicator and the CUDA context it was made in.
struct Communicator {
    comm: ncclComm_t,
    context: cudarc::driver::sys::CUcontext,
}

// SAFETY: an NCCL communicator and a CUDA context may be used from any thread as long as the
// calls on one communicator do not overlap; every use goes through the mutex of `COMM`.
unsafe impl Send for Communicator {}

static COMM: OnceLock<Mutex<Communicator>> = OnceLock::new();

/// The CUDA ordinal of `device`, when it is a CUDA device.
pub(crate) fn cuda_ordinal(device: &Device) -> Option<usize> {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(cubecl::Device::Cuda(d)) => Some(d.index),
        _ => None,
    }
}

/// Whether this process can load `libnccl` (checked on every rank before any of them joins).
pub(crate) fn library_present() -> bool {
    // SAFETY: only tries to open the library; no symbol is called.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

/// Joins every rank of `group` into one NCCL communicator on CUDA device `ordinal` (a
/// collective call: all ranks at once, after they agreed that every one of them is on CUDA with
/// `libnccl` present).
///
/// # Errors
/// [`TrainError::Distributed`] when the CUDA driver or NCCL cannot be loaded or the communicator
/// cannot be made.
pub(crate) fn join(group: &ProcessGroup, ordinal: usize) -> Result<(), TrainError> {
    let fail = |what: &str, e: &dyn std::fmt::Debug| TrainError::Distributed(format!("NCCL: {what}: {e:?}"));
    cuda::init().map_err(|e| fail("CUDA driver", &e))?;
    let device = cuda::device::get(ordinal as i32).map_err(|e| fail("CUDA device", &e))?;
    // SAFETY: `device` is a valid device handle; the primary context is retained for the life of
    // the process (CubeCL retains the same one) and made current on this thread.
    let context = unsafe { cuda::primary_ctx::retain(device) }.map_err(|e| fail("CUDA context", &e))?;
    // SAFETY: `context` was just retained.
    unsafe { cuda::ctx::set_current(context) }.map_err(|e| fail("CUDA context", &e))?;
    let mut id = if group.is_main() {
        nccl::get_uniqueid().map_err(|e| fail("ncclGetUniqueId", &e))?
    } else {
        ncclUniqueId { internal: [0; 128] }
    };
    let mut bytes: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
    group.broadcast_bytes(&mut bytes);
    for (slot, b) in id.internal.iter_mut().zip(&bytes) {
        *slot = *b as _;
    }
    let mut comm = MaybeUninit::uninit();
    // SAFETY: `comm` is written by a successful call; every rank passes the same id and world
    // size and its own rank.
    let comm = unsafe {
        nccl::comm_init_rank(comm.as_mut_ptr(), group.world_size as i32, id, group.rank as i32)
            .map_err(|e| fail("ncclCommInitRank", &e))?;
        comm.assume_init()
    };
    COMM.set(Mutex::new(Communicator { comm, context }))
        .map_err(|_| TrainError::Distributed("NCCL: communicator initialised twice".into()))
}

/// Whether the NCCL communicator is up (after [`join`]).
pub(crate) fn is_ready() -> bool {
    COMM.get().is_some()
}

/// The mean over the ranks of `flat` (`[n]`, f32, f16 or bf16, on this rank's CUDA device),
/// computed on the device.
///
/// # Panics
/// When NCCL fails (a rank gone, a driver error): the process ends and the launcher stops the job.
pub(crate) fn all_reduce_mean(flat: Tensor<1>) -> Tensor<1> {
    let device = flat.device();
    let out = <burn::backend::Dispatch as NcclBackend>::nccl_all_reduce_mean(flat.inner().into_dispatch());
    // The lazy backend would run the collective whenever this rank next waits on the device;
    // run it now, so that every rank makes its NCCL and MPI calls in the same order.
    device.sync().unwrap_or_else(|e| panic!("NCCL all-reduce: {e:?}"));
    Tensor::from_dispatch(out)
}

/// NCCL all-reduce as a Burn backend operation, so that it runs in order with the CubeCL work
/// that produced its input (the lazy `Fusion` wrapper defers it like any other op).
#[backend_extension(Cube: cfg(feature = "nccl"), Fusion: cfg(feature = "nccl"))]
pub(crate) trait NcclBackend: Backend {
    /// Mean over the ranks of a 1-D float tensor `[n]`.
    #[fusion(dtype = x, shape = x)]
    fn nccl_all_reduce_mean(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl NcclBackend for CubeBackend {
    fn nccl_all_reduce_mean(x: CubeTensor) -> CubeTensor {
        let x = into_contiguous(x);
        let out = empty_device_dtype(x.client.clone(), x.device.clone(), x.shape(), x.dtype);
        device_all_reduce_mean(&x, &out).unwrap_or_else(|e| panic!("NCCL all-reduce: {e}"));
        out
    }
}

/// `dst = mean over ranks of src`, both contiguous buffers of one CUDA device.
fn device_all_reduce_mean(src: &CubeTensor, dst: &CubeTensor) -> Result<(), String> {
    type Server = <CudaRuntime as Runtime>::Server;
    let count = src.shape().num_elements();
    let datatype = match src.dtype {
        DType::F32 => ncclDataType_t::ncclFloat32,
        DType::F16 => ncclDataType_t::ncclFloat16,
        DType::BF16 => ncclDataType_t::ncclBfloat16,
        other => return Err(format!("gradients of dtype {other:?}")),
    };
    let source = src.client.get_resource::<Server>(src.handle.clone()).map_err(|e| format!("{e:?}"))?;
    let target = dst.client.get_resource::<Server>(dst.handle.clone()).map_err(|e| format!("{e:?}"))?;
    // The kernels that wrote the gradients run on CubeCL's streams: wait for them.
    cubecl::future::block_on(src.client.sync()).map_err(|e| format!("{e:?}"))?;
    let comm = COMM.get().ok_or("the NCCL communicator is not initialised")?;
    let comm = comm.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the context is the retained primary context of this rank's device; both pointers
    // are live allocations of `count` elements held by the managed resources above; the default
    // stream is synchronised before the buffers are used again.
    unsafe {
        cuda::ctx::set_current(comm.context).map_err(|e| format!("{e:?}"))?;
        nccl::all_reduce(
            source.resource().ptr as *const c_void,
            target.resource().ptr as *mut c_void,
            count,
            datatype,
            ncclRedOp_t::ncclAvg,
            comm.comm,
            std::ptr::null_mut(),
        )
        .map_err(|e| format!("ncclAllReduce: {e:?}"))?;
        cuda::stream::synchronize(std::ptr::null_mut()).map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

//! Choosing the device (and with it the backend) from a command-line name.
//!
//! Burn 0.22 picks the backend from the `Device`; which ones exist depends on the compiled-in
//! features of this crate (`flex`, `wgpu`, `cuda`), which the binaries choose: the library
//! enables none by default.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{Device, Tensor};

/// A device that is not compiled in or does not answer; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

/// A device request: `auto`, `cpu`, `wgpu` (any Vulkan/Metal/DX12 adapter, including software
/// Vulkan), `gpu` (a hardware wgpu adapter only) or `cuda[:index]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// A hardware GPU when one answers (CUDA first, then wgpu), else the CPU.
    Auto,
    /// The CPU (flex backend).
    Cpu,
    /// wgpu's default adapter (may be a software rasteriser such as lavapipe).
    Wgpu,
    /// A hardware wgpu adapter (discrete, then integrated).
    Gpu,
    /// A CUDA device.
    Cuda(usize),
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "cpu" | "flex" => Self::Cpu,
            "wgpu" => Self::Wgpu,
            "gpu" => Self::Gpu,
            "cuda" => Self::Cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Self::Cuda(i),
                _ => return Err(format!("unknown device `{other}` (auto, cpu, wgpu, gpu, cuda[:N])")),
            },
        })
    }
}

/// Gives the Vulkan loader a runtime directory when the environment has none (containers,
/// CI): without one it prints `XDG_RUNTIME_DIR is invalid or not set` for every adapter probe.
/// Call it first thing in `main`, before any thread exists.
pub fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called at the start of `main`, while the process has a single thread, so no
        // other thread can read the environment concurrently.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

/// Runs a tiny computation on `device`; false when the backend panics (no driver, no adapter).
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
fn answers(device: &Device) -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = catch_unwind(AssertUnwindSafe(|| {
        let t = Tensor::<1>::from_floats([1.0, 2.0], device);
        t.sum().into_scalar::<f32>() == 3.0
    }))
    .unwrap_or(false);
    std::panic::set_hook(hook);
    ok
}

/// The device for a request and a human-readable description of it.
///
/// # Errors
/// [`DeviceError`] when the backend is not compiled in or the device does not answer.
pub fn select_device(request: DeviceRequest) -> Result<(Device, String), DeviceError> {
    let unavailable = |what: &str| DeviceError(format!("{what} is not available in this build or on this machine"));
    match request {
        DeviceRequest::Cpu => {
            #[cfg(feature = "flex")]
            {
                let n = cpu_threads();
                Ok((Device::flex(), format!("cpu (flex, {n} thread{})", if n == 1 { "" } else { "s" })))
            }
            #[cfg(not(feature = "flex"))]
            Err(unavailable("the CPU backend (flex)"))
        }
        DeviceRequest::Cuda(_i) => {
            #[cfg(feature = "cuda")]
            {
                let d = Device::cuda(_i);
                if answers(&d) {
                    return Ok((d, format!("cuda:{_i}")));
                }
            }
            Err(unavailable("CUDA"))
        }
        DeviceRequest::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                let d = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
                if answers(&d) {
                    return Ok((d, "wgpu (default adapter)".into()));
                }
            }
            Err(unavailable("wgpu"))
        }
        DeviceRequest::Gpu => {
            #[cfg(feature = "wgpu")]
            for (kind, name) in [
                (burn::tensor::DeviceKind::DiscreteGpu(0), "wgpu discrete GPU 0"),
                (burn::tensor::DeviceKind::IntegratedGpu(0), "wgpu integrated GPU 0"),
            ] {
                let d = Device::wgpu(kind);
                if answers(&d) {
                    return Ok((d, name.into()));
                }
            }
            Err(unavailable("a hardware GPU"))
        }
        DeviceRequest::Auto => {
            #[cfg(feature = "cuda")]
            if let Ok(found) = select_device(DeviceRequest::Cuda(0)) {
                return Ok(found);
            }
            if let Ok(found) = select_device(DeviceRequest::Gpu) {
                return Ok(found);
            }
            #[cfg(feature = "flex")]
            return Ok((Device::flex(), "cpu (flex; no GPU found)".into()));
            #[cfg(not(feature = "flex"))]
            Err(unavailable("a GPU or the CPU backend (flex)"))
        }
    }
}

/// Sets the number of CPU threads of the CPU backend (flex runs its matrix products, convolutions
/// and reductions on rayon's global pool; the data loader's workers are separate). Call once,
/// before the first tensor operation; `None` keeps rayon's default (`RAYON_NUM_THREADS`, else one
/// per logical core).
///
/// # Errors
/// A message when `threads` is 0 or the pool was already started.
pub fn set_cpu_threads(threads: Option<usize>) -> Result<(), String> {
    let Some(n) = threads else { return Ok(()) };
    if n == 0 {
        return Err("--threads must be at least 1".into());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("titok-cpu-{i}"))
        .build_global()
        .map_err(|e| format!("cannot use {n} CPU threads: {e}"))
}

/// Threads of the CPU backend's pool (after [`set_cpu_threads`], or rayon's default).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cuda:2".parse::<DeviceRequest>(), Ok(DeviceRequest::Cuda(2)));
        assert_eq!("cpu".parse::<DeviceRequest>(), Ok(DeviceRequest::Cpu));
        assert!("tpu".parse::<DeviceRequest>().is_err());
        assert!(select_device(DeviceRequest::Cpu).is_ok());
    }
}

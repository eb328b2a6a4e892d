//! Fused nearest-code kernel vs the unfused Burn tensor path (matmul + argmin) on one device.
//!
//! ```text
//! cargo bench --workspace --bench nearest_code -- [--device wgpu|flex|cuda] [--full] [--iters 5]
//! cargo bench --workspace --bench nearest_code -- --roofline    # analytic H200 table, no device
//! ```
//! `--full` (or `NEAREST_CODE_BENCH_FULL=1`) runs the issue's grid: N = 4096 x {32, 64, 128}
//! latents, K in {1024, 4096, 8192, 16384}, D in {12, 16, 64, 256}. The default is a reduced grid
//! that software Vulkan (lavapipe) and a CPU finish in minutes. `kernels/benches/gpu.sh` builds and
//! runs the full grid on a real GPU.
//!
//! "nearest_code" is [`titok_kernels::nearest_code`] (the fused CubeCL kernel on wgpu/cuda, the
//! matmul path on flex; the header names it); "unfused" is
//! [`titok_kernels::nearest_code_reference`] (tensor ops: `||z||² + ||c||² - 2 z cᵀ`,
//! `min_dim_with_indices`). Times are medians over `--iters` synchronised calls after
//! one warm-up (shader compilation, autotune). Peak memory: on flex the growth of host memory,
//! measured with a counting allocator; on GPU devices the bytes each path must allocate, computed
//! from the shapes (fused: the two `[N]` outputs and the `[K]` code norms; unfused: at least the
//! `[N, K]` f32 product, plus its outputs), marked `(analytic)`. The unfused path is skipped where that product alone
//! exceeds `--max-unfused-gb` (default 20; the elementwise step may allocate a second one), and a
//! failure of it (out of memory) is reported in the table instead of ending the run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use titok_kernels::{NearestCodePath, nearest_code, nearest_code_reference};

/// System allocator that tracks live and peak bytes (host memory only).
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

struct Options {
    device_name: String,
    device: Device,
    full: bool,
    iters: usize,
    max_unfused_bytes: f64,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let default_device = if cfg!(feature = "wgpu") { "wgpu" } else { "flex" };
    let device_name = value("--device").unwrap_or_else(|| default_device.to_string());
    let device = match device_name.as_str() {
        "flex" | "cpu" => Device::flex(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        other => panic!("--device {other}: not compiled in (flex, wgpu with `wgpu`, cuda with `cuda`)"),
    };
    let full = args.iter().any(|a| a == "--full") || std::env::var("NEAREST_CODE_BENCH_FULL").is_ok_and(|v| v == "1");
    Options {
        device_name,
        device,
        full,
        iters: value("--iters").and_then(|v| v.parse().ok()).unwrap_or(5).max(1),
        max_unfused_bytes: value("--max-unfused-gb").and_then(|v| v.parse().ok()).unwrap_or(20.0) * 1e9,
    }
}

/// Grid of the issue (`--full`): N latents, K codes, D widths.
const FULL_N: [usize; 3] = [4096 * 32, 4096 * 64, 4096 * 128];
const FULL_K: [usize; 4] = [1024, 4096, 8192, 16384];
const FULL_D: [usize; 4] = [12, 16, 64, 256];

/// NVIDIA H200 SXM peaks (datasheet): f32 on CUDA cores, TF32 on tensor cores (dense), HBM3e.
const H200_F32_FLOPS: f64 = 67e12;
const H200_TF32_FLOPS: f64 = 495e12;
const H200_HBM_BYTES_PER_S: f64 = 4.8e12;

/// Prints the analytic roofline of both paths on an H200 for every point of the full grid.
///
/// * fused kernel: `D` FMAs per (row, code) pair for the dot, plus about 7 f32 instructions for
///   the score and the best-two fold, all on CUDA cores (`2 (D + 7)` flops at 67 TFLOP/s). Bytes:
///   the inputs once (`4 N D + 4 K D`; every cube re-reads the codebook, at most 16.8 MB here,
///   from the 50 MB L2), the `[K]` norms and the `[N]` outputs; for `D > 16` also the rows, which
///   stream again for every tile of 32 codes (`4 N D K / 32`, counted at HBM speed because the
///   cubes' row blocks together outgrow the L2). One kernel overlaps both: the bound is the
///   larger of compute and memory time.
/// * unfused: the `[N, K]` product on tensor cores (TF32, the most favourable case for it),
///   then the product written, the elementwise distances read and written, and `argmin` reading
///   them: `16 N K` bytes at 4.8 TB/s. Separate kernels: the bound is the sum.
///
/// Both bounds scale with `N K`, so the expected ratio depends on `D` only.
fn print_roofline() {
    println!(
        "analytic roofline, NVIDIA H200 SXM: f32 {:.0} TFLOP/s (CUDA cores), TF32 {:.0} TFLOP/s \
         (tensor cores), HBM {:.1} TB/s",
        H200_F32_FLOPS / 1e12,
        H200_TF32_FLOPS / 1e12,
        H200_HBM_BYTES_PER_S / 1e12
    );
    println!(
        "| N | K | D | fused GFLOP | fused DRAM MB | fused bound us | unfused GFLOP | unfused DRAM GB \
         | unfused bound us | expected speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in FULL_N {
        for k in FULL_K {
            for d in FULL_D {
                let (nf, kf, df) = (n as f64, k as f64, d as f64);
                let fused_flops = 2.0 * nf * kf * (df + 7.0);
                let row_rereads = if d > 16 { 4.0 * nf * df * (kf / 32.0).ceil() } else { 0.0 };
                let fused_bytes = 4.0 * (nf * df + kf * df) + 8.0 * kf + 8.0 * nf + row_rereads;
                let fused_s = (fused_flops / H200_F32_FLOPS).max(fused_bytes / H200_HBM_BYTES_PER_S);
                let unfused_flops = 2.0 * nf * kf * df;
                let unfused_bytes = 16.0 * nf * kf + 4.0 * (nf * df + kf * df) + 8.0 * nf;
                let unfused_s = unfused_flops / H200_TF32_FLOPS + unfused_bytes / H200_HBM_BYTES_PER_S;
                println!(
                    "| {n} | {k} | {d} | {:.1} | {:.1} | {:.0} | {:.1} | {:.2} | {:.0} | {:.2}x |",
                    fused_flops / 1e9,
                    fused_bytes / 1e6,
                    fused_s * 1e6,
                    unfused_flops / 1e9,
                    unfused_bytes / 1e9,
                    unfused_s * 1e6,
                    unfused_s / fused_s
                );
            }
        }
    }
}

/// Median wall time (s) of `f` over `iters` synchronised calls, after one warm-up, and the
/// host-memory growth during one call (bytes).
fn time<T>(device: &Device, iters: usize, mut f: impl FnMut() -> T) -> (f64, usize) {
    drop(f());
    device.sync().expect("sync");
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        let out = f();
        device.sync().expect("sync");
        times.push(start.elapsed().as_secs_f64());
        drop(out);
    }
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], peak)
}

fn human_bytes(bytes: f64) -> String {
    match bytes {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--roofline") {
        print_roofline();
        return;
    }
    let opts = options();
    let device = &opts.device;
    let path = NearestCodePath::for_device(device);
    let on_gpu = path == NearestCodePath::FusedKernel;
    let (ns, ks, ds): (Vec<usize>, Vec<usize>, Vec<usize>) = if opts.full {
        (FULL_N.to_vec(), FULL_K.to_vec(), FULL_D.to_vec())
    } else if on_gpu {
        (vec![2048], vec![1024, 4096], vec![12, 64])
    } else {
        (vec![4096], vec![1024, 4096], vec![12, 64])
    };
    println!(
        "device: {} ({path:?}), {} grid, median of {} calls after 1 warm-up, f32",
        opts.device_name,
        if opts.full { "full" } else { "reduced (--full for the issue's grid)" },
        opts.iters
    );
    let mem_note = if on_gpu { " (analytic)" } else { " (host, measured)" };
    println!(
        "| N | K | D | nearest_code ms | unfused ms | speed-up | nearest_code peak{mem_note} | unfused peak{mem_note} | same index |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");

    for &n in &ns {
        for &k in &ks {
            for &d in &ds {
                let z = Tensor::<2>::random([n, d], Distribution::Normal(0.0, 1.0), device);
                let codebook = Tensor::<2>::random([k, d], Distribution::Normal(0.0, 1.0), device);
                device.sync().expect("sync");

                let (fused_s, fused_host) =
                    time(device, opts.iters, || nearest_code(z.clone(), codebook.clone(), false));
                let product_bytes = 4.0 * n as f64 * k as f64;
                let unfused = if product_bytes > opts.max_unfused_bytes {
                    Err(format!("skipped ({} product)", human_bytes(product_bytes)))
                } else {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        time(device, opts.iters, || nearest_code_reference(z.clone(), codebook.clone(), false))
                    }))
                    .map_err(|_| "failed (out of memory?)".to_string())
                };

                // Agreement of the two paths (near ties may legitimately differ).
                let same = unfused.as_ref().ok().map(|_| {
                    let a = nearest_code(z.clone(), codebook.clone(), false).indices;
                    let b = nearest_code_reference(z.clone(), codebook.clone(), false).indices;
                    let equal = a.equal(b).int().sum().into_scalar::<i64>();
                    format!("{:.4}", equal as f64 / n as f64)
                });

                let index_bytes = 8.0; // i64/i32 index + f32 distance, upper bound
                let (fused_mem, unfused_mem) = if on_gpu {
                    (
                        // The outputs and the codebook's [K] squared norms and scales (f32).
                        human_bytes(n as f64 * index_bytes + 8.0 * k as f64),
                        format!(">= {}", human_bytes(product_bytes + n as f64 * index_bytes)),
                    )
                } else {
                    (human_bytes(fused_host as f64), unfused.as_ref().map_or("-".into(), |u| human_bytes(u.1 as f64)))
                };
                let (unfused_ms, speedup) = match &unfused {
                    Ok((s, _)) => (format!("{:.3}", s * 1e3), format!("{:.2}x", s / fused_s)),
                    Err(why) => (why.clone(), "-".into()),
                };
                println!(
                    "| {n} | {k} | {d} | {:.3} | {unfused_ms} | {speedup} | {fused_mem} | {unfused_mem} | {} |",
                    fused_s * 1e3,
                    same.unwrap_or_else(|| "-".into())
                );
            }
        }
    }
}

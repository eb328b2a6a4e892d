#!/usr/bin/env bash
# Builds and runs the nearest-code benchmark (fused CubeCL kernel vs matmul + argmin) on a real
# GPU and prints its markdown table, ready for book/src/kernel.md, then the analytic H200 table.
#
#   kernels/benches/gpu.sh                 # wgpu (Vulkan on Linux/NVIDIA, Metal, DX12), full grid
#   kernels/benches/gpu.sh --cuda          # burn-cuda (needs the CUDA driver; the first build
#                                          # downloads Burn's LLVM bundle from GitHub)
#   kernels/benches/gpu.sh --reduced       # the small grid only
#   kernels/benches/gpu.sh -- --iters 10 --max-unfused-gb 8   # extra bench flags
#
# The wgpu build uses the workspace's usual feature set (no rebuild of Burn); `--cuda` adds the
# `titok-kernels/cuda` feature, which rebuilds Burn once. Do not run `--cuda` on machines without
# a GPU and GitHub access: it cannot link there (see ../shared/BURN-NOTES.md §3).
set -euo pipefail
cd "$(dirname "$0")/../.."

device=wgpu
grid=(--full)
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) device=cuda ;;
    --wgpu) device=wgpu ;;
    --reduced) grid=() ;;
    --) shift; extra+=("$@"); break ;;
    *) extra+=("$1") ;;
  esac
  shift
done

features=()
[ "$device" = cuda ] && features=(--features titok-kernels/cuda)
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

echo "== host: $(uname -srm), $(nproc) CPUs"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/== gpu: /'
fi
if [ "$device" = wgpu ] && command -v vulkaninfo >/dev/null 2>&1; then
  vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverName" | sed 's/^ */== vulkan: /' || true
fi

cargo bench --workspace ${features[@]+"${features[@]}"} --bench nearest_code -- \
  --device "$device" ${grid[@]+"${grid[@]}"} ${extra[@]+"${extra[@]}"}
# The analytic H200 expectation beside the measurement (book/src/kernel.md, "Analytic roofline").
cargo bench --workspace ${features[@]+"${features[@]}"} --bench nearest_code -- --roofline

#!/usr/bin/env bash
# Reproduces the default CIFAR-10 models that `titok` embeds (assets/models/) and the figures of
# their model cards, on the CPU. Every step resumes: run it again after an interruption (a
# session that ends kills the run; the next call continues from the last checkpoint).
#
#   titok-train/scripts/cifar10-default-models.sh [RUNS_DIR]      (default ../runs)
#
#   RANKS=2 ...   trains with `mpirun -n 2` (single-threaded ranks; 1.3-1.5x the images per
#                 second of one process on 2 cores; needs Open MPI, see the book's
#                 *Distributed training* chapter; as root Open MPI also wants
#                 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). Default 1: one
#                 process.
#
# Steps (the recipe "single stage + stage 2"; the model cards give the reasons and the curves):
#   1. tokenizer, single stage: L2 + 0.1 LPIPS + quantizer + unused-code anchor, 12,000 steps
#   2. tokenizer, stage 2: encoder, codebook and latent tokens frozen, the decoder fine-tuned
#      with L2 + 1.1 LPIPS + GAN (from step 500, LeCam), 3,000 steps
#   3. the token cache and the MaskGIT generator
#   4. copy the EMA exports into assets/ (f16)
#   5. metrics on the CIFAR-10 test split (PSNR, SSIM, LPIPS, rFID and codebook usage on 10,000
#      images; gFID of 10,000 samples)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-../runs}
RANKS=${RANKS:-1}
DATA=../shared/data/cifar10-jpg.tar.gz
mkdir -p "$RUNS"
T=target/release
# The trainer runs from a copy: builds made while it trains (e.g. without the mpi feature)
# replace target/release/titok-train.
mkdir -p "$RUNS/bin"
if [ "$RANKS" -gt 1 ]; then
    cargo build --release --workspace --bins --examples --features titok-train/mpi
    cp "$T/titok-train" "$RUNS/bin/titok-train"
    TRAIN=(mpirun -n "$RANKS" "$RUNS/bin/titok-train")
else
    cargo build --release --workspace --bins --examples
    cp "$T/titok-train" "$RUNS/bin/titok-train"
    TRAIN=("$RUNS/bin/titok-train")
fi

resume() { [ -f "$1/latest.json" ] && echo --resume || true; }
last_export() { python3 -c 'import json,sys; print(sys.argv[1] + "/" + json.load(open(sys.argv[1] + "/latest.json"))["weights"])' "$1"; }
finished() { [ -f "$1/latest.json" ] && python3 -c 'import json,sys; s=json.load(open(sys.argv[1] + "/latest.json")); sys.exit(0 if s["step"] >= s["total_steps"] else 1)' "$1"; }

# 1. tokenizer, single stage
A="$RUNS/cifar10-titok-lpips"
finished "$A" || "${TRAIN[@]}" single-stage --config titok-train/configs/cifar10-titok-s32-lpips.json \
    --run "$A" --device cpu $(resume "$A")

# 2. tokenizer, stage 2 (decoder fine-tuning from step 1's EMA export)
B="$RUNS/cifar10-titok-stage2"
finished "$B" || "${TRAIN[@]}" stage2 --config titok-train/configs/cifar10-titok-s32-stage2.json \
    --run "$B" --device cpu $(resume "$B") --set "model.init=\"$(last_export "$A")\""
TOKENIZER=$(last_export "$B")

# 3. generator on the tokenizer's tokens (the cache is built on the first run)
G="$RUNS/cifar10-maskgit"
finished "$G" || "${TRAIN[@]}" generator --config titok-train/configs/cifar10-maskgit.json \
    --run "$G" --device cpu $(resume "$G") \
    --set "tokenizer=\"$TOKENIZER\"" --set "data.token_cache=\"$RUNS/cifar10-tokens.safetensors\""
GENERATOR=$(last_export "$G")

# 4. the embedded assets (then rebuild `titok`, which include_bytes! them)
$T/examples/default_assets --tokenizer "$TOKENIZER" --generator "$GENERATOR"
cargo build --release --workspace

# 5. metrics for the model cards
mkdir -p "$RUNS/metrics"
[ -f "$RUNS/metrics/gen.json" ] || $T/titok --device cpu --batch-size 50 eval gen \
    --reference "$DATA" --reference-split test --num-per-class 1000 --seed 0 \
    --save-reference-stats "$RUNS/metrics/cifar10-test-stats.npz" --json "$RUNS/metrics/gen.json"
[ -f "$RUNS/metrics/recon.json" ] || $T/titok --device cpu --batch-size 50 eval recon \
    --data "$DATA" --split test --real-stats "$RUNS/metrics/cifar10-test-stats.npz" \
    --json "$RUNS/metrics/recon.json"
echo "metrics in $RUNS/metrics/"

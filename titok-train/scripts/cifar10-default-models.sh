#!/usr/bin/env bash
# Reproduces the default CIFAR-10 models that `titok` embeds (assets/models/) and the figures of
# their model cards, on the CPU. Every step resumes: run it again after an interruption.
#
#   titok-train/scripts/cifar10-default-models.sh [RUNS_DIR]      (default ../runs)
#
# Steps: 1. the tokenizer (single stage, 2000 steps), 2. the token cache and the MaskGIT
# generator, 3. copy the EMA exports into assets/ (f16), 4. metrics on the CIFAR-10 test split
# (PSNR, SSIM, LPIPS, rFID and codebook usage on 10,000 images; gFID of 10,000 samples).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-../runs}
DATA=../shared/data/cifar10-jpg.tar.gz
mkdir -p "$RUNS"
cargo build --release --workspace --examples
T=target/release

resume() { [ -f "$1/latest.json" ] && echo --resume || true; }
last_export() { python3 -c 'import json,sys; print(sys.argv[1] + "/" + json.load(open(sys.argv[1] + "/latest.json"))["weights"])' "$1"; }

# 1. tokenizer
$T/titok-train single-stage --config titok-train/configs/cifar10-titok-s32.json \
    --run "$RUNS/cifar10-titok" --device cpu $(resume "$RUNS/cifar10-titok")
TOKENIZER=$(last_export "$RUNS/cifar10-titok")

# 2. generator on the tokenizer's tokens (the cache is built on the first run)
$T/titok-train generator --config titok-train/configs/cifar10-maskgit.json \
    --run "$RUNS/cifar10-maskgit" --device cpu $(resume "$RUNS/cifar10-maskgit") \
    --set "tokenizer=\"$TOKENIZER\"" --set "data.token_cache=\"$RUNS/cifar10-tokens.safetensors\""
GENERATOR=$(last_export "$RUNS/cifar10-maskgit")

# 3. the embedded assets (then rebuild `titok`, which include_bytes! them)
$T/examples/default_assets --tokenizer "$TOKENIZER" --generator "$GENERATOR"
cargo build --release --workspace

# 4. metrics for the model cards
mkdir -p "$RUNS/metrics"
[ -f "$RUNS/metrics/gen.json" ] || $T/titok --device cpu --batch-size 50 eval gen \
    --reference "$DATA" --reference-split test --num-per-class 1000 --seed 0 \
    --save-reference-stats "$RUNS/metrics/cifar10-test-stats.npz" --json "$RUNS/metrics/gen.json"
[ -f "$RUNS/metrics/recon.json" ] || $T/titok --device cpu --batch-size 50 eval recon \
    --data "$DATA" --split test --real-stats "$RUNS/metrics/cifar10-test-stats.npz" \
    --json "$RUNS/metrics/recon.json"
echo "metrics in $RUNS/metrics/"

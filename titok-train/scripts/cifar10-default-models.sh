#!/usr/bin/env bash
# Trains the next default CIFAR-10 models for `titok` (assets/models/) with the paper's pixel
# recipe, on the CPU, and measures them for their model cards. (The shipped pair came from this
# script as of commit 86f4b58: `git show 86f4b58:titok-train/scripts/cifar10-default-models.sh`.)
# Every step resumes: run it again after an interruption (a session that ends kills the run;
# the next call continues from the last checkpoint).
#
#   titok-train/scripts/cifar10-default-models.sh [RUNS_DIR]      (default ../runs)
#
#   RANKS=2 ...   trains with `mpirun -n 2` (single-threaded ranks; 1.3-1.5x the images per
#                 second of one process on 2 cores; needs Open MPI, see the book's
#                 *Distributed training* chapter; as root Open MPI also wants
#                 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, and in containers
#                 OMPI_MCA_btl_vader_single_copy_mechanism=none). Default 1: one process.
#
# Steps (the recipe "single stage + stage 2"):
#   1. tokenizer, single stage: L2 + 0.1 LPIPS + quantizer + unused-code anchor, 12,000 steps
#   2. tokenizer, stage 2: encoder, codebook and latent tokens frozen, the decoder fine-tuned
#      with L2 + 1.1 LPIPS + GAN (from step 500, LeCam), 3,000 steps
#   3. the token cache and the MaskGIT generator, 10,000 steps
#   4. copy the EMA exports into assets/ (f16)
#   5. metrics on the CIFAR-10 test split (PSNR, SSIM, LPIPS, rFID and codebook usage on 10,000
#      images; gFID of 10,000 samples)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=$(realpath -m "${1:-../runs}")
RANKS=${RANKS:-1}
DATA=../shared/data/cifar10-jpg.tar.gz
CONFIGS=titok-train/configs
mkdir -p "$RUNS/bin"
exec 9>"$RUNS/.default-models.lock"
flock -n 9 || { echo "another cifar10-default-models.sh is running in $RUNS" >&2; exit 1; }
T=target/release
# The trainer runs from a copy: builds made while it trains (e.g. without the mpi feature)
# replace target/release/titok-train.
if [ "$RANKS" -gt 1 ]; then
    cargo build --release --workspace --bins --examples --features titok-train/mpi
    TRAIN=(mpirun -n "$RANKS" "$RUNS/bin/titok-train")
else
    cargo build --release --workspace --bins --examples
    TRAIN=("$RUNS/bin/titok-train")
fi
cp "$T/titok-train" "$RUNS/bin/titok-train.tmp" && mv -f "$RUNS/bin/titok-train.tmp" "$RUNS/bin/titok-train"

json() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
resume() { [ -f "$1/latest.json" ] && echo --resume || true; }
last_export() { python3 -c 'import json,sys; print(sys.argv[1] + "/" + json.load(open(sys.argv[1] + "/latest.json"))["weights"])' "$1"; }
# finished RUN CONFIG: the run's last checkpoint is at the config's run.total_steps
finished() {
    [ -f "$1/latest.json" ] && python3 -c 'import json,sys
s = json.load(open(sys.argv[1] + "/latest.json"))
sys.exit(0 if s["step"] >= json.load(open(sys.argv[2]))["run"]["total_steps"] else 1)' "$1" "$2"
}

# 1. tokenizer, single stage
A="$RUNS/cifar10-titok-lpips" CA=$CONFIGS/cifar10-titok-s32-lpips.json
finished "$A" "$CA" || "${TRAIN[@]}" single-stage --config "$CA" --run "$A" --device cpu $(resume "$A")

# 2. tokenizer, stage 2 (decoder fine-tuning from step 1's EMA export)
B="$RUNS/cifar10-titok-stage2" CB=$CONFIGS/cifar10-titok-s32-stage2.json
finished "$B" "$CB" || "${TRAIN[@]}" stage2 --config "$CB" --run "$B" --device cpu $(resume "$B") \
    --set "model.init=$(json "$(last_export "$A")")"
TOKENIZER=$(last_export "$B")

# 3. generator on the tokenizer's tokens (the cache is built on the first run)
G="$RUNS/cifar10-maskgit-stage2" CG=$CONFIGS/cifar10-maskgit.json
finished "$G" "$CG" || "${TRAIN[@]}" generator --config "$CG" --run "$G" --device cpu $(resume "$G") \
    --set "tokenizer=$(json "$TOKENIZER")" --set "data.token_cache=$(json "$RUNS/cifar10-tokens-stage2.safetensors")"
GENERATOR=$(last_export "$G")

# 4. the embedded assets (then rebuild `titok`, which include_bytes! them)
$T/examples/default_assets --tokenizer "$TOKENIZER" --generator "$GENERATOR"
cargo build --release --workspace

# 5. metrics for the model cards (of these exports: a new export of step 2 or 3 means new metrics)
M="$RUNS/metrics-stage2"
mkdir -p "$M"
echo "$TOKENIZER $GENERATOR" > "$M/models.new"
if ! cmp -s "$M/models.new" "$M/models.txt"; then rm -f "$M/gen.json" "$M/recon.json"; fi
mv "$M/models.new" "$M/models.txt"
[ -f "$M/gen.json" ] || $T/titok --device cpu --batch-size 50 eval gen \
    --reference "$DATA" --reference-split test --num-per-class 1000 --seed 0 \
    --save-reference-stats "$M/cifar10-test-stats.npz" --json "$M/gen.json"
[ -f "$M/recon.json" ] || $T/titok --device cpu --batch-size 50 eval recon \
    --data "$DATA" --split test --real-stats "$M/cifar10-test-stats.npz" --json "$M/recon.json"
echo "metrics in $M/"

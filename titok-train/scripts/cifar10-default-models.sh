#!/usr/bin/env bash
# Trains the next default CIFAR-10 models for `titok` (assets/models/) with the paper's pixel
# recipe, on the CPU, and measures them for their model cards. (The shipped pair came from this
# script as of commit 86f4b58: `git show 86f4b58:titok-train/scripts/cifar10-default-models.sh`.)
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
#   1. tokenizer, single stage: L2 + 0.1 LPIPS + quantizer + unused-code anchor, 5,000 steps
#      (121 min with RANKS=2 on 2 cores, 44-56 images/s)
#   2. tokenizer, stage 2: encoder, codebook and latent tokens frozen, the decoder fine-tuned
#      with L2 + 1.1 LPIPS + GAN (from step 500, LeCam), 2,000 steps (57 min with RANKS=2:
#      60-73 images/s before the GAN starts, 26-40 with it)
#   3. the token cache and the MaskGIT generator, 5,000 steps (the tokens of steps 1 and 2 are
#      the same: stage 2 freezes the encoder and the codebook)
#   4. rFID of steps 1 and 2 on the 10,000 test images; the decoder with the lower rFID ships
#   5. copy the exports into assets/models/ (f16)
#   6. gFID of 10,000 samples against the test split
#
# Resuming: a run killed mid-step continues from its last checkpoint when the script runs again
# with the same RUNS_DIR. Steps 1, 2 and 3 each fit one working session of about three hours,
# and a finished step's EMA export is copied (f16) into assets/training/<step>/ to be committed,
# a tokenizer with its PSNR / SSIM / LPIPS / codebook report on the 10,000 test images
# (eval-cifar10-test.json, checked by titok-infer's tests): a later step starts from that copy,
# and a step whose copy exists is not trained again, so the recipe carries on from a fresh clone
# on another machine (which has no RUNS_DIR). Delete a copy to train its step (and the steps
# after it) again.
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

# stage STEP_DIR RUN: copy RUN's last EMA export to STEP_DIR (f16), for the repository.
stage() {
    rm -rf "$1.tmp" && $T/titok export "$(last_export "$2")" --dtype f16 -o "$1.tmp" \
        && rm -rf "$1" && mv "$1.tmp" "$1" && echo "finished step in $1 (commit it)"
}
# measure TOKENIZER [FID ARGS]: its test-split report beside its weights; without FID ARGS no
# rFID (76 s on 2 idle cores).
measure() {
    local dir=$1; shift
    $T/titok --device cpu --batch-size 50 --model "$dir" eval recon --data "$DATA" --split test "${@:---no-fid}" \
        --json "$dir/eval-cifar10-test.json"
}
STAGED=assets/training

# 1. tokenizer, single stage
A="$RUNS/cifar10-titok-lpips" CA=$CONFIGS/cifar10-titok-s32-lpips.json SA=$STAGED/cifar10-titok-single-stage
if [ ! -f "$SA/model.safetensors" ]; then
    finished "$A" "$CA" || "${TRAIN[@]}" single-stage --config "$CA" --run "$A" --device cpu $(resume "$A")
    stage "$SA" "$A"
fi
[ -f "$SA/eval-cifar10-test.json" ] || measure "$SA"

# 2. tokenizer, stage 2 (decoder fine-tuning from step 1's export)
B="$RUNS/cifar10-titok-stage2" CB=$CONFIGS/cifar10-titok-s32-stage2.json SB=$STAGED/cifar10-titok-stage2
if [ ! -f "$SB/model.safetensors" ]; then
    finished "$B" "$CB" || "${TRAIN[@]}" stage2 --config "$CB" --run "$B" --device cpu $(resume "$B") \
        --set "model.init=$(json "$SA")"
    stage "$SB" "$B"
fi
[ -f "$SB/eval-cifar10-test.json" ] || measure "$SB"
TOKENIZER=$SB

# 3. generator on the tokenizer's tokens (the cache is built on the first run)
G="$RUNS/cifar10-maskgit-stage2" CG=$CONFIGS/cifar10-maskgit.json SG=$STAGED/cifar10-maskgit
if [ ! -f "$SG/model.safetensors" ]; then
    finished "$G" "$CG" || "${TRAIN[@]}" generator --config "$CG" --run "$G" --device cpu $(resume "$G") \
        --set "tokenizer=$(json "$TOKENIZER")" --set "data.token_cache=$(json "$RUNS/cifar10-tokens-stage2.safetensors")"
    stage "$SG" "$G"
fi
GENERATOR=$SG

# 4. the decoder to ship. Steps 1 and 2 share the encoder, codebook and latent tokens (stage 2
# freezes them), so they give the same tokens and the generator fits both; they differ in the
# decoder. Each gets rFID on the test split (the first measurement also saves the real images'
# Inception statistics, about 55 min; the second reuses them, about 27 min), recorded in its
# eval-cifar10-test.json, and the lower rFID ships.
M="$RUNS/metrics"
mkdir -p "$M"
STATS="$M/cifar10-test-stats.npz"
rfid() {
    python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["fid"] is None)' "$1/eval-cifar10-test.json" \
        && return
    if [ -f "$STATS" ]; then measure "$1" --real-stats "$STATS"; else measure "$1" --save-real-stats "$STATS"; fi
}
rfid "$SA"
rfid "$SB"
TOKENIZER=$(python3 -c 'import json,sys
print(min(sys.argv[1:], key=lambda d: json.load(open(d + "/eval-cifar10-test.json"))["fid"]["value"]))' "$SA" "$SB")
echo "shipping the decoder of $TOKENIZER (lower rFID)"

# 5. the embedded assets (then rebuild `titok`, which include_bytes! them)
$T/examples/default_assets --tokenizer "$TOKENIZER" --generator "$GENERATOR"
cp "$TOKENIZER/eval-cifar10-test.json" assets/models/titok-cifar10/
cargo build --release --workspace

# 6. gFID for the model card (of these weights: new copies of the generator or the tokenizer
# mean a new measurement), 10,000 samples against the test split's statistics (about 30 min)
sha256sum "$TOKENIZER/model.safetensors" "$GENERATOR/model.safetensors" > "$M/models.new"
if ! cmp -s "$M/models.new" "$M/models.txt"; then rm -f "$M/gen.json"; fi
mv "$M/models.new" "$M/models.txt"
[ -f "$M/gen.json" ] || $T/titok --device cpu --batch-size 50 eval gen \
    --reference "$STATS" --num-per-class 1000 --seed 0 --json "$M/gen.json"
echo "metrics: $TOKENIZER/eval-cifar10-test.json (tokenizer), $M/gen.json (generator)"

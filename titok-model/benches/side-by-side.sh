#!/usr/bin/env bash
# Side-by-side CPU speed of titok-rs and the official PyTorch code, measured in one run.
#
#   titok-model/benches/side-by-side.sh [--threads 2] [--batch 4] [--no-pytorch] [--no-train] [benches...]
#
# benches: any of s128 b64 l32 sampler (default: all). Runs our bench binaries
# (`tokenizer`, `sampler`, and `training` for the CIFAR-10 training step) with the given thread
# count, then, unless --no-pytorch, `../shared/tools/pytorch-bench/run.sh` (a copy in $OUT_DIR) with the same
# settings (it creates its torch venv on first use; see its README), and prints one table of
# both figures and their ratio (titok-rs / PyTorch; > 1 means titok-rs is faster).
# `--workspace` keeps the feature set of the test build, so nothing is rebuilt.
# Raw lines of both sides are kept in $OUT_DIR (default target/side-by-side/).
# Run it on an idle machine: the ratios are only meaningful when both sides get the same cores.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHARED="${TITOK_SHARED_DIR:-$ROOT/../shared}"
OUT_DIR="${OUT_DIR:-$ROOT/target/side-by-side}"
threads=2
batch=4
pytorch=1
train=1
benches=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift ;;
    --batch) batch="$2"; shift ;;
    --no-pytorch) pytorch=0 ;;
    --no-train) train=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    s128|b64|l32|sampler) benches+=("$1") ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#benches[@]} -gt 0 ]] || benches=(s128 b64 l32 sampler)
tok=()
for b in "${benches[@]}"; do [[ "$b" == sampler ]] || tok+=("$b"); done
mkdir -p "$OUT_DIR"
ours="$OUT_DIR/titok.txt"
theirs="$OUT_DIR/pytorch.txt"
: > "$ours"
: > "$theirs"

echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$ours"
cd "$ROOT"
if [[ ${#tok[@]} -gt 0 ]]; then
  cargo bench -q --workspace --bench tokenizer -- "${tok[@]}" --batch "$batch" --threads "$threads" | tee -a "$ours"
fi
if [[ " ${benches[*]} " == *" sampler "* ]]; then
  cargo bench -q --workspace --bench sampler -- --batch "$batch" --threads "$threads" | tee -a "$ours"
fi
if [[ $train == 1 ]]; then
  cargo bench -q --workspace --bench training -- --threads "$threads" | tee -a "$ours"
fi
if [[ $pytorch == 1 ]]; then
  # ../shared is read-only and run.sh extracts the official source beside itself: run a copy
  # of the tool from $OUT_DIR (the extracted source stays there, outside the repository).
  ptb="$OUT_DIR/pytorch-bench"
  mkdir -p "$ptb"
  cp "$SHARED/tools/pytorch-bench/run.sh" "$SHARED/tools/pytorch-bench/bench.py" "$ptb/"
  chmod u+wx "$ptb/run.sh"
  "$ptb/run.sh" "${benches[@]}" --batch "$batch" --threads "$threads" | tee "$theirs"
fi
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$ours"

# Training-step baseline: the figure before the CPU work (issue 12), the target is 2x.
python3 - "$ours" "$theirs" <<'PY'
import sys
def read(path, side):
    out = {}
    for line in open(path):
        parts = line.split()
        if len(parts) == 4 and parts[0] == side:
            out[(parts[1], parts[2])] = float(parts[3])
    return out
ours, theirs = read(sys.argv[1], "titok"), read(sys.argv[2], "pytorch")
rows = [(b, m) for (b, m) in ours if m != "params_m"]
print()
print("| bench | figure | titok-rs | official PyTorch | ratio |")
print("|---|---|---|---|---|")
for key in rows:
    a = ours[key]
    if key in theirs:
        b = theirs[key]
        print(f"| {key[0]} | {key[1]} | {a:.3g} | {b:.3g} | {a / b:.2f}x |")
    elif key == ("train_small", "img_s"):
        print(f"| {key[0]} | {key[1]} | {a:.3g} | (no PyTorch twin; 28.1 before issue 12) | {a / 28.1:.2f}x of 28.1 |")
    else:
        print(f"| {key[0]} | {key[1]} | {a:.3g} | - | - |")
PY

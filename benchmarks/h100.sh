#!/usr/bin/env bash
# The accelerator benchmark in one call (one H100 or H200; about 8 minutes, most of it compiling):
# correctness of the fast config against the float32 reference, then tokens/s and MFU of the 400M, 1B and 3B
# presets with XLA and cuDNN attention, remat and batch variants, 1B decoding (time to first token and tokens/s
# at batch 1 and 64 against the HBM-bandwidth bound), and which presets fit the card.
#
#   From the repository root, with the ml_collections wheel in .whl/ (absent on the accelerator machine):
#     pip download --no-deps --only-binary=:all: -d .whl ml_collections==1.1.0
#   then, on the accelerator machine (device tool: carry [".whl"], timeout_s 600):
#     bash benchmarks/h100.sh
#
# Writes $OUT/h100.jsonl (one JSON line per run), $OUT/bench.log and $OUT/h100.md (the tables for
# docs/benchmarks.md); the tables are printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/h100_bench}
mkdir -p "$OUT"
if ! python3 -c "import ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/ml_collections-*.whl \
    || { echo "ml_collections is missing and .whl/ holds no wheel of it: see the header of $0"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}  # llama_jax from this working tree
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.95  # JAX takes 75% of the card by default; the fit checks need more
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
python3 -m llama_jax.bench --suite=h100 --steps=10 --warmup=2 --budget_s="${BUDGET_S:-420}" --out="$OUT/h100.jsonl" \
  > "$OUT/bench.log" 2>&1
echo "bench exit status $?"
grep -v '^{' "$OUT/bench.log" | tail -n 20
python3 benchmarks/table.py "$OUT/h100.jsonl" | tee "$OUT/h100.md"

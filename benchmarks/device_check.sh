#!/usr/bin/env bash
# The GPU check, prepared to run in one short call on a lent CUDA machine (a few minutes).
# Installs nothing: it needs torch, torchvision, typer, rich, safetensors and pillow, and runs
# imagegen from the source tree. Writes JSON and a grid under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/imagegen-device}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 IMAGEGEN_OFFLINE=1
export IMAGEGEN_RUNS=$OUT/runs IMAGEGEN_CACHE=/tmp/imagegen-cache
ig() { python -m imagegen "$@"; }

nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# 1. Correctness on CUDA: train (bf16 by default there), resume, sample.
ig train dcgan -d synthetic --resolution 32 --steps 200 --device cuda --run-dir "$OUT/runs/a" \
  --json -q > "$OUT/train.json"
ig train dcgan --resume "$OUT/runs/a" --steps 400 --device cuda --json -q > "$OUT/resume.json"
ig sample "$OUT/runs/a" --n 64 --out "$OUT/grid.png" --device cuda

# 2. The training step alone: each precision and compile setting, with FLOP counts.
python benchmarks/bench_precision.py --device cuda --steps 300 --batch-size 64 --json \
  > "$OUT/precision-b64.json"

# 3. The whole loop through the CLI (the issue's figure: 200k steps at batch 64), 5k steps here.
for compile in --no-compile --compile; do
  ig train dcgan -d synthetic --resolution 32 --steps 5000 --batch-size 64 --device cuda \
    $compile --log-every 1000 --sample-every 1000000 --checkpoint-every 1000000 \
    --run-dir "$OUT/runs/speed$compile" --json -q > "$OUT/loop$compile.json"
done
cat "$OUT"/*.json

#!/usr/bin/env bash
# Training throughput on one CUDA device: the library's TFT forward and the fast one
# (forecaster/contract/fasttrain.py), bf16-mixed and 32-true, batch sizes 64, 256 and 1024.
#
#   benchmarks/gpu_training.sh                 # the full table: 2 precisions x 3 batch sizes x 2 forwards
#   BATCHES=10 REPEATS=1 benchmarks/gpu_training.sh   # quicker, noisier
#   BATCH_SIZES="64 256" PRECISIONS=bf16-mixed benchmarks/gpu_training.sh
#
# It installs nothing: the repository is used in place (PYTHONPATH), and torch, lightning,
# pytorch-forecasting and the other dependencies of pyproject.toml must already be importable.
# Without a CUDA device, or without those packages, it stops at once and says which.
# Each row is benchmarks/training_throughput.py with --accelerator gpu (see its docstring for
# what is timed). Window sampling runs on the CPU in the training process, as in
# `tft-trainer train`; its cost per batch is printed after each table, because at large batch
# sizes it can bound the throughput whatever the forward costs.
set -euo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" - <<'EOF' || exit 1
import importlib.util
import sys

missing = [m for m in ("torch", "lightning", "pytorch_forecasting", "numpy", "pandas", "safetensors", "pydantic",
                       "yaml", "prometheus_client") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_training.sh: not importable: {', '.join(missing)}. This script installs nothing; install the "
             "repository's dependencies first (pip install -e . with a CUDA build of torch already installed).")
import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_training.sh: no CUDA device visible to torch {torch.__version__} "
             f"(CUDA build: {torch.version.cuda or 'none'}); nothing measured.")
print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

BATCH_SIZES="${BATCH_SIZES:-64 256 1024}"
PRECISIONS="${PRECISIONS:-bf16-mixed 32-true}"
BATCHES="${BATCHES:-14}"
REPEATS="${REPEATS:-2}"
THREADS="${THREADS:-1}"  # torch CPU threads of the training process (the GPU does the math)

for precision in $PRECISIONS; do
    echo
    # shellcheck disable=SC2086  # BATCH_SIZES is a list of numbers
    "$PYTHON" benchmarks/training_throughput.py --accelerator gpu --precision "$precision" --threads "$THREADS" \
        --batches "$BATCHES" --repeats "$REPEATS" --batch-size $BATCH_SIZES
done

#!/usr/bin/env bash
# GPU readiness in one go (benchmarks/gpu_check.py): features CUDA vs CPU, training
# segments/s per mode through the device-resident store and the DataLoader, GPU utilisation,
# 2-GPU DDP where two devices exist; one JSON of figures.
# Exit codes: 0 measured, 2 no CUDA device (nothing measured), other: a step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export WANDB_MODE=${WANDB_MODE:-offline}
exec "$PY" -m benchmarks.gpu_check "$@"

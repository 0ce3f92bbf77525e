#!/bin/bash
# Steps per fixed wall-clock time of the paper-preset MNIST run, resumed
# from one committed backup, with TensorFlow's oneDNN kernels on and off
# (TF_ENABLE_ONEDNN_OPTS=1 / 0), one after the other on one core.
#
# Usage: bash benchmarks/onednn_ab.sh [COMMIT] [SECONDS] [CORE]
#   COMMIT   the commit whose docs/results/backups/mnist_paper_preset_seed0
#            backup both sides resume from (default 171a4e3: step 8,499 of cycle 1)
#   SECONDS  wall-clock time each side runs, start-up included (default 420)
#   CORE     the core both sides are pinned to (default 0)
# Prints, per side, the backup's step at the start and at the end (the run
# backs up every 10 steps into a scratch copy; the committed backup is not
# touched). Needs KERAS_HOME to point at a Keras cache with MNIST.
set -euo pipefail
commit=${1:-171a4e3}; seconds=${2:-420}; core=${3:-0}
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
scratch=$(mktemp -d)
export TF_CPU_ALLOCATOR_USE_BFC=true TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
for onednn in 1 0; do
  backup=$scratch/backup$onednn; mkdir -p "$backup"
  for f in latest.weights.h5 training_metadata.json; do
    git show "$commit:docs/results/backups/mnist_paper_preset_seed0/$f" > "$backup/$f"
  done
  echo "TF_ENABLE_ONEDNN_OPTS=$onednn start $(cat "$backup/training_metadata.json")"
  TF_ENABLE_ONEDNN_OPTS=$onednn timeout "$seconds" taskset -c "$core" python examples/mnist_rso.py \
    --preset paper --cycles 5 --seed 0 --verbose 2 --validation-size 10000 \
    --results "$scratch/results$onednn.json" --backup-dir "$backup" --backup-every 10 \
    > "$scratch/log$onednn" 2>&1 || true
  echo "TF_ENABLE_ONEDNN_OPTS=$onednn after ${seconds} s $(cat "$backup/training_metadata.json")"
done
rm -rf "$scratch"

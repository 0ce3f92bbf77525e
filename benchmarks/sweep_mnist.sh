#!/usr/bin/env bash
# Sweep batch size and weights_per_batch (K) on the paper's MNIST network:
# test accuracy after the first cycle of a 5-cycle schedule (sigma annealed
# from 1 to 0.1 over 5 cycles). Results: docs/results/sweep/*.json.
# Usage: bash benchmarks/sweep_mnist.sh "256:64 512:64 1024:256"
set -euo pipefail
cd "$(dirname "$0")/.."
configs=${1:-"256:16 256:64 512:64 1024:256"}
mkdir -p docs/results/sweep
for c in $configs; do
  b=${c%%:*}; k=${c##*:}
  python examples/mnist_rso.py --cycles 5 --stop-after 1 --batch-size "$b" \
    --weights-per-batch "$k" --verbose 2 \
    --results "docs/results/sweep/mnist_b${b}_k${k}_cycle1.json"
done

#!/bin/bash
# Seconds per search step of the paper's MNIST net (`mnist_paper_net`,
# batch 2048, K=64: the validated recipe's step) with one TensorFlow thread
# on one core and with two threads on both cores, one after the other in
# one run, so that both sides share the CPU and the sitting.
#
# Usage: bash benchmarks/threads_ab.sh [STEPS] [BATCH]
#   STEPS  timed steps per variable (default 3), after one tracing step
#   BATCH  batch size (default 2048)
# The five 3x3x16x16 kernels hold 180 of a cycle's 188 steps at K=64, so
# 36 x (the sum of their seconds per step) estimates a cycle.
# Needs KERAS_HOME to point at a Keras cache with MNIST, and no other job
# on either core while it runs.
set -euo pipefail
steps=${1:-3}; batch=${2:-2048}
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
grep -m1 "model name" /proc/cpuinfo
export TF_CPU_ALLOCATOR_USE_BFC=true
for threads in 1 2; do
  cores=0; [ "$threads" = 2 ] && cores=0,1
  echo "== TF_NUM_INTRAOP_THREADS=$threads TF_NUM_INTEROP_THREADS=$threads, cores $cores"
  TF_NUM_INTRAOP_THREADS=$threads TF_NUM_INTEROP_THREADS=$threads taskset -c "$cores" \
    python -m benchmarks.step_time --batch-size "$batch" --weights-per-batch 64 \
    --steps "$steps" --variables block2_conv/kernel block3_conv/kernel block4_conv/kernel \
    block5_conv/kernel block6_conv/kernel 2>&1 | grep "s/step"
done

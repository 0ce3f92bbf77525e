#!/bin/bash
# Seconds per search step of the paper's MNIST net (`mnist_paper_net`,
# batch 2048, K=64: the validated recipe's step) on one core and on both,
# one side after the other in one run, so that all sides share the CPU
# and the sitting:
#   1. one TensorFlow thread on core 0;
#   2. two threads (intra- and inter-op) on cores 0 and 1;
#   3. two replicas (MirroredStrategy on two logical CPUs, synchronized
#      BatchNormalization, each evaluating half of every batch), one
#      intra-op and two inter-op threads, on cores 0 and 1.
#
# Usage: bash benchmarks/threads_ab.sh [STEPS] [BATCH] [step_time flags...]
#   STEPS  timed steps per variable (default 3), after one tracing step
#   BATCH  batch size (default 2048)
#   e.g. bash benchmarks/threads_ab.sh 3 2048 --pool-after 1 3 --step-rule vertex
# The five 3x3x16x16 kernels hold 180 of a cycle's 188 steps at K=64, so
# 36 x (the sum of their seconds per step) estimates a cycle.
# Needs KERAS_HOME to point at a Keras cache with MNIST, and no other job
# on either core while it runs.
set -euo pipefail
steps=${1:-3}; batch=${2:-2048}; shift $(( $# < 2 ? $# : 2 ))
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
grep -m1 "model name" /proc/cpuinfo
export TF_CPU_ALLOCATOR_USE_BFC=true
for side in "1 1 0 1" "2 2 0,1 1" "1 2 0,1 2"; do
  read -r intra inter cores replicas <<< "$side"
  echo "== TF_NUM_INTRAOP_THREADS=$intra TF_NUM_INTEROP_THREADS=$inter, cores $cores, replicas $replicas"
  TF_NUM_INTRAOP_THREADS=$intra TF_NUM_INTEROP_THREADS=$inter taskset -c "$cores" \
    python -m benchmarks.step_time --batch-size "$batch" --weights-per-batch 64 \
    --steps "$steps" --replicas "$replicas" "$@" --variables block2_conv/kernel \
    block3_conv/kernel block4_conv/kernel block5_conv/kernel block6_conv/kernel 2>&1 | grep "s/step"
done

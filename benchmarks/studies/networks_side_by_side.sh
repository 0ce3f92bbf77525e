#!/usr/bin/env bash
# The networks side by side (issue 24's Fidelity row "networks"): keras_rso's
# earlier MNIST variant (`mnist_paper_net`: ReLU after BatchNorm, softmax
# with bias, standardized inputs, mean cross-entropy) against the authors'
# (`paper_mnist_net`, `--net paper`: ReLU before each convolution, logits,
# raw pixels minus the training mean, summed float64 cross-entropy), both
# under the validated search recipe (K=64, sigma 3x the std annealed to 1x
# over a 5-cycle schedule, balanced sigmas, random order), for the first
# cycle of that schedule at batch 512. Settings would be compared on the
# validation accuracy (last 10,000 training images).
#
# Usage: benchmarks/studies/networks_side_by_side.sh SEED [SEED ...]
# Writes docs/results/networks_b512_c1_of5_{mnist_paper_net,paper}_seed<N>.json;
# summarize with
#   python -m benchmarks.seed_summary docs/results/networks_b512_c1_of5_mnist_paper_net_seed*.json
#   python -m benchmarks.seed_summary docs/results/networks_b512_c1_of5_paper_seed*.json
set -euo pipefail
cd "$(dirname "$0")/../.."
for seed in "$@"; do
  for net in mnist_paper_net paper; do
    python examples/mnist_rso.py --net "$net" --cycles 1 --schedule-cycles 5 --batch-size 512 \
      --weights-per-batch 64 --sigma-scale 3 --final-fraction 0.3333 --balance-sigma \
      --order random --seed "$seed" --verbose 2 \
      --results "docs/results/networks_b512_c1_of5_${net}_seed${seed}.json"
  done
done

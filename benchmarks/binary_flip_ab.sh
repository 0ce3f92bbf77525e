#!/bin/bash
# The binary example (`examples/binary_mnist.py`), one small cycle, run with
# the same command from two checkouts of keras_rso, one after the other on
# one core: each side's seconds, and whether the saved weights are
# bit-identical. Session 50 ran it to compare a binary trial that evaluates
# its flip alone (NEW) with the stacked pair it replaced (OLD).
#
# Usage: bash benchmarks/binary_flip_ab.sh OLD_CHECKOUT NEW_CHECKOUT [CORE]
#   OLD_CHECKOUT, NEW_CHECKOUT  directories holding keras_rso (for example a
#                               `git worktree add` of the older commit)
#   CORE                        the core both sides are pinned to (default 0)
# Needs KERAS_HOME to point at a Keras cache with MNIST.
set -euo pipefail
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); core=${3:-0}
scratch=$(mktemp -d)
args="--method rso --cycles 1 --limit 6048 --validation-size 2000 --test-limit 2000
      --batch-size 1024 --weights-per-batch 64 --order random --seed 0 --verbose 0"
export TF_CPU_ALLOCATOR_USE_BFC=true TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
export TF_CPP_MIN_LOG_LEVEL=3
for side in old new; do
  checkout=$old; [ "$side" = new ] && checkout=$new
  # PYTHONPATH: each side imports its own keras_rso, not the installed one.
  (cd "$checkout" && PYTHONPATH="$checkout" taskset -c "$core" python examples/binary_mnist.py \
     $args --save "$scratch/$side.keras" --results "$scratch/$side.json")
done
SCRATCH=$scratch python - <<'PY'
import json, os
import keras
import numpy as np
import keras_rso  # noqa: F401  (registers the Discrete constraint for loading)
d = os.environ["SCRATCH"]
old, new = (keras.models.load_model(f"{d}/{s}.keras").get_weights() for s in ("old", "new"))
print(len(old), "arrays; bit-identical:", all(np.array_equal(a, b) for a, b in zip(old, new)),
      "; scalars that differ:", sum(int((a != b).sum()) for a, b in zip(old, new)))
for side in ("old", "new"):
    r = json.load(open(f"{d}/{side}.json"))
    print(side, "seconds", r["seconds"], "validation", r["validation_accuracy"],
          "test", r["test_accuracy"], "weight updates", r["weight_updates"], r["machine"]["cpu"])
PY

#!/usr/bin/env python
"""Does averaging a binary RSO run's late weights beat its last weights?

In the late cycles of a binary MNIST run (`examples/binary_mnist.py`) a
cycle still flips about a fifth of the kernel weights while validation
accuracy moves without a trend: the search walks across near-ties. This
study asks whether the centre of that walk is a better model than its end
point. It takes `BackupAndRestore` weight files saved along one run (the
backup's `latest.weights.h5`, copied each time the backup's metadata
changed, by `benchmarks/studies/snapshot_backups.sh`), averages the last N of them variable by variable, projects each
average onto its variable's constraint (for a binary kernel, the nearest
of -1 and +1: a majority vote; an exact tie keeps the newest snapshot's
value), sets every BatchNorm layer's statistics from training images
(`precise_bn.set_population_statistics`), and reports validation accuracy
(the last `--validation-size` training images) for each N. N=1 is the last
snapshot alone, with the same statistics. The test set is not read.

Example:
    bash benchmarks/studies/snapshot_backups.sh snaps seed0=docs/results/backups/RUN &  # while RUN trains
    python -m benchmarks.studies.trajectory_average snaps/seed0_*.weights.h5 \\
        --last 1 3 9 17 --output docs/results/trajectory_average_binary_seed0.json
"""

import argparse
import os
import re
import sys
from typing import List, Sequence

# The example scripts import their driver as `experiment`.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                os.pardir, "examples"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_rso import RSO, RSOModel, constraints, datasets  # noqa: E402
from benchmarks.studies.precise_bn import accuracy, set_population_statistics  # noqa: E402
from binary_mnist import rso_net  # noqa: E402
from experiment import provenance, split_validation, write_json  # noqa: E402


def position(path: str):
    """`(epoch, batch)` from a snapshot name ending in `_<epoch>_<batch>.weights.h5`."""
    match = re.search(r"_(\d+)_(\d+)\.weights\.h5$", path)
    if not match:
        raise ValueError(f"{path}: expected a name ending in _<epoch>_<batch>.weights.h5")
    return int(match.group(1)), int(match.group(2))


def binary_net(mean: float) -> RSOModel:
    """The binary net of `examples/binary_mnist.py` (`rso_net`), wrapped and
    compiled, so that its backups load."""
    trainer = RSOModel(rso_net(mean))
    trainer.compile(optimizer=RSO(weights_per_batch=64, order="random", sigma_rule="he"),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    trainer.build((None, 28, 28))
    return trainer


def snapshot_weights(trainer: RSOModel, path: str) -> List[np.ndarray]:
    trainer.load_weights(path)
    return [np.array(v.numpy()) for v in trainer.model.trainable_variables]


def averaged(snapshots: Sequence[List[np.ndarray]], variables) -> List[np.ndarray]:
    """Each variable's mean over `snapshots`, projected onto its constraint."""
    out = []
    for index, variable in enumerate(variables):
        stack = np.stack([s[index] for s in snapshots])
        mean = stack.mean(axis=0)
        constraint = constraints.of(variable)
        if constraint is not None:
            projected = keras.ops.convert_to_numpy(constraint(keras.ops.convert_to_tensor(mean)))
            if isinstance(constraint, constraints.Discrete):
                # Where the newest value is as near the mean as the projection (a
                # vote that ties: an even number of snapshots), the newest stays.
                tie = np.isclose(np.abs(mean - projected), np.abs(mean - stack[-1]))
                projected = np.where(tie, stack[-1], projected)
            mean = projected
        out.append(mean.astype(stack.dtype))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshots", nargs="+",
                        help="weight files of one run, named ..._<epoch>_<batch>.weights.h5")
    parser.add_argument("--last", type=int, nargs="+", default=[1, 3, 9],
                        help="average the last N snapshots, for each N given")
    parser.add_argument("--validation-size", type=int, default=10000)
    parser.add_argument("--bn-images", type=int, default=50000,
                        help="training images whose statistics the BN layers get")
    parser.add_argument("--output", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    paths = sorted(args.snapshots, key=position)
    if max(args.last) > len(paths):
        parser.error(f"--last {max(args.last)} needs at least that many snapshots; "
                     f"got {len(paths)}")
    data = datasets.load_mnist(raw=True)
    (x_train, _), (x_val, y_val), _ = split_validation(data, args.validation_size)
    trainer = binary_net(float((x_train / 255.0).mean(dtype=np.float64)))
    model = trainer.model
    snapshots = [snapshot_weights(trainer, p) for p in paths[-max(args.last):]]
    rows = []
    for n in args.last:
        weights = averaged(snapshots[-n:], model.trainable_variables)
        for variable, value in zip(model.trainable_variables, weights):
            variable.assign(value)
        flipped = sum(int(np.sum(w != s)) for w, s in zip(weights, snapshots[-1])
                      if w.ndim > 1)
        set_population_statistics(model, x_train[:args.bn_images])
        row = {"last": n, "from": os.path.basename(paths[-n]), "to": os.path.basename(paths[-1]),
               "kernel_elements_differing_from_last": flipped,
               "validation_accuracy": accuracy(model, x_val, y_val)}
        rows.append(row)
        print(f"average of the last {n:3d} snapshots ({row['from']} .. {row['to']}): "
              f"{flipped:5d} kernel elements differ from the last; "
              f"validation accuracy {row['validation_accuracy']:.4f}")
    write_json({**provenance(args), "rows": rows}, args.output)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Seconds a mid-cycle resume spends replaying the interrupted cycle's steps.

A fit resumed from a mid-epoch `BackupAndRestore` backup first replays the
steps the interrupted epoch had taken (no trials; they only consume the
same batches, and refill a layer-input pool). This times it on the
paper's MNIST net at batch `--batch-size`, one weight per step, searching
only the classifier's 160 weights (so a cycle is 160 steps, each little
more than a base pass): a fit killed after `--killed-after` steps, then the
resumed fit, whose seconds are mostly the replay. Run it on two checkouts
to compare (as `benchmarks/same_weights.py`).

Example:
    python benchmarks/replay_cost.py --killed-after 120
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_rso  # noqa: E402
from keras_rso import datasets  # noqa: E402


class _Kill(keras.callbacks.Callback):
    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.after:
            raise KeyboardInterrupt


def _fit(x, y, batch_size, callbacks):
    keras.utils.set_random_seed(0)
    model = keras_rso.models.paper_mnist_net()
    trainer = keras_rso.RSOModel(model, variables=lambda v: "classifier" in v.path)
    # `paper_mnist_net` ends in logits.
    trainer.compile(optimizer=keras_rso.RSO(weights_per_batch=1, seed=0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    try:
        trainer.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                    callbacks=callbacks)
    except KeyboardInterrupt:
        pass
    return time.perf_counter() - start, trainer, model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--killed-after", type=int, default=120,
                        help="steps of the 160-step cycle before the kill")
    args = parser.parse_args(argv)
    (x, y), _ = datasets.load_mnist(limit=8 * args.batch_size, raw=True)
    backup = os.path.join(tempfile.mkdtemp(), "backup")
    reference_seconds, ref_trainer, reference = _fit(x, y, args.batch_size, [])
    killed_seconds, _, _ = _fit(x, y, args.batch_size, [
        keras.callbacks.BackupAndRestore(backup, save_freq=1), _Kill(args.killed_after)])
    resumed_seconds, trainer, resumed = _fit(
        x, y, args.batch_size, [keras.callbacks.BackupAndRestore(backup, save_freq=1)])
    same = all(np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(resumed.weights, reference.weights))
    steps = trainer.steps_per_cycle()
    print(f"{keras_rso.__file__}\n{steps} steps per cycle; uninterrupted fit "
          f"{reference_seconds:.1f} s; killed after {args.killed_after} steps "
          f"({killed_seconds:.1f} s); resumed fit (replays {args.killed_after}, then runs "
          f"{steps - args.killed_after}) {resumed_seconds:.1f} s; resumed weights equal "
          f"the uninterrupted fit's: {same}", flush=True)


if __name__ == "__main__":
    main()

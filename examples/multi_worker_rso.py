#!/usr/bin/env python
"""Train the paper's MNIST network with RSO on several workers.

Each worker evaluates every candidate on its share of the global batch; the
per-worker losses are gathered before each accept/reject decision, so all
workers take the same decisions and hold the same weights. Start one process
per worker, with the same flags except `--index`:

    python examples/multi_worker_rso.py --workers 2 --index 0 --port 23456 &
    python examples/multi_worker_rso.py --workers 2 --index 1 --port 23456

Workers on several machines: set `TF_CONFIG` yourself (see the
`tf.distribute.MultiWorkerMirroredStrategy` guide) and leave out `--port`.
`--workers 1` trains on one device, for comparison.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TF start-up logs


def _tf_config(workers: int, index: int, port: int) -> str:
    hosts = [f"127.0.0.1:{port + i}" for i in range(workers)]
    return json.dumps({"cluster": {"worker": hosts},
                       "task": {"type": "worker", "index": index}})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--index", type=int, default=0, help="this worker's index")
    parser.add_argument("--port", type=int, default=None,
                        help="first of `--workers` consecutive ports on 127.0.0.1")
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch")
    parser.add_argument("--weights-per-batch", type=int, default=64)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="RSO tolerance (see keras_rso.RSO)")
    parser.add_argument("--synchronized-bn", action="store_true",
                        help="BatchNorm statistics over the global batch")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None,
                        help="write this worker's final weights here (.npz)")
    args = parser.parse_args(argv)

    if args.workers > 1 and args.port is not None:
        os.environ["TF_CONFIG"] = _tf_config(args.workers, args.index, args.port)

    import numpy as np
    import tensorflow as tf

    import keras
    import keras_rso
    from keras_rso import datasets, models

    # The strategy must exist before any other TensorFlow op runs.
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if args.workers > 1
                else tf.distribute.get_strategy())
    (x, y), (x_test, y_test) = datasets.load_mnist(limit=args.limit)
    with strategy.scope():
        keras.utils.set_random_seed(args.seed)
        model = models.mnist_paper_net(filters=args.filters,
                                       synchronized_bn=args.synchronized_bn)
        trainer = keras_rso.RSOModel(model)
        trainer.compile(
            optimizer=keras_rso.RSO(weights_per_batch=args.weights_per_batch,
                                    seed=args.seed, tolerance=args.tolerance),
            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trainer.fit(x, y, batch_size=args.batch_size, epochs=args.cycles,
                shuffle=False, verbose=2 if args.index == 0 else 0,
                callbacks=[keras_rso.callbacks.SigmaAnnealing(0.1)])
    print(f"worker {args.index} of {args.workers}: replicas in sync "
          f"{strategy.num_replicas_in_sync}, weight updates "
          f"{int(trainer.optimizer.weight_updates.numpy())}")
    if args.output:
        np.savez(args.output, **{v.path: v.numpy() for v in model.weights})


if __name__ == "__main__":
    main()

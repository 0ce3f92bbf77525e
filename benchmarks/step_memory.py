#!/usr/bin/env python
"""Peak memory of fast-path train steps against the activations they cache.

For each network and batch size, a fresh Python process builds the paper's
net (`paper_mnist_net` or `paper_cifar10_net`) under `RSO.paper()` with one
weight per step, visiting the input's layer first (`order="input_to_output"`:
a trial there recomputes the whole network, the step's largest), fits
`--steps` steps on random images and reports its peak resident memory
(`ru_maxrss`) before and after the fit. What the fit adds over the process's
peak before it is compared with the batch's cached activations
(`keras_rso.memory.cache_bytes`). Between two batch sizes of one net, the
growth of the peak per added row, in multiples of a row's activations, is
what `keras_rso.memory.TYPICAL_STEP_ACTIVATIONS` stands for, free of the
fixed costs (TensorFlow, tracing).

Example:
    python -m benchmarks.step_memory --net mnist --batch-sizes 512 2048 \\
        --results docs/results/step_memory_mnist.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure(net: str, batch: int, steps: int) -> dict:
    """One (net, batch) in this process; the caller starts a fresh one."""
    import keras
    import numpy as np

    import keras_rso
    from keras_rso import memory

    build = {"mnist": keras_rso.models.paper_mnist_net,
             "cifar10": keras_rso.models.paper_cifar10_net}[net]
    keras.utils.set_random_seed(0)
    model = build()
    shape = tuple(model.input_shape[1:])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * steps,) + shape, dtype=np.uint8)
    y = rng.integers(0, 10, (batch * steps,))
    trainer = keras_rso.RSOModel(model)
    trainer.compile(optimizer=keras_rso.RSO.paper(seed=0, order="input_to_output"),
                    loss=keras_rso.models.paper_loss())
    trainer(x[:1])
    evaluator, _ = trainer._plan()
    before = _peak_bytes()
    trainer.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=steps, verbose=0,
                shuffle=False)
    after = _peak_bytes()
    return {"net": net, "batch_size": batch, "steps": steps,
            "evaluator": type(evaluator).__name__,
            "peak_before_fit": before, "peak_after_fit": after, "fit_added": after - before,
            "activation_bytes_per_row": sum(memory.activation_bytes(evaluator.layers)),
            "cache_bytes": memory.cache_bytes(evaluator, batch)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=["mnist", "cifar10"], default="mnist")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--steps", type=int, default=2, help="fitted steps per process")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--results", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.one:  # the child: one measurement, as JSON on the last line
        print(json.dumps(measure(args.net, args.batch_sizes[0], args.steps)))
        return None
    rows = []
    for batch in args.batch_sizes:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.step_memory", "--one", "--net", args.net,
             "--batch-sizes", str(batch), "--steps", str(args.steps)],
            capture_output=True, text=True, check=True, env=os.environ.copy())
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{args.net} batch {batch}: fit added {r['fit_added'] / 1e9:.2f} GB; cached "
              f"activations {r['cache_bytes'] / 1e9:.2f} GB", flush=True)
    for a, b in zip(rows, rows[1:]):
        rows_added = b["batch_size"] - a["batch_size"]
        per_row = (b["peak_after_fit"] - a["peak_after_fit"]) / rows_added
        b["peak_per_added_row"] = per_row
        b["peak_per_added_row_in_activations"] = per_row / b["activation_bytes_per_row"]
        print(f"  {a['batch_size']} -> {b['batch_size']}: {per_row / 1e6:.3f} MB per row = "
              f"{b['peak_per_added_row_in_activations']:.2f}x its activations "
              f"({b['activation_bytes_per_row'] / 1e6:.3f} MB)")
    results = {"command": "python -m benchmarks.step_memory " + " ".join(argv or sys.argv[1:]),
               "rows": rows}
    if args.results:
        from examples.experiment import provenance, write_json
        results = {**provenance(args), **results}
        write_json(results, args.results)
    return results


if __name__ == "__main__":
    main()

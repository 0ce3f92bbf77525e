#!/usr/bin/env python
"""Seconds per cycle of the authors' setting: `--preset paper` on MNIST.

`keras_rso.models.paper_mnist_net` with `RSO.paper()` (one weight per
batch, weight decay, the paper's orders), the float64 summed loss, raw MNIST
pixels, batch `--batch-size` (the authors' 5,000). After one traced step,
`--steps` steps are timed starting at the first scalar of every searched
variable (only train-step time counts); a cycle is estimated as the sum over
variables of scalars x seconds per step there (one trial per step).

Example:
    python -m benchmarks.paper_cycle_cost --steps 5 --results docs/results/paper_cycle_cost.json
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

import keras_rso
from benchmarks.bench_speed import _StepTimer
from examples.experiment import provenance, write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variable")
    parser.add_argument("--fast-path", type=int, default=1, choices=[0, 1])
    parser.add_argument("--results", default=None)
    args = parser.parse_args(argv)
    (x, y), _ = keras_rso.datasets.load_mnist(raw=True)
    keras.utils.set_random_seed(0)
    model = keras_rso.models.paper_mnist_net()
    trainer = keras_rso.RSOModel(model, fast_path=bool(args.fast_path))
    trainer.compile(optimizer=keras_rso.RSO.paper(seed=0), loss=keras_rso.models.paper_loss())
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).repeat().prefetch(2)
    trace = _StepTimer()
    trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[trace])
    evaluator, plan = trainer._plan()
    visit = plan.visit
    sizes = [int(np.prod(evaluator.variables[v].shape)) for v in visit]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    per_variable = {}
    for v, start, size in zip(visit, starts, sizes):
        trainer.optimizer.seek(int(start))
        timer = _StepTimer()
        trainer.fit(ds, epochs=1, steps_per_epoch=min(args.steps, size), verbose=0,
                    callbacks=[timer])
        per_step = timer.total / min(args.steps, size)
        per_variable[evaluator.variables[v].path] = {
            "scalars": size, "seconds_per_step": round(per_step, 4),
            "seconds_per_cycle": round(per_step * size, 1)}
    cycle = sum(r["seconds_per_cycle"] for r in per_variable.values())
    results = provenance(args)
    results.update({"first_step_seconds": round(trace.total, 1), "per_variable": per_variable,
                    "seconds_per_cycle": round(cycle, 1)})
    for path, r in per_variable.items():
        print(f"{path:40s} {r['scalars']:6d} scalars  {r['seconds_per_step']:.3f} s/step")
    print(f"estimated cycle: {cycle:.0f} s ({cycle / 3600:.2f} h)")
    write_json(results, args.results)
    return results


if __name__ == "__main__":
    main()

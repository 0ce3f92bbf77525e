"""Where the test suite's time goes: the first call of each RSO fit.

A pytest plugin. It times every `RSOModel.fit` in the tests it runs, and
inside each fit the calls of the train function: the first call traces
and compiles the search step (one `tf.switch_case` branch per searched
variable), later calls only run it. The split says whether the suite's
time is start-up (smaller traced graphs help) or search (fewer steps or
smaller data help). At the end of the session it prints the totals and
the tests with the largest first-call time, and writes them as JSON.

Example:
    python -m pytest -n 0 -p benchmarks.fit_first_calls tests/test_rso_core.py

Run it without xdist (`-n 0`): each worker process would keep its own
totals. The JSON goes to `$FIT_FIRST_CALLS_OUTPUT` (default
`fit_first_calls.json` in the working directory).
"""

import collections
import json
import os
import time
from typing import Callable, Dict

import keras_rso.model

_FIELDS = ("fit_seconds", "first_call_seconds", "later_call_seconds", "fits", "later_calls")


class FitTimes:
    """Seconds spent in `RSOModel.fit` and in its train function's calls,
    totalled per key (the running test's id).

    `install()` wraps `RSOModel.fit` and `RSOModel.make_train_function`;
    `uninstall()` puts them back.
    """

    def __init__(self):
        self.key = "(outside tests)"
        self.per_key: Dict[str, Dict[str, float]] = collections.defaultdict(
            lambda: dict.fromkeys(_FIELDS, 0.0))
        self._saved = None

    def add(self, field: str, value: float) -> None:
        self.per_key[self.key][field] += value

    def totals(self) -> Dict[str, float]:
        return {f: round(sum(row[f] for row in self.per_key.values()), 2) for f in _FIELDS}

    def install(self) -> None:
        cls = keras_rso.model.RSOModel
        self._saved = (cls.fit, cls.make_train_function)
        fit, make = self._saved
        times = self

        def timed_fit(model, *args, **kwargs):
            start = time.perf_counter()
            try:
                return fit(model, *args, **kwargs)
            finally:
                times.add("fit_seconds", time.perf_counter() - start)
                times.add("fits", 1)

        def timed_make(model, force=False):
            function = make(model, force=force)
            if getattr(function, "_timed_by", None) is times:
                return function
            model.train_function = times.wrap(function)
            return model.train_function

        cls.fit, cls.make_train_function = timed_fit, timed_make

    def wrap(self, function: Callable) -> Callable:
        """`function` timed: its first call apart from the later ones."""
        called = []

        def timed(iterator):
            start = time.perf_counter()
            try:
                return function(iterator)
            finally:
                seconds = time.perf_counter() - start
                if called:
                    self.add("later_call_seconds", seconds)
                    self.add("later_calls", 1)
                else:
                    self.add("first_call_seconds", seconds)
                called.append(True)

        timed._timed_by = self
        return timed

    def uninstall(self) -> None:
        if self._saved is not None:
            cls = keras_rso.model.RSOModel
            cls.fit, cls.make_train_function = self._saved
            self._saved = None


_times = FitTimes()


def pytest_configure(config):
    _times.install()


def pytest_runtest_logstart(nodeid, location):
    _times.key = nodeid


def pytest_runtest_logfinish(nodeid, location):
    _times.key = "(outside tests)"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    totals = _times.totals()
    largest = sorted(_times.per_key.items(), key=lambda kv: -kv[1]["first_call_seconds"])
    report = {"totals": totals,
              "per_test": {k: {f: round(v, 2) for f, v in row.items()} for k, row in largest}}
    path = os.environ.get("FIT_FIRST_CALLS_OUTPUT", "fit_first_calls.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    write = terminalreporter.write_line
    write(f"fit_first_calls: {json.dumps(totals)} (per test: {path})")
    for key, row in largest[:8]:
        write(f"  {row['first_call_seconds']:7.2f}s first call, {row['later_call_seconds']:6.2f}s "
              f"later calls, {row['fit_seconds']:7.2f}s in fit: {key}")


def pytest_unconfigure(config):
    _times.uninstall()

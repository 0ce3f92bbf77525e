"""keras_rso adds no warning or error line to what TensorFlow and Keras
print for the same model trained with Adam (default logging)."""

import collections
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "fit_small_functional.py"
# A glog line: severity, date, time, thread id, then "file.cc:line] message".
GLOG = re.compile(r"^([WEF])\d{4} [\d:.]+\s+\d+ (.*)$")


def _warnings(optimizer):
    # Default logging: the user's environment, without the suite's quieting.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, str(SCRIPT), optimizer], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = collections.Counter()
    for line in out.stderr.splitlines():
        glog = GLOG.match(line)
        if glog:
            lines[f"{glog.group(1)} {glog.group(2)}"] += 1
        elif "Warning" in line or line.startswith(("WARNING", "ERROR")):
            lines[line] += 1
    return lines


def test_rso_fit_prints_no_warning_that_adam_does_not():
    adam, rso = _warnings("adam"), _warnings("rso")
    # Start-up lines (CUDA probing, CPU features) are printed by both.
    assert adam, "the comparison needs TensorFlow's default logging"
    extra = rso - adam
    assert not extra, "\n".join(extra)

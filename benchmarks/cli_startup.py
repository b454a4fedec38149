"""`keras-transfer --help` wall time: the command answers before TensorFlow is imported.

Runs `keras-transfer --help` (the console script next to this Python, or
`python -m keras_transfer.cli` without one) in a fresh process, 5 times (2 in
`--smoke`), with this checkout first on the path, and reports the best wall time in
seconds. The goal is under 1 second (importing TensorFlow alone takes several).
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def command():
    script = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    if os.path.exists(script):
        return [script, "--help"]
    return [sys.executable, "-m", "keras_transfer.cli", "--help"]


def run(smoke=False):
    argv = command()
    env = dict(os.environ, PYTHONPATH=common.ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    best = float("inf")
    repeats = 2 if smoke else 5
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        best = min(best, time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr[-2000:]}")
    return [
        common.Figure(
            "CLI start-up: keras-transfer --help wall time",
            best,
            1.0,
            unit=" s",
            comparison="<",
            detail=f"{os.path.basename(argv[0])} --help in a new process, best of {repeats}",
        )
    ]


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0])

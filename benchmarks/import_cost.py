"""Import cost: `import keras_transfer` and `from keras_transfer import train` against
importing TensorFlow and Keras alone.

    python benchmarks/import_cost.py [--smoke] [--json PATH]

Each import runs in a fresh Python process (`python -c "...import..."`, this checkout
first on the path), the three contenders alternating, `ROUNDS` rounds each (1 in
`--smoke`); the time is the import statement's own (`time.perf_counter` around it inside
the process: interpreter start-up and exit are the same on every side and left out; the
process wall time is in the detail). Each figure is the toolkit's best over the best of
`import tensorflow, keras`, goal <= 1.05: the toolkit adds at most 5% to what a Keras
user pays anyway. `import keras_transfer` alone imports no TensorFlow (PEP 562 lazy
names), so it is far below 1; `from keras_transfer import train` imports TensorFlow,
Keras and the training modules.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

NAME_PACKAGE = "import cost: import keras_transfer vs import tensorflow, keras"
NAME_TRAIN = "import cost: from keras_transfer import train vs import tensorflow, keras"
GOAL = 1.05
ROUNDS = 7
STATEMENTS = {
    "tensorflow_keras": "import tensorflow, keras",
    "keras_transfer": "import keras_transfer",
    "train": "from keras_transfer import train",
}
PROGRAM = "import time\nstart = time.perf_counter()\n{statement}\nprint(time.perf_counter() - start)\n"


def time_import(statement, env):
    """(seconds of `statement` inside a fresh process, wall seconds of the process)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(statement=statement)],
        capture_output=True,
        text=True,
        env=env,
        cwd=common.ROOT,
        timeout=600,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"python -c {statement!r} failed: {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1]), wall


def run(smoke=False):
    rounds = 1 if smoke else ROUNDS
    env = dict(
        os.environ,
        PYTHONPATH=common.ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    )
    seconds = {name: [] for name in STATEMENTS}
    walls = {name: [] for name in STATEMENTS}
    for r in range(rounds):
        for name, statement in STATEMENTS.items():
            inside, wall = time_import(statement, env)
            seconds[name].append(inside)
            walls[name].append(wall)
            print(f"  round {r + 1}/{rounds} {statement}: {inside:.2f}s (process {wall:.2f}s)", flush=True)
    spreads = {name: common.Spread(values, lower_is_better=True) for name, values in seconds.items()}
    wall = {name: common.Spread(values, lower_is_better=True) for name, values in walls.items()}
    base = spreads["tensorflow_keras"]

    def detail(name):
        return (
            f"`{STATEMENTS[name]}` {spreads[name].text('s')} (process wall best "
            f"{wall[name].best:.2f}s); `import tensorflow, keras` {base.text('s')} (process wall best "
            f"{wall['tensorflow_keras'].best:.2f}s); fresh processes, alternating, import "
            f"statement timed inside the process"
        )

    return [
        common.Figure(
            NAME_PACKAGE,
            spreads["keras_transfer"].best / base.best,
            GOAL,
            comparison="<=",
            detail=detail("keras_transfer"),
        ),
        common.Figure(
            NAME_TRAIN, spreads["train"].best / base.best, GOAL, comparison="<=", detail=detail("train")
        ),
    ]


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0])

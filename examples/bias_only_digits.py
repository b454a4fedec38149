"""Bias-only fine-tuning (BitFit): MNIST digits 0-4 -> digits 5-9 with 10 labels per class.

What it shows: a source CNN trained on digits 0-4 is reused for digits 5-9 two ways, with
the library's recipe for a small source model: full fine-tuning (every layer) and
bias-only (`method="bias_only"`: the backbone's biases and the new head, well under 1% of
the parameters). It prints the trainable share and the test accuracy of each, checks
that bias-only left every backbone kernel unchanged, and exports the bias-only model for
TF Serving under saved_models/bias_only_digits/<version>/.

Run:  python examples/bias_only_digits.py [--k 10] [--smoke]
"""

import argparse
import os

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--k", type=int, default=10, help="labelled target examples per class")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
keras.utils.set_random_seed(0)

# Data: real MNIST digits; the source task is 0-4, the target 5-9 (70/30 split).
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
x_pool, x_test, y_pool, y_test = train_test_split(x_tgt, y_tgt, test_size=0.3, stratify=y_tgt, random_state=0)
x_few, y_few = data.few_shot(x_pool, y_pool, k=args.k, seed=0)

# The source model.
source = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
keras_transfer.train(
    source,
    (x_src, y_src),
    epochs=1 if args.smoke else 10,
    augment=True,
    label_smoothing=0.1,
    cosine=True,
    verbose=0,
)
recipe = keras_transfer.training.recipe_for(source).replace(
    epochs=1 if args.smoke else None, min_steps=10 if args.smoke else None
)

results = {}
for name, method in (("full fine-tune", None), ("bias-only", "bias_only")):
    model = keras_transfer.build_classifier(source, num_classes=5)  # copies the source
    kernels = [
        layer.kernel.numpy() for layer in model.get_layer("backbone").layers if hasattr(layer, "kernel")
    ]
    keras_transfer.fine_tune(model, (x_few, y_few), recipe=recipe, method=method, verbose=0)
    count = keras_transfer.count_parameters(model)
    accuracy = keras_transfer.evaluate_classifier(model, (x_test, y_test)).accuracy
    results[name] = model
    print(
        f"{name:>15}: {count.trainable:,} of {count.total:,} parameters trained "
        f"({count.trainable / count.total:.2%}), test accuracy {accuracy:.4f}"
    )
    if method == "bias_only":
        after = [
            layer.kernel.numpy() for layer in model.get_layer("backbone").layers if hasattr(layer, "kernel")
        ]
        assert all(np.array_equal(a, b) for a, b in zip(kernels, after)), "a kernel changed"
        print("bias-only: every backbone kernel is unchanged")

path = keras_transfer.export_saved_model(
    results["bias-only"],
    os.path.join(args.output, "bias_only_digits"),
    class_names=[str(d) for d in range(5, 10)],
)
print(f"exported to {path}")

"""DANN: labelled MNIST digits -> an unlabelled MNIST-M-style domain, against source only.

What it shows: a small CNN learns the ten MNIST digits and is scored on MNIST-M-style
images (other MNIST digits blended with crops of scikit-image's colour photographs, as
Ganin et al. built MNIST-M; not MNIST-M itself: `data.load_mnist_m_style`). Two runs of
the same `train` call: source only, and `method=DANN(target=x_unlabelled)`, which adds a
domain classifier behind a gradient-reversal layer on the backbone's features and
trains on the target's images without their labels. The target's labels score the
test split only. The DANN model (the plain classifier: the domain classifier is not in
it) is exported for TF Serving under saved_models/dann_digits/<version>/.

Run:  python examples/dann_digits.py [--epochs 6] [--weight 1.0] [--smoke]
"""

import argparse
import os

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.adaptation import DANN

# Setup.
EPOCHS = 6
WEIGHT = 1.0  # the domain loss's weight (DANN's default)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs over the source digits")
parser.add_argument("--weight", type=float, default=WEIGHT, help="weight of the domain loss")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
keras.utils.set_random_seed(0)

# Data: half the MNIST digits are the labelled source (gray replicated to 3 channels);
# the other half become the MNIST-M-style target, split into unlabelled training
# images (80%) and a labelled test split (20%).
mnist = data.load_mnist()
x_src, x_rest, y_src, y_rest = train_test_split(
    mnist.x, mnist.y, test_size=0.5, stratify=mnist.y, random_state=0
)
x_src = np.repeat(x_src, 3, axis=-1)
target = data.load_mnist_m_style(x_rest, y_rest, seed=0, verbose=True)
x_unlabelled, x_test, _, y_test = train_test_split(
    target.x, target.y, test_size=0.2, stratify=target.y, random_state=0
)
epochs = args.epochs
if args.smoke:
    x_src, y_src, x_unlabelled, epochs = x_src[:256], y_src[:256], x_unlabelled[:256], 1

# Model, Train: source only, then DANN, from the same initial weights.
initial = keras_transfer.build_classifier(
    "mnist_cnn", 10, weights=None, input_shape=(28, 28, 3)
).get_weights()
accuracies = {}
for name, method in (("source only", None), ("DANN", DANN(target=x_unlabelled, weight=args.weight))):
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None, input_shape=(28, 28, 3))
    model.set_weights(initial)
    keras_transfer.train(
        model, (x_src, y_src), epochs=epochs, batch_size=64, seed=0, method=method, verbose=0
    )
    model = method.finalize(model) if method is not None else model

    # Evaluate: target test accuracy (the only use of target labels).
    accuracies[name] = keras_transfer.evaluate_classifier(model, (x_test, y_test)).accuracy
    print(f"{name:>12}: MNIST-M-style test accuracy {accuracies[name]:.4f}")
print(f"DANN - source only = {100 * (accuracies['DANN'] - accuracies['source only']):+.1f} points")

# Export: the DANN classifier (no domain-classifier weights in it).
assert not [w for w in model.weights if "domain" in w.path]
path = keras_transfer.export_saved_model(
    model, os.path.join(args.output, "dann_digits"), class_names=[str(d) for d in range(10)]
)
print(f"exported to {path}")

"""Learning without Forgetting: MNIST 0-4 -> 5-9, and the source task kept.

What it shows: a CNN trained on MNIST digits 0-4 (the source) is transferred to digits
5-9 (its backbone copied, a new head) twice, with the same seed, data and steps: by
naive fine-tuning, and with LwF (`method=LwF(source)`: a copy of the source's head is
kept beside the new one and trained toward the source model's own outputs on the
target images; no source image is used). After transfer the source task is measured
again, with the kept head on the transferred backbone (for naive fine-tuning: the
source's head as it was, on the fine-tuned backbone). It prints target and source test
accuracy of both, per seed and their mean, and exports the LwF target model for TF
Serving under saved_models/lwf_digits/<version>/.

With `--validate` it first runs the grid that chose LwF's defaults (weight and
temperature) on validation splits carved from the pools (never the test splits),
scoring each setting by the mean of its target and source validation accuracy.

Run:  python examples/lwf_digits.py [--epochs 10] [--seeds 0 1] [--validate] [--smoke]
"""

import argparse
import os
import time

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.forgetting import LwF
from keras_transfer.forgetting import copy_head
from keras_transfer.forgetting import with_source_head

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=10, help="transfer epochs")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="transfer seeds")
parser.add_argument("--weight", type=float, default=1.0, help="LwF weight of the kept head's loss")
parser.add_argument("--temperature", type=float, default=2.0, help="LwF temperature")
parser.add_argument("--validate", action="store_true", help="first run the validation grid")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
SOURCE_EPOCHS, EPOCHS = (1, 1) if args.smoke else (5, args.epochs)
GRID = [(0.25, 2.0), (1.0, 2.0), (4.0, 2.0), (1.0, 1.0), (1.0, 4.0)]  # (weight, temperature)
start = time.time()

# Data: each task's pool and test split (70/30); a validation split (20%) of each pool.
mnist = data.load_mnist()
if args.smoke:
    mnist = mnist._replace(x=mnist.x[:600], y=mnist.y[:600])
    args.seeds, GRID = args.seeds[:1], GRID[:1]
splits = {}
for task, classes in (("source", [0, 1, 2, 3, 4]), ("target", [5, 6, 7, 8, 9])):
    x, y = data.subset_classes(mnist.x, mnist.y, classes)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(
        x_pool, y_pool, test_size=0.2, stratify=y_pool, random_state=0
    )
    splits[task] = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}

# Setup: the source model, a CNN trained on digits 0-4 (its training split only).
keras.utils.set_random_seed(0)
source = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
keras_transfer.train(source, splits["source"]["train"], epochs=SOURCE_EPOCHS, seed=0, verbose=0)
source_accuracy = keras_transfer.evaluate_classifier(source, splits["source"]["test"]).accuracy
print(f"source (digits 0-4): test accuracy {source_accuracy:.4f} before transfer")


def accuracy(model, head, split):
    """Target accuracy of `model` and source accuracy of `head` on its backbone."""
    both = with_source_head(model, head)
    x_target, y_target = splits["target"][split]
    x_source, y_source = splits["source"][split]
    target = both.predict(x_target, verbose=0)["predictions"].argmax(-1)
    kept = both.predict(x_source, verbose=0)["source_predictions"].argmax(-1)
    return float(np.mean(target == y_target)), float(np.mean(kept == y_source))


def transfer(method, seed, split):
    """The source transferred to digits 5-9 (naive fine-tuning if `method` is None)."""
    keras.utils.set_random_seed(seed)
    model = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
    keras_transfer.transfer_weights(source, model, exclude="predictions")
    target_data = splits["target"]["train"]
    keras_transfer.train(
        model, target_data, epochs=EPOCHS, learning_rate=1e-3, seed=seed, method=method, verbose=0
    )
    head = copy_head(source) if method is None else method.source_head
    return model, accuracy(model, head, split)


# Train: the validation grid (optional), then naive fine-tuning and LwF on the test splits.
if args.validate:
    _, (target, kept) = transfer(None, 0, "val")
    print(f"validation, naive fine-tuning: target {target:.4f}, source {kept:.4f}")
    scores = {}
    for weight, temperature in GRID:
        _, (target, kept) = transfer(LwF(source, weight=weight, temperature=temperature), 0, "val")
        scores[(weight, temperature)] = (target + kept) / 2
        print(
            f"validation, LwF weight {weight:g} temperature {temperature:g}: target {target:.4f}, "
            f"source {kept:.4f} (mean {scores[(weight, temperature)]:.4f})"
        )
    best = max(scores, key=scores.get)
    print(f"validation: best weight {best[0]:g}, temperature {best[1]:g}")

results, exported = {}, None
for seed in args.seeds:
    for name in ("naive fine-tuning", "LwF"):
        method = None if name == "naive fine-tuning" else LwF(source, args.weight, args.temperature)
        model, (target, kept) = transfer(method, seed, "test")
        results.setdefault(name, []).append((target, kept))
        print(f"seed {seed}: {name:>17}: target (5-9) {target:.4f}, source (0-4) {kept:.4f}")
        if method is not None and exported is None:
            exported = model

# Evaluate: the means over seeds.
for name, values in results.items():
    target, kept = np.mean(values, axis=0)
    print(f"mean over seeds {args.seeds}: {name:>17}: target {target:.4f}, source {kept:.4f}")
print(f"wall time {time.time() - start:.0f}s")

# Export the LwF target model (one output: the kept head is not part of it).
path = keras_transfer.export_saved_model(
    exported, os.path.join(args.output, "lwf_digits"), class_names=[str(d) for d in range(5, 10)]
)
print(f"exported to {path}")

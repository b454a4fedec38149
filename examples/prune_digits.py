"""Magnitude pruning during fine-tuning: MNIST digits 0-4 -> digits 5-9, dense vs pruned.

What it shows: a source CNN trained on digits 0-4 is fine-tuned on the whole pool of
digits 5-9 with the library's recipe for a small source model, once dense and once with
`method="prune:sparsity=0.8"` (and 0.9): the smallest weights of every Dense and
convolution kernel are zeroed on Zhu & Gupta's schedule during the run and stay zero.
It prints each model's test accuracy, the sparsity reached per layer, and the gzip size
of its SavedModel variables and of its TFLite file next to the dense model's, checks that
the exported pruned weights are exactly zero, and exports the 80% model for TF Serving
under saved_models/prune_digits/<version>/.

Run:  python examples/prune_digits.py [--smoke]
"""

import argparse
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.compression import compressed_size
from keras_transfer.compression import sparsity_report

SPARSITIES = (0.8, 0.9)
CLASS_NAMES = [str(d) for d in range(5, 10)]

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
keras.utils.set_random_seed(0)

# Data: real MNIST digits; the source task is 0-4, the target 5-9 (70/30 split, the
# whole 70% trains).
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
x_pool, x_test, y_pool, y_test = train_test_split(x_tgt, y_tgt, test_size=0.3, stratify=y_tgt, random_state=0)

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


def exported_sizes(model, directory):
    """gzip bytes of the SavedModel's variables and of the float TFLite file."""
    saved = keras_transfer.export_saved_model(
        model, os.path.join(directory, "saved"), class_names=CLASS_NAMES
    )
    tflite = keras_transfer.export_tflite(model, os.path.join(directory, "model.tflite"))
    return saved, compressed_size(saved), compressed_size(tflite)


# Train: dense, then pruned, from the same source and seed.
results = {}
scratch = tempfile.TemporaryDirectory()  # the size comparison's exports
for sparsity in (None, *(SPARSITIES[:1] if args.smoke else SPARSITIES)):
    name = "dense" if sparsity is None else f"pruned {sparsity:.0%}"
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier(source, num_classes=5)  # copies the source
    method = None if sparsity is None else keras_transfer.Prune(sparsity=sparsity)
    keras_transfer.fine_tune(model, (x_pool, y_pool), recipe=recipe, method=method, verbose=0)
    if method is not None:
        model = method.finalize(model)  # strip_pruning: a plain model, zeros kept

    # Evaluate.
    accuracy = keras_transfer.evaluate_classifier(model, (x_test, y_test)).accuracy
    report = sparsity_report(model)
    saved, saved_size, tflite_size = exported_sizes(model, os.path.join(scratch.name, name.replace(" ", "_")))
    results[name] = (model, accuracy, report.sparsity, saved_size, tflite_size)
    print(f"{name:>10}: test accuracy {accuracy:.4f}, sparsity of the prunable kernels {report.sparsity:.2%}")
    if sparsity is not None:
        print(report)
        # The shipped SavedModel keeps every zero.
        reader = tf.train.load_checkpoint(os.path.join(saved, "variables", "variables"))
        values = [
            reader.get_tensor(key)
            for key, dtype in reader.get_variable_to_dtype_map().items()
            if key.startswith("variables/") and dtype.is_floating
        ]
        exported_zeros = sum(int(np.sum(v == 0)) for v in values)
        assert exported_zeros >= report.zeros, (exported_zeros, report.zeros)
        print(f"{name:>10}: the exported SavedModel holds {exported_zeros:,} zeros ({report.zeros:,} pruned)")

_, dense_accuracy, _, dense_saved, dense_tflite = results["dense"]
print(f"\n{'model':>10}  {'accuracy':>8}  {'sparsity':>8}  {'SavedModel vars gz':>22}  {'TFLite gz':>20}")
for name, (_, accuracy, sparsity, saved_size, tflite_size) in results.items():
    print(
        f"{name:>10}  {accuracy:8.4f}  {sparsity:8.2%}  {saved_size:>12,} B ({saved_size / dense_saved:.2f}x)"
        f"  {tflite_size:>10,} B ({tflite_size / dense_tflite:.2f}x)"
    )
_, pruned_accuracy, _, pruned_saved, pruned_tflite = results["pruned 80%"]
lost = (dense_accuracy - pruned_accuracy) * 100
ratio = max(pruned_saved / dense_saved, pruned_tflite / dense_tflite)
print(
    f"80% pruned vs dense: {lost:+.2f} points of accuracy lost (goal: at most 1), size "
    f"{pruned_saved / dense_saved:.2f}x (SavedModel variables) and {pruned_tflite / dense_tflite:.2f}x "
    f"(TFLite), gzipped (goal: at most 0.4x): "
    f"{'reached' if lost <= 1 and ratio <= 0.4 else 'not reached'}"
)

# Export the 80% model.
path = keras_transfer.export_saved_model(
    results["pruned 80%"][0], os.path.join(args.output, "prune_digits"), class_names=CLASS_NAMES
)
print(f"exported to {path}")

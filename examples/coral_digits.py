"""Deep CORAL: labelled MNIST digits -> the unlabelled UCI digits, against source only.

What it shows: a small CNN learns the ten MNIST digits and is scored on the UCI 8x8
digits (another scanner and resolution, resized to 28x28). Two runs of the same `train`
call: source only, and `method=CORAL(target=x_unlabelled)`, which adds the CORAL loss
(the distance between the covariances of the source and target features of each batch)
and trains on the UCI images without their labels. The target's labels score the test
split only. The CORAL model (the classifier itself: CORAL adds no weights) is exported
for TF Serving under saved_models/coral_digits/<version>/.

Run:  python examples/coral_digits.py [--epochs 6] [--weight 3000] [--smoke]
"""

import argparse
import os

import keras
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.adaptation import CORAL

# Setup.
EPOCHS = 6
WEIGHT = 3000.0  # CORAL's default, chosen on validation splits (keras-transfer demo adaptation)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs over the source digits")
parser.add_argument("--weight", type=float, default=WEIGHT, help="weight of the CORAL loss")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
keras.utils.set_random_seed(0)

# Data: the labelled MNIST source; the UCI digits split into unlabelled training
# images (80%) and a labelled test split (20%).
mnist = data.load_mnist()
uci = data.load_uci_digits()
x_unlabelled, x_test, _, y_test = train_test_split(
    uci.x, uci.y, test_size=0.2, stratify=uci.y, random_state=0
)
x_src, y_src, epochs = mnist.x, mnist.y, args.epochs
if args.smoke:
    x_src, y_src, x_unlabelled, epochs = x_src[:256], y_src[:256], x_unlabelled[:256], 1

# Model, Train: source only, then CORAL, from the same initial weights.
initial = keras_transfer.build_classifier("mnist_cnn", 10, weights=None).get_weights()
accuracies = {}
for name, method in (("source only", None), ("CORAL", CORAL(target=x_unlabelled, weight=args.weight))):
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    model.set_weights(initial)
    keras_transfer.train(
        model, (x_src, y_src), epochs=epochs, batch_size=64, seed=0, method=method, verbose=0
    )
    model = method.finalize(model) if method is not None else model

    # Evaluate: target test accuracy (the only use of target labels).
    accuracies[name] = keras_transfer.evaluate_classifier(model, (x_test, y_test)).accuracy
    print(f"{name:>12}: UCI digits test accuracy {accuracies[name]:.4f}")
print(f"CORAL - source only = {100 * (accuracies['CORAL'] - accuracies['source only']):+.1f} points")

# Export: the CORAL classifier.
path = keras_transfer.export_saved_model(
    model, os.path.join(args.output, "coral_digits"), class_names=[str(d) for d in range(10)]
)
print(f"exported to {path}")

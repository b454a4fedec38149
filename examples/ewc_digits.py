"""EWC: MNIST digits 0-4 -> digits 5-9 without forgetting digits 0-4.

What it shows: a source CNN trained on digits 0-4 is saved, then fine-tuned for digits
5-9 (a new head) two ways, with the library's recipe for a small source model: naive
fine-tuning, and fine-tuning with elastic weight consolidation (`method=EWC(source,
source_data, strength=...)`: each transferred weight held near its source value as
firmly as its Fisher information on digits 0-4 says). The Fisher values are computed
once (a bounded number of source batches, with a progress line) and saved beside the
source file (`source.fisher.npz`); the second EWC run reads them back without source
data. After each run the source task is measured again (`measure_retention`). The EWC
model is exported for TF Serving under saved_models/ewc_digits/<version>/.

`strength` was chosen on validation data carved from the pools (see
`keras_transfer.demo_forgetting.select_forgetting_settings` and the README), never on
the test split.

Run:  python examples/ewc_digits.py [--strength 1e4] [--smoke]
"""

import argparse
import os

import keras
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.forgetting import EWC
from keras_transfer.forgetting import measure_retention

# Setup.
STRENGTH = 1e4  # chosen on validation (demo_forgetting.SELECTED)
FISHER_BATCHES = 20

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--strength", type=float, default=STRENGTH, help="EWC's lambda")
parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's)")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
keras.utils.set_random_seed(0)
os.makedirs(args.output, exist_ok=True)

# Data: real MNIST digits; the source task is 0-4, the target 5-9 (70/30 splits).
mnist = data.load_mnist()


def split(classes):
    x, y = data.subset_classes(mnist.x, mnist.y, classes)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    return (x_pool, y_pool), (x_test, y_test)


source_train, source_test = split(range(5))
target_train, target_test = split(range(5, 10))
if args.smoke:
    source_train = (source_train[0][:300], source_train[1][:300])
    target_train = (target_train[0][:100], target_train[1][:100])
    source_test, target_test = (
        (source_test[0][:200], source_test[1][:200]),
        (target_test[0][:200], target_test[1][:200]),
    )

# Model: the source CNN on digits 0-4, saved as a file (EWC keeps its Fisher values beside it).
source = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
keras_transfer.train(
    source,
    source_train,
    epochs=1 if args.smoke else 10,
    augment=True,
    label_smoothing=0.1,
    cosine=True,
    verbose=0,
)
source_path = os.path.join(args.output, "ewc_digits_source.keras")
source.save(source_path)
fisher_path = source_path.replace(".keras", ".fisher.npz")
if os.path.exists(fisher_path):
    os.remove(fisher_path)  # a new source: its Fisher values are computed afresh
recipe = keras_transfer.training.recipe_for(source).replace(
    epochs=1 if args.smoke else args.epochs, min_steps=10 if args.smoke else None
)
batches = 2 if args.smoke else FISHER_BATCHES

# Train: naive fine-tuning, EWC (Fisher computed and saved), EWC again (Fisher read back).
runs = (
    ("naive fine-tune", None),
    (
        f"EWC strength={args.strength:g}",
        EWC(source_path, source_train, strength=args.strength, fisher_batches=batches),
    ),
    ("EWC, Fisher reused", EWC(source_path, None, strength=args.strength)),
)
shipped = None
for name, method in runs:
    if method is not None:
        method.fisher  # computed (or read) before seeding: both EWC runs then train alike
    keras.utils.set_random_seed(1)
    model = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
    keras_transfer.transfer_weights(source, model, exclude="predictions")
    keras_transfer.fine_tune(model, target_train, recipe=recipe, method=method, seed=0, verbose=0)
    model = method.finalize(model) if method is not None else model

    # Evaluate: the new task, and the old one with the source head kept beside the new.
    target_accuracy = keras_transfer.evaluate_classifier(model, target_test).accuracy
    kept = measure_retention(model, source, source_test)
    print(
        f"{name:>22}: digits 5-9 accuracy {target_accuracy:.4f}; digits 0-4 {kept.before:.4f} -> "
        f"{kept.after:.4f} ({kept.drop:+.1f} points dropped)"
    )
    if method is not None and shipped is None:
        shipped = model

# Export: the EWC model, as any classifier.
path = keras_transfer.export_saved_model(
    shipped, os.path.join(args.output, "ewc_digits"), class_names=[str(d) for d in range(5, 10)]
)
print(f"exported to {path}")

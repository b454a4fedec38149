"""L2-SP: MNIST digits 0-4 -> digits 5-9 without forgetting digits 0-4.

What it shows: a source CNN trained on digits 0-4 is fine-tuned for digits 5-9 (a new
head) two ways, with the library's recipe for a small source model: naive fine-tuning,
and fine-tuning with L2-SP (`method=L2SP(source, alpha=...)`: the transferred weights
pulled toward the source's, the new head decayed). After each, the source task is
measured again (`measure_retention`: the source's head on the fine-tuned backbone), so
the table shows what each keeps of digits 0-4 and what it reaches on digits 5-9. The
L2-SP model (no anchors in it) is exported for TF Serving under
saved_models/l2sp_digits/<version>/.

`alpha` was chosen on validation data carved from the pools (see
`keras_transfer.demo_forgetting.select_forgetting_settings` and the README), never on
the test split.

Run:  python examples/l2sp_digits.py [--alpha 0.01] [--smoke]
"""

import argparse
import os

import keras
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.forgetting import L2SP
from keras_transfer.forgetting import measure_retention

# Setup.
ALPHA = 0.01  # chosen on validation (demo_forgetting.SELECTED)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--alpha", type=float, default=ALPHA, help="L2-SP's pull toward the source weights")
parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's)")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
keras.utils.set_random_seed(0)

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

# Model: the source CNN on digits 0-4.
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
recipe = keras_transfer.training.recipe_for(source).replace(
    epochs=1 if args.smoke else args.epochs, min_steps=10 if args.smoke else None
)

# Train: naive fine-tuning, then L2-SP, each from the source's weights with a new head.
results = {}
for name, method in (
    ("naive fine-tune", None),
    (f"L2-SP alpha={args.alpha:g}", L2SP(source, alpha=args.alpha)),
):
    keras.utils.set_random_seed(1)
    model = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
    keras_transfer.transfer_weights(source, model, exclude="predictions")
    keras_transfer.fine_tune(model, target_train, recipe=recipe, method=method, seed=0, verbose=0)
    model = method.finalize(model) if method is not None else model

    # Evaluate: the new task, and the old one with the source head kept beside the new.
    target_accuracy = keras_transfer.evaluate_classifier(model, target_test).accuracy
    kept = measure_retention(model, source, source_test)
    results[name] = model
    print(
        f"{name:>20}: digits 5-9 accuracy {target_accuracy:.4f}; digits 0-4 {kept.before:.4f} -> "
        f"{kept.after:.4f} ({kept.drop:+.1f} points dropped)"
    )

# Export: the L2-SP model, as any classifier.
shipped = list(results.values())[-1]
path = keras_transfer.export_saved_model(
    shipped, os.path.join(args.output, "l2sp_digits"), class_names=[str(d) for d in range(5, 10)]
)
print(f"exported to {path}")

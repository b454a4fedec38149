"""The learning-rate finder on the demo's task: MNIST digits 0-4 -> digits 5-9, 10 labels per class.

What it shows: a source CNN trained on digits 0-4 is copied for digits 5-9
(`build_classifier(source, 5)`), and `find_learning_rate` runs the LR range test on
that model as the recipe fine-tunes it (every layer, label smoothing, augmentation):
an exponential ramp from 1e-7 to 10, the smoothed loss, and fastai's "steepest"
suggestion, with the model restored bit for bit afterwards. Then the model is
fine-tuned twice with the recipe, at the suggested rate and at the recipe's own rate,
and the two are compared on a validation split carved from the target pool (the test
split is only used once, for the rate chosen on validation). The chosen model is
exported under saved_models/lr_find_digits/<version>/ with the plot beside it.

Run:  python examples/lr_find_digits.py [--k 10] [--smoke]
"""

import argparse
import os
import time

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--k", type=int, default=10, help="labelled target examples per class")
parser.add_argument("--steps", type=int, default=100, help="steps of the LR ramp")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
start = time.time()
keras.utils.set_random_seed(0)
out_dir = os.path.join(args.output, "lr_find_digits")
os.makedirs(out_dir, exist_ok=True)

# Data: real MNIST digits; the source task is 0-4, the target 5-9 (70/30 split), and a
# validation split carved from the target pool (settings are chosen there, not on test).
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
x_pool, x_test, y_pool, y_test = train_test_split(x_tgt, y_tgt, test_size=0.3, stratify=y_tgt, random_state=0)
x_pool, x_val, y_pool, y_val = train_test_split(
    x_pool, y_pool, test_size=0.3, stratify=y_pool, random_state=100
)
x_few, y_few = data.few_shot(x_pool, y_pool, k=args.k, seed=0)

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

# LR finder: the copied model, measured as the recipe trains it; restored afterwards.
model = keras_transfer.build_classifier(source, num_classes=5)
before = [w.copy() for w in model.get_weights()]
result = keras_transfer.find_learning_rate(
    model,
    (x_few, y_few),
    steps=10 if args.smoke else args.steps,
    batch_size=recipe.batch_size,
    label_smoothing=recipe.label_smoothing,
    augment=True if recipe.augment else None,
    plot=os.path.join(out_dir, "lr_find.png"),
    verbose=1,
)
assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "the finder changed the model"
print("the model is unchanged by the finder: True")

# Train: the recipe at its own rate and at the suggestion; compare on validation.
rates = {"recipe": recipe.learning_rate}
if result.suggestion is not None:
    rates["suggestion"] = result.suggestion
trained = {}
for name, rate in rates.items():
    candidate = keras_transfer.build_classifier(source, num_classes=5)
    keras_transfer.fine_tune(
        candidate, (x_few, y_few), recipe=recipe.replace(learning_rate=rate), seed=0, verbose=0
    )
    accuracy = keras_transfer.evaluate_classifier(candidate, (x_val, y_val)).accuracy
    trained[name] = (accuracy, candidate)
    print(f"{name:>10} learning rate {rate:.3g}: validation accuracy {accuracy:.4f}")

# Evaluate: the rate chosen on validation, once on the test split.
chosen = max(trained, key=lambda name: trained[name][0])
accuracy, best = trained[chosen]
test_accuracy = keras_transfer.evaluate_classifier(best, (x_test, y_test)).accuracy
print(f"chosen on validation: {chosen} ({rates[chosen]:.3g}); test accuracy {test_accuracy:.4f}")

# Export.
path = keras_transfer.export_saved_model(best, out_dir, class_names=[str(d) for d in range(5, 10)])
print(f"exported to {path} ({time.time() - start:.0f}s)")

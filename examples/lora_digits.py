"""LoRA: MNIST digits 0-4 -> digits 5-9, against full fine-tuning, on the whole pool and
with 10 labels per class.

What it shows: a source CNN trained on digits 0-4 is reused for digits 5-9 two ways, with
the library's recipe for a small source model: full fine-tuning (every layer) and LoRA
(`method=LoRA(rank=...)`: rank-r updates `A @ B` of the backbone's Conv and Dense
kernels, plus the new head; the base weights stay frozen). It prints the trainable
parameters (count and share) and the test accuracy of each, checks that the merged LoRA
model (no LoRA variables) predicts what the LoRA model does, saves the adapters alone
(`save_lora_weights`, a small file), and exports the merged model for TF Serving under
saved_models/lora_digits/<version>/.

LoRA's learning rate was chosen with `--select`: on a validation split carved from the
pool (20%, stratified, seed 0), never on the test split.

Run:  python examples/lora_digits.py [--rank 8] [--learning-rate 3e-3] [--select] [--smoke]
"""

import argparse
import os

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.parameter_efficient import LoRA

# Setup.
RANK = 8
LEARNING_RATE = 3e-3  # chosen with --select (validation split of the pool); see the README
CANDIDATE_RATES = (1e-3, 3e-3, 1e-2)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--rank", type=int, default=RANK, help="LoRA rank")
parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE, help="LoRA's peak learning rate")
parser.add_argument(
    "--k", type=int, default=10, help="labelled target examples per class (few-label setting)"
)
parser.add_argument("--select", action="store_true", help="choose LoRA's learning rate on a validation split")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
keras.utils.set_random_seed(0)

# Data: real MNIST digits; the source task is 0-4, the target 5-9 (70/30 split).
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
x_pool, x_test, y_pool, y_test = train_test_split(x_tgt, y_tgt, test_size=0.3, stratify=y_tgt, random_state=0)
if args.smoke:
    x_src, y_src, x_pool, y_pool = x_src[:500], y_src[:500], x_pool[:100], y_pool[:100]
    x_test, y_test = x_test[:200], y_test[:200]
x_few, y_few = data.few_shot(x_pool, y_pool, k=args.k, seed=0)

# Model: the source CNN.
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
base_parameters = keras_transfer.count_parameters(
    keras_transfer.build_classifier(source, num_classes=5)
).total


def run(method, x, y, learning_rate=None):
    """Trains a copy of the source on (x, y); returns (model to ship, trained count, model trained)."""
    model = keras_transfer.build_classifier(source, num_classes=5)  # copies the source
    if method is None:
        keras_transfer.fine_tune(model, (x, y), recipe=recipe, verbose=0)
        return model, keras_transfer.count_parameters(model).trainable, model
    keras_transfer.fine_tune(
        model, (x, y), recipe=recipe.replace(learning_rate=learning_rate), method=method, verbose=0
    )
    trained = sum(int(np.prod(w.shape)) for w in method.trainable_weights(model))
    return method.finalize(model), trained, model


def accuracy(model, x, y):
    return keras_transfer.evaluate_classifier(model, (x, y)).accuracy


# Train (selection): LoRA's learning rate on a validation split of the pool.
learning_rate = args.learning_rate
if args.select:
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_pool, y_pool, test_size=0.2, stratify=y_pool, random_state=0
    )
    scores = {}
    for rate in CANDIDATE_RATES[:1] if args.smoke else CANDIDATE_RATES:
        merged, _, _ = run(LoRA(rank=args.rank), x_fit, y_fit, learning_rate=rate)
        scores[rate] = accuracy(merged, x_val, y_val)
        print(
            f"select: LoRA rank {args.rank} at learning rate {rate:g}: validation accuracy {scores[rate]:.4f}"
        )
    learning_rate = max(scores, key=scores.get)
    print(f"select: learning rate {learning_rate:g}")

# Train and evaluate: full fine-tuning vs LoRA, on the whole pool and on k labels per class.
print(
    f"settings: recipe 'small' (every layer / LoRA, {recipe.epochs} epochs), seed 0, LoRA rank {args.rank}, "
    f"learning rate {learning_rate:g} (full fine-tune {recipe.learning_rate:g})"
)
shipped = None
settings = [(f"whole pool ({len(x_pool)})", (x_pool, y_pool)), (f"{args.k} per class", (x_few, y_few))]
for setting, (x, y) in settings[:1] if args.smoke else settings:  # smoke: the code path, once
    results = {}
    for name, method in (("full fine-tune", None), ("LoRA", LoRA(rank=args.rank))):
        model, trained, lora_model = run(method, x, y, learning_rate=learning_rate)
        results[name] = accuracy(model, x_test, y_test)
        print(
            f"{setting:>18} {name:>15}: {trained:,} of {base_parameters:,} parameters trained "
            f"({trained / base_parameters:.2%}), test accuracy {results[name]:.4f}"
        )
        if method is not None:
            gap = np.abs(model.predict(x_test, verbose=0) - lora_model.predict(x_test, verbose=0)).max()
            assert not [w for w in model.weights if "lora" in w.path] and gap < 1e-4, gap
            print(f"{'':>34}merged model: no LoRA variables, max |probability difference| {gap:.1e}")
            if shipped is None:
                shipped = model
                os.makedirs(args.output, exist_ok=True)
                adapters = keras_transfer.save_lora_weights(
                    lora_model, os.path.join(args.output, "lora_digits.lora.h5")
                )
                full = os.path.join(args.output, "lora_digits_full.weights.h5")
                lora_model.save_weights(full)
                print(
                    f"{'':>34}adapters alone: {os.path.getsize(adapters) / 1e3:,.0f} kB "
                    f"(the whole model's weights: {os.path.getsize(full) / 1e3:,.0f} kB)"
                )
                os.remove(full)
    difference = 100 * (results["LoRA"] - results["full fine-tune"])
    print(f"{setting:>18}: LoRA - full fine-tune = {difference:+.1f} points")

# Export: the merged LoRA model of the whole pool.
path = keras_transfer.export_saved_model(
    shipped, os.path.join(args.output, "lora_digits"), class_names=[str(d) for d in range(5, 10)]
)
print(f"exported to {path}")

"""Layer-wise transfer: MNIST digits 0-4 -> digits 5-9, block by block.

What it shows: a source CNN trained on digits 0-4 is reused for digits 5-9 five ways,
each with the library's recipe for a small source model (`fine_tune`): full fine-tuning
(every layer), partial fine-tuning of the top block and of the top two blocks
(`method="partial:blocks=N"`), discriminative learning rates (`"discriminative_lr"`: each
lower block at the rate above divided by 2.6) and gradual unfreezing
(`"gradual_unfreezing"`: the top block first, one more block each epoch). It runs with
10 labels per class and with the whole training pool, prints the parameters trained
and the test accuracy of each, and exports the gradual-unfreezing model (10 labels per
class) for TF Serving under saved_models/layerwise_digits/<version>/.

Run:  python examples/layerwise_digits.py [--k 10] [--smoke]
"""

import argparse
import os

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data

METHODS = (
    ("full fine-tune", None),
    ("partial, top 1 block", "partial:blocks=1"),
    ("partial, top 2 blocks", "partial:blocks=2"),
    ("discriminative LR", "discriminative_lr"),
    ("gradual unfreezing", "gradual_unfreezing"),
)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--k", type=int, default=10, help="labelled target examples per class")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()

# Setup / Data: real MNIST digits; the source task is 0-4, the target 5-9 (70/30 split).
keras.utils.set_random_seed(0)
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
x_pool, x_test, y_pool, y_test = train_test_split(x_tgt, y_tgt, test_size=0.3, stratify=y_tgt, random_state=0)
x_few, y_few = data.few_shot(x_pool, y_pool, k=args.k, seed=0)
settings = ((f"{args.k} per class", (x_few, y_few)), (f"pool ({len(x_pool)})", (x_pool, y_pool)))
if args.smoke:
    settings = settings[:1]

# Model: the source CNN (its blocks: conv1, conv2, fc1).
source = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
keras_transfer.train(
    source,
    (x_src, y_src),
    epochs=1 if args.smoke else 10,
    augment=True,
    label_smoothing=0.1,
    cosine=True,
    seed=0,
    verbose=0,
)
blocks = [group.name for group in keras_transfer.layer_groups(source.get_layer("backbone"))]
print(f"source backbone blocks, bottom to top: {blocks}")
recipe = keras_transfer.training.recipe_for(source).replace(
    epochs=2 if args.smoke else None, min_steps=4 if args.smoke else None
)
print(f"recipe: {recipe.epochs} epochs at {recipe.learning_rate} (cosine), min_steps={recipe.min_steps}")

# Train / Evaluate: every method on each setting, from the same source weights.
exported = None
for setting, train_data in settings:
    for name, method in METHODS:
        keras.utils.set_random_seed(0)
        model = keras_transfer.build_classifier(source, num_classes=5)  # copies the source
        body = model.get_layer("backbone")
        before = {layer.name: [w.numpy() for w in layer.weights] for layer in body.layers}
        keras_transfer.fine_tune(model, train_data, recipe=recipe, method=method, seed=0, verbose=0)
        changed = [
            layer.name
            for layer in body.layers
            if any(not np.array_equal(a, w.numpy()) for a, w in zip(before[layer.name], layer.weights))
        ]
        count = keras_transfer.count_parameters(model)
        trained, total = count.trainable, count.total
        accuracy = keras_transfer.evaluate_classifier(model, (x_test, y_test)).accuracy
        print(
            f"{setting:>14} | {name:<22}: {trained:>7,} of {total:,} parameters trained at the end, "
            f"backbone layers changed {changed}, test accuracy {accuracy:.4f}"
        )
        if method == "gradual_unfreezing" and exported is None:
            exported = model

# Export
path = keras_transfer.export_saved_model(
    exported, os.path.join(args.output, "layerwise_digits"), class_names=[str(d) for d in range(5, 10)]
)
print(f"exported to {path}")

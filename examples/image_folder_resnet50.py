"""ResNet50 on a folder of images: scan, split, fine-tune, evaluate, export (TF Serving + TFLite).

What it shows: the image-folder workflow step by step with the keras_transfer API (the
`keras-transfer train` command runs the same steps in one call). A class-per-folder
directory is scanned (corrupt files are skipped and listed), split per class with a seed
and fed through tf.data with augmentation; ResNet50 (its preprocessing inside the model)
trains a new head, then its top layers are fine-tuned with BatchNorm frozen; the model is
evaluated, exported for TF Serving (encoded-bytes and pixel signatures) and to TFLite
float32 and int8, and each file's accuracy is printed next to the Keras model's.

Without `--data`, it draws its own folder of shapes (circles, squares, triangles in random
colours, plus one truncated PNG to show the skip report). Without ImageNet weights (offline
and not cached), it says so and trains ResNet50 from scratch in one stage. That shows the
workflow, not transfer: from scratch on a few hundred images ResNet50 stays near chance
(0.38 on the 3 shapes at 64 px, 10 epochs, measured). Transfer needs the pretrained weights.

Run:  python examples/image_folder_resnet50.py [--data DIR] [--weights imagenet|none|PATH]
                                                [--epochs 10] [--smoke]
"""

import argparse
import os
import tempfile

import keras
import numpy as np

import keras_transfer
from keras_transfer.data import image_folder
from keras_transfer.export import tflite

# Setup
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--data", help="class-per-folder image directory (default: drawn shapes)")
parser.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file")
parser.add_argument("--image-size", type=int, default=96, help="input size (ResNet50 needs >= 32)")
parser.add_argument("--epochs", type=int, default=10, help="epochs per stage")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a short run (tests)")
args = parser.parse_args()
SIZE = 32 if args.smoke else args.image_size
EPOCHS = 1 if args.smoke else args.epochs
PER_CLASS = 12 if args.smoke else 150
NAME = "resnet50_folder_example"
OUT = os.path.join(args.output, NAME)
keras.utils.set_random_seed(0)


def draw_shapes(root, per_class, size=96, seed=0):
    """Writes circles, squares and triangles as PNGs into root/<shape>/, and one bad file."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for shape in ("circle", "square", "triangle"):
        os.makedirs(os.path.join(root, shape), exist_ok=True)
        for i in range(per_class):
            cy, cx = rng.uniform(0.3, 0.7, 2) * size
            r = rng.uniform(0.15, 0.3) * size
            if shape == "circle":
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            elif shape == "square":
                mask = (abs(yy - cy) <= r * 0.8) & (abs(xx - cx) <= r * 0.8)
            else:
                mask = (yy >= cy - r) & (yy <= cy + r) & (abs(xx - cx) <= (yy - (cy - r)) / 2)
            background = rng.integers(0, 256, 3)
            image = np.where(mask[..., None], rng.integers(0, 256, 3), background)
            image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
            tf.io.write_file(os.path.join(root, shape, f"{i:04d}.png"), tf.io.encode_png(image))
    # A truncated PNG, as a crashed copy leaves behind: it is skipped and reported.
    good = open(os.path.join(root, "circle", "0000.png"), "rb").read()
    with open(os.path.join(root, "circle", "truncated.png"), "wb") as handle:
        handle.write(good[: len(good) // 2])
    return root


# Data: scanned once (bad files skipped and listed), split per class, tf.data with
# augmentation for training; the validation set is neither shuffled nor augmented.
data_dir = args.data or draw_shapes(tempfile.mkdtemp(), PER_CLASS)
folder = image_folder.image_folder_datasets(
    data_dir, image_size=SIZE, channels=3, validation_split=0.25, seed=0, batch_size=16, augment=True
)
print(f"classes: {folder.class_names}; skipped files: {len(folder.skipped)}")

# Model: ResNet50 with its own preprocessing inside, pooled features, a new head.
weights = None if args.weights == "none" else args.weights
try:
    model = keras_transfer.build_classifier(
        "resnet50", folder.num_classes, weights=weights, input_shape=(SIZE, SIZE, 3)
    )
except keras_transfer.WeightsUnavailableError as error:
    print(f"{error}\n-> training ResNet50 from scratch instead (weights=None).")
    weights = None
    model = keras_transfer.build_classifier(
        "resnet50", folder.num_classes, weights=None, input_shape=(SIZE, SIZE, 3)
    )
print(keras_transfer.count_parameters(model))

# Train: the head on the frozen backbone, then the top quarter of ResNet50 (BatchNorm
# frozen) at a lower rate; checkpoints and crash backups in OUT/train/.
workdir = os.path.join(OUT, "train")
if weights is not None:
    history = keras_transfer.fine_tune(
        model,
        folder.train,
        folder.validation,
        head_epochs=EPOCHS,
        epochs=EPOCHS,
        head_learning_rate=1e-3,
        learning_rate=1e-5,
        unfreeze_fraction=0.25,
        workdir=workdir,
        patience=3,
    )
else:
    history = keras_transfer.train(
        model,
        folder.train,
        folder.validation,
        epochs=2 * EPOCHS,
        learning_rate=1e-3,
        workdir=workdir,
        patience=5,
    )

# Evaluate on the validation split: report, confusion matrix, learning curves.
evaluation = keras_transfer.evaluate_classifier(model, folder.validation, folder.class_names)
print(evaluation)
keras_transfer.plot_confusion_matrix(evaluation, os.path.join(workdir, "confusion.png"))
keras_transfer.plot_history(history, os.path.join(workdir, "learning_curves.png"))

# Export: TF Serving (serving_default takes encoded image bytes, serve takes pixels),
# then TFLite float32 and int8 calibrated on training images from the pipeline.
path = keras_transfer.export_saved_model(model, OUT, class_names=folder.class_names)
print(f"exported to {path}")
validation = image_folder.load_image_folder(data_dir, image_size=SIZE, channels=3, verbose=False)
held_out = set(folder.validation_files.paths)
keep = np.array([p in held_out for p in validation.paths])
x_val, y_val = validation.x[keep], validation.y[keep]
calibration = image_folder.files_dataset(
    folder.train_files.paths[:: max(1, len(folder.train_files.paths) // 128)],
    image_size=SIZE,
    channels=3,
    batch_size=16,
    cache=False,
)
print(f"keras accuracy: {evaluation.accuracy:.4f}")
for kind, quantization in [("float32", None), ("int8", "int8")]:
    file = os.path.join(OUT, "tflite", os.path.basename(path), f"model_{kind}.tflite")
    tflite.export_tflite(model, file, quantization=quantization, representative_data=calibration)
    print(
        f"TFLite {kind}: {os.path.getsize(file) / 1e6:.1f} MB, accuracy "
        f"{tflite.evaluate_tflite(file, x_val, y_val):.4f}"
    )

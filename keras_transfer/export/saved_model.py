"""SavedModel export in the TF Serving layout `<base>/<version>/`, atomically.

An exported classifier answers in class names, not only in scores, and takes what a
client has: encoded image files (`serving_default`), float pixels (`serve`, the
signature Keras's own `model.export` writes) or uint8 pixels (`serve_uint8`).
"""

import os

import keras
import tensorflow as tf

from keras_transfer.data import images as images_lib
from keras_transfer.utils import checks
from keras_transfer.utils import files

BYTES_INPUT_NAME = "image_bytes"
SIGNATURES = ("serving_default", "serve", "serve_uint8")


def next_version(base_dir):
    """The next integer version under `base_dir` (1 if there is none yet).

    Example:

    >>> import tempfile
    >>> from keras_transfer import export
    >>> export.next_version(tempfile.mkdtemp())
    1
    """
    if not os.path.isdir(base_dir):
        return 1
    versions = [int(name) for name in os.listdir(base_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(
    model,
    base_dir,
    *,
    version=None,
    class_names=None,
    input_name="images",
    top_k=None,
    verbose=False,
):
    """Exports a classifier for TF Serving as `<base_dir>/<version>/`, atomically.

    The SavedModel has three signatures, all returning the same named outputs:

    - `serving_default`: `image_bytes`, a `tf.string` batch `[None]` of encoded images
      (PNG, JPEG, GIF or BMP). They are decoded in the graph by
      `keras_transfer.images.decode_images` (the decoder the image-folder pipelines
      use) with the model's number of channels and resized to its input size. The
      `_bytes` suffix lets TF Serving's REST API take `{"b64": "..."}` values.
    - `serve`: `input_name`, float32 pixels (0-255) `[None, H, W, C]`, the model's
      input shape (the signature `model.export` writes).
    - `serve_uint8`: `input_name`, uint8 pixels `[None, H, W, C]`.

    Outputs: `probabilities` (float32 `[N, num_classes]`, the model's scores),
    `class_id` (int64 `[N]`, their argmax) and `class_name` (`tf.string` `[N]`, from
    the class names baked into the graph). With `top_k`, also `top_k_probabilities`
    (float32 `[N, k]`), `top_k_class_ids` (int64 `[N, k]`) and `top_k_class_names`
    (`tf.string` `[N, k]`), best first. The backbone's preprocessing is inside the
    Keras model, so every signature takes raw pixels.

    `labels.txt` (one class name per line, in class-id order) is written beside
    `saved_model.pb`. The SavedModel needs neither the Keras model nor this package
    to run. The version is written into a temporary folder and renamed into place
    only when complete: a failed export leaves nothing behind, and an existing
    version is never touched. In a multi-worker `tf.distribute` run every worker
    exports but only the chief's version is kept (see
    `keras_transfer.utils.files.atomic_path`).

    Args:
        model: `keras.Model` mapping images `(None, H, W, C)` (C = 1 or 3) to class
            scores.
        base_dir: str. The model's folder, e.g. `"saved_models/digits"`.
        version: int. Defaults to the next integer after the existing versions.
        class_names: list of str. Defaults to `"0"`, `"1"`, ...
        input_name: str. Name of the pixel input of `serve` and `serve_uint8`.
            Defaults to `"images"`.
        top_k: int. Also return the `top_k` best classes. Defaults to `None`.
        verbose: bool. Let Keras print what it exports. Defaults to `False`.

    Returns:
        str. The path of the new version folder.

    Raises:
        FileExistsError: the version exists already.
        ValueError: `class_names` of the wrong length (or blank or multi-line names),
            a bad version or `top_k`, or a model whose input is not a fixed-size image
            with 1 or 3 channels.

    Example:

    >>> import tempfile, tensorflow as tf, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> path = keras_transfer.export_saved_model(model, tempfile.mkdtemp() + "/digits")
    >>> path.endswith("/1")
    True
    >>> loaded = tf.saved_model.load(path)
    >>> sorted(loaded.signatures)
    ['serve', 'serve_uint8', 'serving_default']
    >>> png = tf.io.encode_png(tf.zeros((28, 28, 1), tf.uint8))
    >>> out = loaded.signatures["serving_default"](image_bytes=tf.stack([png, png]))
    >>> sorted(out), out["class_name"].shape
    (['class_id', 'class_name', 'probabilities'], TensorShape([2]))
    >>> out = loaded.signatures["serve"](images=tf.zeros((3, 28, 28, 1)))
    >>> tuple(out["probabilities"].shape), out["class_id"].dtype.name
    ((3, 10), 'int64')
    """
    num_classes = int(model.output.shape[-1])
    names = [str(c) for c in (class_names if class_names is not None else range(num_classes))]
    if len(names) != num_classes:
        raise ValueError(
            f"The model has {num_classes} classes but {len(names)} class names were "
            f"given. Received: class_names={class_names!r}"
        )
    if any(not name.strip() or "\n" in name or "\r" in name for name in names):
        raise ValueError(
            "Class names must be non-blank single-line strings (labels.txt has one per "
            f"line). Received: class_names={class_names!r}"
        )
    if top_k is not None:
        top_k = checks.positive_int("top_k", top_k, maximum=num_classes)  # at most the classes
    shape = tuple(model.input.shape[1:])
    if len(shape) != 3 or None in shape or shape[-1] not in (1, 3):
        raise ValueError(
            "The model must take fixed-size images (height, width, channels) with 1 or "
            f"3 channels, so encoded images can be decoded to its input. Received: a "
            f"model with input shape {tuple(model.input.shape)}"
        )
    if version is None:
        version = next_version(base_dir)
    version = checks.positive_int("version", version)
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(
            f"Version {version} exists already at {final}; it is never overwritten. "
            "Pass another version, or none for the next one."
        )

    height, width, channels = shape

    def classify(pixels):
        probabilities = tf.cast(model(pixels, training=False), tf.float32)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        table = tf.constant(names, tf.string)  # baked into the graph
        outputs = {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(table, class_id),
        }
        if top_k is not None:
            best = tf.math.top_k(probabilities, k=top_k)
            ids = tf.cast(best.indices, tf.int64)
            outputs.update(
                top_k_probabilities=best.values,
                top_k_class_ids=ids,
                top_k_class_names=tf.gather(table, ids),
            )
        return outputs

    def serve_bytes(image_bytes):
        return classify(images_lib.decode_images(image_bytes, (height, width), channels))

    def serve_float(images):
        return classify(images)

    def serve_uint8(images):
        return classify(tf.cast(images, tf.float32))

    # atomic_path makes the staging folder with the umask's mode (not tempfile.mkdtemp's
    # 0700, which would make the version unreadable to a server running as another user).
    with files.atomic_path(final, is_dir=True) as staging:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serving_default",
            serve_bytes,
            input_signature=[tf.TensorSpec((None,), tf.string, name=BYTES_INPUT_NAME)],
        )
        archive.add_endpoint(
            "serve",
            serve_float,
            input_signature=[tf.TensorSpec((None,) + shape, tf.float32, name=input_name)],
        )
        archive.add_endpoint(
            "serve_uint8",
            serve_uint8,
            input_signature=[tf.TensorSpec((None,) + shape, tf.uint8, name=input_name)],
        )
        archive.write_out(staging, verbose=verbose)
        write_labels(staging, names)
    return final


def write_labels(directory, class_names):
    """Writes `labels.txt` (one class name per line, in class-id order); returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "labels.txt")
    with open(path, "w") as handle:
        handle.write("\n".join(class_names) + "\n")
    return path


def read_labels(version_dir):
    """The class names written beside an exported SavedModel (`labels.txt`).

    Example:

    >>> import tempfile, keras_transfer
    >>> from keras_transfer import export
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> path = keras_transfer.export_saved_model(
    ...     model, tempfile.mkdtemp(), class_names=["cat", "dog"])
    >>> export.read_labels(path)
    ['cat', 'dog']
    """
    with open(os.path.join(version_dir, "labels.txt")) as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]

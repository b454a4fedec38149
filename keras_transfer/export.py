"""SavedModel export in the TF Serving layout `<base>/<version>/`, atomically."""

import os
import shutil
import tempfile

import keras
import tensorflow as tf


def next_version(base_dir):
    """The next integer version under `base_dir` (1 if there is none yet)."""
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
    verbose=False,
):
    """Exports a classifier for TF Serving as `<base_dir>/<version>/`, atomically.

    The SavedModel's `serving_default` (and `serve`) signature takes `input_name`
    (float32 pixels, the model's input shape) and returns `probabilities` (float32,
    one score per class) and `class_id` (int64). `labels.txt` (one class name per
    line, in class-id order) is written beside `saved_model.pb`. The version is
    written into a temporary folder and renamed into place only when complete: a
    failed export leaves nothing behind, and an existing version is never touched.

    Args:
        model: `keras.Model` mapping images to class scores.
        base_dir: str. The model's folder, e.g. `"saved_models/digits"`.
        version: int. Defaults to the next integer after the existing versions.
        class_names: list of str. Defaults to `"0"`, `"1"`, ...
        input_name: str. Name of the signature's input. Defaults to `"images"`.
        verbose: bool. Let Keras print what it exports. Defaults to `False`.

    Returns:
        str. The path of the new version folder.

    Raises:
        FileExistsError: the version exists already.
        ValueError: `class_names` of the wrong length, or a bad version.

    Example:

    >>> import tempfile, numpy as np, tensorflow as tf, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> path = keras_transfer.export_saved_model(model, tempfile.mkdtemp() + "/digits")
    >>> path.endswith("/1")
    True
    >>> served = tf.saved_model.load(path).signatures["serving_default"]
    >>> sorted(served(images=tf.zeros((2, 28, 28, 1)))) == ["class_id", "probabilities"]
    True
    """
    num_classes = int(model.output.shape[-1])
    names = [str(c) for c in (class_names if class_names is not None else range(num_classes))]
    if len(names) != num_classes:
        raise ValueError(
            f"The model has {num_classes} classes but {len(names)} class names were "
            f"given. Received: class_names={class_names!r}"
        )
    if version is None:
        version = next_version(base_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer. Received: version={version!r}")
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(
            f"Version {version} exists already at {final}; it is never overwritten. "
            "Pass another version, or none for the next one."
        )
    os.makedirs(base_dir, exist_ok=True)

    spec = tf.TensorSpec((None,) + tuple(model.input.shape[1:]), tf.float32, name=input_name)

    def serve(images):
        probabilities = tf.cast(model(images, training=False), tf.float32)
        return {
            "probabilities": probabilities,
            "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base_dir)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", serve, input_signature=[spec])
        archive.write_out(staging, verbose=verbose)
        with open(os.path.join(staging, "labels.txt"), "w") as handle:
            handle.write("\n".join(names) + "\n")
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def read_labels(version_dir):
    """The class names written beside an exported SavedModel."""
    with open(os.path.join(version_dir, "labels.txt")) as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]

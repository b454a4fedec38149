"""SavedModel export in the TF Serving layout `<base>/<version>/`, atomically.

An exported classifier answers in class names, not only in scores, and takes what a
client has: encoded image files (`serving_default`), float pixels (`serve`, the
signature Keras's own `model.export` writes) or uint8 pixels (`serve_uint8`).
"""

import os
import shutil

import keras
import tensorflow as tf

from keras_transfer.data import images as images_lib
from keras_transfer.utils import checks
from keras_transfer.utils import files

BYTES_INPUT_NAME = "image_bytes"
SIGNATURES = ("serving_default", "serve", "serve_uint8")


def next_version(base_dir):
    """The next integer version under `base_dir` (1 if there is none yet).

    Versions being written by a running export (claimed by a hidden `.<version>.claim`
    folder, see `export_saved_model`) count as taken.

    Example:

    >>> import tempfile
    >>> from keras_transfer import export
    >>> export.next_version(tempfile.mkdtemp())
    1
    """
    if not os.path.isdir(base_dir):
        return 1
    versions = []
    for name in os.listdir(base_dir):
        if name.startswith(".") and name.endswith(_CLAIM):
            name = name[1 : -len(_CLAIM)]
        if name.isdigit():
            versions.append(int(name))
    return max(versions, default=0) + 1


_CLAIM = ".claim"


def _claim_path(base_dir, version):
    return os.path.join(base_dir, f".{version}{_CLAIM}")


def _claim_version(base_dir, version):
    """Claims a version with an atomic `os.mkdir` of its hidden claim folder.

    Two exports at once can both see the same next version; only one `mkdir` of its
    claim succeeds, the other takes the next number. Returns `(version, claim_dir)`.
    """
    while True:
        number = next_version(base_dir) if version is None else version
        final = os.path.join(base_dir, str(number))
        claim = _claim_path(base_dir, number)
        try:
            os.mkdir(claim)
        except FileExistsError:
            if version is not None:
                raise FileExistsError(
                    f"Version {version} is being exported by another process into {base_dir} "
                    f"(it holds {claim}; if no export is running, that folder was left by a "
                    "killed one: remove it). Pass another version, or none for the next one."
                ) from None
            continue
        if os.path.exists(final):  # written meanwhile by an export that did not claim it
            os.rmdir(claim)
            if version is not None:
                raise _version_exists(version, final)
            continue
        return number, claim


def _version_exists(version, final):
    return FileExistsError(
        f"Version {version} exists already at {final}; it is never overwritten. "
        "Pass another version, or none for the next one."
    )


def export_saved_model(
    model,
    base_dir,
    *,
    version=None,
    class_names=None,
    input_name="images",
    top_k=None,
    max_pixels=images_lib.DEFAULT_MAX_PIXELS,
    verbose=False,
):
    """Exports a classifier for TF Serving as `<base_dir>/<version>/`, atomically.

    The SavedModel has three signatures, all returning the same named outputs:

    - `serving_default`: `image_bytes`, a `tf.string` batch `[None]` of encoded images
      (PNG, JPEG, GIF or BMP). They are decoded in the graph by
      `keras_transfer.images.decode_images` (the decoder the image-folder pipelines
      use) with the model's number of channels and resized to its input size. Each
      item's header is checked before decoding: one that is not a PNG, JPEG, GIF or
      BMP, is cut short, or has more than `max_pixels` pixels fails the call with
      `InvalidArgumentError: assertion failed: [image_bytes[<index>] is ...]`,
      naming the item, instead of exhausting memory. The
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
    version is never touched. Exports running at once into one `base_dir` (threads
    or processes) each get their own version: a version is claimed by an atomic
    `os.mkdir` of a hidden `<base_dir>/.<version>.claim` folder, which holds the
    staging folder and is removed at the end (one left by a killed export only makes
    the next export skip that number). In a multi-worker `tf.distribute` run every worker
    exports but only the chief's version is kept (see
    `keras_transfer.utils.files.atomic_path`).

    Args:
        model: `keras.Model` mapping images `(None, H, W, C)` (C = 1 or 3) to class
            scores.
        base_dir: str or path-like. The model's folder, e.g. `"saved_models/digits"`;
            not empty, not a file.
        version: int. Defaults to the next integer after the existing versions
            (and the ones being exported).
        class_names: list of str. Defaults to `"0"`, `"1"`, ...
        input_name: str. Name of the pixel input of `serve` and `serve_uint8`.
            Defaults to `"images"`.
        top_k: int. Also return the `top_k` best classes. Defaults to `None`.
        max_pixels: int or `None`. The largest image (height x width, read from its
            header) `serving_default` decodes. Defaults to
            `keras_transfer.images.DEFAULT_MAX_PIXELS` (50 megapixels); `None` for no
            limit.
        verbose: bool. Let Keras print what it exports. Defaults to `False`.

    Returns:
        str. The path of the new version folder.

    Raises:
        FileExistsError: the requested `version` exists already (or is being exported
            by another process), raised before any export work.
        NotADirectoryError: `base_dir` is a file.
        ValueError: `class_names` of the wrong length (or blank or multi-line names),
            an empty `base_dir`, a bad version, `top_k` or `max_pixels`, or a model
            whose input is not a fixed-size image with 1 or 3 channels.

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
    base_dir = _check_base_dir(base_dir)
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
    max_pixels = images_lib.check_max_pixels(max_pixels)
    shape = tuple(model.input.shape[1:])
    if len(shape) != 3 or None in shape or shape[-1] not in (1, 3):
        raise ValueError(
            "The model must take fixed-size images (height, width, channels) with 1 or "
            f"3 channels, so encoded images can be decoded to its input. Received: a "
            f"model with input shape {tuple(model.input.shape)}"
        )
    if version is not None:
        version = checks.positive_int("version", version)
        final = os.path.join(base_dir, str(version))
        if os.path.exists(final):
            raise _version_exists(version, final)

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
        pixels = images_lib.decode_images(
            image_bytes, (height, width), channels, max_pixels=max_pixels, name=BYTES_INPUT_NAME
        )
        return classify(pixels)

    def serve_float(images):
        return classify(images)

    def serve_uint8(images):
        return classify(tf.cast(images, tf.float32))

    def write(staging):
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

    if not files.is_chief():
        # A worker of a multi-worker run writes into a throw-away folder (atomic_path).
        final = os.path.join(base_dir, str(version or next_version(base_dir)))
        with files.atomic_path(final, is_dir=True) as staging:
            write(staging)
        return final

    created = files._missing_folders(os.path.abspath(base_dir))
    os.makedirs(base_dir, exist_ok=True)
    claim = None
    try:
        version, claim = _claim_version(base_dir, version)
        final = os.path.join(base_dir, str(version))
        # The staging folder is made with the umask's mode (not tempfile.mkdtemp's
        # 0700, which would make the version unreadable to a server running as another
        # user), inside the claim, and renamed into place when complete.
        staging = os.path.join(claim, str(version))
        os.mkdir(staging)
        write(staging)
        os.rename(staging, final)
    except BaseException:
        if claim is not None:
            shutil.rmtree(claim, ignore_errors=True)
            claim = None
        for folder in created:  # deepest first, if empty: a failed export leaves nothing
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise
    finally:
        if claim is not None:
            shutil.rmtree(claim, ignore_errors=True)
    return final


def _check_base_dir(base_dir):
    if not isinstance(base_dir, (str, os.PathLike)):
        raise ValueError(f"base_dir must be a folder path (str). Received: base_dir={base_dir!r}")
    base_dir = os.fspath(base_dir)
    if not base_dir.strip():
        raise ValueError(
            "base_dir must name the model's folder (versions go to <base_dir>/<version>/), "
            f"not be empty. Received: base_dir={base_dir!r}"
        )
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise NotADirectoryError(
            f"base_dir must be a folder, but {base_dir} is a file. Received: base_dir={base_dir!r}"
        )
    return base_dir


def write_labels(directory, class_names):
    """Writes `labels.txt` (one class name per line, in class-id order); returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "labels.txt")
    with open(path, "w") as handle:
        handle.write("\n".join(class_names) + "\n")
    return path


def read_labels(version_dir):
    """The class names written beside an exported SavedModel (`labels.txt`).

    Raises:
        FileNotFoundError: there is no `labels.txt` in `version_dir`, naming the file
            and what to do.

    Example:

    >>> import tempfile, keras_transfer
    >>> from keras_transfer import export
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> path = keras_transfer.export_saved_model(
    ...     model, tempfile.mkdtemp(), class_names=["cat", "dog"])
    >>> export.read_labels(path)
    ['cat', 'dog']
    """
    path = os.path.join(version_dir, "labels.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No labels.txt in {version_dir or '.'}: the class names of a SavedModel or .tflite "
            "model are read from labels.txt beside it (one name per line, in class-id order, as "
            "export_saved_model and `keras-transfer export` write it). Copy the export's "
            f"labels.txt there. Received: {path}"
        )
    with open(path) as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]

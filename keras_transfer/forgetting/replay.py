"""Replay: a small seeded buffer of source examples mixed into the target batches, so
the kept source head (and the shared backbone) keeps seeing the source task.
"""

import os

import numpy as np
import tensorflow as tf

from keras_transfer.data import augmentation as augmentation_lib
from keras_transfer.data import datasets as data_lib
from keras_transfer.forgetting import heads
from keras_transfer.training import method as method_lib
from keras_transfer.utils import checks


def replay_buffer(x, y, per_class, seed=0):
    """Exactly `per_class` examples of each class of `y`, drawn without replacement.

    Deterministic for a seed (`data.few_shot_indices`); the examples keep their order
    in `x`.

    Args:
        x: array (N, ...). The source examples.
        y: array (N,). Their integer labels.
        per_class: int >= 1. Examples kept of each class.
        seed: int. Defaults to `0`.

    Returns:
        `(x_buffer, y_buffer)`.

    Raises:
        ValueError: `per_class < 1`, `x` and `y` of different lengths, or a class with
            fewer than `per_class` examples.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.forgetting import replay_buffer
    >>> x, y = np.arange(30), np.arange(30) % 3
    >>> x_buffer, y_buffer = replay_buffer(x, y, per_class=4, seed=0)
    >>> np.bincount(y_buffer).tolist(), bool((x_buffer % 3 == y_buffer).all())
    ([4, 4, 4], True)
    """
    per_class = checks.positive_int("per_class", per_class)
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}")
    labels, counts = np.unique(y, return_counts=True)
    short = {int(label): int(count) for label, count in zip(labels, counts) if count < per_class}
    if short:
        raise ValueError(
            f"replay_buffer needs {per_class} examples of each class; these classes have fewer "
            f"(class: count): {short}. Received: per_class={per_class}"
        )
    index = data_lib.few_shot_indices(y, per_class, seed)
    return x[index], y[index]


def _augmenter(augment, channels, seed):
    if augment is True:
        return augmentation_lib.augmentation_for(channels, seed=seed)
    return augment or None


def mix_buffer(target, x_buffer, y_buffer, replay_batch_size, *, seed=0, augment=None):
    """Target batches with `replay_batch_size` buffer examples appended to each.

    Each element is `(images, labels, sample_weights)` for a `SourceHeadTrainer`:
    `images` the batch's `n` target images then `k = replay_batch_size` buffer images
    (drawn from the buffer shuffled, reshuffled every pass, seeded), `labels =
    {"predictions": [y, 0...], "source_predictions": [0..., y_buffer]}` and the sample
    weights mask each head to its own examples, scaled so that each head's loss is the
    mean over its examples: `(n + k) / n` on the target examples of `"predictions"`,
    `(n + k) / k` on the buffer examples of `"source_predictions"`, zero elsewhere.

    Args:
        target: `tf.data.Dataset` of `(images, labels)` batches.
        x_buffer: array. Buffer images (`replay_buffer`).
        y_buffer: array. Their labels.
        replay_batch_size: int >= 1. Buffer examples per batch.
        seed: int. Shuffle seed of the buffer. Defaults to `0`.
        augment: `None`, `True` or a callable: augments the buffer batches (as the
            target's). Defaults to `None`.

    Returns:
        A `tf.data.Dataset`, as many batches as `target`.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> from keras_transfer.forgetting import mix_buffer
    >>> target = tf.data.Dataset.from_tensor_slices((np.zeros((8, 2, 2, 1)), np.ones(8, "int64"))).batch(4)
    >>> x, y, w = next(iter(mix_buffer(target, np.ones((3, 2, 2, 1)), np.array([0, 1, 2]), 2)))
    >>> x.shape[0], w["predictions"].numpy().tolist(), w["source_predictions"].numpy().tolist()
    (6, [1.5, 1.5, 1.5, 1.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 3.0, 3.0])
    """
    replay_batch_size = checks.positive_int("replay_batch_size", replay_batch_size)
    x_buffer = np.asarray(x_buffer, np.float32)
    if x_buffer.ndim == 3:
        x_buffer = x_buffer[..., None]
    y_buffer = np.asarray(y_buffer).astype(np.int64)
    if len(x_buffer) == 0 or len(x_buffer) != len(y_buffer):
        raise ValueError(
            "The buffer needs images and as many labels. "
            f"Received: {len(x_buffer)} images, {len(y_buffer)} labels"
        )
    spec = target.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"target must yield (images, labels) batches. Received: element_spec={spec}")
    if tuple(spec[0].shape[1:]) != x_buffer.shape[1:]:
        raise ValueError(
            f"The buffer's images have shape {x_buffer.shape[1:]} and the target's "
            f"{tuple(spec[0].shape[1:])}. "
            "Received: buffer images of another shape"
        )
    buffer = tf.data.Dataset.from_tensor_slices((x_buffer, y_buffer)).cache()
    buffer = buffer.shuffle(len(x_buffer), seed=seed, reshuffle_each_iteration=True).repeat()
    buffer = buffer.batch(replay_batch_size, drop_remainder=True)
    augment = _augmenter(augment, x_buffer.shape[-1], seed)
    if augment is not None:
        buffer = data_lib.map_augmentation(buffer, augment)  # in order: the same for a seed

    def mix(batch, replayed):
        (x, y), (xb, yb) = batch, replayed
        n, k = tf.shape(x)[0], tf.shape(xb)[0]
        total = tf.cast(n + k, tf.float32)
        ones_n, ones_k = tf.ones([n], tf.float32), tf.ones([k], tf.float32)
        y = tf.cast(tf.reshape(y, [-1]), tf.int64)
        labels = {
            heads.TARGET: tf.concat([y, tf.zeros([k], tf.int64)], 0),
            heads.SOURCE: tf.concat([tf.zeros([n], tf.int64), yb], 0),
        }
        weights = {
            heads.TARGET: tf.concat([ones_n * total / tf.cast(n, tf.float32), 0.0 * ones_k], 0),
            heads.SOURCE: tf.concat([0.0 * ones_n, ones_k * total / tf.cast(k, tf.float32)], 0),
        }
        return tf.concat([tf.cast(x, tf.float32), xb], 0), labels, weights

    mixed = tf.data.Dataset.zip(target, buffer).map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    return data_lib.finish_pipeline(mixed)


def load_source_data(source_data, image_size, channels):
    """Source examples as `(x, y)` arrays: arrays as given, a `.npz` file with arrays `x`
    and `y`, or a class-per-folder image directory (class ids by sorted folder name,
    as `keras-transfer train` labelled it; images resized to `image_size`)."""
    if isinstance(source_data, (tuple, list)) and len(source_data) == 2:
        x, y = source_data
        return np.asarray(x), np.asarray(y)
    if isinstance(source_data, (str, os.PathLike)):
        path = os.fspath(source_data)
        if os.path.isfile(path) and path.endswith(".npz"):
            with np.load(path) as arrays:
                if "x" not in arrays or "y" not in arrays:
                    raise ValueError(
                        f"A .npz source_data needs arrays named x and y; it has {sorted(arrays)}. "
                        f"Received: source_data={source_data!r}"
                    )
                return arrays["x"], arrays["y"]
        if os.path.isdir(path):
            from keras_transfer.data import image_folder

            loaded = image_folder.load_image_folder(
                path, image_size=image_size, channels=channels, verbose=False
            )
            return loaded.x, loaded.y
    raise ValueError(
        "source_data must be (x, y) arrays, a .npz file with arrays x and y, or a class-per-folder "
        f"image directory. Received: source_data={source_data!r}"
    )


def _check_source_data(source_data):
    if isinstance(source_data, (tuple, list)) and len(source_data) == 2:
        return tuple(source_data)
    if isinstance(source_data, (str, os.PathLike)):
        path = os.fspath(source_data)
        if (os.path.isfile(path) and path.endswith(".npz")) or os.path.isdir(path):
            return path
    raise ValueError(
        "Replay needs source_data: (x, y) arrays, a .npz file with arrays x and y, or a "
        f"class-per-folder image directory (replay:source_data=PATH). Received: source_data={source_data!r}"
    )


@method_lib.register_method
class Replay(method_lib.TransferMethod):
    """Replay: a small seeded buffer of source examples, mixed into every target batch,
    trains a kept copy of the source head beside the new one.

    The setting is the one of `LwF`: the target model shares the source's backbone
    (`transfer_weights(source, model, exclude="predictions")`) and a copy of the
    source's head (`heads.copy_head`) sits on its features. The buffer is
    `replay_buffer(source_data, per_class, seed)`: exactly `per_class` examples of
    each source class. Each step's batch is the target batch plus `replay_batch_size`
    buffer examples (`mix_buffer`: the buffer shuffled and repeated, seeded), and the
    loss is `CE(y, target head)` over the target examples plus `weight *
    CE(y_buffer, source head)` over the buffer examples (per-output sample weights of
    Keras's multi-output loss mask each head to its examples). Buffer examples are
    augmented like the target's for array input with `augment`; a `tf.data.Dataset`
    (the CLI's folder pipeline) augments only its own images. After the run
    `source_head` is the trained copy and `finalize(model)` the target model alone.

    Defaults: a memory batch the size of the target batch (experience replay as in
    Chaudhry et al., 2019) and 20 examples per class, checked on validation splits of
    MNIST 0-4 -> 5-9 (`python examples/replay_digits.py --validate`, one seed; the mean
    of target and source validation accuracy): 5 per class 0.949, 20 0.973, 50 0.976;
    weights 0.5, 1 and 2 at 20 per class 0.973, 0.973, 0.971; naive fine-tuning 0.807.

    Args:
        source: `keras.Model` or `.keras` file: the source model, for its head (never
            changed). CLI: `replay:source=source.keras,source_data=...`.
        source_data: the source examples to draw the buffer from: `(x, y)` arrays
            (labels the source head's class ids), a `.npz` file with arrays `x` and
            `y`, or a class-per-folder image directory (class ids by sorted folder
            name). Arrays stay in the config as objects (not JSON-writable: give a
            path for a run's `run.json`).
        per_class: int >= 1. Buffer examples of each source class. Defaults to `20`.
        seed: int. Buffer draw and shuffle seed. Defaults to `0`.
        weight: float >= 0. Weight of the source head's loss. Defaults to `1.0`.
        replay_batch_size: int >= 1 or `None`: buffer examples added to each target
            batch; `None` is the run's batch size. Defaults to `None`.
        head_layer: str. The head layer, in the source and in the target model.
            Defaults to `"predictions"`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import Replay
    >>> source = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> _ = keras_transfer.transfer_weights(source, model, exclude="predictions")
    >>> rng = np.random.default_rng(0)
    >>> source_x, source_y = rng.random((30, 28, 28, 1)) * 255, np.arange(30) % 3
    >>> method = Replay(source, (source_x, source_y), per_class=4, seed=0)
    >>> x, y = rng.random((16, 28, 28, 1)) * 255, np.array([0, 1] * 8)
    >>> history = keras_transfer.train(model, (x, y), epochs=1, batch_size=8, method=method, verbose=0)
    >>> np.bincount(method.buffer[1]).tolist(), sorted(k for k in history.history if "accuracy" in k)
    ([4, 4, 4], ['predictions_accuracy', 'source_predictions_accuracy'])

    Reference:
    - [Rebuffi et al., 2017](https://arxiv.org/abs/1611.07725) (iCaRL: a fixed memory of exemplars per class)
    - [Chaudhry et al., 2019](https://arxiv.org/abs/1902.10486) (experience replay with tiny memories)
    """

    name = "replay"
    summary = "replay: a seeded per-class buffer of source examples mixed into the target batches"

    def __init__(
        self,
        source=None,
        source_data=None,
        per_class=20,
        seed=0,
        weight=1.0,
        replay_batch_size=None,
        head_layer="predictions",
    ):
        self.source = heads.check_source(source)
        self.source_data = _check_source_data(source_data)
        self.per_class = checks.positive_int("per_class", per_class)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer. Received: seed={seed!r}")
        self.seed = int(seed)
        self.weight = heads.number("weight", weight)
        self.replay_batch_size = (
            None if replay_batch_size is None else checks.positive_int("replay_batch_size", replay_batch_size)
        )
        if not isinstance(head_layer, str) or not head_layer:
            raise ValueError(f"head_layer must be a layer name. Received: head_layer={head_layer!r}")
        self.head_layer = head_layer
        self.source_head = None
        self.buffer = None
        self._source_model = None
        self._head_for = None

    @property
    def source_model(self):
        """The source as a `keras.Model` (loaded once from its path)."""
        if self._source_model is None:
            self._source_model = heads.load_source(self.source)
        return self._source_model

    def make_buffer(self, model):
        """`(x_buffer, y_buffer)` for `model`'s input: `replay_buffer` of the source data.

        Raises:
            ValueError: source labels outside the source head's classes, or images
                the model does not take.
        """
        shape = tuple(model.input.shape[1:])
        x, y = load_source_data(self.source_data, shape[:2], shape[-1])
        x = np.asarray(x, np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"The source images have shape {tuple(x.shape[1:])} and model {model.name!r} takes {shape}. "
                "Received: source_data of another shape"
            )
        num_classes = int(self.source_model.get_layer(self.head_layer).output.shape[-1])
        data_lib.check_labels(y, num_classes)
        return replay_buffer(x, np.asarray(y).astype(np.int64), self.per_class, self.seed)

    def trainer(self, model):
        """The `SourceHeadTrainer` of `model` and the kept head (copied on the first
        call for `model`, then reused across `FineTune` stages)."""
        if self.source_head is None or self._head_for is not model:
            self.source_head = heads.copy_head(self.source_model, self.head_layer)
            self.buffer = self.make_buffer(model)
            self._head_for = model
        return heads.SourceHeadTrainer(
            model, self.source_head, self.head_layer, source_weight=self.weight, source_metrics=["accuracy"]
        )

    def fit_setup(self, context):
        from keras_transfer.training.fit import as_dataset

        model = context.model
        trainer = self.trainer(model)
        size = self.replay_batch_size or context.batch_size
        train_ds = as_dataset(
            context.train_data,
            model,
            batch_size=context.batch_size,
            shuffle=True,
            seed=context.seed,
            drop_remainder=True,
            augment=context.augment,
        )
        mixed = mix_buffer(train_ds, *self.buffer, size, seed=self.seed, augment=context.augment)
        validation_ds = None
        if context.validation_data is not None:
            # Validation batches carry buffer examples too: val_loss counts both heads.
            validation_ds = mix_buffer(
                as_dataset(context.validation_data, model, batch_size=context.batch_size),
                *self.buffer,
                size,
                seed=self.seed,
            )
        if context.verbose:
            counts = np.bincount(self.buffer[1]).tolist()
            print(
                f"Replay: a buffer of {len(self.buffer[1])} source examples "
                f"({self.per_class} per class: {counts}), "
                f"{size} in each batch of {context.batch_size} target examples."
            )
        return method_lib.FitSetup(trainer, mixed, validation_ds)

    def get_config(self):
        config = {"source": self.source, "source_data": self.source_data}
        for key, default in (
            ("per_class", 20),
            ("seed", 0),
            ("weight", 1.0),
            ("replay_batch_size", None),
            ("head_layer", "predictions"),
        ):
            if getattr(self, key) != default:
                config[key] = getattr(self, key)
        return config

    def __eq__(self, other):
        if type(self) is not type(other):
            return False
        mine, theirs = self.get_config(), other.get_config()
        same_source = mine.pop("source") is theirs.pop("source") or self.source == other.source
        data, other_data = mine.pop("source_data"), theirs.pop("source_data")
        if isinstance(data, tuple) and isinstance(other_data, tuple):
            same_data = all(a is b or np.array_equal(a, b) for a, b in zip(data, other_data))
        else:
            same_data = data == other_data
        return same_source and same_data and mine == theirs

    __hash__ = None

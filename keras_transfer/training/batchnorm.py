"""BatchNorm after a short run from random weights: re-estimated statistics, and a warning at chance."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.utils import keras_internals

# BatchNorm trained from scratch in a short run: its moving statistics (momentum 0.99 to
# 0.999) still hold mostly their initial values (mean 0, variance 1), so the model in
# inference mode (validation, export) is at chance while training accuracy rises.


@dataclasses.dataclass
class BatchNormRecalibration:
    """What `recalibrate_batchnorm` did: how many layers, on how many images."""

    layers: int
    images: int

    def __str__(self):
        return f"Re-estimated BatchNorm statistics of {self.layers} layers on {self.images:,} training images"


def batchnorm_layers(model, *, trainable=None):
    """The `BatchNormalization` layers of `model`, nested models included.

    Args:
        model: `keras.Model` or layer.
        trainable: `None` (all), `True` (only trainable ones) or `False` (only frozen).
    """
    found = []
    for layer in keras_internals.flatten_layers(model, include_self=True, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and (
            trainable is None or bool(layer.trainable) == trainable
        ):
            found.append(layer)
    return found


def _image_batches(data, batch_size, max_images):
    """Batches of images (numpy) from arrays, `(x, y)` or a dataset, up to `max_images`."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, (tuple, list)):
            data = data.map(lambda *element: element[0])
            spec = spec[0]
        if spec.shape.rank is not None and spec.shape.rank < 4:
            data = data.batch(batch_size)
        batches = iter(data)
    else:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            data = data[0]
        x = np.asarray(data, np.float32)
        batches = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    seen = 0
    for batch in batches:
        if max_images is not None and seen >= max_images:
            return
        batch = batch[: max_images - seen] if max_images is not None else batch
        seen += int(batch.shape[0])
        yield batch


def _recalibration_step(model, layers):
    """A compiled forward pass that sets every layer's momentum (a tensor) first."""

    @tf.function(reduce_retracing=True)
    def step(batch, momentum):
        for layer in layers:
            keras_internals.set_untracked_attribute(layer, "momentum", momentum)
        model(batch, training=False)

    return step


def recalibrate_batchnorm(model, data, *, max_images=2048, batch_size=32, log=None, _step=None):
    """Re-estimates the moving mean and variance of every trainable BatchNorm layer.

    A BatchNorm layer trained from random initialisation for a short run keeps most of
    its initial moving statistics (mean 0, variance 1: with momentum 0.999 they still
    weigh 97% after 30 steps), so in inference mode, which validation, `predict` and
    every export use, the model sits at chance level while its training accuracy
    rises. This runs the images through `model` once with each trainable BatchNorm
    layer in training mode (every other layer, dropout included, in inference mode)
    and replaces its moving statistics with the exact average of the batch statistics
    (momentum `n_seen / (n_seen + n_batch)` per batch; the layers' momentum is
    restored afterwards). Weights are unchanged. Frozen BatchNorm layers (a pretrained
    backbone's) are left alone.

    Args:
        model: `keras.Model`, nested backbones included.
        data: images: an array `(N, H, W, C)`, a tuple `(x, y)`, or a `tf.data.Dataset`
            of images or of `(images, labels)` (preferably without augmentation).
        max_images: int or `None`. Images used at most. Defaults to `2048`.
        batch_size: int. For arrays. Defaults to `32`.
        log: callable for the summary line, or `None`. Defaults to `None`.

    Returns:
        `BatchNormRecalibration(layers, images)`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_transfer import training
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, (256, 4)).astype("float32")
    >>> print(training.recalibrate_batchnorm(model, x, batch_size=64))
    Re-estimated BatchNorm statistics of 1 layers on 256 training images
    >>> bool(np.allclose(model.layers[-1].moving_mean.numpy(), x.mean(0), atol=1e-4))
    True
    """
    layers = batchnorm_layers(model, trainable=True)
    if not layers:
        return BatchNormRecalibration(0, 0)
    saved = [(layer, layer.momentum, keras_internals.instance_call(layer)) for layer in layers]

    def in_training_mode(call):
        def forced(inputs, training=None, mask=None):
            return call(inputs, training=True, mask=mask)

        return forced

    seen = 0
    step = _step or _recalibration_step(model, layers)
    try:
        for layer in layers:
            keras_internals.set_call(layer, in_training_mode(layer.call))
        for batch in _image_batches(data, batch_size, max_images):
            count = int(batch.shape[0])
            if count == 0:
                continue
            step(tf.convert_to_tensor(batch), tf.constant(seen / (seen + count), tf.float32))
            seen += count
    finally:
        for layer, momentum, call in saved:
            keras_internals.set_untracked_attribute(layer, "momentum", momentum)
            keras_internals.set_call(layer, call)
    if seen == 0:
        raise ValueError("recalibrate_batchnorm needs images: the data is empty.")
    result = BatchNormRecalibration(len(layers), seen)
    if log is not None:
        log(f"{result}.")
    return result


def batchnorm_run_is_short(model, steps, threshold=0.01):
    """Whether `steps` updates leave trainable BatchNorm layers mostly at their start.

    True when some trainable BatchNorm layer's moving statistics would still carry
    more than `threshold` of their values from before the run (`momentum ** steps`),
    e.g. fewer than 4,603 steps at momentum 0.999 (MobileNetV3) or 459 at 0.99.
    """
    layers = batchnorm_layers(model, trainable=True)
    if not layers or steps is None:
        return False
    return max(float(layer.momentum) for layer in layers) ** steps > threshold


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Re-estimates trainable BatchNorm statistics before each validation and at the end.

    With it, validation metrics, early stopping and best checkpoints judge the model
    that will be exported (inference mode, exact statistics for the current weights),
    not one whose moving statistics lag behind. See `recalibrate_batchnorm`.

    Args:
        data: images to estimate the statistics on (training images, no augmentation).
        max_images: int. Defaults to `2048`.
        batch_size: int. For arrays. Defaults to `32`.
        log: callable for the summary line at the end, or `None`. Defaults to `print`.
        model: the model to recalibrate. Defaults to the model `fit` trains.
    """

    def __init__(self, data, *, max_images=2048, batch_size=32, log=print, model=None):
        super().__init__()
        self.data, self.max_images, self.batch_size, self.log = data, max_images, batch_size, log
        self.target = model
        self.result = None
        self._stale = False
        self._step = None  # one compiled forward pass for every recalibration

    def _recalibrate(self):
        model = self.target or self.model
        if self._step is None:
            self._step = _recalibration_step(model, batchnorm_layers(model, trainable=True))
        self.result = recalibrate_batchnorm(
            model,
            self.data,
            max_images=self.max_images,
            batch_size=self.batch_size,
            _step=self._step,
        )
        self._stale = False

    def on_epoch_begin(self, epoch, logs=None):
        self._stale = True

    def on_test_begin(self, logs=None):
        if self._stale:
            self._recalibrate()

    def on_train_end(self, logs=None):
        if self._stale:
            self._recalibrate()
        if self.result is not None and self.log is not None:
            self.log(
                f"{self.result}, before each validation and at the end (BatchNorm "
                "trained in a short run: its moving statistics lag behind the weights)."
            )


class ChanceLevelWarning(keras.callbacks.Callback):
    """Warns when validation accuracy stays at chance while training accuracy rises.

    After `epochs` epochs in a row with validation accuracy within `tolerance` of
    `1 / num_classes` and training accuracy more than `margin` above it, logs one
    line (no exception): the usual cause is BatchNorm statistics that lag behind the
    weights, or a train/validation mismatch (preprocessing, labels).

    Args:
        num_classes: int.
        tolerance: float. Defaults to `0.02` (2 points).
        margin: float. Defaults to `0.1`.
        epochs: int. Defaults to `2`.
        log: callable. Defaults to `print`.
    """

    def __init__(self, num_classes, *, tolerance=0.02, margin=0.1, epochs=2, log=print):
        super().__init__()
        self.chance = 1.0 / num_classes
        self.tolerance, self.margin, self.epochs, self.log = tolerance, margin, epochs, log
        self.count = 0
        self.warned = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        accuracy, val_accuracy = logs.get("accuracy"), logs.get("val_accuracy")
        if accuracy is None or val_accuracy is None:
            return
        at_chance = abs(val_accuracy - self.chance) <= self.tolerance
        learning = accuracy > self.chance + self.margin
        self.count = self.count + 1 if at_chance and learning else 0
        if self.count >= self.epochs and not self.warned:
            self.warned = True
            self.log(
                f"Warning: validation accuracy has stayed at chance level ({val_accuracy:.3f}, "
                f"1/{round(1 / self.chance)} = {self.chance:.3f}) for {self.count} epochs while "
                f"training accuracy rose to {accuracy:.3f}. The model in inference mode "
                "(validation, predict, export) is not the one that trains: BatchNorm moving "
                "statistics lagging behind the weights (a short run from random weights; "
                "train(..., recalibrate_batchnorm=True) re-estimates them), or a "
                "train/validation mismatch in preprocessing or labels."
            )

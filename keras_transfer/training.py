"""Compile and fit defaults: device-aware XLA, callbacks, two-stage fine-tuning."""

import dataclasses
import os
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import data as data_lib
from keras_transfer import feature_cache as cache_lib
from keras_transfer import freezing
from keras_transfer import performance
from keras_transfer.losses import SparseCategoricalCrossentropy


def default_verbose():
    """Keras progress bars on a terminal, one line per epoch otherwise (logs, CI)."""
    return 1 if sys.stdout.isatty() else 2


def compile_classifier(
    model,
    *,
    learning_rate=1e-3,
    optimizer=None,
    jit_compile="auto",
    steps_per_execution=1,
    label_smoothing=0.0,
    metrics=("accuracy",),
    batch_size=32,
):
    """Compiles a classifier for integer labels with the toolkit's defaults.

    The loss reads probabilities when the `predictions` layer ends in softmax and
    logits otherwise.

    Args:
        model: `keras.Model`.
        learning_rate: float. For the default Adam optimizer. Defaults to `1e-3`.
        optimizer: `keras.optimizers.Optimizer`. Replaces Adam if given.
        jit_compile: bool or `"auto"` (`default_jit_compile()`: XLA on GPU, not on
            CPU). Defaults to `"auto"`.
        steps_per_execution: int, or `"auto"` (`auto_steps_per_execution` for
            `batch_size`). Batches per compiled call. Defaults to `1`.
        batch_size: int. Only for `steps_per_execution="auto"`. Defaults to `32`.
        label_smoothing: float. Label smoothing of the cross-entropy (it helps few-shot
            fine-tuning). Defaults to `0.0`.
        metrics: sequence. Defaults to `("accuracy",)`.

    Returns:
        The model, compiled.

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> model = keras_transfer.compile_classifier(model, learning_rate=1e-3)
    >>> type(model.optimizer).__name__, round(float(model.optimizer.learning_rate), 6)
    ('Adam', 0.001)
    """
    head = model.layers[-1]
    probabilities = getattr(head, "activation", None) is keras.activations.softmax
    if steps_per_execution == "auto":
        steps_per_execution = performance.auto_steps_per_execution(model, batch_size)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        loss=SparseCategoricalCrossentropy(label_smoothing, from_logits=not probabilities),
        metrics=list(metrics),
        jit_compile=performance.resolve_jit_compile(jit_compile),
        steps_per_execution=steps_per_execution,
    )
    return model


def training_callbacks(workdir=None, *, patience=None, monitor="val_loss"):
    """Early stopping, the best checkpoint and crash-resume, as Keras callbacks.

    Args:
        workdir: str. Where `best.keras` and the `backup/` of `BackupAndRestore` go.
            Without it, only early stopping.
        patience: int. Epochs without improvement of `monitor` before stopping (the
            best weights are restored). `None` disables early stopping.
        monitor: str. Defaults to `"val_loss"`.

    Returns:
        A list of `keras.callbacks.Callback`.

    Example:

    >>> import keras_transfer
    >>> [type(c).__name__ for c in keras_transfer.training_callbacks("/tmp/run", patience=3)]
    ['EarlyStopping', 'ModelCheckpoint', 'BackupAndRestore']
    """
    callbacks = []
    if patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
        )
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(workdir, "best.keras"), monitor=monitor, save_best_only=True
            )
        )
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")))
    return callbacks


def as_dataset(
    data, model, *, batch_size=32, shuffle=False, seed=None, drop_remainder=False, augment=None, repeat=False
):
    """Turns `(x, y)` arrays into a pipeline checked against `model`; passes datasets on.

    Arrays become `make_dataset(...)`: cached in memory, shuffled (if asked), repeated
    (if asked: then every batch is full, even from fewer images than `batch_size`),
    batched (`drop_remainder` only when there is at least one full batch), augmented
    (if asked) and prefetched.

    Raises:
        ValueError: an empty set, labels outside the model's classes, or images whose
            shape the model does not take.
    """
    num_classes = model.output.shape[-1]
    if isinstance(data, tf.data.Dataset):
        if data.cardinality() == 0:
            raise ValueError("The dataset is empty.")
        images_spec = data.element_spec[0] if isinstance(data.element_spec, tuple) else data.element_spec
        image_shape = tuple(images_spec.shape[1:])
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        data = data_lib.make_dataset(
            x,
            y,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_remainder=repeat or (drop_remainder and len(x) >= batch_size),
            num_classes=num_classes,
            augment=augment,
            repeat=repeat,
        )
        image_shape = tuple(data.element_spec[0].shape[1:])
    else:
        raise ValueError(
            "Training data must be a tf.data.Dataset of (images, labels) or a tuple "
            f"(x, y). Received: {type(data).__name__}"
        )
    expected = tuple(model.input.shape[1:])
    if len(image_shape) != len(expected) or any(
        e is not None and i is not None and e != i for e, i in zip(expected, image_shape)
    ):
        raise ValueError(
            f"Model {model.name!r} takes images of shape {expected}, but the data has "
            f"{image_shape}. Adapt them with make_dataset(..., image_size=..., "
            f"channels=...). Received: images of shape {image_shape}"
        )
    return data


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality())
    return steps if steps > 0 else None


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
    for layer in model._flatten_layers(include_self=True, recursive=True):
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
            object.__setattr__(layer, "momentum", momentum)
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
    saved = [(layer, layer.momentum, layer.__dict__.get("call")) for layer in layers]

    def in_training_mode(call):
        def forced(inputs, training=None, mask=None):
            return call(inputs, training=True, mask=mask)

        return forced

    seen = 0
    step = _step or _recalibration_step(model, layers)
    try:
        for layer in layers:
            object.__setattr__(layer, "call", in_training_mode(layer.call))
        for batch in _image_batches(data, batch_size, max_images):
            count = int(batch.shape[0])
            if count == 0:
                continue
            step(tf.convert_to_tensor(batch), tf.constant(seen / (seen + count), tf.float32))
            seen += count
    finally:
        for layer, momentum, call in saved:
            object.__setattr__(layer, "momentum", momentum)
            if call is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", call)
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


def train(
    model,
    train_data,
    validation_data=None,
    *,
    epochs=10,
    learning_rate=1e-3,
    batch_size=32,
    workdir=None,
    patience=None,
    jit_compile="auto",
    steps_per_execution="auto",
    augment=None,
    feature_cache="auto",
    seed=None,
    verbose="auto",
    callbacks=(),
    compile=True,
    initial_epoch=0,
    label_smoothing=0.0,
    cosine=False,
    min_steps=None,
    recalibrate_batchnorm="auto",
):
    """Compiles (unless `compile=False`) and fits a classifier on the fastest exact path.

    The defaults are the fast path, and none of them changes what is learned beyond
    float round-off:

    - arrays go through a `tf.data` pipeline (cached, shuffled each epoch, full batches
      only, prefetched), not Keras's numpy adapter;
    - `steps_per_execution="auto"` runs several steps per compiled call for small
      models (`auto_steps_per_execution`);
    - XLA only where it pays (`jit_compile="auto"`: GPU yes, CPU no), with fixed batch
      shapes when compiling so nothing recompiles;
    - with a frozen backbone and no augmentation, the **feature cache**: the backbone's
      outputs are computed once and the head trains on them; the head's layers are the
      model's own, so `model` ends up trained exactly as plain `fit` would train it.
      Otherwise a line says why the cache is off.

    Args:
        model: `keras.Model` from `build_classifier` (or any classifier).
        train_data: `tf.data.Dataset` of `(images, labels)` or a tuple `(x, y)`.
        validation_data: same forms, optional.
        epochs: int. Defaults to `10`.
        learning_rate: float. Defaults to `1e-3`.
        batch_size: int. For array input. Defaults to `32`.
        workdir: str. Best checkpoint and crash-resume backup; see
            `training_callbacks`.
        patience: int. Early stopping patience on `val_loss`. Defaults to `None`.
        jit_compile: bool or `"auto"`. Defaults to `"auto"` (XLA on GPU only).
        steps_per_execution: int or `"auto"`. Defaults to `"auto"`.
        augment: `None`, `True` (`default_augmentation()`) or a layer/callable applied
            to each batch of array input. Defaults to `None`.
        feature_cache: `"auto"` (arrays, frozen backbone, no augmentation), `True`
            (also for a `tf.data.Dataset` that yields the same images every epoch) or
            `False`. Defaults to `"auto"`.
        seed: int. Shuffle (and augmentation) seed for array input.
        verbose: `"auto"`, 0, 1 or 2. `"auto"` shows progress bars on a terminal and
            one line per epoch otherwise.
        callbacks: extra Keras callbacks (with the feature cache they still see the
            whole model).
        compile: bool. Compile first. With `False` the model's own compile settings
            are used. Defaults to `True`.
        initial_epoch: int. Epoch to start counting from. Defaults to `0`.
        label_smoothing: float. Of the cross-entropy (`compile=True`). Defaults to
            `0.0`.
        cosine: bool. Cosine decay of the learning rate to zero over the run
            (`keras.optimizers.schedules.CosineDecay`). Defaults to `False`.
        min_steps: int. A step budget for small sets: when `epochs` passes over the
            data are fewer optimizer steps than this, the data repeats and each epoch
            runs `ceil(min_steps / epochs)` steps (with 50 images and batch 32 a pass
            is one step). Defaults to `None` (or 0): an epoch is one pass.
        recalibrate_batchnorm: `"auto"`, `True`, `False`, or the images to use (an
            array or a `tf.data.Dataset`, e.g. the training set without augmentation).
            Re-estimates the moving statistics of trainable BatchNorm layers on
            training images before each validation and at the end
            (`RecalibrateBatchNorm`), and prints a line saying so. `"auto"` does it
            when the run is short for the layers' momentum (`batchnorm_run_is_short`:
            e.g. a MobileNetV3 or ResNet trained from random weights for a few
            epochs, whose statistics would otherwise stay near their initial values
            and leave the model at chance in inference mode). The images are
            `train_data` (arrays without augmentation) unless given. Defaults to
            `"auto"`.

    With validation data, a line warns when validation accuracy stays at chance
    while training accuracy rises (`ChanceLevelWarning`).

    Returns:
        The `keras.callbacks.History`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> x = np.random.rand(64, 28, 28, 1) * 255
    >>> y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)
    >>> history = keras_transfer.train(model, (x, y), epochs=2, verbose=0)
    >>> len(history.history["loss"])
    2
    """
    jit = performance.resolve_jit_compile(jit_compile)
    verbose = default_verbose() if verbose == "auto" else verbose
    # One truth for what trains: a nested model is trainable when one of its layers is.
    freezing.sync_trainable(model)
    is_dataset = isinstance(train_data, tf.data.Dataset)
    if augment is not None and is_dataset:
        raise ValueError(
            "augment applies to array input; augment a tf.data.Dataset in its own "
            "pipeline (make_dataset(..., augment=...)). Received: augment with a Dataset"
        )
    if not compile and getattr(model, "optimizer", None) is None:
        raise ValueError(f"compile=False, but model {model.name!r} is not compiled.")
    plan = cache_lib.plan_feature_cache(
        model, feature_cache=feature_cache, augment=bool(augment), dataset_input=is_dataset
    )
    if verbose and (plan.use or (feature_cache is not False and _has_frozen_weights(model))):
        print(f"Feature cache {'on' if plan.use else 'off'}: {plan.reason}.")
    repeated = False  # arrays repeated before batching (a step budget)
    if plan.use:
        fit_model = plan.split.head
        train_ds, validation_ds = _cached(
            plan.split, model, train_data, validation_data, batch_size, seed, verbose
        )
    else:
        fit_model = model
        # Arrays under a step budget repeat before batching, so every step is a full
        # batch of `batch_size` (5 images make batches of 32, reshuffled each pass).
        if not is_dataset and isinstance(train_data, (tuple, list)) and len(train_data) == 2:
            full_batches = max(1, len(train_data[0]) // batch_size)
            repeated = run_length(full_batches, epochs - initial_epoch, min_steps) > full_batches
        train_ds = as_dataset(
            train_data,
            model,
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            drop_remainder=True,
            augment=augment,
            repeat=repeated,
        )
        validation_ds = None
        if validation_data is not None:
            validation_ds = as_dataset(validation_data, model, batch_size=batch_size)

    passes = full_batches if repeated else _steps_per_epoch(train_ds)
    steps_per_epoch = run_length(passes, epochs - initial_epoch, min_steps)
    if steps_per_epoch != passes:
        if verbose:
            print(
                f"Step budget: the data is {passes} batch(es) of {batch_size}; each of the "
                f"{epochs - initial_epoch} epochs runs {steps_per_epoch} steps, "
                f"{steps_per_epoch * (epochs - initial_epoch)} in all (min_steps={min_steps})."
            )
        if not repeated:
            train_ds = train_ds.repeat()
    if compile:
        rate = learning_rate
        if cosine:
            if steps_per_epoch is None:
                raise ValueError(
                    "cosine=True needs to know the run's length: pass a dataset of known "
                    "cardinality, or arrays. Received: a dataset of unknown length"
                )
            # Over this call's epochs, from a fresh optimizer (a run resumed by
            # BackupAndRestore restores the optimizer's step count with it).
            rate = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=max(1, steps_per_epoch * (epochs - initial_epoch))
            )
        compile_classifier(
            model,
            learning_rate=rate,
            jit_compile=jit,
            steps_per_execution=1,
            label_smoothing=label_smoothing,
        )
    elif steps_per_execution == "auto" and model.steps_per_execution > 1:
        steps_per_execution = model.steps_per_execution  # the caller's own choice
    monitor = "val_loss" if validation_data is not None else "loss"
    all_callbacks = training_callbacks(workdir, patience=patience, monitor=monitor) + list(callbacks)
    if plan.use:
        _compile_like(plan.split.head, model, jit)
        all_callbacks = [cache_lib.ForFullModel(c, model) for c in all_callbacks]
    if jit and train_ds.element_spec[0].shape[0] is None:
        warnings.warn(
            "jit_compile=True with a variable batch size: the last partial batch "
            "recompiles. Build the dataset with drop_remainder=True.",
            stacklevel=2,
        )
    _set_steps_per_execution(fit_model, steps_per_execution, model, batch_size, steps_per_epoch)
    all_callbacks = (
        _batchnorm_callbacks(
            model,
            recalibrate_batchnorm,
            train_data,
            batch_size,
            verbose,
            steps=None if steps_per_epoch is None else (epochs - initial_epoch) * steps_per_epoch,
            validation=validation_data is not None,
            wrap=plan.use,
        )
        + all_callbacks
    )
    return fit_model.fit(
        train_ds,
        validation_data=validation_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch if steps_per_epoch != passes or repeated else None,
        initial_epoch=initial_epoch,
        shuffle=False,  # the pipeline shuffles (as_dataset / make_dataset)
        callbacks=all_callbacks,
        verbose=verbose,
    )


def run_length(steps_per_pass, epochs, min_steps):
    """Steps per epoch under a step budget: a pass over the data, or more if `epochs`
    passes are fewer than `min_steps` steps.

    Example:

    >>> from keras_transfer.training import run_length
    >>> run_length(1, 20, 400), run_length(54, 20, 400), run_length(3, 5, None)
    (20, 54, 3)
    """
    if isinstance(min_steps, bool) or (
        min_steps is not None and (int(min_steps) != min_steps or min_steps < 0)
    ):
        raise ValueError(f"min_steps must be an integer >= 0. Received: min_steps={min_steps!r}")
    if not min_steps or steps_per_pass is None or epochs < 1:
        return steps_per_pass
    return max(steps_per_pass, -(-int(min_steps) // epochs))


def _batchnorm_callbacks(model, recalibrate, train_data, batch_size, verbose, *, steps, validation, wrap):
    """`RecalibrateBatchNorm` (if asked, or a short run) and `ChanceLevelWarning`."""
    log = print if verbose else (lambda line: warnings.warn(line, RuntimeWarning, stacklevel=2))
    callbacks = []
    if validation:
        callbacks.append(ChanceLevelWarning(int(model.output.shape[-1]), log=log))
    if isinstance(recalibrate, str) and recalibrate == "auto":
        recalibrate = batchnorm_run_is_short(model, steps)
    if recalibrate is not False and batchnorm_layers(model, trainable=True):
        images = train_data if recalibrate is True else recalibrate
        callbacks.insert(
            0,
            RecalibrateBatchNorm(images, batch_size=batch_size, model=model, log=print if verbose else None),
        )
    if wrap:
        callbacks = [cache_lib.ForFullModel(c, model) for c in callbacks]
    return callbacks


def _has_frozen_weights(model):
    return any(layer.weights and not layer.trainable for layer in model.layers)


def _set_steps_per_execution(fit_model, steps_per_execution, model, batch_size, steps_per_epoch):
    if steps_per_execution == "auto":
        steps_per_execution = performance.auto_steps_per_execution(fit_model, batch_size, steps_per_epoch)
    elif (
        isinstance(steps_per_execution, bool)
        or not isinstance(steps_per_execution, int)
        or steps_per_execution < 1
    ):
        raise ValueError(
            "steps_per_execution must be a positive integer or 'auto'. "
            f"Received: steps_per_execution={steps_per_execution!r}"
        )
    if fit_model.steps_per_execution != steps_per_execution:
        # Keras reads it when it builds the train function: reset that function.
        fit_model.steps_per_execution = steps_per_execution
        fit_model.train_function = fit_model.test_function = fit_model.predict_function = None


def _compile_like(head, model, jit):
    """Compiles the feature-cache head with `model`'s optimizer, loss and metrics."""
    config = getattr(model, "_compile_config", None)
    metrics = config.config.get("metrics") if config is not None else None
    head.compile(
        optimizer=model.optimizer,
        loss=model.loss,
        metrics=metrics,
        jit_compile=jit,
        steps_per_execution=1,
    )


def _cached(split, model, train_data, validation_data, batch_size, seed, verbose):
    """The cached feature pipelines of the head model `split.head`."""
    start = time.time()
    checked = as_dataset(train_data, model, batch_size=batch_size)
    features, labels = cache_lib.compute_features(
        split.features,
        train_data if isinstance(train_data, tf.data.Dataset) else checked,
        count=None if isinstance(train_data, tf.data.Dataset) else len(train_data[0]),
    )
    train_ds = cache_lib.feature_dataset(
        features,
        labels,
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        drop_remainder=len(features) >= batch_size,
    )
    validation_ds = None
    if validation_data is not None:
        checked = as_dataset(validation_data, model, batch_size=batch_size)
        val_features, val_labels = cache_lib.compute_features(split.features, checked)
        validation_ds = cache_lib.feature_dataset(val_features, val_labels, batch_size=batch_size)
    if verbose:
        print(
            f"Feature cache: {len(features):,} training images through {split.cut!r} once "
            f"({time.time() - start:.1f}s); training the head on features of shape "
            f"{tuple(features.shape[1:])}."
        )
    return train_ds, validation_ds


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How `fine_tune` trains: two stages, their lengths and rates, and the regularisers.

    Stage 1 trains the new head on the frozen backbone (skipped when `head_epochs` is
    0); stage 2 unfreezes the top `unfreeze_fraction` of the backbone (BatchNorm stays
    frozen) at `learning_rate`. Every stage uses label smoothing, cosine decay to zero,
    augmentation of array input (`data.default_augmentation`: shift, rotation, zoom)
    and a step budget: on a tiny set each stage still runs at least `min_steps` steps.

    Which recipe `fine_tune` and `keras-transfer train` use follows the kind of backbone
    (`recipe_for`), because the right rates differ by orders of magnitude:

    - `RECIPES["small"]`: a small model trained here as the source (`mnist_cnn`,
      `mnist_mlp`, any user `keras.Model`): every layer trained at 3e-3 from the source
      weights in one stage. Chosen on validation splits carved from the demo targets'
      pools (seeds 100 and 101, never the test split): it beat two stages, lower rates,
      and no augmentation there (see the README's demo table).
    - `RECIPES["pretrained"]`: a large ImageNet backbone (keras.applications with
      weights, a TF Hub module): the head at 1e-3, then the top 25% at 1e-5, the recipe
      of the Keras transfer-learning guide. Rates like 3e-3 would wreck ImageNet
      features. ImageNet weights cannot be downloaded where this toolkit was built, so
      this one follows the guide and was not tuned here.

    Args:
        head_epochs: int. Stage 1 epochs; `0` skips stage 1.
        epochs: int. Stage 2 epochs.
        head_learning_rate: float. Stage 1 peak rate.
        learning_rate: float. Stage 2 peak rate.
        unfreeze_fraction: float. Share of the backbone's layers, from the top,
            unfrozen in stage 2.
        freeze_batchnorm: bool. Keep BatchNorm frozen in stage 2. Defaults to `True`.
        label_smoothing: float. Defaults to `0.1`.
        cosine: bool. Cosine decay to zero over each stage. Defaults to `True`.
        augment: bool. Augment array input (a `tf.data.Dataset` augments in its own
            pipeline). Defaults to `True`.
        min_steps: int. Step budget of each stage for small sets (0: none).
            Defaults to `400`.
        batch_size: int. Defaults to `32`.
        scratch_learning_rate: float. Peak rate when the same architecture trains
            from random weights (`train_from_folder(weights=None)`, the demo's
            scratch runs). Defaults to `1e-3`.

    Example:

    >>> from keras_transfer import training
    >>> recipe = training.RECIPES["small"]
    >>> recipe.learning_rate, recipe.unfreeze_fraction, recipe.min_steps
    (0.003, 1.0, 400)
    >>> training.recipe_for("resnet50").learning_rate
    1e-05
    """

    head_epochs: int
    epochs: int
    head_learning_rate: float
    learning_rate: float
    unfreeze_fraction: float
    freeze_batchnorm: bool = True
    label_smoothing: float = 0.1
    cosine: bool = True
    augment: bool = True
    min_steps: int = 400
    batch_size: int = 32
    scratch_learning_rate: float = 1e-3

    def replace(self, **changes):
        """A copy with `changes` (names of fields; `None` values are ignored)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"Recipe has no field(s) {unknown}.")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPES = {
    "small": Recipe(
        head_epochs=0,
        epochs=20,
        head_learning_rate=1e-2,
        learning_rate=3e-3,
        unfreeze_fraction=1.0,
        scratch_learning_rate=3e-3,
    ),
    "pretrained": Recipe(
        head_epochs=5,
        epochs=10,
        head_learning_rate=1e-3,
        learning_rate=1e-5,
        unfreeze_fraction=0.25,
    ),
}


def backbone_kind(backbone):
    """`"pretrained"` for a large ImageNet-style backbone, `"small"` for a source model.

    Args:
        backbone: what `build_classifier` takes (a registry name, `"hub:<handle>"`, a
            `HubLayer`, a user `keras.Model`), or a classifier `build_classifier` made
            (its `preprocessing` layer names its registry backbone).

    Example:

    >>> import keras_transfer
    >>> from keras_transfer import training
    >>> training.backbone_kind("efficientnet_b0"), training.backbone_kind("mnist_cnn")
    ('pretrained', 'small')
    >>> model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    >>> training.backbone_kind(model)
    'small'
    """
    from keras_transfer import backbones
    from keras_transfer import hub
    from keras_transfer.preprocessing import BackbonePreprocessing

    if isinstance(backbone, hub.HubLayer) or (isinstance(backbone, str) and backbone.startswith("hub:")):
        return "pretrained"
    if isinstance(backbone, str):
        return "pretrained" if backbones.get_backbone_spec(backbone).pretrained else "small"
    if isinstance(backbone, keras.Model):
        names = [layer.name for layer in backbone.layers]
        if "backbone" in names and isinstance(backbone.get_layer("backbone"), hub.HubLayer):
            return "pretrained"
        if "preprocessing" in names:
            layer = backbone.get_layer("preprocessing")
            if isinstance(layer, BackbonePreprocessing):
                return backbone_kind(layer.backbone)
        return "small"  # a user's own source model
    raise ValueError(f"Cannot tell the kind of backbone {backbone!r}.")


def recipe_for(backbone):
    """The default `Recipe` for a backbone (`RECIPES[backbone_kind(backbone)]`)."""
    return RECIPES[backbone_kind(backbone)]


def resolve_recipe(recipe, backbone, **overrides):
    """`recipe` (a `Recipe`, a name in `RECIPES`, or `None` for `recipe_for(backbone)`)
    with the `overrides` that are not `None`: what `fine_tune` and `train_from_folder`
    train with."""
    if recipe is None:
        recipe = recipe_for(backbone)
    elif isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(
                f"recipe must be one of {sorted(RECIPES)} or a Recipe. Received: recipe={recipe!r}"
            )
        recipe = RECIPES[recipe]
    return recipe.replace(**overrides)


@dataclasses.dataclass
class TwoStageHistory:
    """Both stages' metrics, epoch by epoch, and where the second stage started."""

    history: dict
    head_epochs: int
    recipe: Recipe = None


def fine_tune(
    model,
    train_data,
    validation_data=None,
    *,
    recipe=None,
    head_epochs=None,
    epochs=None,
    head_learning_rate=None,
    learning_rate=None,
    unfreeze_fraction=None,
    freeze_batchnorm=None,
    backbone="backbone",
    workdir=None,
    patience=None,
    verbose="auto",
    **train_kwargs,
):
    """Fine-tunes a classifier on its backbone with the recipe that suits the backbone.

    Stage 1 freezes the backbone and trains the new head at `head_learning_rate`
    (skipped when `head_epochs` is 0). Stage 2 unfreezes the top `unfreeze_fraction`
    of the backbone's layers (BatchNorm stays frozen by default), recompiles, and
    trains at `learning_rate`. Both stages use the `Recipe`'s label smoothing, cosine
    decay, augmentation of array input and step budget (`min_steps`), so ten labels
    per class still get hundreds of steps. The default recipe follows the backbone
    (`recipe_for(model)`): every layer at 3e-3 for a small source model, head then top
    25% at 1e-5 for an ImageNet backbone; any argument given overrides it. With a
    `workdir`, a crash loses nothing: stage 1's result is kept in
    `workdir/head.weights.h5` and each stage resumes from its `BackupAndRestore` backup.

    Args:
        model: `keras.Model` with a nested backbone (as `build_classifier` makes).
        train_data: `tf.data.Dataset` of `(images, labels)` or `(x, y)`.
        validation_data: same forms, optional.
        recipe: `Recipe`, or a name in `RECIPES` (`"small"`, `"pretrained"`).
            Defaults to `recipe_for(model)`.
        head_epochs: int. Stage 1 epochs (0 skips it). Defaults to the recipe's.
        epochs: int. Stage 2 epochs; `0` skips stage 2 (feature extraction: the head
            trained on the frozen backbone, which stays frozen). Defaults to the
            recipe's.
        head_learning_rate: float. Defaults to the recipe's.
        learning_rate: float. Stage 2 peak learning rate. Defaults to the recipe's.
        unfreeze_fraction: float. Share of the backbone's layers (from the top) to
            unfreeze. Defaults to the recipe's.
        freeze_batchnorm: bool. Keep BatchNorm frozen in stage 2. Defaults to the
            recipe's (`True`).
        backbone: str. Name of the backbone layer in `model`. Defaults to
            `"backbone"`.
        workdir: str. Checkpoints and backups; see `training_callbacks`.
        patience: int. Early stopping patience for each stage.
        verbose: `"auto"`, 0, 1 or 2; nothing is printed at 0. Defaults to `"auto"`.
        **train_kwargs: other `Recipe` fields (`min_steps`, `label_smoothing`,
            `batch_size`, ...) override the recipe's; the rest go to `train` (`seed`,
            `jit_compile`, ...).

    Returns:
        `TwoStageHistory` with `.history` (metrics over both stages) and `.recipe`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None, freeze_backbone=True)
    >>> x = np.random.rand(32, 28, 28, 1) * 255
    >>> y = (x[:, :14].mean(axis=(1, 2, 3)) > x[:, 14:].mean(axis=(1, 2, 3))).astype(int)
    >>> result = keras_transfer.fine_tune(model, (x, y), head_epochs=1, epochs=1,
    ...                                   recipe="small", min_steps=10, verbose=0)
    >>> len(result.history["loss"]), result.recipe.learning_rate
    (2, 0.003)
    """
    try:
        body = model.get_layer(backbone)
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer named {backbone!r} to fine-tune. "
            f"Received: backbone={backbone!r}"
        ) from None
    fields = {field.name for field in dataclasses.fields(Recipe)}
    recipe = resolve_recipe(
        recipe,
        model,
        head_epochs=head_epochs,
        epochs=epochs,
        head_learning_rate=head_learning_rate,
        learning_rate=learning_rate,
        unfreeze_fraction=unfreeze_fraction,
        freeze_batchnorm=freeze_batchnorm,
        **{key: train_kwargs.pop(key) for key in list(train_kwargs) if key in fields},
    )
    for field in ("head_epochs", "epochs"):
        value = getattr(recipe, field)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{field} must be an integer >= 0. Received: {field}={value!r}")
    if recipe.head_epochs + recipe.epochs == 0:
        raise ValueError("Nothing to train: head_epochs and epochs are both 0.")
    verbose = default_verbose() if verbose == "auto" else verbose
    arrays = not isinstance(train_data, tf.data.Dataset)
    stage_kwargs = dict(
        batch_size=recipe.batch_size,
        label_smoothing=recipe.label_smoothing,
        cosine=recipe.cosine,
        min_steps=recipe.min_steps,
        patience=patience,
        verbose=verbose,
        augment=True if (recipe.augment and arrays) else None,
    )
    stage_kwargs.update(train_kwargs)
    head_path = os.path.join(workdir, "head.weights.h5") if workdir else None
    merged = {}

    def stage_dir(name):
        return os.path.join(workdir, name) if workdir else None

    freezing.freeze(body)
    if recipe.head_epochs > 0:
        if head_path and os.path.exists(head_path):
            model.load_weights(head_path)
            if verbose:
                print(f"Stage 1 already done: loaded {head_path}.")
        else:
            first = train(
                model,
                train_data,
                validation_data,
                epochs=recipe.head_epochs,
                learning_rate=recipe.head_learning_rate,
                workdir=stage_dir("head"),
                **stage_kwargs,
            )
            merged = {key: list(values) for key, values in first.history.items()}
            if head_path:
                model.save_weights(head_path)
    if recipe.epochs == 0:  # feature extraction: the head only, the backbone stays frozen
        return TwoStageHistory(history=merged, head_epochs=recipe.head_epochs, recipe=recipe)
    freezing.unfreeze(body, fraction=recipe.unfreeze_fraction, freeze_batchnorm=recipe.freeze_batchnorm)
    second = train(
        model,
        train_data,
        validation_data,
        epochs=recipe.head_epochs + recipe.epochs,
        initial_epoch=recipe.head_epochs,
        learning_rate=recipe.learning_rate,
        workdir=stage_dir("fine_tune"),
        **stage_kwargs,
    )
    for key, values in second.history.items():
        merged.setdefault(key, []).extend(values)
    return TwoStageHistory(history=merged, head_epochs=recipe.head_epochs, recipe=recipe)

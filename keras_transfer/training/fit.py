"""Fitting a classifier on the fastest exact path: compile defaults, callbacks, `train`."""

import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import freezing
from keras_transfer import performance
from keras_transfer.data import datasets as data_lib
from keras_transfer.data import validation
from keras_transfer.losses import SparseCategoricalCrossentropy
from keras_transfer.losses import WithPenalties
from keras_transfer.training import compiled_states
from keras_transfer.training import distributed
from keras_transfer.training import feature_cache as cache_lib
from keras_transfer.training import fused_adam
from keras_transfer.training import guards
from keras_transfer.training import in_memory as in_memory_lib
from keras_transfer.training import method as method_lib
from keras_transfer.training import run_folder
from keras_transfer.training.batchnorm import ChanceLevelWarning
from keras_transfer.training.batchnorm import RecalibrateBatchNorm
from keras_transfer.training.batchnorm import batchnorm_layers
from keras_transfer.training.batchnorm import batchnorm_run_is_short
from keras_transfer.utils import checks
from keras_transfer.utils import keras_internals
from keras_transfer.utils import output
from keras_transfer.utils.output import default_verbose  # noqa: F401 (training.default_verbose)


def _default_optimizer(learning_rate):
    """The optimizer `compile_classifier` gives by default: Keras's `Adam` at
    `learning_rate` (a float or a schedule), its update fused (`fused_adam`)."""
    return fused_adam.fuse_adam(keras.optimizers.Adam(learning_rate))


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
        optimizer: `keras.optimizers.Optimizer`. Replaces Adam if given. The default
            Adam runs TensorFlow's fused update kernel (`training.fused_adam`: the same
            formula, one kernel per variable; a plain `keras.optimizers.Adam` in its
            config and saved files).
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

    Raises:
        ValueError: a softmax head of 1 unit; `label_smoothing` outside [0, 1).

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> model = keras_transfer.compile_classifier(model, learning_rate=1e-3)
    >>> type(model.optimizer).__name__, round(float(model.optimizer.learning_rate), 6)
    ('Adam', 0.001)
    """
    head = model.layers[-1]
    probabilities = getattr(head, "activation", None) is keras.activations.softmax
    if probabilities and model.output.shape[-1] == 1:
        raise ValueError(
            f"Model {model.name!r} ends in a softmax over 1 unit: it predicts 1.0 for every "
            "image and its loss is 0. Use 2 units for two classes. Received: num_classes=1"
        )
    checks.fraction("label_smoothing", label_smoothing, high_open=True)
    if steps_per_execution == "auto":
        steps_per_execution = performance.auto_steps_per_execution(model, batch_size)
    model.compile(
        optimizer=optimizer or _default_optimizer(learning_rate),
        loss=SparseCategoricalCrossentropy(label_smoothing, from_logits=not probabilities),
        metrics=list(metrics),
        jit_compile=performance.resolve_jit_compile(jit_compile),
        steps_per_execution=steps_per_execution,
    )
    return model


def training_callbacks(workdir=None, *, patience=None, monitor="val_loss", run=None, log=None):
    """Early stopping, the best checkpoint and crash-resume, as Keras callbacks.

    With a `workdir`, the folder's `checkpoint.json` says what run wrote its
    `best.keras` and `backup/` (see `keras_transfer.training.run_folder`): a run of the
    same data and model resumes from the backup, or trains again with the checkpoint's
    best to beat, so a worse run never replaces a better `best.keras`; a run of other
    data, another model or class count moves the folder aside (`<workdir>.stale`) and
    starts fresh; a damaged backup is refused. `log` says which.

    Args:
        workdir: str. Where `best.keras` and the `backup/` of `BackupAndRestore` go.
            Without it, only early stopping.
        patience: int. Epochs without improvement of `monitor` before stopping (the
            best weights are restored). `None` disables early stopping.
        monitor: str. Defaults to `"val_loss"`.
        run: dict. What this run is (`run_folder.describe(model, train_data,
            validation_data)`); `train` passes it. Without it the folder's record is
            not checked and the checkpoint starts with no best to beat.
        log: callable for the decision line, or `None`. Defaults to `None`.

    Returns:
        A list of `keras.callbacks.Callback`.

    Example:

    >>> import keras_transfer
    >>> [type(c).__name__ for c in keras_transfer.training_callbacks("/tmp/run", patience=3)]
    ['EarlyStopping', 'BestCheckpoint', 'BackupAndRestore']
    """
    callbacks = []
    if patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
        )
    if workdir is not None:
        best = None
        if run is not None:
            best = run_folder.prepare_workdir(workdir, run, monitor, log)
        else:
            run_folder.check_backup(os.path.join(workdir, "backup"))
            os.makedirs(workdir, exist_ok=True)
        callbacks.append(
            run_folder.BestCheckpoint(
                os.path.join(workdir, "best.keras"), monitor=monitor, initial_value_threshold=best
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
    (if asked) and prefetched. A dataset gets `data.pipeline_options()` (tf.data's
    autotuning model off) unless it set its own autotune options.

    Raises:
        ValueError: an empty set, labels outside the model's classes, or images whose
            shape the model does not take.
    """
    num_classes = model.output.shape[-1]
    if isinstance(data, tf.data.Dataset):
        if data.cardinality() == 0:
            raise ValueError("The dataset is empty.")
        data = data_lib.with_pipeline_options(data)  # no stall at the end of fit
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
    _check_image_shape(model, image_shape)
    return data


def _check_image_shape(model, image_shape):
    expected = tuple(model.input.shape[1:])
    if len(image_shape) != len(expected) or any(
        e is not None and i is not None and e != i for e, i in zip(expected, image_shape)
    ):
        raise ValueError(
            f"Model {model.name!r} takes images of shape {expected}, but the data has "
            f"{image_shape}. Adapt them with make_dataset(..., image_size=..., "
            f"channels=...). Received: images of shape {image_shape}"
        )


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality())
    return steps if steps > 0 else None


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
    method=None,
    stop_on_nan=True,
    strategy=None,
    in_memory="auto",
):
    """Compiles (unless `compile=False`) and fits a classifier on the fastest exact path.

    The defaults are the fast path, and none of them changes what is learned beyond
    float round-off:

    - arrays stay in memory as tensors and the compiled multi-step function gathers
      each batch itself (`training.in_memory`: no input iterator per step), in the
      order of the `tf.data` pipeline it replaces (shuffled each epoch, full batches
      only): the same batches and weights for a seed. With augmentation, or under a
      `tf.distribute` strategy, arrays go through that `tf.data` pipeline (cached,
      prefetched); never through Keras's numpy adapter;
    - `steps_per_execution="auto"` runs several steps per compiled call for small
      models (`auto_steps_per_execution`);
    - XLA only where it pays (`jit_compile="auto"`: GPU yes; on a CPU only the
      in-memory step loop of a Dense-only model over at least 5,000 planned steps, as
      one XLA computation: `performance.in_memory_loop_xla`), with fixed batch shapes
      when compiling so nothing recompiles;
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
        jit_compile: bool or `"auto"`. Defaults to `"auto"` (XLA on GPU; on a CPU
            only for the in-memory loop of long Dense-only runs). With arrays in
            memory, `True` compiles the whole loop of steps of each call as one XLA
            computation (`training.in_memory`).
        steps_per_execution: int or `"auto"`. Defaults to `"auto"`.
        augment: `None`, `True` (`data.augmentation.augmentation_for(channels)`) or a layer/callable applied
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

        method: a `TransferMethod` (or its name, e.g. `"feature_cache:mode=true"`, or a
            list that composes): its `prepare` runs first, its `fit_setup` may choose
            the model that is fitted and its data, its `optimizer` (if any) replaces
            Adam, its `callbacks` join the run. A method that changes the model's
            structure (adapters) is built first: `model = method.build(model)`, else
            `train` raises a `ValueError`. The caller saves `method.finalize(model)`.
            Defaults to `None` (the feature cache as `feature_cache` says).
        strategy: a `tf.distribute.Strategy`, `"mirrored"` or `"multi-worker"`, or
            `None`. The model must be built under its scope. `MirroredStrategy` (one
            machine, several devices) trains with Keras `fit` at one step per call;
            `MultiWorkerMirroredStrategy` (several machines, `TF_CONFIG`) with
            `distributed.fit_multi_worker`, a `strategy.run` loop (Keras 3's `fit` does
            not run under it); see `keras_transfer.training.distributed`. Defaults to
            `None`.
        in_memory: `"auto"` or `False`. `"auto"` trains on `(x, y)` arrays without
            augmentation, outside a strategy, with batches gathered in-graph
            (`training.in_memory.ArrayFeed`); `False` always uses the `tf.data`
            pipeline. Defaults to `"auto"`.
        stop_on_nan: bool. Stop at the first NaN or infinite training loss, restore the
            weights of the last good epoch and raise `TrainingDiverged`
            (`training.guards.StopOnNonFiniteLoss`). Defaults to `True`.

    Before any work, the arguments and the data are checked (`data.validation`):
    labels of arrays and of finite datasets (one pass over them) must be integer class
    ids in `[0, num_classes)`; an infinite dataset gets an in-graph check that fails at
    its first bad batch; array images must be finite; images that look scaled to
    [0, 1] for a model expecting 0-255 pixels get a `PrescaledPixelsWarning`.

    With validation data, a line warns when validation accuracy stays at chance
    while training accuracy rises (`ChanceLevelWarning`).

    Returns:
        The `keras.callbacks.History`.

    Raises:
        ValueError: a bad argument (`epochs` < 1 or <= `initial_epoch`, a learning rate
            <= 0, negative `patience` or `min_steps`, `batch_size` < 1,
            `label_smoothing` outside [0, 1)), labels outside `[0, num_classes)`, float
            or one-hot-looking labels (naming `train_data` or `validation_data`), NaN or
            inf in array images.
        keras_transfer.errors.TrainingDiverged: the loss became NaN or inf (the model
            holds the last good epoch's weights).

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> x = np.random.rand(64, 28, 28, 1) * 255
    >>> y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)
    >>> history = keras_transfer.train(model, (x, y), epochs=2, verbose=0)
    >>> len(history.history["loss"])
    2
    """
    arguments = dict(locals())
    _check_train_arguments(
        epochs, initial_epoch, learning_rate, batch_size, patience, min_steps, label_smoothing
    )
    if strategy is not None:
        strategy = distributed.resolve_strategy(strategy)
        distributed.check_model(model, strategy)
        if not (tf.distribute.has_strategy() and tf.distribute.get_strategy() is strategy):
            with strategy.scope():
                return train(**{**arguments, "strategy": strategy})
        steps_per_execution, feature_cache, recalibrate_batchnorm = _under_strategy(
            strategy, method, steps_per_execution, feature_cache, recalibrate_batchnorm, verbose
        )
    jit = performance.resolve_jit_compile(jit_compile)
    verbose = output.resolve_verbose(verbose)
    method = method_lib.get_method(method) if method is not None else None
    train_data = validation.check_inputs(model, train_data, "train_data")
    validation_data = validation.check_inputs(model, validation_data, "validation_data")
    if method is not None:
        if method.build(model) is not model:
            raise ValueError(
                f"{method!r} changes the model's structure: call `model = method.build(model)` "
                "(or `keras_transfer.insert_adapters(model)` for adapters) before `train` or "
                f"`fine_tune`, and train that model. Received: model {model.name!r} without it"
            )
        method.prepare(model)
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
    context = method_lib.FitContext(model, train_data, validation_data, batch_size, seed, augment, verbose)
    setup = method.fit_setup(context) if method is not None else None
    members = getattr(method, "methods", [method])
    if (
        setup is None
        and feature_cache is not False
        and not any(isinstance(m, cache_lib.FeatureCache) for m in members)
    ):
        setup = cache_lib.FeatureCache(feature_cache).fit_setup(context)
    repeated = False  # arrays repeated before batching (a step budget)
    feed = None  # arrays drawn in-graph (training.in_memory)
    if in_memory not in ("auto", False):
        raise ValueError(f"in_memory must be 'auto' or False. Received: in_memory={in_memory!r}")
    if setup is not None:
        fit_model, train_ds, validation_ds = setup.model, setup.train, setup.validation
    else:
        fit_model = model
        # Arrays under a step budget repeat before batching, so every step is a full
        # batch of `batch_size` (5 images make batches of 32, reshuffled each pass).
        if not is_dataset and isinstance(train_data, (tuple, list)) and len(train_data) == 2:
            full_batches = max(1, len(train_data[0]) // batch_size)
            repeated = run_length(full_batches, epochs - initial_epoch, min_steps) > full_batches
        if (
            in_memory == "auto"
            and augment is None
            and strategy is None
            and not is_dataset
            and (repeated or len(train_data[0]) >= batch_size)
        ):
            feed = _array_feed(
                model, train_data, batch_size, seed, repeated, epochs - initial_epoch, min_steps
            )
            train_ds = None
        else:
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
    wrap = setup is not None and setup.wrap_callbacks

    passes = full_batches if repeated or feed is not None else _steps_per_epoch(train_ds)
    steps_per_epoch = run_length(passes, epochs - initial_epoch, min_steps)
    if steps_per_epoch != passes:
        if verbose:
            print(
                f"Step budget: the data is {passes} batch(es) of {batch_size}; each of the "
                f"{epochs - initial_epoch} epochs runs {steps_per_epoch} steps, "
                f"{steps_per_epoch * (epochs - initial_epoch)} in all (min_steps={min_steps})."
            )
        if not repeated and feed is None:
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
        optimizer = method.optimizer(model, rate) if method is not None else None
        key = None
        if optimizer is None and setup is None and not tf.distribute.has_strategy():
            # Compiled as an earlier run on this model was: that run's traced functions.
            optimizer = _default_optimizer(rate)
            key = compiled_states.run_key(model, optimizer, jit, float(label_smoothing))
        compiled_states.compile_for_run(
            model,
            optimizer,
            key,
            lambda: compile_classifier(
                model,
                learning_rate=rate,
                optimizer=optimizer,
                jit_compile=jit,
                steps_per_execution=1,
                label_smoothing=label_smoothing,
            ),
        )
    elif steps_per_execution == "auto" and model.steps_per_execution > 1:
        steps_per_execution = model.steps_per_execution  # the caller's own choice
    monitor = "val_loss" if validation_data is not None else "loss"
    run = None if workdir is None else run_folder.describe(model, train_data, validation_data)
    all_callbacks = training_callbacks(
        workdir, patience=patience, monitor=monitor, run=run, log=print if verbose else None
    ) + list(callbacks)
    if method is not None:
        all_callbacks += method.callbacks(model)
    guard = guards.StopOnNonFiniteLoss() if stop_on_nan else None
    if guard is not None:  # first: the weights are back before any other callback sees the epoch
        all_callbacks.insert(0, guard)
    penalties = method.penalties(model) if method is not None else []
    if fit_model is not model or penalties:
        # The fitted model (a cached-feature head, ...) with `model`'s optimizer, loss and
        # metrics; the method's penalties join the loss of every step.
        _compile_like(fit_model, model, jit, penalties)
    if wrap:
        all_callbacks = [cache_lib.ForFullModel(c, model) for c in all_callbacks]
    if jit_compile is True and feed is None and _has_dropout(fit_model) and not performance.has_gpu():
        warnings.warn(
            "jit_compile=True on a CPU with a tf.data pipeline (or cached features) and Dropout "
            "layers: Keras compiles each step alone, and its dropout under step-by-step XLA made "
            "training several times slower than without XLA (the MNIST MLP about 6x in "
            "`benchmarks/mlp.py`). Arrays `(x, y)` in memory get the whole loop of steps under XLA "
            "instead (training.in_memory); or leave jit_compile='auto'.",
            stacklevel=2,
        )
    if jit and feed is None and train_ds.element_spec[0].shape[0] is None:
        warnings.warn(
            "jit_compile=True with a variable batch size: the last partial batch "
            "recompiles. Build the dataset with drop_remainder=True.",
            stacklevel=2,
        )
    _set_steps_per_execution(
        fit_model,
        steps_per_execution,
        model,
        batch_size,
        steps_per_epoch,
        whole_calls=feed is None and int(train_ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY),
    )
    if guard is not None:
        guard.every = fit_model.steps_per_execution  # the fitted model's (a cached head's)
    all_callbacks = (
        _batchnorm_callbacks(
            model,
            recalibrate_batchnorm,
            train_data,
            batch_size,
            verbose,
            steps=None if steps_per_epoch is None else (epochs - initial_epoch) * steps_per_epoch,
            validation=validation_data is not None,
            wrap=wrap,
        )
        + all_callbacks
    )
    if distributed.is_multi_worker(strategy):
        return distributed.fit_multi_worker(
            fit_model,
            train_ds,
            strategy=strategy,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_ds,
            initial_epoch=initial_epoch,
            callbacks=all_callbacks,
            verbose=verbose,
        )
    # One input iterator per run: see `_repeated` (the in-memory feed reads no dataset).
    if train_ds is not None:
        train_ds, _ = _repeated(train_ds, fit_model.steps_per_execution)
    validation_steps = None
    if validation_ds is not None:
        validation_ds, validation_steps = _repeated(validation_ds, fit_model.steps_per_execution)
    if feed is not None:
        loop_jit = None  # the model's own jit_compile (a feed means `fit_model is model`)
        planned = steps_per_epoch * (epochs - initial_epoch)
        if jit_compile == "auto" and compile and not jit and method is None:
            if performance.in_memory_loop_xla(model, planned):
                loop_jit = True
                if verbose:
                    print(
                        f"XLA: the {planned:,} steps run as whole-loop XLA computations (jit_compile='auto' "
                        f"on this CPU: Dense-only model, at least {performance.LOOP_XLA_CPU_MIN_STEPS:,} "
                        "steps; dropout masks come from XLA's generator)."
                    )
        with in_memory_lib.installed(fit_model, feed, jit_compile=loop_jit):
            history = fit_model.fit(
                in_memory_lib.placeholder_dataset(),
                validation_data=validation_ds,
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
                validation_steps=validation_steps,
                initial_epoch=initial_epoch,
                shuffle=False,
                callbacks=all_callbacks,
                verbose=verbose,
            )
        compiled_states.after_run(model)
        return history
    history = fit_model.fit(
        train_ds,
        validation_data=validation_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        initial_epoch=initial_epoch,
        shuffle=False,  # the pipeline shuffles (as_dataset / make_dataset)
        callbacks=all_callbacks,
        verbose=verbose,
    )
    compiled_states.after_run(model)
    return history


def _repeated(dataset, steps_per_execution):
    """`(dataset.repeat(), its length)` for a dataset of known length that
    `steps_per_execution` divides, else `(dataset, None)`: given to `fit` with its steps,
    one iterator serves the whole run.

    On a dataset of known length Keras's `fit` makes two iterators per epoch (and two per
    validation): one when the epoch starts and one, never read, when its last batch is
    drawn. Each rebuilds the pipeline (for an augmented one, its `map` function), and the
    next epoch waits for its first batch. Repeated, epoch `e` reads pass `e` of the same
    pipeline: the same batches, reshuffled each pass, and the prefetched batches carry
    across the epoch's end. The in-memory feed (`training.in_memory`) reads the same
    shuffles. Only when `steps_per_execution` divides the length: a Keras call runs that
    many steps unless the data ends, so the epoch's last call would read into the next
    pass (a validation would count batches twice). A dataset repeated already (a step
    budget) has no known length and stays as it is.
    """
    steps = _steps_per_epoch(dataset)
    if steps is None or steps % steps_per_execution:
        return dataset, None
    return dataset.repeat(), steps


def _has_dropout(model):
    return any(
        isinstance(layer, keras.layers.Dropout)
        for layer in keras_internals.flatten_layers(model, include_self=False)
    )


def _array_feed(model, train_data, batch_size, seed, repeated, epochs, min_steps):
    """`train`'s arrays as an `ArrayFeed` (checked as `as_dataset` checks them)."""
    x, y = (np.asarray(a) for a in train_data)
    if x.ndim == 3:
        x = x[..., None]
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}")
    _check_image_shape(model, tuple(x.shape[1:]))
    passes = max(1, len(x) // batch_size)
    return in_memory_lib.ArrayFeed(
        x,
        y,
        batch_size=batch_size,
        steps_per_epoch=run_length(passes, epochs, min_steps),
        shuffle=True,
        seed=seed,
        repeat=repeated,
    )


def _under_strategy(strategy, method, steps_per_execution, feature_cache, recalibrate, verbose):
    """What `train` changes under a `tf.distribute` strategy, each said in a line."""
    say = print if output.resolve_verbose(verbose) else (lambda line: None)
    multi_worker = distributed.is_multi_worker(strategy)
    if strategy.num_replicas_in_sync > 1 or multi_worker:
        if steps_per_execution not in ("auto", 1):
            raise ValueError(
                "steps_per_execution above 1 fails under a multi-replica tf.distribute strategy in "
                "Keras 3 (a placeholder error in its multi-step train function): leave it at 'auto' or "
                f"pass 1. Received: steps_per_execution={steps_per_execution!r} with "
                f"{strategy.num_replicas_in_sync} replicas"
            )
        if steps_per_execution == "auto":
            say(
                f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replicas: one step per "
                "call (Keras 3's multi-step train function fails under a multi-replica strategy)."
            )
        steps_per_execution = 1
    if multi_worker:
        if method is not None:
            raise ValueError(
                "The multi-worker loop trains the model itself (its own train_step); transfer methods "
                "that fit another model (feature cache, distillation, ...) run on one machine. "
                f"Received: method={method!r} with MultiWorkerMirroredStrategy"
            )
        if feature_cache is True or (not isinstance(recalibrate, str) and recalibrate is not False):
            raise ValueError(
                "feature_cache=True and recalibrate_batchnorm run on one machine, not under "
                f"MultiWorkerMirroredStrategy. Received: feature_cache={feature_cache!r}, "
                f"recalibrate_batchnorm={recalibrate!r}"
            )
        feature_cache, recalibrate = False, False
    return steps_per_execution, feature_cache, recalibrate


def _check_train_arguments(epochs, initial_epoch, learning_rate, batch_size, patience, min_steps, smoothing):
    """`train`'s numeric arguments, before any work (house wording: `utils.checks`)."""
    epochs = checks.positive_int("epochs", epochs)
    initial_epoch = checks.non_negative_int("initial_epoch", initial_epoch)
    if epochs <= initial_epoch:
        raise ValueError(
            "epochs must be greater than initial_epoch (epochs counts from 0, not from "
            f"initial_epoch). Received: epochs={epochs}, initial_epoch={initial_epoch}"
        )
    checks.learning_rate("learning_rate", learning_rate)
    checks.positive_int("batch_size", batch_size)
    checks.optional_non_negative_int("patience", patience)
    checks.optional_non_negative_int("min_steps", min_steps)
    checks.fraction("label_smoothing", smoothing, high_open=True)


def run_length(steps_per_pass, epochs, min_steps):
    """Steps per epoch under a step budget: a pass over the data, or more if `epochs`
    passes are fewer than `min_steps` steps.

    Example:

    >>> from keras_transfer.training import run_length
    >>> run_length(1, 20, 400), run_length(54, 20, 400), run_length(3, 5, None)
    (20, 54, 3)
    """
    min_steps = checks.optional_non_negative_int("min_steps", min_steps)
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


def _set_steps_per_execution(fit_model, steps_per_execution, model, batch_size, steps_per_epoch, whole_calls):
    """Sets `fit_model.steps_per_execution` (`"auto"`: from the model's size).

    With `whole_calls` (a repeated dataset under `steps_per_epoch`) it is the largest
    divisor of `steps_per_epoch` the count allows: a Keras call runs that many steps
    unless the data ends, so a call that does not divide the epoch runs past it (5
    images under `min_steps=40` over 3 epochs, 4 steps a call: 48 steps instead of 42).
    """
    explicit = steps_per_execution != "auto"
    if not explicit:
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
    if whole_calls and steps_per_epoch is not None and steps_per_epoch % steps_per_execution:
        fitted = max(d for d in range(1, steps_per_execution + 1) if steps_per_epoch % d == 0)
        if explicit:
            warnings.warn(
                f"steps_per_execution={steps_per_execution} does not divide the {steps_per_epoch} "
                f"steps of each epoch of a repeated dataset: {fitted} steps a call instead, so "
                "each epoch runs exactly its steps.",
                stacklevel=3,
            )
        steps_per_execution = fitted
    if fit_model.steps_per_execution != steps_per_execution:
        # Keras reads it when it builds the train function: reset that function.
        fit_model.steps_per_execution = steps_per_execution
        fit_model.train_function = fit_model.test_function = fit_model.predict_function = None


def _compile_like(head, model, jit, penalties=()):
    """Compiles `head` with `model`'s optimizer, loss (plus `penalties`) and metrics."""
    arguments = keras_internals.compile_arguments(model)
    metrics = arguments.get("metrics") if arguments is not None else None
    loss = model.loss
    if isinstance(loss, WithPenalties):
        loss = loss.loss
    head.compile(
        optimizer=model.optimizer,
        loss=WithPenalties(loss, penalties) if penalties else loss,
        metrics=metrics,
        jit_compile=jit,
        steps_per_execution=1,
    )

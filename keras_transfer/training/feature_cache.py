"""Feature cache: train the head of a frozen-backbone model on features computed once.

When the backbone is frozen and the images are the same every epoch (no augmentation),
every epoch of plain `fit` recomputes the same backbone outputs. The cache computes them
once, trains the head on them, and leaves the head trained inside the original model:
the head model shares its layers (and so its weights) with the full model, so there is
nothing to copy back and the model is exactly the architecture plain training gives.
"""

import os
import tempfile
import time
import weakref
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import data as data_lib
from keras_transfer.training import method as method_lib
from keras_transfer.utils import keras_internals

# Layers whose output in training differs from inference and is random: with one of
# them in the frozen part, cached features would not be what plain training sees.
_STOCHASTIC = (
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
)
# Default in-memory limit for cached features; larger sets go to disk.
MEMORY_LIMIT_BYTES = 2 * 1024**3


# The traced forward pass of each feature model `compute_features` has run, kept while
# the model lives (weak keys; the function reaches the model through a weak reference,
# so it does not keep it alive).
_FORWARD = weakref.WeakKeyDictionary()


def _traced_forward(feature_model):
    """`feature_model(images, training=False)` as a `tf.function`, traced once per model.

    Tracing a backbone takes about a second (`mobilenet_v3_small`: 1.2-1.5 s on the AMD
    hosts), more than a pass over a thousand small images, and `compute_features` runs
    on the same model again for the validation split and in every further pass."""
    forward = _FORWARD.get(feature_model)
    if forward is None:
        model = weakref.ref(feature_model)
        forward = tf.function(lambda images: model()(images, training=False), reduce_retracing=True)
        _FORWARD[feature_model] = forward
    return forward


class FeatureSplit(NamedTuple):
    """A model cut after its frozen, deterministic front.

    `features` maps the model's input to the cut (`cut` names the last layer before
    it); `head` maps the features to the model's output with the model's own layer
    objects, so training `head` trains the model.
    """

    features: keras.Model
    head: keras.Model
    cut: str


class CachePlan(NamedTuple):
    """Whether the feature cache applies (`use`) and, either way, why (`reason`)."""

    use: bool
    reason: str
    split: FeatureSplit | None = None


def split_frozen_features(model):
    """Splits `model` after its longest frozen, deterministic front.

    The model's layers must form a chain (each takes the previous one's output), as
    `build_classifier` makes them. The front is every layer from the input up to the
    first one with trainable weights or with random behaviour in training (Dropout,
    noise, augmentation); at least one of its layers must have (frozen) weights.

    Args:
        model: a Functional `keras.Model`.

    Returns:
        `FeatureSplit(features, head, cut)`.

    Raises:
        ValueError: with the reason the model cannot be split.

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None,
    ...                                          freeze_backbone=True)
    >>> split = keras_transfer.split_frozen_features(model)
    >>> split.cut, [layer.name for layer in split.head.layers[1:]]
    ('backbone', ['output_dropout', 'predictions'])
    >>> split.head.layers[-1] is model.get_layer("predictions")
    True
    """
    layers = getattr(model, "layers", None)
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None) or len(model.inputs) != 1:
        raise ValueError("the model is not a single-input Functional model")
    layers = [layer for layer in layers if not isinstance(layer, keras.layers.InputLayer)]
    # Only the calls in this model's graph: a split adds calls of the head's layers in
    # the head model (and so does every `train` with the cache), which do not count.
    calls = keras_internals.graph_calls(model)
    previous, outputs = model.inputs[0], []
    for layer in layers:
        nodes = calls.get(id(layer), [])
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1 or nodes[0].input_tensors[0] is not previous:
            raise ValueError(
                f"the model's layers do not form a chain (at layer {layer.name!r}), so "
                "there is no single point to cut it at"
            )
        previous = nodes[0].output_tensors[0] if len(nodes[0].output_tensors) == 1 else None
        if previous is None:
            raise ValueError(f"layer {layer.name!r} has several outputs")
        outputs.append(previous)
    cut = 0
    while cut < len(layers) and not layers[cut].trainable_weights and not _stochastic(layers[cut]):
        cut += 1
    if cut == len(layers):
        raise ValueError("the model has no trainable layer to train")
    front = layers[:cut]
    if not any(layer.weights for layer in front):
        blocker = layers[cut]
        why = (
            f"layer {blocker.name!r} is random in training ({type(_stochastic(blocker)).__name__})"
            if _stochastic(blocker)
            else f"layer {blocker.name!r} is trainable (the backbone is not frozen)"
        )
        raise ValueError(f"there is no frozen backbone to cache: {why}")
    feature_tensor = outputs[cut - 1]
    features = keras.Model(model.inputs[0], feature_tensor, name=f"{model.name}_features")
    head_input = keras.Input(
        tuple(feature_tensor.shape[1:]), dtype=feature_tensor.dtype, name=f"{front[-1].name}_features"
    )
    x = head_input
    for layer in layers[cut:]:
        x = layer(x)
    head = keras.Model(head_input, x, name=f"{model.name}_head")
    return FeatureSplit(features, head, front[-1].name)


def _stochastic(layer):
    """The first layer inside `layer` (itself included) that is random in training."""
    for sub in keras_internals.flatten_layers(layer, include_self=True):
        if isinstance(sub, _STOCHASTIC) and float(getattr(sub, "rate", getattr(sub, "stddev", 1.0))) > 0:
            return sub
        if type(sub).__name__.startswith("Random") or type(sub).__name__ == "StochasticDepth":
            return sub
    return None


def plan_feature_cache(model, *, feature_cache="auto", augment=False, dataset_input=False):
    """Decides whether training `model` can use the feature cache, and says why.

    Args:
        model: `keras.Model`.
        feature_cache: `"auto"`, `True` or `False`. `True` forces it for a
            `tf.data.Dataset` (you promise it yields the same images every epoch).
        augment: bool. Whether training images are augmented.
        dataset_input: bool. Whether the training data is a `tf.data.Dataset` (which
            may augment or change between epochs, so `"auto"` does not cache it).

    Returns:
        `CachePlan(use, reason, split)`.

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None,
    ...                                          freeze_backbone=True)
    >>> keras_transfer.plan_feature_cache(model).use
    True
    >>> keras_transfer.plan_feature_cache(model, augment=True).reason
    'augmentation is on: every epoch sees new images, so features cannot be reused'
    """
    if feature_cache not in ("auto", True, False):
        raise ValueError(
            f"feature_cache must be 'auto', True or False. Received: feature_cache={feature_cache!r}"
        )
    if feature_cache is False:
        return CachePlan(False, "feature_cache=False")
    if augment:
        return CachePlan(
            False, "augmentation is on: every epoch sees new images, so features cannot be reused"
        )
    if dataset_input and feature_cache == "auto":
        return CachePlan(
            False,
            "the training data is a tf.data.Dataset, which may augment or change between "
            "epochs; pass arrays, or feature_cache=True if it yields the same images every epoch",
        )
    try:
        split = split_frozen_features(model)
    except ValueError as error:
        return CachePlan(False, str(error))
    return CachePlan(True, f"the layers up to {split.cut!r} are frozen and deterministic", split)


def compute_features(
    feature_model,
    data,
    *,
    batch_size=64,
    count=None,
    cache_dir=None,
    memory_limit=MEMORY_LIMIT_BYTES,
    verbose=0,
):
    """Runs `feature_model` once over `data`; returns `(features, labels)` arrays.

    Features are kept in memory up to `memory_limit` bytes, beyond that in a `.npy`
    file (memory-mapped) under `cache_dir` (a temporary folder by default); a dataset
    of known length (`cardinality()`) is written straight into one array or file, one
    of unknown length is gathered in memory and joined at the end. The
    forward pass is traced once per `feature_model` and kept while the model lives, so
    a further call on the same model (the validation split, a new pass over new
    images) does not trace the backbone again; it reads the model's current weights.

    Args:
        feature_model: `keras.Model` (the `features` of `split_frozen_features`).
        data: `(x, y)` arrays or a `tf.data.Dataset` of `(images, labels)` batches.
        batch_size: int. For arrays. Defaults to `64`.
        count: int. Number of examples in a dataset, if known and the dataset's
            `cardinality()` is not (lets a large set go straight to disk).
        cache_dir: str. Folder for on-disk features.
        memory_limit: int. Bytes. Defaults to 2 GiB.
        verbose: int. Progress output. Defaults to `0`.

    Returns:
        `(features, labels)`: `np.ndarray` or `np.memmap`, and int64 labels.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None,
    ...                                          freeze_backbone=True)
    >>> split = keras_transfer.split_frozen_features(model)
    >>> f, y = keras_transfer.compute_features(split.features, (np.zeros((5, 28, 28, 1)), np.arange(5)))
    >>> f.shape, y.tolist()
    ((5, 128), [0, 1, 2, 3, 4])
    """
    batch_count = None
    if isinstance(data, tf.data.Dataset):
        batches = data
        cardinality = int(data.cardinality())
        if cardinality == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "compute_features runs over the dataset once, and this one repeats forever "
                "(`repeat()` without a count). Pass one epoch of `(images, labels)` batches."
            )
        batch_count = cardinality if cardinality >= 0 else None
    else:
        x, y = data
        count = len(x)
        batches = data_lib.make_dataset(x, y, batch_size=batch_size, cache=False)
    shape = tuple(feature_model.output.shape[1:])
    dtype = np.dtype(keras.backend.standardize_dtype(feature_model.output.dtype))
    per_example = int(np.prod(shape)) * dtype.itemsize
    store, labels, filled = None, [], 0
    predict = _traced_forward(feature_model)
    progress = keras.utils.Progbar(count, unit_name="image") if verbose and count else None
    for images, targets in batches:
        values = predict(images).numpy()
        if store is None:
            # The rows to allocate: `count`, or at most the dataset's batches times its
            # first batch (only the last is smaller; the rest is sliced off at the end).
            capacity = count
            if capacity is None and batch_count is not None:
                capacity = batch_count * len(values)
            if capacity is not None and capacity * per_example > memory_limit:
                folder = cache_dir or tempfile.mkdtemp(prefix="keras_transfer_features_")
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, f"features_{os.getpid()}_{id(values)}.npy")
                store = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(capacity,) + shape)
            elif capacity is not None:
                store = np.empty((capacity,) + shape, dtype)
            else:
                store = []
        if not isinstance(store, list) and filled + len(values) > len(store):
            if count is not None:
                raise ValueError(
                    f"The dataset has more than count={count:,} examples. Pass the number of "
                    "examples in one pass over it, or count=None."
                )
            store = [np.array(store[:filled])]  # a batch larger than the first
        if isinstance(store, list):
            store.append(values)
        else:
            store[filled : filled + len(values)] = values
        filled += len(values)
        labels.append(np.asarray(targets))
        if progress is not None:
            progress.update(filled)
    if store is None:
        raise ValueError("The dataset is empty.")
    if isinstance(store, list):
        store = np.concatenate(store)
    else:
        if isinstance(store, np.memmap):
            store.flush()
        if filled < len(store):
            store = store[:filled]  # a smaller last batch, or fewer examples than `count`
    return store, np.concatenate(labels).astype(np.int64)


def feature_dataset(features, labels, *, batch_size=32, shuffle=False, seed=None, drop_remainder=False):
    """A batched, prefetched pipeline of cached `(features, labels)`.

    In-memory features go through `make_dataset`'s order (cache, shuffle, batch), so a
    seed gives the same example order as the image pipeline with that seed. Features
    on disk are gathered batch by batch from the memory-mapped file.
    """
    if not isinstance(features, np.memmap):
        ds = tf.data.Dataset.from_tensor_slices((features, labels))
        if shuffle:
            ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
        return data_lib.batch_and_augment(ds, batch_size, drop_remainder=drop_remainder)
    shape, dtype = features.shape[1:], features.dtype

    def gather(index):
        index = np.sort(index)
        return np.asarray(features[index]), labels[index]

    ds = tf.data.Dataset.range(len(features))
    if shuffle:
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(
        lambda i: tf.numpy_function(gather, [i], (tf.as_dtype(dtype), tf.int64)),
        num_parallel_calls=data_lib.AUTOTUNE,
    )
    fixed = batch_size if drop_remainder else None
    ds = ds.map(lambda f, y: (tf.ensure_shape(f, (fixed,) + shape), tf.ensure_shape(y, (fixed,))))
    return data_lib.finish_pipeline(ds)


class ForFullModel(keras.callbacks.Callback):
    """Runs a callback against the full model while `fit` trains its cached head.

    Checkpoints then save, and early stopping restores, the whole model; a stop
    request or a resumed epoch from the callback reaches the `fit` in progress.
    """

    def __init__(self, callback, full_model):
        super().__init__()
        self.callback = callback
        self.full_model = full_model

    def set_model(self, model):
        self.head_model = model
        self.callback.set_model(self.full_model)

    def set_params(self, params):
        self.callback.set_params(params)

    def _sync(self):
        if getattr(self.full_model, "stop_training", False):
            self.head_model.stop_training = True
        epoch = keras_internals.initial_epoch(self.full_model)
        if epoch is not None:
            keras_internals.set_initial_epoch(self.head_model, epoch)

    def on_train_begin(self, logs=None):
        self.full_model.stop_training = False
        self.callback.on_train_begin(logs)
        self._sync()


def _forward(name):
    def hook(self, *args, **kwargs):
        getattr(self.callback, name)(*args, **kwargs)
        self._sync()

    hook.__name__ = name
    return hook


for _name in (
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_begin",
    "on_predict_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
):
    setattr(ForFullModel, _name, _forward(_name))


def _has_frozen_weights(model):
    return any(layer.weights and not layer.trainable for layer in model.layers)


@method_lib.register_method
class FeatureCache(method_lib.TransferMethod):
    """The feature cache as a transfer method: with a frozen, deterministic backbone and
    the same images every epoch, the backbone's outputs are computed once and the head
    (the model's own layers) trains on them. `train` applies it by default
    (`feature_cache="auto"`); it prints whether it is on, and why not when it is off.

    Args:
        mode: `"auto"` (arrays without augmentation) or `True` (also a
            `tf.data.Dataset` that yields the same images every epoch).

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.training.feature_cache import FeatureCache
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None, freeze_backbone=True)
    >>> x, y = np.random.rand(8, 28, 28, 1) * 255, np.array([0, 1] * 4)
    >>> history = keras_transfer.train(model, (x, y), epochs=1, method=FeatureCache(), verbose=0)
    >>> FeatureCache().get_config()
    {'mode': 'auto'}
    """

    name = "feature_cache"
    summary = "a frozen backbone's outputs computed once; the head trains on them"

    def __init__(self, mode="auto"):
        if mode not in ("auto", True):
            raise ValueError(f"mode must be 'auto' or True. Received: mode={mode!r}")
        self.mode = mode

    def fit_setup(self, context):
        model = context.model
        plan = plan_feature_cache(
            model,
            feature_cache=self.mode,
            augment=bool(context.augment),
            dataset_input=isinstance(context.train_data, tf.data.Dataset),
        )
        if context.verbose and (plan.use or _has_frozen_weights(model)):
            print(f"Feature cache {'on' if plan.use else 'off'}: {plan.reason}.")
        if not plan.use:
            return None
        train_ds, validation_ds = _cached_pipelines(
            plan.split,
            model,
            context.train_data,
            context.validation_data,
            context.batch_size,
            context.seed,
            context.verbose,
        )
        return method_lib.FitSetup(plan.split.head, train_ds, validation_ds, wrap_callbacks=True)

    def get_config(self):
        return {"mode": self.mode}


def _cached_pipelines(split, model, train_data, validation_data, batch_size, seed, verbose):
    """The cached feature pipelines of the head model `split.head`."""
    from keras_transfer.training.fit import as_dataset

    start = time.time()
    checked = as_dataset(train_data, model, batch_size=batch_size)
    features, labels = compute_features(
        split.features,
        train_data if isinstance(train_data, tf.data.Dataset) else checked,
        count=None if isinstance(train_data, tf.data.Dataset) else len(train_data[0]),
    )
    train_ds = feature_dataset(
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
        val_features, val_labels = compute_features(split.features, checked)
        validation_ds = feature_dataset(val_features, val_labels, batch_size=batch_size)
    if verbose:
        print(
            f"Feature cache: {len(features):,} training images through {split.cut!r} once "
            f"({time.time() - start:.1f}s); training the head on features of shape "
            f"{tuple(features.shape[1:])}."
        )
    return train_ds, validation_ds

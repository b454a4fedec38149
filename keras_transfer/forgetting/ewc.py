"""EWC: fine-tuning with each transferred weight held by its Fisher information on the
source task (Kirkpatrick et al., 2017)."""

import hashlib
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import weight_transfer
from keras_transfer.forgetting import anchors as anchors_lib
from keras_transfer.forgetting.l2_sp import anchor_penalty
from keras_transfer.training import method as method_lib
from keras_transfer.utils import checks
from keras_transfer.utils import files

FINGERPRINT = "__source_fingerprint__"  # the npz entry that ties saved Fisher values to their source
BATCHES = "__batches__"


def fingerprint(model):
    """A digest of `model`'s weighted layers (names, shapes, values): saved Fisher values
    belong to exactly these weights."""
    digest = hashlib.sha256()
    for name, layer in weight_transfer.weighted_layers(model).items():
        digest.update(name.encode())
        for weight in layer.weights:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
            digest.update(str(value.shape).encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _batches_of(data, batches, batch_size):
    """At most `batches` batches of `(images, labels)` from arrays (the first images of a
    fixed shuffle, seed 0) or a `tf.data.Dataset` (its first batches)."""
    if isinstance(data, tf.data.Dataset):
        return data.take(batches)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"data must be (images, labels) of one non-zero length. Received: {len(x)} and {len(y)}"
            )
        order = np.random.default_rng(0).permutation(len(x))[: batches * batch_size]
        return tf.data.Dataset.from_tensor_slices((x[order].astype("float32"), y[order])).batch(batch_size)
    raise ValueError(
        f"data must be a tuple (images, labels) or a tf.data.Dataset of them. Received: {type(data).__name__}"
    )


def fisher_information(model, data, *, batches=20, batch_size=32, verbose=1):
    """The diagonal of the (empirical) Fisher information of `model`'s weights on `data`.

    For each weight, the mean over examples of the squared gradient of the example's
    log-likelihood `log p(y | x)` at its label (the model in inference mode:
    Dropout off, BatchNorm on its moving statistics). Per-example gradients, not
    batch gradients, so the estimate does not shrink with the batch size. It reads at
    most `batches` batches, printing a progress line.

    Args:
        model: `keras.Model`. A classifier ending in softmax probabilities (or logits).
        data: `(images, labels)` arrays (a fixed seed-0 shuffle of them is read) or a
            `tf.data.Dataset` of batches (its first `batches`).
        batches: int >= 1. At most this many batches. Defaults to `20`.
        batch_size: int. For arrays. Defaults to `32`.
        verbose: int. `1` prints a progress line (on a terminal, rewritten batch by batch)
            and a closing line. Defaults to `1`.

    Returns:
        dict `{"<layer>/<index>": np.ndarray}`: one non-negative array per weight of
        each weighted layer (`weighted_layers` names; the i-th of its `weights`), of
        the weight's shape.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import fisher_information
    >>> model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> x, y = np.random.rand(8, 28, 28, 1) * 255, np.array([0, 1, 2, 0, 1, 2, 0, 1])
    >>> fisher = fisher_information(model, (x, y), batches=2, batch_size=4, verbose=0)
    >>> sorted(fisher), fisher["fc1/0"].shape, bool((fisher["fc1/0"] >= 0).all())
    (['fc1/0', 'fc1/1', 'predictions/0', 'predictions/1'], (784, 128), True)
    """
    batches = checks.positive_int("batches", batches)
    batch_size = checks.positive_int("batch_size", batch_size)
    layers = weight_transfer.weighted_layers(model)
    keys = [f"{name}/{i}" for name, layer in layers.items() for i in range(len(layer.weights))]
    variables = [w for layer in layers.values() for w in layer.weights]
    head = model.layers[-1]
    probabilities = getattr(head, "activation", None) is keras.activations.softmax

    @tf.function(reduce_retracing=True)
    def squared_gradients(x, y):
        with tf.GradientTape(watch_accessed_variables=False, persistent=False) as tape:
            for variable in variables:
                tape.watch(variable.value if hasattr(variable, "value") else variable)
            outputs = tf.cast(model(x, training=False), tf.float32)
            log_p = (
                tf.math.log(tf.clip_by_value(outputs, 1e-12, 1.0))
                if probabilities
                else tf.nn.log_softmax(outputs)
            )
            picked = tf.gather(log_p, tf.cast(tf.reshape(y, (-1,)), tf.int32), axis=1, batch_dims=1)
        jacobians = tape.jacobian(picked, [v.value if hasattr(v, "value") else v for v in variables])
        return [
            tf.zeros(v.shape, tf.float32)
            if j is None
            else tf.reduce_sum(tf.square(tf.cast(j, tf.float32)), axis=0)
            for v, j in zip(variables, jacobians)
        ]

    totals = [np.zeros(v.shape, np.float64) for v in variables]
    count, seen = 0, 0
    start = time.time()
    live = bool(verbose) and sys.stdout.isatty()  # a progress line that rewrites itself
    for x, y in _batches_of(data, batches, batch_size):
        for total, value in zip(totals, squared_gradients(tf.cast(x, tf.float32), y)):
            total += value.numpy()
        count += int(x.shape[0])
        seen += 1
        if live:
            print(f"\rFisher information: batch {seen}/{batches} ({count:,} images)", end="", flush=True)
        if seen >= batches:
            break
    if count == 0:
        raise ValueError("fisher_information read no examples: data is empty.")
    if verbose:
        print(
            f"{chr(13) if live else ''}Fisher information: {seen} batch(es), {count:,} source images, "
            f"{len(variables)} weights ({time.time() - start:.1f}s)."
        )
    return {key: (total / count).astype(np.float32) for key, total in zip(keys, totals)}


def save_fisher(path, fisher, source_fingerprint=None, batches=None):
    """Writes Fisher values (`fisher_information`'s dict) to an `.npz` file, atomically,
    with the fingerprint of their source model (`load_fisher` reads them back).

    Example:

    >>> import os, tempfile, numpy as np
    >>> from keras_transfer.forgetting import load_fisher, save_fisher
    >>> path = os.path.join(tempfile.mkdtemp(), "fisher.npz")
    >>> _ = save_fisher(path, {"fc1/0": np.ones((2, 3), "float32")}, "abc")
    >>> fisher, found = load_fisher(path)
    >>> fisher["fc1/0"].shape, found
    ((2, 3), 'abc')
    """
    extra = {}
    if source_fingerprint is not None:
        extra[FINGERPRINT] = np.array(source_fingerprint)
    if batches is not None:
        extra[BATCHES] = np.array(batches)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with files.atomic_path(path) as staging:
        with open(staging, "wb") as handle:
            np.savez(handle, **fisher, **extra)
    return path


def load_fisher(path):
    """`(fisher dict, source fingerprint or None)` from a file `save_fisher` wrote."""
    with np.load(path) as stored:
        fisher = {k: stored[k] for k in stored.files if not k.startswith("__")}
        found = str(stored[FINGERPRINT]) if FINGERPRINT in stored.files else None
    return fisher, found


def load_source_data(source_data):
    """`source_data` as given (arrays, a dataset), or an `.npz` path read as `(x, y)`
    (entries `x` and `y`, or `images` and `labels`)."""
    if not isinstance(source_data, (str, os.PathLike)):
        return source_data
    path = os.fspath(source_data)
    if not path.endswith(".npz") or not os.path.isfile(path):
        raise ValueError(
            "source_data must be (images, labels), a tf.data.Dataset, or an existing .npz file with "
            f"x and y (or images and labels). Received: source_data={source_data!r}"
        )
    with np.load(path) as stored:
        for images, labels in (("x", "y"), ("images", "labels")):
            if images in stored.files and labels in stored.files:
                return stored[images], stored[labels]
    raise ValueError(
        f"{path} has no x and y (or images and labels) arrays. Received: source_data={source_data!r}"
    )


@method_lib.register_method
class EWC(method_lib.TransferMethod):
    """Elastic weight consolidation: each transferred weight is held near its source value
    as firmly as the source task depends on it.

    The loss of every step gains `strength / 2 * sum(F * (w - w_source)**2)` over the
    transferred weights (the target layers that pair with the source's, as
    `transfer_weights` pairs them), with `F` the diagonal Fisher information of the
    source model on source data (`fisher_information`, at most `fisher_batches`
    batches, with a progress line). The new weights (the head) are free. The source
    values and `F` are constants held by the penalty: nothing of them is saved in the
    model, and `finalize` returns the model as it is.

    The Fisher values are computed once per method and kept; with a `fisher_path` they
    are saved there (`.npz`, with a fingerprint of the source's weights) and a later
    run reads them instead, needing no `source_data` (a file whose fingerprint is not
    the source's is recomputed, or refused without data). By default (`"auto"`) the
    file goes beside a source given as a `.keras` path (`source.fisher.npz`); a source
    in memory keeps them in memory only.

    Composes with `FineTune` like `L2SP` (`keras-transfer train --method
    ewc:source=source.keras,source_data=source.npz,strength=100`: `source_data` is an
    `.npz` file with `x` and `y`).

    Args:
        source: `keras.Model` or a `.keras` file: the source model.
        source_data: `(images, labels)` of the source task, a `tf.data.Dataset` of
            them, or an `.npz` file (`x`, `y`). Not needed when `fisher_path` holds
            the values. Defaults to `None`.
        strength: float >= 0. The EWC `lambda`. Defaults to `10000.0`, chosen on
            validation data in `keras-transfer demo forgetting`
            (`demo_forgetting.select_forgetting_settings`).
        fisher_batches: int >= 1. At most this many source batches for the Fisher
            values. Defaults to `20`.
        batch_size: int. Of those batches (for arrays). Defaults to `32`.
        fisher_path: str, `"auto"` or `None`. Where the values are saved and read.
            Defaults to `"auto"` (beside a `.keras` source, else in memory).
        exclude: str or list of str. Target layer names never anchored. Defaults to
            `"predictions"`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import EWC
    >>> source = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> report = keras_transfer.transfer_weights(source, model, exclude="predictions")
    >>> x, y = np.random.rand(16, 28, 28, 1) * 255, np.array([0, 1] * 8)
    >>> method = EWC(source, (x, y), strength=10.0, fisher_batches=2, batch_size=8)
    >>> run = keras_transfer.train(model, (x, y), epochs=1, method=method, verbose=0)  # doctest: +ELLIPSIS
    Fisher information: 2 batch(es), 16 source images, 4 weights (...s).
    >>> sorted(method.fisher)
    ['fc1/0', 'fc1/1', 'predictions/0', 'predictions/1']

    Reference:
    - [Kirkpatrick et al., 2017](https://arxiv.org/abs/1612.00796) (overcoming
      catastrophic forgetting in neural networks)
    """

    name = "ewc"
    summary = "EWC: the transferred weights held by their Fisher information on the source task"

    def __init__(
        self,
        source=None,
        source_data=None,
        strength=1e4,
        fisher_batches=20,
        batch_size=32,
        fisher_path="auto",
        exclude="predictions",
    ):
        self.source = anchors_lib.check_source(source)
        if isinstance(source_data, os.PathLike):
            source_data = os.fspath(source_data)
        if isinstance(source_data, str):
            load_source_data(source_data)  # fails now on a wrong path
        self.source_data = source_data
        self.strength = anchors_lib.non_negative_number("strength", strength)
        self.fisher_batches = checks.positive_int("fisher_batches", fisher_batches)
        self.batch_size = checks.positive_int("batch_size", batch_size)
        if isinstance(fisher_path, os.PathLike):
            fisher_path = os.fspath(fisher_path)
        if fisher_path is not None and not isinstance(fisher_path, str):
            raise ValueError(
                f"fisher_path must be a path, 'auto' or None. Received: fisher_path={fisher_path!r}"
            )
        self.fisher_path = fisher_path
        self.exclude = anchors_lib.check_exclude(exclude)
        self._source_model = None
        self._fisher = None

    @property
    def source_model(self):
        """The source as a `keras.Model` (loaded once from its path)."""
        if self._source_model is None:
            self._source_model = anchors_lib.load_source(self.source)
        return self._source_model

    def resolved_fisher_path(self):
        """Where the Fisher values are saved and read, or `None` (memory only)."""
        if self.fisher_path != "auto":
            return self.fisher_path
        if isinstance(self.source, str):
            return self.source[: -len(".keras")] + ".fisher.npz"
        return None

    @property
    def fisher(self):
        """The Fisher values of the source (`{"<layer>/<index>": array}`): read from
        `fisher_path` when it holds this source's, else computed (and saved there)."""
        if self._fisher is not None:
            return self._fisher
        path = self.resolved_fisher_path()
        source = self.source_model
        expected = fingerprint(source)
        if path is not None and os.path.isfile(path):
            fisher, found = load_fisher(path)
            if found == expected:
                print(f"Fisher information: read from {path}.")
                self._fisher = fisher
                return fisher
            if self.source_data is None:
                raise ValueError(
                    f"The Fisher values in {path} belong to another source model, and there is no "
                    f"source_data to compute this one's. Received: fisher_path={self.fisher_path!r}"
                )
            print(f"Fisher information in {path} is for another source model: computing it again.")
        if self.source_data is None:
            raise ValueError(
                "EWC needs source_data (the source task's images and labels) to compute the Fisher "
                f"information, or a fisher_path file holding it. Received: source_data=None, "
                f"fisher_path={self.fisher_path!r}"
            )
        fisher = fisher_information(
            source,
            load_source_data(self.source_data),
            batches=self.fisher_batches,
            batch_size=self.batch_size,
        )
        if path is not None:
            save_fisher(path, fisher, expected, self.fisher_batches)
            print(f"Fisher information saved to {path}.")
        self._fisher = fisher
        return fisher

    def anchors(self, model):
        """`Anchors` of `model` (its transferred weights, their source values, the new ones)."""
        return anchors_lib.source_anchors(model, self.source_model, exclude=self.exclude)

    def penalties(self, model):
        anchors = self.anchors(model)
        if not anchors.anchored:
            raise ValueError(
                f"EWC found no weight of model {model.name!r} that pairs with the source's (same "
                "layer name and shapes): nothing to anchor."
            )
        if not self.strength:
            return []
        return [anchor_penalty(anchors.anchored, self.strength, self.fisher)]

    def penalty_value(self, model):
        """The penalty at `model`'s current weights, as a float."""
        return float(sum(float(keras.ops.convert_to_numpy(p())) for p in self.penalties(model)))

    def get_config(self):
        config = {"source": self.source}
        for key, default in (
            ("source_data", None),
            ("strength", 1e4),
            ("fisher_batches", 20),
            ("batch_size", 32),
            ("fisher_path", "auto"),
            ("exclude", "predictions"),
        ):
            value = getattr(self, key)
            if value is not default and (isinstance(value, tuple) or value != default):
                config[key] = value
        return config

    def __eq__(self, other):
        if type(self) is not type(other):
            return False
        mine, theirs = self.get_config(), other.get_config()
        for key in ("source", "source_data"):
            a, b = mine.pop(key, None), theirs.pop(key, None)
            if not (a is b or (isinstance(a, str) and a == b)):
                return False
        return mine == theirs

    __hash__ = None

"""Which weights of a target model came from the source, and their source values.

The forgetting regularisers (`L2SP`, `EWC`) pull the *transferred* weights toward the
source's values and leave the *new* ones (a head for other classes) free or decayed.
Which is which is decided by `weight_transfer.pair_layers`, the pairing
`transfer_weights` copies by: a target layer paired with a source layer of equal
weight shapes is transferred, any other one (no source layer, other shapes, excluded)
is new.
"""

import dataclasses
import os

import keras
import numpy as np

from keras_transfer import weight_transfer


@dataclasses.dataclass
class Anchor:
    """A transferred target weight and the source value it is pulled toward.

    Attributes:
        weight: the target model's variable.
        value: `np.ndarray`. The source weight's value (a constant copy).
        key: str. `"<source layer>/<index>"`: the source weight's place, as
            `fisher_information` keys it.
    """

    weight: object
    value: np.ndarray
    key: str


@dataclasses.dataclass
class Anchors:
    """`source_anchors`' answer: the anchored weights and the new ones."""

    anchored: list
    new: list

    @property
    def anchored_params(self):
        return int(sum(a.value.size for a in self.anchored))

    @property
    def new_params(self):
        return int(sum(int(np.prod(w.shape)) for w in self.new))


def non_negative_number(name, value):
    """`value` as a float >= 0, else a `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0. Received: {name}={value!r}")
    return float(value)


def check_exclude(exclude):
    """`exclude` (`None`, a regular expression or a list of them) as given, checked."""
    if exclude is None or isinstance(exclude, str):
        return exclude
    if isinstance(exclude, (list, tuple)) and all(isinstance(p, str) for p in exclude):
        return list(exclude)
    raise ValueError(f"exclude must be a regular expression or a list of them. Received: exclude={exclude!r}")


def load_source(source, argument="source"):
    """`source` as a `keras.Model`: a model as given, or a `.keras` file loaded
    (`compile=False`)."""
    if isinstance(source, keras.Model):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path.endswith(".keras"):
            raise ValueError(
                f"{argument} must be a keras.Model or a .keras file. Received: {argument}={source!r}"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such model file: {path} ({argument}).")
        from keras_transfer.saving import load_model  # every toolkit class registered

        return load_model(path, compile=False)
    raise ValueError(f"{argument} must be a keras.Model or a .keras file. Received: {argument}={source!r}")


def check_source(source, argument="source"):
    """What a method keeps of a `source` argument: the model itself, or the path (as a
    `str`) of a `.keras` file, checked to exist."""
    if source is None:
        raise ValueError(
            f"A forgetting regulariser needs the source model: a keras.Model or a .keras file "
            f"({argument}=path.keras on the command line). Received: {argument}=None"
        )
    if isinstance(source, keras.Model):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path.endswith(".keras") or not os.path.isfile(path):
            raise ValueError(
                f"{argument} must be a keras.Model or an existing .keras file. "
                f"Received: {argument}={source!r}"
            )
        return path
    raise ValueError(f"{argument} must be a keras.Model or a .keras file. Received: {argument}={source!r}")


def source_anchors(model, source, *, exclude="predictions", name_map=None, match="name"):
    """The trainable weights of `model` that pair with `source`'s, with the source values.

    Args:
        model: `keras.Model`. The target (its current `trainable` flags count).
        source: `keras.Model` or a `.keras` file.
        exclude: str or list of str. Regular expressions of target layer names that are
            never anchored (new), as `transfer_weights`' `exclude`. Defaults to
            `"predictions"`: the head is new even when its class count is the source's.
        name_map, match: as `transfer_weights`'.

    Returns:
        `Anchors`: `anchored` (list of `Anchor`) and `new` (the other trainable
        variables).

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.forgetting import source_anchors
    >>> source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    >>> target = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> anchors = source_anchors(target, source)
    >>> [a.key for a in anchors.anchored], [w.path for w in anchors.new]
    (['fc1/0', 'fc1/1'], ['predictions/kernel', 'predictions/bias'])
    """
    source = load_source(source)
    anchored, new = [], []
    for pair in weight_transfer.pair_layers(source, model, name_map=name_map, exclude=exclude, match=match):
        trainable = {id(w) for w in pair.target_layer.trainable_weights}
        if pair.status != "paired":
            new += [w for w in pair.target_layer.weights if id(w) in trainable]
            continue
        for index, (weight, value) in enumerate(zip(pair.target_layer.weights, pair.source_layer.weights)):
            if id(weight) in trainable:
                anchored.append(
                    Anchor(weight, np.array(keras.ops.convert_to_numpy(value)), f"{pair.source}/{index}")
                )
    return Anchors(anchored, new)


def squared_distance(anchors, weights_by_key=None):
    """`sum((w - w_source)**2)` over `anchors` (weighted per element by
    `weights_by_key[key]` when given), from the weights' current values, as a NumPy
    float: the value the penalties compute, for checks and reports."""
    total = 0.0
    for anchor in anchors:
        difference = np.asarray(keras.ops.convert_to_numpy(anchor.weight), np.float64) - anchor.value
        factor = 1.0 if weights_by_key is None else np.asarray(weights_by_key[anchor.key], np.float64)
        total += float(np.sum(factor * difference**2))
    return total

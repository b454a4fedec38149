"""Freeze and unfreeze layers by name, index, regex or fraction of depth."""

import dataclasses
import re

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameter counts of a model."""

    trainable: int
    total: int

    @property
    def non_trainable(self):
        return self.total - self.trainable

    def __str__(self):
        share = self.trainable / max(self.total, 1)
        return f"trainable params: {self.trainable:,} / {self.total:,} ({share:.1%})"


def count_parameters(model):
    """Counts trainable and total parameters (BatchNorm moving statistics included).

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> keras_transfer.count_parameters(model).total
    101770
    """
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return ParameterCount(trainable=trainable, total=total)


def leaf_layers(model):
    """All layers in depth order, nested models opened (they are containers, not layers).

    A lone layer that is not a model (e.g. a `HubLayer` backbone) is its own only leaf.
    """
    if not isinstance(model, keras.Model):
        return [model]
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(leaf_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            leaves.append(layer)
    return leaves


def _select(model, layers, pattern, fraction, from_top):
    leaves = leaf_layers(model)
    if layers is None and pattern is None and fraction is None:
        return leaves
    chosen = []
    if layers is not None:
        items = layers if isinstance(layers, (list, tuple)) else [layers]
        names = {layer.name: layer for layer in leaves}
        for item in items:
            if isinstance(item, int):
                chosen.append(leaves[item])
            elif isinstance(item, slice):
                chosen.extend(leaves[item])
            elif item in names:
                chosen.append(names[item])
            else:
                raise ValueError(
                    f"No layer named {item!r} in model {model.name!r}. "
                    f"Received: layers={layers!r}"
                )
    if pattern is not None:
        matched = [layer for layer in leaves if re.search(pattern, layer.name)]
        if not matched:
            raise ValueError(
                f"No layer name matches {pattern!r} in model {model.name!r}. "
                f"Received: pattern={pattern!r}"
            )
        chosen.extend(matched)
    if fraction is not None:
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"fraction must be in [0, 1]. Received: fraction={fraction!r}")
        count = round(len(leaves) * float(fraction))
        if len(leaves) == 1 and float(fraction) > 0:
            count = 1  # an indivisible layer (e.g. a TF Hub module): any share selects it
        chosen.extend(leaves[len(leaves) - count:] if from_top else leaves[:count])
    return chosen


def _apply(model, selected, trainable, freeze_batchnorm):
    states = {id(layer): layer.trainable for layer in leaf_layers(model)}
    for layer in selected:
        keep_frozen = (
            trainable
            and freeze_batchnorm
            and isinstance(layer, keras.layers.BatchNormalization)
        )
        states[id(layer)] = trainable and not keep_frozen
    # A frozen container hides its layers' weights, so open every container, then set
    # each layer: the model's trainable weights are exactly the selected layers'.
    model.trainable = True
    for layer in leaf_layers(model):
        layer.trainable = states[id(layer)]
    return count_parameters(model)


def freeze(model, layers=None, *, pattern=None, fraction=None):
    """Freezes layers of `model` (all of them when no selector is given).

    Args:
        model: `keras.Model` (nested models, the backbone, are searched too) or a
            lone layer such as a `HubLayer` backbone.
        layers: str, int, slice or a list of them. Layer names or indices in depth
            order (`leaf_layers(model)`).
        pattern: str. Regular expression searched in layer names.
        fraction: float. Freeze the bottom `fraction` of the layers by depth.

    Returns:
        `ParameterCount` after the change. Recompile the model for it to take effect
        in training.

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    >>> counts = keras_transfer.freeze(model, pattern="conv")
    >>> model.get_layer("backbone").get_layer("conv1").trainable
    False
    >>> counts.trainable < counts.total
    True
    """
    return _apply(model, _select(model, layers, pattern, fraction, False), False, False)


def unfreeze(model, layers=None, *, pattern=None, fraction=None, freeze_batchnorm=True):
    """Unfreezes layers of `model`, keeping BatchNorm frozen by default.

    Args:
        model: `keras.Model` (nested models, the backbone, are searched too) or a
            lone layer such as a `HubLayer` backbone.
        layers: str, int, slice or a list of them. Layer names or indices in depth
            order (`leaf_layers(model)`).
        pattern: str. Regular expression searched in layer names.
        fraction: float. Unfreeze the top `fraction` of the layers by depth.
        freeze_batchnorm: bool. Leave `BatchNormalization` layers frozen (their
            statistics were fitted on the source data). Defaults to `True`.

    Returns:
        `ParameterCount` after the change. Recompile the model for it to take effect.

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    >>> _ = keras_transfer.freeze(model)
    >>> counts = keras_transfer.unfreeze(model, fraction=0.3)
    >>> model.get_layer("predictions").trainable, counts.trainable > 0
    (True, True)
    """
    selected = _select(model, layers, pattern, fraction, True)
    return _apply(model, selected, True, freeze_batchnorm)

"""Freeze and unfreeze layers by name, index, regex or fraction of depth."""

import dataclasses
import re

import keras
import numpy as np

from keras_transfer.utils import checks


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


def containers(model):
    """`model` and every model nested in it, outermost first."""
    if not isinstance(model, keras.Model):
        return []
    found = [model]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(containers(layer))
    return found


def _select(model, layers, pattern, fraction, from_top):
    leaves = leaf_layers(model)
    if layers is None and pattern is None and fraction is None:
        return leaves
    chosen = []
    if layers is not None:
        items = layers if isinstance(layers, (list, tuple)) else [layers]
        names = {layer.name: layer for layer in leaves}
        nested = {inner.name: inner for inner in containers(model)[1:]}
        for item in items:
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                chosen.append(leaves[int(item)])
            elif isinstance(item, slice):
                chosen.extend(leaves[item])
            elif item in names:
                chosen.append(names[item])
            elif item in nested:
                chosen.extend(leaf_layers(nested[item]))  # a nested model: all its layers
            else:
                raise ValueError(
                    f"No layer named {item!r} in model {model.name!r}. Received: layers={layers!r}"
                )
    if pattern is not None:
        matched = [layer for layer in leaves if re.search(pattern, layer.name)]
        if not matched:
            raise ValueError(
                f"No layer name matches {pattern!r} in model {model.name!r}. Received: pattern={pattern!r}"
            )
        chosen.extend(matched)
    if fraction is not None:
        fraction = checks.fraction("fraction", fraction)
        count = round(len(leaves) * fraction)
        if len(leaves) == 1 and float(fraction) > 0:
            count = 1  # an indivisible layer (e.g. a TF Hub module): any share selects it
        chosen.extend(leaves[len(leaves) - count :] if from_top else leaves[:count])
    return chosen


def _set_leaves(model, states):
    """Sets each leaf layer's `trainable`, and each container's to match its leaves.

    A container's flag is the one truth Keras, `count_parameters` and the feature cache
    read: a frozen container hides every weight inside it, so a container is trainable
    exactly when one of its layers is. Setting a container's flag resets all its layers
    (and Keras ignores an assignment of the value a flag already has), so containers
    are opened first, then the leaves set, then the all-frozen containers closed.
    """
    nested = containers(model)
    for container in nested:
        if not container.trainable:
            container.trainable = True
    for layer in leaf_layers(model):
        if layer.trainable != states[id(layer)]:
            layer.trainable = states[id(layer)]
    for container in reversed(nested):  # innermost first
        if not any(layer.trainable for layer in leaf_layers(container)):
            container.trainable = False


def sync_trainable(model):
    """Makes every nested model's `trainable` flag agree with its layers'.

    After `model.get_layer("backbone").get_layer("fc1").trainable = True` inside a
    frozen backbone, Keras would still train nothing there (the frozen container hides
    the layer's weights). `train` calls this first, so a model trains exactly the
    layers whose own flag is set. Returns the `ParameterCount`.

    Example:

    >>> import keras_transfer
    >>> from keras_transfer import freezing
    >>> model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None,
    ...                                          freeze_backbone=True)
    >>> model.get_layer("backbone").get_layer("fc1").trainable = True
    >>> _ = freezing.sync_trainable(model)
    >>> model.get_layer("backbone").trainable
    True
    """
    if isinstance(model, keras.Model):
        _set_leaves(model, {id(layer): layer.trainable for layer in leaf_layers(model)})
    return count_parameters(model)


def _apply(model, selected, trainable, freeze_batchnorm):
    states = {id(layer): layer.trainable for layer in leaf_layers(model)}
    for layer in selected:
        keep_frozen = trainable and freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization)
        states[id(layer)] = trainable and not keep_frozen
    if isinstance(model, keras.Model):
        _set_leaves(model, states)
    else:  # a lone layer (a HubLayer backbone)
        model.trainable = states[id(model)]
    return count_parameters(model)


def freeze(model, layers=None, *, pattern=None, fraction=None):
    """Freezes layers of `model` (all of them when no selector is given).

    Args:
        model: `keras.Model` (nested models, the backbone, are searched too) or a
            lone layer such as a `HubLayer` backbone.
        layers: str, int, slice or a list of them. Layer names or indices in depth
            order (`leaf_layers(model)`); the name of a nested model (`"backbone"`)
            selects all of its layers.
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
    >>> _ = keras_transfer.freeze(model, "backbone")
    >>> model.get_layer("backbone").trainable, model.get_layer("predictions").trainable
    (False, True)
    """
    return _apply(model, _select(model, layers, pattern, fraction, False), False, False)


def unfreeze(model, layers=None, *, pattern=None, fraction=None, freeze_batchnorm=True):
    """Unfreezes layers of `model`, keeping BatchNorm frozen by default.

    Args:
        model: `keras.Model` (nested models, the backbone, are searched too) or a
            lone layer such as a `HubLayer` backbone.
        layers: str, int, slice or a list of them. Layer names or indices in depth
            order (`leaf_layers(model)`); the name of a nested model (`"backbone"`)
            selects all of its layers.
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

"""A backbone's layers as ordered groups ("blocks"): what layer-wise methods unfreeze,
train at their own rate, or schedule."""

import dataclasses
import re

import keras

from keras_transfer import freezing

# Block names of keras.applications models: the first pattern that matches a layer's
# name gives its block (the regex's first group). ResNet/ResNetV2/DenseNet
# `conv4_block2_*` (and their stems `conv1_*`, DenseNet transitions `pool3_*`),
# MobileNetV2 `block_12_*` (its first block is `expanded_conv_*`), EfficientNet (V1 and
# V2) `block3a_*` with `stem_*` and `top_*`, VGG and Xception `block3_*`, ConvNeXt
# `*_stage_1_block_2_*`.
APPLICATION_BLOCK_PATTERNS = (
    r"^(conv\d+_block\d+)_",
    r"^(conv\d+|pool\d+)_",
    r"^(block_\d+)_",
    r"^(expanded_conv)_",
    r"^(block\d+[a-z])_",
    r"^(block\d+)_",
    r"^(stem|top)_",
    r"(stage_\d+_block_\d+)_",
)


@dataclasses.dataclass(frozen=True)
class LayerGroup:
    """A named run of consecutive layers of a backbone (a block).

    Args:
        name: str. The block's name (`"conv4_block2"`, or its first layer's name).
        layers: tuple of `keras.layers.Layer`, in depth order.
    """

    name: str
    layers: tuple

    @property
    def layer_names(self):
        return [layer.name for layer in self.layers]

    @property
    def weights(self):
        """Every weight of the group's layers, trainable or not."""
        return [weight for layer in self.layers for weight in layer.weights]


def _has_parameters(layer):
    """A layer that starts a group of its own: it has weights and is not BatchNorm (nor a
    Normalization layer, whose mean and variance are constants)."""
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Normalization)):
        return False
    return bool(layer.weights)


def layer_groups(backbone_model, *, patterns=APPLICATION_BLOCK_PATTERNS):
    """Splits a backbone into its blocks, ordered bottom to top.

    A layer whose name matches one of `patterns` belongs to the block the pattern's first
    group names (`conv4_block2_1_conv` -> `conv4_block2`), which is how the
    `keras.applications` models name their layers. Any other layer with weights
    (BatchNorm aside) is a group of its own, named after it; BatchNorm and weightless
    layers (activations, pooling, padding) join the group before them (the first group
    when they come first). Nested models are opened. A lone layer that is not a model
    (a `HubLayer`) is one group.

    Args:
        backbone_model: `keras.Model` (the `backbone` layer of a `build_classifier`
            model) or a lone layer.
        patterns: sequence of str. Regular expressions searched in layer names, each with
            one group naming the block; `()` for one group per layer with weights.
            Defaults to `APPLICATION_BLOCK_PATTERNS`.

    Returns:
        A list of `LayerGroup`, bottom to top; every group has at least one weight.

    Raises:
        ValueError: when `backbone_model` has no layer with weights, or a pattern has
            no group.

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.layerwise import layer_groups
    >>> model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    >>> [group.name for group in layer_groups(model.get_layer("backbone"))]
    ['conv1', 'conv2', 'fc1']
    >>> vgg = keras_transfer.build_backbone("vgg16", input_shape=(32, 32, 3), weights=None)
    >>> groups = layer_groups(vgg)
    >>> [group.name for group in groups], groups[0].layer_names
    (['block1', 'block2', 'block3', 'block4', 'block5'], ['block1_conv1', 'block1_conv2', 'block1_pool'])
    """
    compiled = []
    for pattern in patterns:
        regex = re.compile(pattern)
        if regex.groups < 1:
            raise ValueError(f"Each pattern needs a group naming the block. Received: pattern={pattern!r}")
        compiled.append(regex)
    groups, pending = [], []  # groups as [name, [layers]]; layers before the first group
    for layer in freezing.leaf_layers(backbone_model):
        block = next((m.group(1) for m in (r.search(layer.name) for r in compiled) if m), None)
        if block is not None:
            if groups and groups[-1][0] == block:
                groups[-1][1].append(layer)
            else:
                groups.append([block, [layer]])
        elif _has_parameters(layer):
            groups.append([layer.name, [layer]])
        elif groups:
            groups[-1][1].append(layer)
        else:
            pending.append(layer)
    merged = []  # a block without weights (ResNet's `pool1_pad`) joins the one before it
    for name, layers in groups:
        if merged and not any(layer.weights for layer in layers):
            merged[-1][1].extend(layers)
        elif merged and not any(layer.weights for layer in merged[-1][1]):
            merged[-1] = [name, merged[-1][1] + layers]
        else:
            merged.append([name, layers])
    if not merged or not any(layer.weights for layer in merged[-1][1]):
        raise ValueError(
            f"{getattr(backbone_model, 'name', backbone_model)!r} has no layer with weights to group."
        )
    merged[0][1][:0] = pending
    groups = merged
    return [LayerGroup(name, tuple(layers)) for name, layers in groups]


def get_backbone(model, backbone="backbone"):
    """The layer named `backbone` of `model`, or a `ValueError` that says so."""
    try:
        return model.get_layer(backbone)
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer named {backbone!r}. Received: backbone={backbone!r}"
        ) from None


def train_top_groups(body, groups, count, *, freeze_batchnorm=True):
    """Freezes `body` but its top `count` groups (BatchNorm kept frozen by default).

    Idempotent: the result depends only on `count`, not on what was trainable before.
    Returns the `ParameterCount` of `body`.
    """
    leaves = freezing.leaf_layers(body)
    freezing.freeze(body)
    if count <= 0:
        return freezing.count_parameters(body)
    index = {id(layer): i for i, layer in enumerate(leaves)}
    chosen = [index[id(layer)] for group in groups[len(groups) - count :] for layer in group.layers]
    return freezing.unfreeze(body, layers=chosen, freeze_batchnorm=freeze_batchnorm)

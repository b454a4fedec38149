"""Bottleneck residual adapters (Houlsby et al.) as a transfer method."""

import re

import keras

from keras_transfer import freezing
from keras_transfer.training import method as method_lib
from keras_transfer.utils import checks


@keras.saving.register_keras_serializable(package="keras_transfer")
class Adapter(keras.layers.Layer):
    """A bottleneck residual adapter: `x + up(activation(down(x)))` on the last axis.

    `down` projects the channels (the last axis, so it fits after a Dense layer and after
    a convolution's feature map alike) to `bottleneck` units, `up` projects back. `up`
    starts at zero (kernel and bias), so a fresh adapter is exactly the identity: a model
    with adapters inserted predicts what it did before, bit for bit, until training moves
    `up` away from zero.

    Args:
        bottleneck: int. Units of the down-projection. Defaults to `16`.
        activation: str or callable. Between the two projections. Defaults to `"relu"`.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:

    >>> import numpy as np
    >>> from keras_transfer.parameter_efficient import Adapter
    >>> x = np.random.rand(2, 5, 5, 8).astype("float32")
    >>> adapter = Adapter(4)
    >>> bool((adapter(x).numpy() == x).all()), adapter.count_params()  # 8*4+4 + 4*8+8
    (True, 76)

    Reference:
    - [Houlsby et al., 2019](https://arxiv.org/abs/1902.00751) (Parameter-Efficient
      Transfer Learning for NLP)
    - [Rebuffi et al., 2017](https://arxiv.org/abs/1705.08045) (residual adapters for
      vision)
    """

    def __init__(self, bottleneck=16, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.bottleneck = checks.positive_int("bottleneck", bottleneck)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"Adapter {self.name!r} needs a known last axis (channels). "
                f"Received: input_shape={input_shape}"
            )
        self.down_kernel = self.add_weight(
            name="down_kernel", shape=(channels, self.bottleneck), initializer="glorot_uniform"
        )
        self.down_bias = self.add_weight(name="down_bias", shape=(self.bottleneck,), initializer="zeros")
        self.up_kernel = self.add_weight(
            name="up_kernel", shape=(self.bottleneck, channels), initializer="zeros"
        )
        self.up_bias = self.add_weight(name="up_bias", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        hidden = self.activation(keras.ops.matmul(inputs, self.down_kernel) + self.down_bias)
        return inputs + (keras.ops.matmul(hidden, self.up_kernel) + self.up_bias)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(bottleneck=self.bottleneck, activation=keras.activations.serialize(self.activation))
        return config


# Layers after which `insert_adapters` puts an adapter by default: the ones that learn a
# linear map of their input (Dense and every convolution).
_DEFAULT_KINDS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)


def adapter_layers(model):
    """Every `Adapter` in `model`, nested models opened, in depth order."""
    return [layer for layer in freezing.leaf_layers(model) if isinstance(layer, Adapter)]


def _get_backbone(model, backbone):
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model. Received: model={model!r}")
    try:
        return model.get_layer(backbone)
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer named {backbone!r}. Received: backbone={backbone!r}"
        ) from None


def _chosen_layers(body, layers):
    """The backbone's layers that get an adapter after them (`layers`: None, a regex, or names)."""
    candidates = [layer for layer in body.layers if not isinstance(layer, keras.layers.InputLayer)]
    if layers is None:
        chosen = [layer for layer in candidates if isinstance(layer, _DEFAULT_KINDS)]
        if not chosen:
            raise ValueError(
                f"Backbone {body.name!r} has no Dense or convolution layer to put an adapter after: "
                "name the layers. Received: layers=None"
            )
    elif isinstance(layers, str):
        chosen = [layer for layer in candidates if re.fullmatch(layers, layer.name)]
        if not chosen:
            raise ValueError(
                f"No layer of backbone {body.name!r} matches {layers!r} (the whole name). "
                f"Its layers: {[layer.name for layer in candidates]}. Received: layers={layers!r}"
            )
    elif isinstance(layers, (list, tuple)) and layers and all(isinstance(name, str) for name in layers):
        by_name = {layer.name: layer for layer in candidates}
        missing = [name for name in layers if name not in by_name]
        if missing:
            raise ValueError(
                f"Backbone {body.name!r} has no layer(s) {missing}. "
                f"Its layers: {list(by_name)}. Received: layers={list(layers)!r}"
            )
        chosen = [by_name[name] for name in layers]
    else:
        raise ValueError(
            f"layers must be None, a regular expression or a list of layer names. Received: layers={layers!r}"
        )
    nested = [layer.name for layer in chosen if isinstance(layer, keras.Model)]
    if nested:
        raise ValueError(
            f"Adapters go after layers, not after nested models {nested}: name layers of the "
            f"backbone. Received: layers={layers!r}"
        )
    return chosen


def _adapted_backbone(body, chosen, bottleneck, activation):
    """A new backbone with the same layer objects and an `Adapter` after each chosen one."""
    taken = {layer.name for layer in body.layers}
    adapters = {}
    for layer in chosen:
        name = f"{layer.name}_adapter"
        if name in taken:
            raise ValueError(f"Backbone {body.name!r} already has a layer named {name!r}.")
        adapters[id(layer)] = Adapter(bottleneck, activation, name=name)

    def after(layer, outputs):
        adapter = adapters.get(id(layer))
        if adapter is None:
            return outputs
        if not isinstance(outputs, keras.KerasTensor):
            raise ValueError(
                f"Layer {layer.name!r} returns {type(outputs).__name__}, not one tensor: an adapter "
                "cannot follow it. Choose other layers (layers=...)."
            )
        return adapter(outputs)

    if isinstance(body, keras.Sequential):
        inputs = keras.Input(batch_shape=body.inputs[0].shape, dtype=body.inputs[0].dtype)
        x = inputs
        for layer in body.layers:
            x = after(layer, layer(x))
        return keras.Model(inputs, x, name=body.name)
    # The Functional graph re-traced node by node (branches and merges such as ResNet's
    # residual adds included), each layer reused (weights shared), each call's arguments
    # (`training=...`) kept; a chosen layer's output goes through its adapter before any
    # layer that reads it.
    return keras.models.clone_model(
        body,
        clone_function=lambda layer: layer,
        call_function=lambda layer, *args, **kwargs: after(layer, layer(*args, **kwargs)),
    )


def insert_adapters(model, layers=None, *, bottleneck=16, activation="relu", backbone="backbone"):
    """A new classifier whose backbone has a bottleneck `Adapter` after each chosen layer.

    The backbone (the nested model named `backbone`, as `build_classifier` makes it;
    Functional, including branching graphs such as ResNet's, or Sequential) is re-traced
    with the same layer objects, so the new model shares every weight of `model`, plus an
    adapter after each chosen layer. Adapters start as the identity, so the new model
    predicts exactly what `model` does until it trains. A model that already has adapters
    is returned as is (so `Adapters.build` can run on every call).

    Train the new model, not `model`: both share the original layers, so training one
    changes the other's backbone weights as well.

    Args:
        model: `keras.Model`. A classifier with a nested backbone.
        layers: `None`, str or list of str. The backbone layers that get an adapter after
            them: a list of names, or a regular expression matching whole names
            (`"conv.*|fc1"`). Defaults to `None`: every Dense and convolution layer of
            the backbone.
        bottleneck: int. Units of each adapter's down-projection. Defaults to `16`.
        activation: str. Between the projections. Defaults to `"relu"`.
        backbone: str. Name of the backbone layer. Defaults to `"backbone"`.

    Returns:
        A new `keras.Model` (or `model` itself when it already has adapters).

    Raises:
        ValueError: no such backbone or layer, a chosen layer with several outputs, a
            backbone that is neither Functional nor Sequential.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    >>> adapted = keras_transfer.insert_adapters(model, bottleneck=8)
    >>> [layer.name for layer in adapted.get_layer("backbone").layers if "adapter" in layer.name]
    ['conv1_adapter', 'conv2_adapter', 'fc1_adapter']
    >>> x = np.random.rand(4, 28, 28, 1) * 255
    >>> bool((adapted.predict(x, verbose=0) == model.predict(x, verbose=0)).all())
    True
    >>> keras_transfer.insert_adapters(adapted) is adapted
    True

    Reference:
    - [Houlsby et al., 2019](https://arxiv.org/abs/1902.00751)
    """
    body = _get_backbone(model, backbone)
    if adapter_layers(body):
        return model
    if not isinstance(body, keras.Model) or not (
        isinstance(body, keras.Sequential) or getattr(body, "_nodes_by_depth", None) is not None
    ):
        raise ValueError(
            f"insert_adapters re-traces a Functional or Sequential backbone; {backbone!r} is a "
            f"{type(body).__name__}. Received: backbone={backbone!r}"
        )
    if isinstance(body, keras.Sequential) and not getattr(body, "inputs", None):
        raise ValueError(
            f"The Sequential backbone {body.name!r} has no defined input: build it on a keras.Input."
        )
    chosen = _chosen_layers(body, layers)
    new_body = _adapted_backbone(body, chosen, checks.positive_int("bottleneck", bottleneck), activation)
    new_body.trainable = body.trainable
    return keras.models.clone_model(model, clone_function=lambda layer: new_body if layer is body else layer)


@method_lib.register_method
class Adapters(method_lib.TransferMethod):
    """Bottleneck residual adapters after chosen backbone layers; only the adapters and
    the new head train.

    `build(model)` inserts the adapters (`insert_adapters`: a new model, equal to `model`
    in its predictions until it trains); `prepare` freezes every other backbone layer and
    leaves the adapters and the layers after the backbone (the head) trainable. Typically
    a few percent of the parameters train, and the backbone's own weights stay
    bit-identical. `keras-transfer train --method adapters[:bottleneck=16]` builds the
    model with adapters before training; in Python call `model = method.build(model)`
    before `train` or `fine_tune`.

    Args:
        bottleneck: int. Units of each adapter's down-projection. Defaults to `16`.
        activation: str. Between the projections. Defaults to `"relu"`.
        layers: `None`, str or list of str. Which backbone layers get an adapter after
            them (see `insert_adapters`). Defaults to every Dense and convolution layer.
        backbone: str. Name of the backbone layer. Defaults to `"backbone"`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.parameter_efficient import Adapters
    >>> method = Adapters(bottleneck=8)
    >>> model = method.build(keras_transfer.build_classifier("mnist_cnn", 2, weights=None))
    >>> x, y = np.random.rand(16, 28, 28, 1) * 255, np.array([0, 1] * 8)
    >>> kernel = model.get_layer("backbone").get_layer("conv1").kernel.numpy()
    >>> history = keras_transfer.train(model, (x, y), epochs=1, method=method, verbose=0)
    >>> bool((model.get_layer("backbone").get_layer("conv1").kernel.numpy() == kernel).all())
    True

    Reference:
    - [Houlsby et al., 2019](https://arxiv.org/abs/1902.00751) (Parameter-Efficient
      Transfer Learning for NLP)
    - [Rebuffi et al., 2017](https://arxiv.org/abs/1705.08045) (residual adapters for
      vision)
    """

    name = "adapters"
    summary = "bottleneck residual adapters after the backbone's layers, and the new head, train"

    def __init__(self, bottleneck=16, activation="relu", layers=None, backbone="backbone"):
        self.bottleneck = checks.positive_int("bottleneck", bottleneck)
        if not isinstance(activation, str):
            raise ValueError(
                f"activation must be the name of an activation. Received: activation={activation!r}"
            )
        keras.activations.get(activation)  # an unknown name fails here, not at build
        if isinstance(layers, tuple):
            layers = list(layers)
        if layers is not None and not isinstance(layers, (str, list)):
            raise ValueError(
                "layers must be None, a regular expression or a list of layer names. "
                f"Received: layers={layers!r}"
            )
        self.activation = activation
        self.layers = layers
        self.backbone = backbone

    def build(self, model):
        return insert_adapters(
            model, self.layers, bottleneck=self.bottleneck, activation=self.activation, backbone=self.backbone
        )

    def prepare(self, model):
        body = _get_backbone(model, self.backbone)
        adapters = adapter_layers(body)
        if not adapters:
            raise ValueError(
                f"Model {model.name!r} has no adapters: call `model = method.build(model)` (or "
                "`keras_transfer.insert_adapters(model)`) before training it with adapters."
            )
        freezing.freeze(body)
        freezing.unfreeze(body, layers=[layer.name for layer in adapters])
        # The head: every layer after the backbone.
        head = model.layers[model.layers.index(body) + 1 :]
        names = [leaf.name for layer in head for leaf in freezing.leaf_layers(layer)]
        if names:
            freezing.unfreeze(model, layers=names)

    def get_config(self):
        config = {}
        if self.bottleneck != 16:
            config["bottleneck"] = self.bottleneck
        if self.activation != "relu":
            config["activation"] = self.activation
        if self.layers is not None:
            config["layers"] = self.layers
        if self.backbone != "backbone":
            config["backbone"] = self.backbone
        return config

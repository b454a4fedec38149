"""Bias-only fine-tuning (BitFit) as a transfer method."""

import keras

from keras_transfer import freezing
from keras_transfer.training import method as method_lib

_BATCHNORM_TRAINABLE = ("gamma", "beta")


@method_lib.register_method
class BiasOnly(method_lib.TransferMethod):
    """Trains only the backbone's biases (and, if asked, BatchNorm's scale and shift), plus
    the whole new head: every kernel of the backbone stays bit-identical.

    Keras freezes whole layers; this freezes single variables (`variable.trainable =
    False`), so a Dense or Conv layer keeps training its bias while its kernel stays fixed.
    BatchNorm moving statistics are never trained, and stay fixed because BatchNorm runs
    in inference mode unless `batchnorm=True` makes its scale and shift train. Typically a
    fraction of a percent of the parameters train.

    Args:
        backbone: str. Name of the backbone layer. Defaults to `"backbone"`.
        batchnorm: bool. Also train BatchNorm's `gamma` and `beta`. Defaults to `False`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.parameter_efficient import BiasOnly
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None)
    >>> x, y = np.random.rand(16, 28, 28, 1) * 255, np.array([0, 1] * 8)
    >>> kernel = model.get_layer("backbone").get_layer("conv1").kernel.numpy()
    >>> history = keras_transfer.train(model, (x, y), epochs=1, method="bias_only", verbose=0)
    >>> bool((model.get_layer("backbone").get_layer("conv1").kernel.numpy() == kernel).all())
    True

    Reference:
    - [Ben Zaken et al., 2022](https://arxiv.org/abs/2106.10199) (BitFit)
    """

    name = "bias_only"
    summary = "the backbone's biases (optionally BatchNorm scale/shift) and the new head only"

    def __init__(self, backbone="backbone", batchnorm=False):
        if not isinstance(batchnorm, bool):
            raise ValueError(f"batchnorm must be True or False. Received: batchnorm={batchnorm!r}")
        self.backbone = backbone
        self.batchnorm = batchnorm

    def _trained(self, layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            if not self.batchnorm:
                return []
            return [v for v in (getattr(layer, name, None) for name in _BATCHNORM_TRAINABLE) if v is not None]
        bias = getattr(layer, "bias", None)
        return [bias] if isinstance(bias, keras.Variable) else []

    def prepare(self, model):
        try:
            body = model.get_layer(self.backbone)
        except ValueError:
            raise ValueError(
                f"Model {model.name!r} has no layer named {self.backbone!r}. "
                f"Received: backbone={self.backbone!r}"
            ) from None
        # Layer flags first (setting a layer's flag resets its variables' flags), through
        # freezing so nested models agree; then the variables of the layers that train.
        leaves = freezing.leaf_layers(body)
        with_trained = [layer.name for layer in leaves if self._trained(layer)]
        freezing.freeze(body)
        if with_trained:
            freezing.unfreeze(body, layers=with_trained, freeze_batchnorm=not self.batchnorm)
        for layer in leaves:
            trained = {id(v) for v in self._trained(layer)}
            for variable in layer.trainable_weights:
                variable.trainable = id(variable) in trained

    def get_config(self):
        config = {}
        if self.backbone != "backbone":
            config["backbone"] = self.backbone
        if self.batchnorm:
            config["batchnorm"] = True
        return config

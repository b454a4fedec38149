"""The backbone's own input preprocessing as a serialisable layer inside the model."""

import keras

from keras_transfer import backbones


@keras.saving.register_keras_serializable(package="keras_transfer")
class BackbonePreprocessing(keras.layers.Layer):
    """Applies a registry backbone's `preprocess_input` inside the model.

    Putting preprocessing in the graph means the model takes raw pixels (0-255, channels
    last) everywhere: in `fit`, after `.keras` save/load, and in an exported SavedModel
    served by TF Serving. The function is looked up by backbone name, so the layer
    serialises as a name, not as code.

    Args:
        backbone: str. Registry name whose `preprocess_input` to apply.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> import numpy as np, keras_transfer
    >>> layer = keras_transfer.BackbonePreprocessing("mnist_cnn")
    >>> float(layer(np.full((1, 2, 2, 1), 255.0, "float32"))[0, 0, 0, 0])
    1.0
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._preprocess = backbones.get_backbone_spec(backbone).preprocess

    def call(self, inputs):
        return self._preprocess(keras.ops.cast(inputs, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"backbone": self.backbone})
        return config

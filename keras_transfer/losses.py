"""Losses Keras lacks: sparse categorical cross-entropy with label smoothing."""

import keras


@keras.saving.register_keras_serializable(package="keras_transfer")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy for integer labels, with optional label smoothing.

    Keras's `SparseCategoricalCrossentropy` has no `label_smoothing`; this one one-hot
    encodes the integer labels and applies `keras.losses.categorical_crossentropy`, so
    datasets keep their integer labels.

    Args:
        label_smoothing: float in [0, 1). Mixes the one-hot target with the uniform
            distribution. Defaults to `0.0`.
        from_logits: bool. Whether predictions are logits. Defaults to `False`.
        **kwargs: Base loss arguments (`reduction`, `name`, `dtype`).

    Example:

    >>> import numpy as np, keras_transfer
    >>> loss = keras_transfer.SparseCategoricalCrossentropy(label_smoothing=0.1)
    >>> round(float(loss(np.array([0]), np.array([[0.9, 0.1]]))), 4)
    0.2152

    Reference:
    - [Szegedy et al., 2016](https://arxiv.org/abs/1512.00567) (label smoothing)
    """

    def __init__(
        self, label_smoothing=0.0, from_logits=False, name="sparse_categorical_crossentropy", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing!r}"
            )
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing, "from_logits": self.from_logits})
        return config

"""Losses Keras lacks: sparse categorical cross-entropy with label smoothing, and a loss
with extra penalty terms (what a transfer method's `penalties` add)."""

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


@keras.saving.register_keras_serializable(package="keras_transfer")
class WithPenalties(keras.losses.Loss):
    """`loss` plus penalty terms: callables of no arguments, each a scalar computed from
    the model's weights (a transfer method's `penalties`, e.g. a pull toward the source
    weights), added to the loss of every step.

    The penalties are code, not configuration: a model saved with this loss reloads
    with `loss` alone (training it again adds the method's penalties again).

    Example:

    >>> import numpy as np, keras
    >>> from keras_transfer.losses import WithPenalties
    >>> weight = keras.Variable(3.0)
    >>> loss = WithPenalties("mse", [lambda: 0.5 * weight**2])
    >>> float(loss(np.zeros((2, 1)), np.ones((2, 1))))
    5.5
    """

    def __init__(self, loss, penalties=(), name=None, **kwargs):
        loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
        super().__init__(name=name or getattr(loss, "name", "loss_with_penalties"), **kwargs)
        self.loss = loss
        self.penalties = list(penalties)
        for penalty in self.penalties:
            if not callable(penalty):
                raise ValueError(f"Penalties must be callables returning a scalar. Received: {penalty!r}")

    def __call__(self, y_true, y_pred, sample_weight=None):
        if isinstance(self.loss, keras.losses.Loss):
            value = self.loss(y_true, y_pred, sample_weight=sample_weight)
        else:  # a loss function such as "mse": per-sample values, averaged
            per_sample = self.loss(y_true, y_pred)
            if sample_weight is not None:
                per_sample = per_sample * keras.ops.cast(sample_weight, per_sample.dtype)
            value = keras.ops.mean(per_sample)
        for penalty in self.penalties:
            value = value + keras.ops.cast(penalty(), value.dtype)
        return value

    def get_config(self):
        return {"loss": keras.saving.serialize_keras_object(self.loss), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["loss"]), name=config.get("name"))

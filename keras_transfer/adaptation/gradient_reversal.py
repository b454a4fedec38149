"""The gradient-reversal layer of DANN and the paper's schedule of its strength.

Forward, `GradientReversal` is the identity; backward, it multiplies the incoming
gradient by `-lambda`. Put between a feature extractor and a domain classifier, the
classifier learns to tell the domains apart while the features learn to make that
impossible (Ganin et al.). `lambda` grows from 0 to its maximum over the run as
`2 / (1 + exp(-gamma * p)) - 1`, `p` the share of the run done
(`GradientReversalSchedule`), so the noisy early domain signal does not disturb the
features.
"""

import math

import keras
import tensorflow as tf


def dann_lambda(progress, gamma=10.0, maximum=1.0):
    """The DANN schedule of the reversal strength: `maximum * (2 / (1 + exp(-gamma * p)) - 1)`.

    Args:
        progress: float in [0, 1]. The share `p` of the run done.
        gamma: float > 0. How fast it rises. Defaults to `10.0` (the paper's).
        maximum: float >= 0. The value it tends to. Defaults to `1.0`.

    Returns:
        A float in `[0, maximum)`.

    Example:

    >>> from keras_transfer.adaptation import dann_lambda
    >>> [round(dann_lambda(p), 4) for p in (0.0, 0.1, 0.5, 1.0)]
    [0.0, 0.4621, 0.9866, 0.9999]

    Reference:
    - [Ganin et al., 2016](https://arxiv.org/abs/1505.07818) (DANN), section 5.2.2
    """
    progress = min(max(float(progress), 0.0), 1.0)
    return float(maximum) * (2.0 / (1.0 + math.exp(-float(gamma) * progress)) - 1.0)


@tf.custom_gradient
def _reverse(x, strength):
    def gradient(upstream):
        return -strength * upstream, tf.zeros_like(strength)

    return tf.identity(x), gradient


@keras.saving.register_keras_serializable(package="keras_transfer")
class GradientReversal(keras.layers.Layer):
    """The identity forward, `-lambda` times the gradient backward (DANN's GRL).

    The strength lives in a non-trainable variable (`strength`), so it can change every
    step without retracing: `set_lambda(value)`, or the `GradientReversalSchedule`
    callback that follows the paper's schedule. It is saved with the layer.

    Args:
        lambda_: float >= 0. The initial strength. Defaults to `1.0`.

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer.adaptation import GradientReversal
    >>> layer = GradientReversal(0.5)
    >>> x = tf.constant([1.0, 2.0])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = tf.reduce_sum(3.0 * layer(x))
    >>> layer(x).numpy().tolist(), tape.gradient(y, x).numpy().tolist()
    ([1.0, 2.0], [-1.5, -1.5])

    Reference:
    - [Ganin & Lempitsky, 2015](https://arxiv.org/abs/1409.7495) (gradient reversal)
    - [Ganin et al., 2016](https://arxiv.org/abs/1505.07818) (DANN)
    """

    def __init__(self, lambda_=1.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)) or lambda_ < 0:
            raise ValueError(f"lambda_ must be a number >= 0. Received: lambda_={lambda_!r}")
        self.lambda_ = float(lambda_)
        self.supports_masking = True
        self.strength = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.lambda_),
            trainable=False,
            name="strength",
        )

    def set_lambda(self, value):
        """Sets the strength used from the next step on."""
        self.strength.assign(float(value))

    @property
    def current_lambda(self):
        """The strength in use, as a float."""
        return float(keras.ops.convert_to_numpy(self.strength))

    def call(self, inputs):
        strength = keras.ops.cast(self.strength, inputs.dtype)
        return _reverse(inputs, strength)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["lambda_"] = self.lambda_
        return config


class GradientReversalSchedule(keras.callbacks.Callback):
    """Sets each `GradientReversal` layer's strength before every batch to
    `dann_lambda(p, gamma, maximum)`, `p` the share of the run's steps done.

    The run's length is `epochs * steps` from `fit`'s parameters, or `total_steps`.

    Args:
        layers: a `GradientReversal` layer or a list of them.
        gamma: float > 0. Defaults to `10.0`.
        maximum: float >= 0. Defaults to `1.0`.
        total_steps: int. The run's length in steps. Defaults to `None` (from `fit`).

    Example:

    >>> from keras_transfer.adaptation import GradientReversal, GradientReversalSchedule
    >>> layer = GradientReversal()
    >>> schedule = GradientReversalSchedule(layer, total_steps=10)
    >>> schedule.on_train_begin()
    >>> schedule.on_train_batch_begin(5)
    >>> round(layer.current_lambda, 4)
    0.9866
    """

    def __init__(self, layers, gamma=10.0, maximum=1.0, total_steps=None):
        super().__init__()
        self.layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
        if not self.layers or not all(isinstance(layer, GradientReversal) for layer in self.layers):
            raise ValueError(f"layers must be GradientReversal layers. Received: layers={layers!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0:
            raise ValueError(f"gamma must be a number > 0. Received: gamma={gamma!r}")
        self.gamma = float(gamma)
        self.maximum = float(maximum)
        self.total_steps = total_steps
        self._total, self._steps, self._epoch, self._done = 1, None, 0, 0

    def on_train_begin(self, logs=None):
        params = getattr(self, "params", None) or {}
        self._steps = params.get("steps")
        total = self.total_steps
        if total is None and self._steps and params.get("epochs"):
            total = int(self._steps) * int(params["epochs"])
        self._total = max(1, int(total or 1))
        self._epoch = 0
        self._done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        # `batch` is the step index in the epoch (several steps per call skip indices).
        done = self._epoch * int(self._steps) + batch if self._steps else max(batch, self._done)
        value = dann_lambda(done / self._total, self.gamma, self.maximum)
        for layer in self.layers:
            layer.set_lambda(value)
        self._done += 1

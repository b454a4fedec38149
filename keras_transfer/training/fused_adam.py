"""Keras's Adam with its update in TensorFlow's fused `ResourceApplyAdam` kernel.

Keras 3's `Adam.update_step` is written in backend-neutral ops: for every variable and
every step it recomputes the bias corrections and runs about fifteen small ops (casts,
powers, square roots, three `assign_*`). For a small model those ops, not the matrix
products, are most of a training step on a CPU (the MNIST MLP trained twice as fast
with SGD as with Adam here). TensorFlow has the same update as one kernel per variable,
`ResourceApplyAdam`, with the same formula (`lr_t = lr * sqrt(1 - beta_2^t) /
(1 - beta_1^t)`; `m += (g - m) * (1 - beta_1)`; `v += (g^2 - v) * (1 - beta_2)`;
`w -= lr_t * m / (sqrt(v) + epsilon)`), so results agree to float round-off.

`fuse_adam` swaps the update of one Keras `Adam` instance; the optimizer stays a plain
`keras.optimizers.Adam` (its config, its saved `model.keras`, its variables), so a model
saved with it loads anywhere. AMSGrad, sparse gradients and other backends keep
Keras's own update. `compile_classifier` uses it for its default optimizer.
"""

import types

import keras
import tensorflow as tf


def _fused_update_step(self, gradient, variable, learning_rate):
    if isinstance(gradient, tf.IndexedSlices) or not hasattr(variable, "handle"):
        return keras.optimizers.Adam.update_step(self, gradient, variable, learning_rate)
    dtype = variable.dtype
    local_step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    index = self._get_variable_index(variable)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle,
        m=self._momentums[index].handle,
        v=self._velocities[index].handle,
        beta1_power=tf.pow(beta_1, local_step),
        beta2_power=tf.pow(beta_2, local_step),
        lr=tf.cast(learning_rate, dtype),
        beta1=beta_1,
        beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype),
        grad=tf.cast(gradient, dtype),
        use_locking=False,
    )


def fuse_adam(optimizer):
    """Gives a Keras `Adam` TensorFlow's fused update kernel (in place).

    Args:
        optimizer: `keras.optimizers.Adam` (not AMSGrad: returned unchanged), on the
            TensorFlow backend.

    Returns:
        The same optimizer.

    Example:

    >>> import keras
    >>> from keras_transfer.training.fused_adam import fuse_adam, is_fused
    >>> optimizer = fuse_adam(keras.optimizers.Adam(1e-3))
    >>> is_fused(optimizer), type(optimizer).__name__
    (True, 'Adam')
    """
    plain = type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad
    if not plain or keras.backend.backend() != "tensorflow":
        return optimizer
    optimizer.update_step = types.MethodType(_fused_update_step, optimizer)
    return optimizer


def is_fused(optimizer):
    """Whether `fuse_adam` gave `optimizer` the fused update."""
    step = getattr(optimizer, "update_step", None)
    return getattr(step, "__func__", None) is _fused_update_step

"""Deep CORAL: align the second-order statistics of source and target features."""

import keras

from keras_transfer.adaptation import domain
from keras_transfer.training import method as method_lib


def _covariance(x):
    x = keras.ops.cast(x, "float32")
    count = keras.ops.cast(keras.ops.shape(x)[0], "float32")
    centred = x - keras.ops.mean(x, axis=0, keepdims=True)
    return keras.ops.matmul(keras.ops.transpose(centred), centred) / keras.ops.maximum(count - 1.0, 1.0)


def coral_loss(a, b):
    """The CORAL loss of two feature batches: `||C_a - C_b||_F^2 / (4 d^2)`.

    `C_a`, `C_b` are the (d, d) covariance matrices of the rows of `a` (n_a, d) and
    `b` (n_b, d), with the unbiased `1 / (n - 1)` normalisation of Sun & Saenko.

    Args:
        a: tensor (n_a, d). Source features (more dimensions are flattened).
        b: tensor (n_b, d). Target features.

    Returns:
        A scalar tensor.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.adaptation import coral_loss
    >>> a = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> float(coral_loss(a, a))
    0.0
    >>> reference = np.sum((np.cov(a, rowvar=False) - np.cov(2 * a, rowvar=False)) ** 2) / (4 * 4**2)
    >>> bool(np.isclose(float(coral_loss(a, 2 * a)), reference, rtol=1e-5))
    True

    Reference:
    - [Sun & Saenko, 2016](https://arxiv.org/abs/1607.01719) (Deep CORAL)
    """
    a, b = (
        domain.flatten_features(keras.ops.convert_to_tensor(a)),
        domain.flatten_features(keras.ops.convert_to_tensor(b)),
    )
    if a.shape[-1] is not None and b.shape[-1] is not None and a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"coral_loss needs features of the same width. Received: a with {a.shape[-1]} and b with "
            f"{b.shape[-1]} features"
        )
    width = keras.ops.cast(keras.ops.shape(a)[-1], "float32")
    difference = _covariance(a) - _covariance(b)
    return keras.ops.sum(keras.ops.square(difference)) / (4.0 * width * width)


@keras.saving.register_keras_serializable(package="keras_transfer")
class CORALLoss(keras.layers.Layer):
    """`coral_loss` of `[source_features, target_features]` as a layer (no weights), the
    `domain_loss` of a `DomainAdapter` for CORAL.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.adaptation import CORALLoss
    >>> a = np.eye(3, dtype="float32")
    >>> float(CORALLoss()([a, a]))
    0.0
    """

    def call(self, inputs, training=None):
        source, target = inputs
        return coral_loss(source, target)


@method_lib.register_method
class CORAL(domain.DomainAdaptation):
    """Deep CORAL: unsupervised domain adaptation by matching the covariance of the
    source and target features.

    Each step's loss is the cross-entropy on a batch of labelled source images plus
    `weight * coral_loss(source features, target features)` on that batch and a batch
    of the same size of unlabelled `target` images (`domain.DomainAdapter`; target labels
    are never used). The features are `feature_layer`'s output, by default the input
    of the classifier's head (the backbone's features). The model kept and exported
    is the classifier itself: the method adds no weights.

    With the `1 / (4 d^2)` normalisation the loss of 128 features is small: the paper
    picks the weight so that both losses are about equal at the end of training; the
    default here was chosen on validation data of the demo's targets
    (`keras-transfer demo adaptation`).

    Args:
        target: array (N, H, W[, C]) of unlabelled target images in 0-255 (resized and
            given the model's channels if needed), or the path of a class-per-folder
            image directory (labels ignored: `--method coral:target=FOLDER`). An array
            stays in the config as the object itself (not JSON); give a folder for a
            run's `run.json`.
        weight: float >= 0. Weight of the CORAL loss. Defaults to `3000.0`.
        feature_layer: str. The layer whose output is aligned. Defaults to `None` (the
            head's input).
        seed: int. Shuffle seed of the target images. Defaults to `0`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.adaptation import CORAL
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((32, 28, 28, 1)) * 255, np.array([0, 1] * 16)
    >>> target = 255 - rng.random((32, 28, 28, 1)) * 255
    >>> history = keras_transfer.train(model, (x, y), epochs=1, method=CORAL(target=target), verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'domain_loss', 'loss']
    >>> CORAL(target=target, weight=5).get_config()["weight"]
    5.0

    Reference:
    - [Sun & Saenko, 2016](https://arxiv.org/abs/1607.01719) (Deep CORAL)
    - [Sun, Feng & Saenko, 2016](https://arxiv.org/abs/1511.05547) (CORAL)
    """

    name = "coral"
    summary = "unsupervised domain adaptation: match source and target feature covariances (Deep CORAL)"
    defaults = {"weight": 3000.0, "feature_layer": None, "seed": 0}

    def __init__(self, target=None, weight=3000.0, feature_layer=None, seed=0):
        super().__init__(target, weight, feature_layer, seed)

    def domain_loss(self):
        return CORALLoss(name="coral_loss")

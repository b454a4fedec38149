"""DANN: domain-adversarial training through a gradient-reversal layer."""

import keras

from keras_transfer.adaptation import domain
from keras_transfer.adaptation.gradient_reversal import GradientReversal
from keras_transfer.adaptation.gradient_reversal import GradientReversalSchedule
from keras_transfer.training import method as method_lib


@keras.saving.register_keras_serializable(package="keras_transfer")
class DomainClassifierLoss(keras.layers.Layer):
    """DANN's domain branch: `GradientReversal` -> `Dense(hidden_units)` ->
    `BatchNormalization` -> ReLU -> `Dense(1)`, scored with the binary cross-entropy of
    source (0) against target (1).

    The BatchNorm makes the domain classifier blind to the features' scale: without it
    (Adam, ReLU features, weight 1) the reversed gradient grew the features until the
    domain loss exploded and the classifier fell to chance within three epochs.

    Called on `[source_features, target_features]`, it returns the mean domain loss of
    both halves, and keeps the domain classifier's accuracy in `domain_accuracy`.

    Args:
        hidden_units: int. Units of the hidden layer. Defaults to `100` (the paper's
            MNIST domain classifier).
        lambda_: float. The initial reversal strength. Defaults to `0.0` (the schedule
            raises it).

    Example:

    >>> import numpy as np
    >>> from keras_transfer.adaptation import DomainClassifierLoss
    >>> loss = DomainClassifierLoss(hidden_units=4)
    >>> a = np.zeros((2, 3), "float32")
    >>> round(float(loss([a, a])), 4)  # zero features: logits 0, BCE log(2)
    0.6931
    """

    def __init__(self, hidden_units=100, lambda_=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(hidden_units, bool) or not isinstance(hidden_units, int) or hidden_units < 1:
            raise ValueError(
                f"hidden_units must be a positive integer. Received: hidden_units={hidden_units!r}"
            )
        self.hidden_units = hidden_units
        self.lambda_ = float(lambda_)
        self.reversal = GradientReversal(self.lambda_, name="gradient_reversal")
        self.hidden = keras.layers.Dense(hidden_units, name="domain_hidden")
        self.normalization = keras.layers.BatchNormalization(name="domain_batchnorm")
        self.logit = keras.layers.Dense(1, name="domain_logit")
        self.domain_accuracy = keras.metrics.BinaryAccuracy(name="domain_accuracy", threshold=0.0)

    def build(self, input_shape):
        width = input_shape[0][-1]
        self.hidden.build((None, width))
        self.normalization.build((None, self.hidden_units))
        self.logit.build((None, self.hidden_units))

    def call(self, inputs, training=None):
        source, target = inputs
        both = keras.ops.concatenate([source, target], 0)
        hidden = self.normalization(self.hidden(self.reversal(both)), training=training)
        logits = self.logit(keras.ops.relu(hidden))[:, 0]
        labels = keras.ops.concatenate(
            [keras.ops.zeros_like(source[:, 0]), keras.ops.ones_like(target[:, 0])], 0
        )
        losses = keras.losses.binary_crossentropy(labels[:, None], logits[:, None], from_logits=True)
        if training:
            self.domain_accuracy.update_state(labels, logits)
        return keras.ops.mean(losses)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units, lambda_=self.lambda_)
        return config


@method_lib.register_method
class DANN(domain.DomainAdaptation):
    """Domain-adversarial neural network: unsupervised domain adaptation by making the
    features useless to a domain classifier.

    A domain classifier (`DomainClassifierLoss`: one hidden layer) learns to tell the
    features of source images from those of unlabelled `target` images; between it and
    the features sits a `GradientReversal` layer, so the same step trains the feature
    extractor to confuse it. Each step's loss is the cross-entropy on a batch of
    labelled source images plus `weight *` the domain classifier's binary
    cross-entropy on that batch and a batch of the same size of target images (target
    labels are never used). The reversal strength follows the paper's schedule
    `lambda_max * (2 / (1 + exp(-gamma * p)) - 1)` over the run's steps
    (`GradientReversalSchedule`). The domain classifier lives in the fitted
    `DomainAdapter` only: the model kept and exported is the plain classifier.

    Args:
        target: array (N, H, W[, C]) of unlabelled target images in 0-255 (resized and
            given the model's channels if needed), or the path of a class-per-folder
            image directory (labels ignored: `--method dann:target=FOLDER`). An array
            stays in the config as the object itself (not JSON); give a folder for a
            run's `run.json`.
        weight: float >= 0. Weight of the domain loss. Defaults to `1.0` (the
            paper's); `keras-transfer demo adaptation` uses 0.1, chosen on validation.
        feature_layer: str. The layer whose output feeds the domain classifier.
            Defaults to `None` (the head's input, the backbone's features).
        seed: int. Shuffle seed of the target images. Defaults to `0`.
        lambda_max: float >= 0. The reversal strength the schedule tends to. Defaults
            to `1.0`.
        gamma: float > 0. How fast the schedule rises. Defaults to `10.0` (the paper's).
        hidden_units: int. Hidden units of the domain classifier. Defaults to `100`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.adaptation import DANN
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((32, 28, 28, 1)) * 255, np.array([0, 1] * 16)
    >>> target = 255 - rng.random((32, 28, 28, 1)) * 255
    >>> method = DANN(target=target)
    >>> history = keras_transfer.train(model, (x, y), epochs=1, method=method, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'domain_accuracy', 'domain_loss', 'loss']
    >>> method.finalize(model) is model
    True

    Reference:
    - [Ganin et al., 2016](https://arxiv.org/abs/1505.07818) (DANN)
    - [Ganin & Lempitsky, 2015](https://arxiv.org/abs/1409.7495) (gradient reversal)
    """

    name = "dann"
    summary = "unsupervised domain adaptation: a domain classifier through gradient reversal (DANN)"
    defaults = {
        "weight": 1.0,
        "feature_layer": None,
        "seed": 0,
        "lambda_max": 1.0,
        "gamma": 10.0,
        "hidden_units": 100,
    }

    def __init__(
        self,
        target=None,
        weight=1.0,
        feature_layer=None,
        seed=0,
        lambda_max=1.0,
        gamma=10.0,
        hidden_units=100,
    ):
        super().__init__(target, weight, feature_layer, seed)
        self.lambda_max = domain.check_number("lambda_max", lambda_max, 0.0)
        self.gamma = domain.check_number("gamma", gamma, 0.0, low_open=True)
        if isinstance(hidden_units, bool) or not isinstance(hidden_units, int) or hidden_units < 1:
            raise ValueError(
                f"hidden_units must be a positive integer. Received: hidden_units={hidden_units!r}"
            )
        self.hidden_units = hidden_units

    def domain_loss(self):
        return DomainClassifierLoss(self.hidden_units, name="domain_classifier")

    def callbacks(self, model):
        if self.adapter is None:
            return []
        reversal = self.adapter.domain_loss.reversal
        return [GradientReversalSchedule(reversal, gamma=self.gamma, maximum=self.lambda_max)]

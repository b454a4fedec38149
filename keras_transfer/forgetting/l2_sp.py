"""L2-SP: fine-tuning pulled toward the source weights (Li et al., 2018)."""

import keras

from keras_transfer.forgetting import anchors as anchors_lib
from keras_transfer.training import method as method_lib


def anchor_penalty(anchored, coefficient, fisher=None):
    """A penalty callable: `coefficient / 2 * sum(F * (w - w_source)**2)` over `anchored`
    (`F = 1` without `fisher`, a dict `{key: array}`). The source values are constants
    captured by the callable, never variables of the model.

    Example:

    >>> import keras, numpy as np
    >>> from keras_transfer.forgetting import Anchor
    >>> from keras_transfer.forgetting.l2_sp import anchor_penalty
    >>> weight = keras.Variable(np.array([1.0, 3.0]))
    >>> penalty = anchor_penalty([Anchor(weight, np.array([1.0, 1.0]), "w/0")], 0.5)
    >>> float(penalty())  # 0.5 / 2 * (0 + 4)
    1.0
    """
    terms = []
    for anchor in anchored:
        value = keras.ops.convert_to_tensor(anchor.value, dtype=anchor.weight.dtype)
        factor = None
        if fisher is not None:
            factor = keras.ops.convert_to_tensor(fisher[anchor.key], dtype=anchor.weight.dtype)
        terms.append((anchor.weight, value, factor))

    def penalty():
        total = 0.0
        for weight, value, factor in terms:
            squared = keras.ops.square(keras.ops.subtract(weight, value))
            total = total + keras.ops.sum(squared if factor is None else factor * squared)
        return 0.5 * coefficient * total

    return penalty


@method_lib.register_method
class L2SP(method_lib.TransferMethod):
    """L2-SP: fine-tuning with the transferred weights pulled toward the source's.

    The loss of every step gains `alpha / 2 * ||w - w_source||^2` over the transferred
    weights (the target layers that pair with a source layer of equal shapes, as
    `transfer_weights` pairs them) and `beta / 2 * ||w||^2` over the new ones (the
    head). The source values are constants held by the penalty, not variables: nothing
    of them is saved with the model, and `finalize` returns the model as it is. Against
    forgetting, a large enough `alpha` keeps the backbone near the source (its old task
    still works with its old head) while the free head fits the new classes.

    It composes with `FineTune` (both stages are regularised; `fine_tune(...,
    method=L2SP(...))`, `train_from_folder` and `keras-transfer train --method
    l2_sp:source=source.keras,alpha=0.01` compose it so). Only trainable weights are
    anchored, at the start of each `train` call.

    Args:
        source: `keras.Model` or a `.keras` file: the model the target's weights were
            transferred from. A model in memory stays in the config as the object
            (give a path for a run's `run.json`).
        alpha: float >= 0. Strength of the pull toward the source weights (per
            weight, against the mean cross-entropy of a batch). Defaults to `0.01`,
            chosen on validation data in `keras-transfer demo forgetting`
            (`demo_forgetting.select_forgetting_settings`).
        beta: float >= 0. Weight decay of the new weights. Defaults to `0.0001`.
        exclude: str or list of str. Target layer names (regular expressions) that
            count as new even when they pair. Defaults to `"predictions"` (a head for
            other classes, even of the same size).

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import L2SP
    >>> source = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> report = keras_transfer.transfer_weights(source, model, exclude="predictions")
    >>> method = L2SP(source, alpha=0.5, beta=0.0)
    >>> method.penalty_value(model)  # zero at the source weights
    0.0
    >>> x, y = np.random.rand(16, 28, 28, 1) * 255, np.array([0, 1] * 8)
    >>> history = keras_transfer.train(model, (x, y), epochs=1, method=method, verbose=0)
    >>> method.penalty_value(model) > 0
    True

    Reference:
    - [Li et al., 2018](https://arxiv.org/abs/1802.01483) (L2-SP: explicit inductive bias
      for transfer learning with convolutional networks)
    """

    name = "l2_sp"
    summary = "L2-SP: the transferred weights pulled toward the source's, the new ones decayed"

    def __init__(self, source=None, alpha=0.01, beta=1e-4, exclude="predictions"):
        self.source = anchors_lib.check_source(source)
        self.alpha = anchors_lib.non_negative_number("alpha", alpha)
        self.beta = anchors_lib.non_negative_number("beta", beta)
        self.exclude = anchors_lib.check_exclude(exclude)
        self._source_model = None

    @property
    def source_model(self):
        """The source as a `keras.Model` (loaded once from its path)."""
        if self._source_model is None:
            self._source_model = anchors_lib.load_source(self.source)
        return self._source_model

    def anchors(self, model):
        """`Anchors` of `model`: its transferred weights (with their source values) and
        its new ones."""
        return anchors_lib.source_anchors(model, self.source_model, exclude=self.exclude)

    def penalties(self, model):
        anchors = self.anchors(model)
        if not anchors.anchored:
            raise ValueError(
                f"L2SP found no weight of model {model.name!r} that pairs with the source's "
                "(same layer name and shapes): nothing to anchor. Received: source="
                f"{self.source if isinstance(self.source, str) else self.source.name!r}"
            )
        terms = []
        if self.alpha:
            terms.append(anchor_penalty(anchors.anchored, self.alpha))
        if self.beta and anchors.new:
            new = [
                anchors_lib.Anchor(w, keras.ops.convert_to_numpy(keras.ops.zeros(w.shape)), "")
                for w in anchors.new
            ]
            terms.append(anchor_penalty(new, self.beta))
        return terms

    def penalty_value(self, model):
        """The penalty at `model`'s current weights, as a float."""
        return float(sum(float(keras.ops.convert_to_numpy(p())) for p in self.penalties(model)))

    def get_config(self):
        config = {"source": self.source}
        for key, default in (("alpha", 0.01), ("beta", 1e-4), ("exclude", "predictions")):
            if getattr(self, key) != default:
                config[key] = getattr(self, key)
        return config

    def __eq__(self, other):
        if type(self) is not type(other):
            return False
        mine, theirs = self.get_config(), other.get_config()
        return (mine.pop("source") is theirs.pop("source") or self.source == other.source) and mine == theirs

    __hash__ = None

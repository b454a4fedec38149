"""Retention: how well the source task is still done after transfer.

Fine-tuning a transferred model for new classes changes the features the source's head
was trained on, so the source task degrades ("catastrophic forgetting"). It is measured
here in the form "the source head kept beside the new one": `source_task_model` is the
source model whose layers, except its head, take the transferred model's current
weights, and whose head is the source's own (or a jointly trained copy of it, which LwF
and replay methods expose as `method.source_head`). `measure_retention` compares its
accuracy on source test data with the source model's own.
"""

import dataclasses

import keras

from keras_transfer import weight_transfer
from keras_transfer.evaluation import evaluate_classifier
from keras_transfer.forgetting import anchors as anchors_lib


@dataclasses.dataclass
class Retention:
    """Source-task accuracy before and after transfer.

    Attributes:
        before: float. The source model's accuracy on the source test data.
        after: float. `source_task_model`'s accuracy on it after transfer.

    Example:

    >>> from keras_transfer.forgetting import Retention
    >>> round(Retention(before=0.99, after=0.95).drop, 2)
    4.0
    """

    before: float
    after: float

    @property
    def drop(self):
        """The loss of source accuracy in percentage points (`100 * (before - after)`)."""
        return 100.0 * (self.before - self.after)

    def __str__(self):
        return f"source accuracy {self.before:.4f} -> {self.after:.4f} ({self.drop:+.1f} points dropped)"


def source_task_model(model, source, *, head=None, head_layer="predictions"):
    """The source task computed on the transferred model's features.

    A clone of `source` in which every weighted layer except `head_layer` takes the
    weights of `model`'s layer of the same name (`transfer_weights` from `model`, the
    head excluded), and whose head keeps `source`'s original head weights, or takes
    `head`'s when given. Neither `model` nor `source` changes.

    Args:
        model: `keras.Model`. The model after transfer (e.g. fine-tuned for new classes).
        source: `keras.Model` or a `.keras` file. The source model, as before transfer.
        head: `keras.layers.Dense` (or any layer with the head's weight shapes), optional.
            A copy of the source head trained along with `model` (`method.source_head`
            of LwF and replay methods). Defaults to `None`: the source's own head.
        head_layer: str. Name of the head layer in `source`. Defaults to
            `"predictions"`.

    Returns:
        A `keras.Model` with `source`'s inputs and outputs.

    Raises:
        ValueError: no layer of `model` pairs with `source`'s, `source` has no
            `head_layer`, or `head`'s weight shapes differ from it.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import source_task_model
    >>> source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    >>> model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> report = keras_transfer.transfer_weights(source, model, exclude="predictions")
    >>> x = np.random.rand(4, 28, 28, 1) * 255
    >>> same = source_task_model(model, source).predict(x, verbose=0)
    >>> bool(np.allclose(same, source.predict(x, verbose=0)))
    True
    """
    source = anchors_lib.load_source(source)
    try:
        source_head = source.get_layer(head_layer)
    except ValueError:
        raise ValueError(
            f"The source model {source.name!r} has no layer {head_layer!r}. "
            f"Received: head_layer={head_layer!r}"
        ) from None
    clone = keras.models.clone_model(source)
    clone.set_weights(source.get_weights())
    report = weight_transfer.transfer_weights(model, clone, exclude=head_layer)
    if not report.copied:
        raise ValueError(
            f"No layer of model {model.name!r} pairs with the source's (same name and shapes), so there "
            f"are no transferred features to measure. Received: source={source.name!r}"
        )
    if head is not None:
        shapes = [tuple(w.shape) for w in head.weights]
        expected = [tuple(w.shape) for w in source_head.weights]
        if shapes != expected:
            raise ValueError(
                f"head must have the source head's weight shapes {expected}. Received: head with {shapes}"
            )
        clone.get_layer(head_layer).set_weights(head.get_weights())
    return clone


def measure_retention(model, source, source_test, *, head=None, before=None, head_layer="predictions"):
    """The source task's accuracy before transfer and after it (`Retention`).

    "After" is `source_task_model(model, source, head=head)` on `source_test`: the source
    head kept beside the new one. Demo and CLI code pass `getattr(method, "source_head",
    None)` as `head`.

    Args:
        model: `keras.Model`. The model after transfer.
        source: `keras.Model` or a `.keras` file. The source model before transfer.
        source_test: `(images, labels)` or a `tf.data.Dataset` of the source task.
        head: a trained copy of the source head, optional (see `source_task_model`).
        before: float. The source's own accuracy, if known (saves an evaluation).
        head_layer: str. Defaults to `"predictions"`.

    Returns:
        `Retention` (`before`, `after`, `drop` in points).

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import measure_retention
    >>> source = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> report = keras_transfer.transfer_weights(source, model, exclude="predictions")
    >>> test = (np.random.rand(8, 28, 28, 1) * 255, np.array([0, 1] * 4))
    >>> measure_retention(model, source, test).drop
    0.0
    """
    source = anchors_lib.load_source(source)
    if before is None:
        before = evaluate_classifier(source, source_test).accuracy
    after = evaluate_classifier(
        source_task_model(model, source, head=head, head_layer=head_layer), source_test
    ).accuracy
    return Retention(float(before), float(after))

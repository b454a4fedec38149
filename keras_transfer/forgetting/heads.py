"""The source head kept beside the new one: what LwF and Replay train with the target.

After `transfer_weights(source, model, exclude="predictions")` the target model has the
source's backbone and a new head. The source task still has a head of its own: a
*copy* of the source model's head layer (`copy_head`) sits on the target model's
features (the input of its head layer), and trains jointly with it. `with_source_head`
is the two-output model (`{"predictions": target head, "source_predictions": source-head
copy}`) that measures both tasks; `SourceHeadTrainer` is the one a method fits, with
standard Keras multi-output losses and per-output sample weights.
"""

import numbers
import os

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.forgetting.anchors import load_source  # noqa: F401 (used below, and by lwf/replay)
from keras_transfer.utils import keras_internals

TARGET = "predictions"  # the output of the target model's own head
SOURCE = "source_predictions"  # the output of the source-head copy


def check_source(source):
    """`source` as stored in a method's config: the model itself or the `.keras` path."""
    if source is None:
        raise ValueError(
            "This method needs the source model: a keras.Model or a .keras file. Received: source=None"
        )
    if isinstance(source, keras.Model):
        return source
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".keras") and os.path.isfile(source):
        return os.fspath(source)
    raise ValueError(
        "source must be a keras.Model or an existing .keras file (its head layer is copied). "
        f"Received: source={source!r}"
    )


def number(name, value, *, positive=False):
    """`value` as a float >= 0 (> 0 with `positive`), else a `ValueError` naming it."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = float(value)
        ok = value > 0.0 if positive else value >= 0.0
    if not ok:
        raise ValueError(
            f"{name} must be a number {'> 0' if positive else '>= 0'}. Received: {name}={value!r}"
        )
    return value


def training_arrays(data, model, batch_size=256):
    """`(images, labels)` float32 / int64 arrays from `(x, y)` arrays or a dataset of
    batches, checked against `model` (`training.fit.as_dataset`)."""
    from keras_transfer.training.fit import as_dataset

    checked = as_dataset(data, model, batch_size=batch_size)
    if not isinstance(data, tf.data.Dataset):
        x = np.asarray(data[0], np.float32)
        return (x[..., None] if x.ndim == 3 else x), np.asarray(data[1]).astype(np.int64)
    parts = [
        (images.numpy().astype(np.float32), labels.numpy().astype(np.int64)) for images, labels in checked
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def head_features(model, head_layer="predictions"):
    """The symbolic input of `model`'s head layer: the features both heads read.

    Raises:
        ValueError: `model` is not functional, has no such layer, or calls it more
            than once.
    """
    if not keras_internals.is_functional(model):
        raise ValueError(
            f"The target model must be a functional keras.Model (build_classifier makes one). "
            f"Received: model {getattr(model, 'name', model)!r} of type {type(model).__name__}"
        )
    names = [layer.name for layer in model.layers]
    if head_layer not in names:
        raise ValueError(
            f"The target model has no layer {head_layer!r} (its layers: {names}). "
            f"Received: head_layer={head_layer!r}"
        )
    layer = model.get_layer(head_layer)
    calls = keras_internals.graph_calls(model).get(id(layer), [])  # not a cached head's calls
    if len(calls) != 1:
        raise ValueError(
            f"The head layer {head_layer!r} is called {len(calls)} times in "
            f"the target model; it must be called once. Received: head_layer={head_layer!r}"
        )
    return calls[0].input_tensors[0]


def copy_head(source, head_layer="predictions", name=SOURCE):
    """A new layer with the source head's config and weights (trainable, not shared).

    Args:
        source: `keras.Model` or a `.keras` file: the model trained on the source task.
        head_layer: str. Its head layer. Defaults to `"predictions"`.
        name: str. The copy's name. Defaults to `"source_predictions"`.

    Returns:
        The copy, built, holding the source head's weights.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import copy_head
    >>> source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    >>> head = copy_head(source)
    >>> same = head.kernel.numpy() == source.get_layer("predictions").kernel.numpy()
    >>> head.name, head.units, bool(same.all())
    ('source_predictions', 5, True)
    """
    source = load_source(source)
    names = [layer.name for layer in source.layers]
    if head_layer not in names:
        raise ValueError(
            f"The source model has no layer {head_layer!r} (its layers: {names}). "
            f"Received: head_layer={head_layer!r}"
        )
    original = source.get_layer(head_layer)
    if not original.weights:
        raise ValueError(
            f"The source's head layer {head_layer!r} has no weights to copy. "
            f"Received: head_layer={head_layer!r}"
        )
    config = dict(original.get_config(), name=name, trainable=True)
    head = original.__class__.from_config(config)
    head.build(tuple(original.input.shape))
    head.set_weights(original.get_weights())
    return head


def with_source_head(model, head, head_layer="predictions"):
    """The target model with the source-head copy beside its own head: two outputs.

    The model shares `model`'s layers and `head` (no copies): `outputs["predictions"]`
    is `model`'s prediction, `outputs["source_predictions"]` the source task's, on the
    same features. It is what measures the source task after transfer.

    Args:
        model: functional `keras.Model`: the target model.
        head: a layer (`copy_head`, or a method's `source_head` after training).
        head_layer: str. The target model's head layer, whose input is the features.
            Defaults to `"predictions"`.

    Returns:
        A `keras.Model` with outputs `{"predictions": ..., "source_predictions": ...}`.

    Raises:
        ValueError: the head does not take the target model's features.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import copy_head, with_source_head
    >>> source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    >>> target = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> _ = keras_transfer.transfer_weights(source, target, exclude="predictions")
    >>> outputs = with_source_head(target, copy_head(source)).predict(np.zeros((2, 28, 28, 1)), verbose=0)
    >>> outputs["predictions"].shape, outputs["source_predictions"].shape
    ((2, 3), (2, 5))
    """
    features = head_features(model, head_layer)
    expected = getattr(head, "kernel", None)
    if expected is not None and int(expected.shape[0]) != int(features.shape[-1]):
        raise ValueError(
            f"The source head takes {int(expected.shape[0])} features but the target model's "
            f"{head_layer!r} layer reads {int(features.shape[-1])}: the source and target must share "
            f"the backbone (transfer_weights(source, model, exclude={head_layer!r})). "
            f"Received: head {head.name!r}"
        )
    return keras.Model(
        model.inputs,
        {TARGET: model.outputs[0], SOURCE: head(features)},
        name=f"{model.name}_with_source_head",
    )


def _unwrap(loss):
    from keras_transfer.losses import WithPenalties

    return loss.loss if isinstance(loss, WithPenalties) else loss


class SourceHeadTrainer(keras.Model):
    """Fits a target model and a source-head copy beside it, with Keras's multi-output
    losses: the model `LwF` and `Replay` hand to `fit`.

    `compile(loss=..., metrics=...)` (what `train` passes, the target model's own loss
    and metrics) becomes `loss={"predictions": loss, "source_predictions":
    source_loss}` with `loss_weights` `1` and `source_weight`, and the metrics are the
    target output's `weighted_metrics` (so per-output sample weights that mask
    examples mask them for the metrics too). The history holds `loss` (the total),
    `predictions_loss`, `source_predictions_loss` and `predictions_accuracy`.

    It is a fitting device, never saved: the model to save is the target model
    (`method.finalize(model)`); the trained head is the method's `source_head`.

    Args:
        model: functional `keras.Model`: the target model.
        head: the source-head copy (`copy_head`).
        head_layer: str. The target model's head layer. Defaults to `"predictions"`.
        source_loss: a loss for the source output (`None`: the target's loss, without
            its penalties). Defaults to `None`.
        source_weight: float. Its weight against the target's loss (1). Defaults to `1.0`.
        source_metrics: metrics of the source output (weighted). Defaults to none.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import SourceHeadTrainer, copy_head
    >>> source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    >>> target = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> trainer = SourceHeadTrainer(target, copy_head(source), source_weight=0.5)
    >>> trainer.compile("adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> x, y = np.zeros((4, 28, 28, 1)), {"predictions": np.arange(4) % 3, "source_predictions": np.arange(4)}
    >>> sorted(trainer.fit(x, y, epochs=1, verbose=0).history)
    ['loss', 'predictions_accuracy', 'predictions_loss', 'source_predictions_loss']
    """

    def __init__(
        self,
        model,
        head,
        head_layer="predictions",
        source_loss=None,
        source_weight=1.0,
        source_metrics=None,
        name="source_head_trainer",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.two_heads = with_source_head(model, head, head_layer)
        keras_internals.set_untracked_attribute(self, "target_model", model)
        keras_internals.set_untracked_attribute(self, "head", head)
        self.head_layer = head_layer
        self.source_loss = source_loss
        self.source_weight = float(source_weight)
        self.source_metrics = list(source_metrics or [])

    def call(self, inputs, training=None):
        return self.two_heads(inputs, training=training)

    def compile(self, optimizer="adam", loss=None, metrics=None, weighted_metrics=None, **kwargs):
        if isinstance(loss, dict):  # already per output
            return super().compile(
                optimizer=optimizer, loss=loss, metrics=metrics, weighted_metrics=weighted_metrics, **kwargs
            )
        source_loss = self.source_loss if self.source_loss is not None else _unwrap(loss)
        target_metrics = list(metrics or []) + list(weighted_metrics or [])
        weighted = {TARGET: target_metrics}
        if self.source_metrics:
            weighted[SOURCE] = list(self.source_metrics)
        super().compile(
            optimizer=optimizer,
            loss={TARGET: loss, SOURCE: source_loss},
            loss_weights={TARGET: 1.0, SOURCE: self.source_weight},
            weighted_metrics=weighted if target_metrics or self.source_metrics else None,
            **kwargs,
        )

"""Checks of training and evaluation data on every path: arrays and `tf.data.Dataset`.

Labels must be integer class ids in `[0, num_classes)` (the toolkit's loss is the sparse
cross-entropy), images finite, and pixels in the 0-255 range the model's preprocessing
expects. `check_labels_anywhere` is the one entry point for labels: arrays are checked at
once; a finite dataset with one pass over its labels before any work is done; an infinite
(or unknown-length) dataset gets an in-graph assertion in a `map` that fails at the first
bad batch, naming the value.

Example:

>>> import numpy as np, tensorflow as tf
>>> from keras_transfer.data import validation
>>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2)), [0, 1, 2, 5])).batch(2)
>>> validation.check_labels_anywhere(ds, 3, "train_data")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: Labels must be in [0, 3); found [5] in train_data (1 of 4 labels are outside). ...
"""

import warnings

import numpy as np
import tensorflow as tf

# Fewer labels than this are gathered in one pass; the check itself is vectorised.
_MAX_SHOWN = 10


def _labels_problem(y, num_classes, name):
    """The message for bad labels `y` (a NumPy array), or `None` if they are good."""
    y = np.asarray(y)
    if y.size == 0:
        return None
    if y.ndim >= 2 and y.shape[-1] > 1:
        flat = y.reshape(-1, y.shape[-1])
        if np.isin(flat, (0, 1)).all() and (flat.sum(axis=-1) == 1).all():
            return (
                f"{name} has labels that look one-hot (rows of 0/1 summing to 1, shape "
                f"{tuple(y.shape)}), but the loss takes integer class ids: pass "
                "np.argmax(y, axis=-1) (or tf.argmax in the pipeline). "
                f"Received: labels of shape {tuple(y.shape)}"
            )
        return (
            f"{name} must have one integer class id per example, shape (N,). "
            f"Received: labels of shape {tuple(y.shape)}"
        )
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        return f"{name} must have integer class ids. Received: labels of dtype {y.dtype}"
    if np.issubdtype(y.dtype, np.floating):
        finite = np.isfinite(y)
        fractional = ~finite | (np.mod(np.where(finite, y, 0), 1) != 0)
        if fractional.any():
            bad = np.unique(y[fractional])[:_MAX_SHOWN].tolist()
            return (
                f"{name} has labels that are not integer class ids: {bad} "
                f"({int(fractional.sum())} of {y.size}). Pass integer class ids in "
                f"[0, {num_classes}). Received: labels of dtype {y.dtype}"
            )
    if num_classes is not None:
        outside = (y < 0) | (y >= num_classes)
        if outside.any():
            bad = np.unique(y[outside])[:_MAX_SHOWN]
            bad = bad.astype(np.int64).tolist() if np.issubdtype(y.dtype, np.floating) else bad.tolist()
            return (
                f"Labels must be in [0, {num_classes}); found {bad} in {name} ({int(outside.sum())} "
                f"of {y.size} labels are outside). Received: num_classes={num_classes}"
            )
    return None


def check_labels(y, num_classes, name="labels"):
    """Raises `ValueError` unless `y` are integer class ids in `[0, num_classes)`.

    Float labels with integer values (`1.0`) pass; fractional or non-finite ones, labels
    outside the range and labels that look one-hot (2-D rows of 0/1 summing to 1) do not.

    Example:

    >>> from keras_transfer.data import validation
    >>> validation.check_labels([0, 1, 1.0], 2)
    >>> validation.check_labels([[0, 1], [1, 0]], 2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: labels has labels that look one-hot (rows of 0/1 summing to 1, shape (2, 2)), ...
    """
    problem = _labels_problem(y, num_classes, name)
    if problem:
        raise ValueError(problem)


def _labels_of(element):
    """The labels tensor of a dataset element `(x, y)` or `(x, y, w)`, or `None`."""
    if isinstance(element, (tuple, list)) and len(element) >= 2:
        return element[1]
    return None


def dataset_is_finite(ds):
    """True when `ds` has a known, finite cardinality."""
    return int(ds.cardinality()) >= 0


def check_labels_anywhere(data, num_classes, name="labels"):
    """Checks the labels of arrays `(x, y)` or of a `tf.data.Dataset`; returns `data`.

    A finite dataset is read once (its labels only are gathered) and every bad label is
    reported before any work; an infinite or unknown-length dataset is returned with an
    in-graph check (`tf.debugging`) that fails at the first bad batch, naming the value
    (an `InvalidArgumentError`). Use what is returned.

    Args:
        data: `tf.data.Dataset` of `(images, labels[, weights])`, a tuple `(x, y)`, or
            anything else (returned unchecked).
        num_classes: int.
        name: str. Names the data in the message (`"train_data"`, ...).

    Returns:
        `data`, or for an infinite dataset the same dataset with the check mapped in.

    Raises:
        ValueError: labels outside `[0, num_classes)`, fractional float labels, labels
            that look one-hot.
    """
    if isinstance(data, tf.data.Dataset):
        if _labels_of(data.element_spec) is None:
            return data
        if dataset_is_finite(data):
            labels = [np.asarray(y) for y in data.map(lambda *e: _labels_of(e)).as_numpy_iterator()]
            if labels:
                y = np.concatenate([np.reshape(b, (-1,) + b.shape[1:]) for b in labels])
                check_labels(y, num_classes, name)
            return data
        return data.map(lambda *e: (*e[:1], _assert_labels(e[1], num_classes, name), *e[2:]))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        check_labels(data[1], num_classes, name)
    return data


def _assert_labels(y, num_classes, name):
    """`y` after in-graph checks (integer-valued, in range, not one-hot-looking)."""
    checks = []
    if y.shape.rank is not None and y.shape.rank >= 2 and (y.shape[-1] or 0) > 1:
        raise ValueError(
            f"{name} must have one integer class id per example, shape (N,). "
            f"Received: labels of shape {tuple(y.shape)} (one-hot? pass tf.argmax(y, axis=-1))"
        )
    values = tf.cast(y, tf.float64)
    if y.dtype.is_floating:
        checks.append(
            tf.debugging.assert_equal(
                values,
                tf.round(values),
                message=f"{name} has labels that are not integer class ids",
                summarize=_MAX_SHOWN,
            )
        )
    checks.append(
        tf.debugging.assert_non_negative(values, message=f"{name} has labels < 0", summarize=_MAX_SHOWN)
    )
    checks.append(
        tf.debugging.assert_less(
            values,
            tf.constant(float(num_classes), tf.float64),
            message=f"{name} has labels >= num_classes={num_classes}",
            summarize=_MAX_SHOWN,
        )
    )
    with tf.control_dependencies(checks):
        return tf.identity(y)


def check_finite(x, name="x"):
    """Raises `ValueError` if the array `x` holds NaN or infinite values, saying how many.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.data import validation
    >>> validation.check_finite(np.array([1.0, np.nan, np.inf]), "x")
    Traceback (most recent call last):
    ...
    ValueError: x must be finite: it holds 1 NaN and 1 infinite value(s) of 3. Received: x with NaN or inf
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or np.isfinite(x).all():
        return
    nan = int(np.isnan(x).sum())
    inf = int(np.isinf(x).sum())
    raise ValueError(
        f"{name} must be finite: it holds {nan} NaN and {inf} infinite value(s) of {x.size}. "
        f"Received: {name} with NaN or inf"
    )


def expects_0_255(model):
    """True when `model` starts with the toolkit's preprocessing of 0-255 pixels (a
    registry backbone's `BackbonePreprocessing`, or the `Rescaling` of a hub module)."""
    from keras_transfer.backbones.preprocessing import BackbonePreprocessing

    try:
        layer = model.get_layer("preprocessing")
    except (ValueError, AttributeError):
        return False
    if isinstance(layer, BackbonePreprocessing):
        return True
    import keras

    return isinstance(layer, keras.layers.Rescaling) and abs(float(layer.scale) * 255.0 - 1.0) < 0.5


def warn_if_prescaled(model, data, name="x"):
    """Warns when images look scaled to [0, 1] (0 < max <= 1) for a model that expects
    0-255 pixels: arrays are checked whole, a dataset on its first batch.

    Returns:
        bool: whether it warned.
    """
    if not expects_0_255(model):
        return False
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, (tuple, list)):
            first = next(iter(data.take(1).map(lambda *e: e[0])), None)
        else:
            first = next(iter(data.take(1)), None)
        if first is None:
            return False
        x = np.asarray(first)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x = np.asarray(data[0])
    else:
        x = np.asarray(data)
    if x.size == 0 or not np.issubdtype(x.dtype, np.number):
        return False
    top = float(np.max(x))
    if 0.0 < top <= 1.0:
        warnings.warn(
            f"{name}: the pixels look scaled to [0, 1] (the largest is is {top:.3g}), but model "
            f"{model.name!r} expects raw 0-255 pixels (its preprocessing layer scales them): "
            "pass 0-255 pixels (e.g. x * 255), or the model sees near-black images.",
            PrescaledPixelsWarning,
            stacklevel=3,
        )
        return True
    return False


class PrescaledPixelsWarning(UserWarning):
    """Images look scaled to [0, 1] for a model that expects 0-255 pixels."""


def check_inputs(model, data, name):
    """What `train` and `evaluate_classifier` check up front on `data` for `model`:
    labels (`check_labels_anywhere`), finite arrays (`check_finite`) and the pixel range
    (`warn_if_prescaled`). Returns `data` (for an infinite dataset: with the label check
    mapped in)."""
    if data is None:
        return None
    num_classes = int(model.output.shape[-1])
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, tf.data.Dataset):
        check_finite(data[0], f"{name} images")
    data = check_labels_anywhere(data, num_classes, name)
    warn_if_prescaled(model, data, f"{name} images")
    return data

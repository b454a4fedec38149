"""Accuracy, classification report and confusion matrix of a classifier (`Evaluation`)."""

import collections
import dataclasses

import numpy as np
import tensorflow as tf

from keras_transfer.data import datasets as data_lib
from keras_transfer.data import validation
from keras_transfer.utils import checks


@dataclasses.dataclass
class Evaluation:
    """Results of `evaluate_classifier`.

    Attributes:
        accuracy: float.
        report: str. scikit-learn's per-class precision/recall/F1 table.
        report_dict: dict. The same as numbers.
        confusion_matrix: `np.ndarray` (num_classes, num_classes), rows = true class.
        class_names: list of str.
        y_true, y_pred: `np.ndarray` of class ids.
    """

    accuracy: float
    report: str
    report_dict: dict
    confusion_matrix: np.ndarray
    class_names: list
    y_true: np.ndarray
    y_pred: np.ndarray

    def __str__(self):
        return f"accuracy: {self.accuracy:.4f}\n{self.report}"


def check_class_names(class_names, num_classes):
    """`class_names` as a list of str (default `"0"`, `"1"`, ...), one per class, unique.

    Example:

    >>> from keras_transfer.evaluation.metrics import check_class_names
    >>> check_class_names(["cat", "dog", "cat"], 3)
    Traceback (most recent call last):
    ...
    ValueError: class_names must be unique; 'cat' appears 2 times. Received: class_names=['cat', 'dog', 'cat']
    """
    names = [str(c) for c in (range(num_classes) if class_names is None else class_names)]
    if len(names) != num_classes:
        raise ValueError(
            f"The model has {num_classes} classes but {len(names)} class names were "
            f"given. Received: class_names={class_names!r}"
        )
    repeated = [(name, count) for name, count in collections.Counter(names).items() if count > 1]
    if repeated:
        listed = ", ".join(f"{name!r} appears {count} times" for name, count in repeated)
        raise ValueError(f"class_names must be unique; {listed}. Received: class_names={list(class_names)!r}")
    return names


def predict_classes(model, data, batch_size=256):
    """Class ids and true labels for a dataset of `(images, labels)` or arrays `(x, y)`."""
    if isinstance(data, tf.data.Dataset):
        y_true, y_pred = [], []
        for images, labels in data:
            y_pred.append(np.argmax(model.predict_on_batch(images), axis=-1))
            y_true.append(np.asarray(labels))
        if not y_true:
            raise ValueError("The evaluation dataset is empty.")
        return np.concatenate(y_true), np.concatenate(y_pred)
    x, y = data
    if len(x) == 0:
        raise ValueError("The evaluation set is empty.")
    # One of the toolkit's pipelines (`data.finish_pipeline`: no tf.data autotuning stall
    # when `predict` returns), batches of unknown size: the predict function is traced
    # once, the last partial batch included (Keras's numpy adapter traces it again).
    batches = tf.data.Dataset.from_tensor_slices(np.asarray(x, np.float32)).batch(batch_size)
    probabilities = model.predict(data_lib.finish_pipeline(batches), verbose=0)
    return np.asarray(y), np.argmax(probabilities, axis=-1)


def evaluate_classifier(model, data, class_names=None, batch_size=256):
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on held-out data.

    Args:
        model: `keras.Model` returning class scores.
        data: `tf.data.Dataset` of `(images, labels)` or a tuple `(x, y)`.
        class_names: list of str. Defaults to `"0"`, `"1"`, ...
        batch_size: int. For array input. Defaults to `256`.

    Returns:
        `Evaluation`; `print()` it for the report.

    Raises:
        ValueError: class names that are duplicated or not one per class; labels
            outside `[0, num_classes)`, float or one-hot-looking (a dataset's are
            checked as they are read, before any metric); NaN or inf in array images.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> result = keras_transfer.evaluate_classifier(
    ...     model, (np.zeros((6, 28, 28, 1)), np.array([0, 1, 2, 0, 1, 2])))
    >>> result.confusion_matrix.shape
    (3, 3)
    """
    from sklearn import metrics

    num_classes = int(model.output.shape[-1])
    names = check_class_names(class_names, num_classes)
    checks.positive_int("batch_size", batch_size)
    if not isinstance(data, tf.data.Dataset):
        data = validation.check_inputs(model, data, "data")
    else:
        validation.warn_if_prescaled(model, data, "data images")
    y_true, y_pred = predict_classes(model, data, batch_size)
    if isinstance(data, tf.data.Dataset):  # the labels gathered with the predictions: one pass
        validation.check_labels(y_true, num_classes, "data")
    labels = list(range(num_classes))
    kwargs = dict(labels=labels, target_names=names, zero_division=0)
    return Evaluation(
        accuracy=float(np.mean(y_true == y_pred)),
        report=metrics.classification_report(y_true, y_pred, digits=3, **kwargs),
        report_dict=metrics.classification_report(y_true, y_pred, output_dict=True, **kwargs),
        confusion_matrix=metrics.confusion_matrix(y_true, y_pred, labels=labels),
        class_names=names,
        y_true=y_true,
        y_pred=y_pred,
    )

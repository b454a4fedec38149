"""Accuracy, classification report, confusion matrix, and their plots."""

import dataclasses
import os

import numpy as np
import tensorflow as tf


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
    probabilities = model.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0)
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
    names = [str(c) for c in (class_names or range(num_classes))]
    if len(names) != num_classes:
        raise ValueError(
            f"The model has {num_classes} classes but {len(names)} class names were "
            f"given. Received: class_names={class_names!r}"
        )
    y_true, y_pred = predict_classes(model, data, batch_size)
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


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(evaluation, path, normalize=False, title=None):
    """Saves the confusion matrix of an `Evaluation` as a PNG; returns the path.

    Example:

    >>> import numpy as np, tempfile, os, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> result = keras_transfer.evaluate_classifier(model, (np.zeros((4, 28, 28, 1)), np.array([0, 1, 0, 1])))
    >>> path = keras_transfer.plot_confusion_matrix(result, os.path.join(tempfile.mkdtemp(), "cm.png"))
    >>> os.path.exists(path)
    True
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _figure()
    matrix = evaluation.confusion_matrix.astype(float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(evaluation.class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=evaluation.class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalize else ".0f"
    )
    ax.set_title(title or f"Confusion matrix (accuracy {evaluation.accuracy:.3f})")
    return _save(fig, path)


def plot_history(history, path, title=None):
    """Saves loss and accuracy curves (train and validation) as a PNG; returns the path.

    Args:
        history: a `keras.callbacks.History`, a `TwoStageHistory` (the start of stage 2
            is marked), or a dict of metric lists.
        path: str. PNG file to write.
        title: str. Figure title.
    """
    plt = _figure()
    logs = history if isinstance(history, dict) else history.history
    metrics = [m for m in ("loss", "accuracy") if m in logs]
    if not metrics:
        raise ValueError(f"The history has no loss or accuracy. Received keys: {sorted(logs)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    boundary = getattr(history, "head_epochs", None)
    for ax, metric in zip(axes[0], metrics):
        epochs = np.arange(1, len(logs[metric]) + 1)
        ax.plot(epochs, logs[metric], label="train")
        if f"val_{metric}" in logs:
            ax.plot(epochs, logs[f"val_{metric}"], label="validation")
        if boundary:
            ax.axvline(boundary + 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path):
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

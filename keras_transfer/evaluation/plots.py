"""Plots of results: confusion matrices, learning curves, and the helpers behind them."""

import os

import numpy as np


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (no screen needed)."""
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

    plt = pyplot()
    matrix = evaluation.confusion_matrix.astype(float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(evaluation.class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=evaluation.class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalize else ".0f"
    )
    ax.set_title(title or f"Confusion matrix (accuracy {evaluation.accuracy:.3f})")
    return save_figure(fig, path)


def plot_history(history, path, title=None):
    """Saves loss and accuracy curves (train and validation) as a PNG; returns the path.

    Args:
        history: a `keras.callbacks.History`, a `TwoStageHistory` (the start of stage 2
            is marked), or a dict of metric lists.
        path: str. PNG file to write.
        title: str. Figure title.
    """
    plt = pyplot()
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
    return save_figure(fig, path)


def save_figure(fig, path):
    """Writes `fig` as a PNG to `path` (creating its folder), closes it; returns `path`."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

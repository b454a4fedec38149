"""Loading saved models in a new process: `load_model`.

`import keras_transfer` imports nothing heavy until first use (so `keras-transfer
--help` answers at once), which also means the toolkit's Keras classes
(`BackbonePreprocessing`, `HubLayer`, the label-smoothing loss, folded BatchNorm,
transfer methods) are not registered with Keras yet. `load_model` registers them, then
loads: use it (or import `keras_transfer.builders` first) where a script would call
`keras.saving.load_model`.
"""

import importlib
import os
import zipfile

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Every module that registers classes with Keras serialisation.
REGISTERING_MODULES = (
    "keras_transfer.backbones.preprocessing",
    "keras_transfer.backbones.hub",
    "keras_transfer.losses",
    "keras_transfer.inference",
    "keras_transfer.training.method",
    "keras_transfer.training.feature_cache",
    "keras_transfer.training.fine_tuning",
    "keras_transfer.parameter_efficient.bias_only",
    "keras_transfer.distillation.distill",
    "keras_transfer.compression.pruning",
    "keras_transfer.parameter_efficient.lora",
    "keras_transfer.parameter_efficient.adapters",
    "keras_transfer.layerwise.discriminative_lr",
    "keras_transfer.layerwise.gradual_unfreezing",
    "keras_transfer.layerwise.partial",
    "keras_transfer.forgetting.lwf",
    "keras_transfer.forgetting.replay",
    "keras_transfer.forgetting.l2_sp",
    "keras_transfer.forgetting.ewc",
    "keras_transfer.adaptation.gradient_reversal",
    "keras_transfer.adaptation.domain",
    "keras_transfer.adaptation.dann",
    "keras_transfer.adaptation.coral",
    "keras_transfer.training.lr_finder",
)


def register_all():
    """Imports every module that registers Keras classes (idempotent)."""
    for module in REGISTERING_MODULES:
        importlib.import_module(module)


def load_model(path, *, compile=True, **kwargs):
    """`keras.saving.load_model(path, ...)` with every class of the toolkit registered.

    A `.keras` file that is missing, truncated or not a `.keras` zip archive raises an
    error naming the file and what to do (Keras says "File not found" for all three).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a `.keras` file that is truncated or corrupt.

    Example:

    >>> import os, tempfile, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> model.save(path)
    >>> keras_transfer.load_model(path).get_layer("preprocessing").backbone
    'mnist_cnn'
    """
    register_all()
    import keras

    check_keras_file(path)
    return keras.saving.load_model(path, compile=compile, **kwargs)


def check_keras_file(path):
    """Raises a clear error if `path` is a `.keras` file that Keras cannot open.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a complete zip archive (truncated, e.g. by a full
            disk or a copy cut short, or not a `.keras` file at all).
    """
    path = os.fspath(path)
    if not str(path).endswith(".keras"):
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such .keras model file: {path}")
    if os.path.isdir(path):
        return
    problem = None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            broken = archive.testzip()
        if broken is not None:
            problem = f"its entry {broken!r} is corrupt"
        elif "config.json" not in names:
            problem = "it has no config.json (not a Keras 3 model archive)"
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        problem = f"it is not a complete zip archive ({error})"
    if problem:
        raise ValueError(
            f"The model file {path} is truncated or corrupt: {problem}. A .keras file is a zip "
            "archive written by `model.save`; save the model again, or use an earlier copy "
            "(e.g. the run's best.keras or a backup)."
        )


def load_weights(model, path, *, what="the model"):
    """`model.load_weights(path)` with errors that name the file and what to do.

    Args:
        model: `keras.Model`.
        path: str. A `.weights.h5` file saved by Keras 3 (`model.save_weights`), or a
            legacy Keras `.h5`.
        what: str. What `model` is, for the messages (e.g. `"backbone 'mnist_cnn'"`).

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not HDF5 (e.g. a text file named `x.weights.h5`), or its
            weights do not fit `model` (saved from another architecture or input shape);
            `model` is then left as it was (Keras loads the parts that fit first).

    Example:

    >>> import os, tempfile, keras_transfer
    >>> from keras_transfer import saving
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp.weights.h5")
    >>> keras_transfer.build_backbone("mnist_mlp", weights=None).save_weights(path)
    >>> cnn = keras_transfer.build_backbone("mnist_cnn", weights=None)
    >>> try:
    ...     saving.load_weights(cnn, path, what="backbone 'mnist_cnn'")
    ... except ValueError as error:
    ...     "does not fit backbone 'mnist_cnn'" in str(error)
    True
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file not found for {what}. Received: weights={path!r}")
    with open(path, "rb") as handle:
        signature = handle.read(len(HDF5_SIGNATURE))
    if signature != HDF5_SIGNATURE:
        raise ValueError(
            f"The weights file {path} is not an HDF5 file (it starts with {signature!r}), so it holds no "
            f"weights for {what}. Pass a .weights.h5 file written by `model.save_weights` (or "
            "weights='imagenet' / None)."
        )
    before = model.get_weights()
    try:
        model.load_weights(path)
    except ValueError as error:
        # Keras loads what fits before raising: put the model back as it was.
        model.set_weights(before)
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = next((line for line in lines if "shape" in line or "expected" in line), lines[0])
        raise ValueError(
            f"The weights file {path} does not fit {what} (saved from another architecture, "
            f"input shape or class count?): {detail[:300]} Pass the weights file saved from this "
            "same model (`model.save_weights`), or use `keras_transfer.transfer_weights` to copy "
            "the layers that match from a model built with the other architecture."
        ) from None

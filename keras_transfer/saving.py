"""Loading saved models in a new process: `load_model`.

`import keras_transfer` imports nothing heavy until first use (so `keras-transfer
--help` answers at once), which also means the toolkit's Keras classes
(`BackbonePreprocessing`, `HubLayer`, the label-smoothing loss, folded BatchNorm,
transfer methods) are not registered with Keras yet. `load_model` registers them, then
loads: use it (or import `keras_transfer.builders` first) where a script would call
`keras.saving.load_model`.
"""

import importlib

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

    return keras.saving.load_model(path, compile=compile, **kwargs)

"""LoRA (low-rank adaptation) as a transfer method, on Keras's own `enable_lora`.

Keras 3 layers Dense, EinsumDense and Conv1D/2D/3D have `enable_lora(rank, lora_alpha)`:
the kernel `W` is frozen and two small matrices train, `A` (the kernel's input axes x
rank) and `B` (rank x outputs); the layer computes with `W + (lora_alpha / rank) * A @ B`
(for a Conv kernel `(kh, kw, c_in, c_out)`, `A` is `(kh, kw, c_in, rank)` and `A @ B`
contracts the last axis). `LoRA` chooses the layers, keeps the base weights frozen
through every stage of a run, and hands back a model with the product merged into the
kernels; `save_lora_weights` / `load_lora_weights` move the adapters alone.
"""

import dataclasses
import os
import re
import warnings

import keras
import numpy as np

from keras_transfer import freezing
from keras_transfer.training import method as method_lib
from keras_transfer.utils import checks
from keras_transfer.utils import files
from keras_transfer.utils import keras_internals

# Layers Keras can give LoRA (they have `enable_lora`), and layers with a kernel it cannot.
LORA_LAYER_TYPES = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")

# Per-backbone default selection, by registry-name prefix: a regex on layer names, in the
# spirit of keras-hub's `Backbone.default_lora_layer_names()` (attention projections of
# transformers). Any other backbone (the toolkit's own source models, user models, the
# other keras.applications CNNs) gets LoRA on every layer with a kernel; the ones Keras
# cannot adapt (depthwise, separable, transposed convolutions) are reported as skipped.
DEFAULT_LORA_LAYERS = {
    # ConvNeXt blocks: the two pointwise Dense layers (the block's MLP), not the 7x7
    # depthwise convolution nor the stem/downsampling convolutions.
    "convnext": r"_pointwise_conv_[12]$",
}

_FILE_SUFFIX = ".lora.h5"
_FORMAT = "keras_transfer.lora/1"


@dataclasses.dataclass(frozen=True)
class LoRAReport:
    """What `LoRA.prepare` did: the layers that have LoRA, and those it could not give it.

    Attributes:
        applied: tuple of str. Names of the layers with LoRA, in depth order.
        skipped: dict. Layer name -> why it has no LoRA (e.g. `"DepthwiseConv2D:
            Keras has no LoRA for this layer type"`).
        rank: int. The LoRA rank.
        alpha: float. The LoRA alpha (the update is scaled by `alpha / rank`).
    """

    applied: tuple
    skipped: dict
    rank: int
    alpha: float


def default_lora_layers(model):
    """The default selection of `LoRA(layers=None)` for `model`'s backbone: a regex on
    layer names (`DEFAULT_LORA_LAYERS`, by registry name of a classifier that
    `build_classifier` made), or `None` for every layer with a kernel.

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.parameter_efficient import lora
    >>> lora.default_lora_layers(keras_transfer.build_classifier("mnist_cnn", 2, weights=None)) is None
    True
    >>> lora.default_lora_layers("convnext_tiny")
    '_pointwise_conv_[12]$'
    """
    name = model if isinstance(model, str) else None
    if isinstance(model, keras.Model) and "preprocessing" in [layer.name for layer in model.layers]:
        name = getattr(model.get_layer("preprocessing"), "backbone", None)
    if not isinstance(name, str):
        return None
    for prefix, pattern in DEFAULT_LORA_LAYERS.items():
        if name.startswith(prefix):
            return pattern
    return None


def _has_kernel(layer):
    return any(isinstance(getattr(layer, attr, None), keras.Variable) for attr in _KERNEL_NAMES) or (
        isinstance(layer, LORA_LAYER_TYPES) and layer.built
    )


def _why_not(layer):
    """Why `layer` cannot take LoRA, or `None` when it can."""
    if not isinstance(layer, LORA_LAYER_TYPES) or not hasattr(layer, "enable_lora"):
        return f"{type(layer).__name__}: Keras has no LoRA for this layer type"
    if not layer.built:
        return f"{type(layer).__name__}: not built"
    if getattr(layer, "kernel_constraint", None) is not None:
        return f"{type(layer).__name__}: Keras's LoRA does not take a kernel_constraint"
    if getattr(layer, "quantization_mode", None) is not None:
        return f"{type(layer).__name__}: quantized ({layer.quantization_mode}), no LoRA"
    return None


def _lora_shapes(layer, rank):
    """The shapes of `A` and `B` that `layer.enable_lora(rank)` makes."""
    kernel = tuple(layer.kernel.shape)
    if isinstance(layer, keras.layers.EinsumDense):
        return (kernel[0], rank), (rank, *kernel[1:])
    return (*kernel[:-1], rank), (rank, kernel[-1])


def _lora_variables(layer):
    return [layer.lora_kernel_a, layer.lora_kernel_b]


def _layer_paths(model, prefix=""):
    """`{path: layer}` of every leaf layer, nested models opened (`"backbone/fc1"`)."""
    paths = {}
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            paths.update(_layer_paths(layer, prefix=f"{path}/"))
        elif not isinstance(layer, keras.layers.InputLayer):
            paths[path] = layer
    return paths


def lora_layers(model):
    """`{path: layer}` of the layers of `model` that have LoRA enabled (nested models
    opened; paths such as `"backbone/fc1"`)."""
    return {
        path: layer for path, layer in _layer_paths(model).items() if getattr(layer, "lora_enabled", False)
    }


@method_lib.register_method
class LoRA(method_lib.TransferMethod):
    """LoRA: low-rank updates of the backbone's Dense and Conv kernels train, the base
    weights stay frozen, the new head trains.

    Each chosen layer gets Keras's `enable_lora(rank, lora_alpha=alpha)`: its kernel `W`
    and bias freeze, and it computes with `W + (alpha / rank) * A @ B`, where `A` (the
    kernel's input axes x `rank`, He-uniform) and `B` (`rank` x outputs, zeros, so
    training starts from the source model) are the only backbone weights that train.
    Which layers: `layers` names them, or a regex searches their names, or by default
    the backbone's own table entry (`default_lora_layers`: every layer with a kernel for
    the toolkit's source models and user models). Chosen layers Keras cannot adapt
    (DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, ...) are skipped with a warning
    and listed in `method.report`; a selection with no layer LoRA can take is an error.
    `prepare` runs before every `train` call (after `FineTune` froze or unfroze its
    stage) and is idempotent. `finalize` returns a copy of the model with `A @ B` merged
    into the kernels: no LoRA variables, the same predictions, plain layers for `.keras`,
    SavedModel and TFLite. `save_lora_weights` writes the adapters alone (small file).

    Args:
        rank: int. Rank of the update. Defaults to `8`.
        alpha: float or `None`. Scale numerator: the update is `alpha / rank * A @ B`.
            Defaults to `None` (`alpha = rank`: a scale of 1, as Keras does).
        layers: `None`, a list of layer names of the backbone, or a str (a regular
            expression searched in layer names, e.g. `"fc1|conv2"`). Defaults to `None`
            (`default_lora_layers`).
        backbone: str. Name of the backbone layer. Defaults to `"backbone"`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.parameter_efficient import LoRA
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None)
    >>> x, y = np.random.rand(16, 28, 28, 1) * 255, np.array([0, 1] * 8)
    >>> method = LoRA(rank=4, layers=["fc1"])
    >>> history = keras_transfer.train(model, (x, y), epochs=1, method=method, verbose=0)
    >>> method.report.applied
    ('fc1',)
    >>> merged = method.finalize(model)
    >>> bool(np.allclose(merged.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5))
    True

    Reference:
    - [Hu et al., 2021](https://arxiv.org/abs/2106.09685) (LoRA: Low-Rank Adaptation of
      Large Language Models)
    """

    name = "lora"
    summary = (
        "low-rank updates (A @ B) of the backbone's Dense/Conv kernels and the new head; merged for export"
    )

    def __init__(self, rank=8, alpha=None, layers=None, backbone="backbone"):
        self.rank = checks.positive_int("rank", rank)
        if alpha is not None and (
            isinstance(alpha, (bool, np.bool_))
            or not isinstance(alpha, (int, float, np.number))
            or alpha <= 0
        ):
            raise ValueError(f"alpha must be a positive number or None. Received: alpha={alpha!r}")
        self.alpha = alpha
        if isinstance(layers, str):
            try:
                re.compile(layers)
            except re.error as error:
                raise ValueError(
                    f"layers is not a valid regular expression ({error}). Received: layers={layers!r}"
                )
        elif layers is not None:
            if (
                not isinstance(layers, (list, tuple))
                or not layers
                or not all(isinstance(n, str) for n in layers)
            ):
                raise ValueError(
                    "layers must be None, a regex string or a non-empty list of layer names. "
                    f"Received: layers={layers!r}"
                )
            layers = list(layers)
        self.layers = layers
        if not isinstance(backbone, str) or not backbone:
            raise ValueError(f"backbone must be a layer name (a str). Received: backbone={backbone!r}")
        self.backbone = backbone
        self.report = None

    @property
    def scale(self):
        """`alpha / rank`, the factor of `A @ B` in the effective kernel."""
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    def _body(self, model):
        try:
            return model.get_layer(self.backbone)
        except ValueError:
            raise ValueError(
                f"Model {model.name!r} has no layer named {self.backbone!r}. "
                f"Received: backbone={self.backbone!r}"
            ) from None

    def select(self, model):
        """`(layers that take LoRA, {name: why skipped})` of `model`'s backbone under this
        method's `layers` (without changing the model)."""
        body = self._body(model)
        leaves = freezing.leaf_layers(body)
        selection = self.layers
        if selection is None:
            selection = default_lora_layers(model)
        if selection is None:
            chosen = [layer for layer in leaves if _has_kernel(layer)]
        elif isinstance(selection, str):
            chosen = [layer for layer in leaves if _has_kernel(layer) and re.search(selection, layer.name)]
        else:
            by_name = {layer.name: layer for layer in leaves}
            missing = [name for name in selection if name not in by_name]
            if missing:
                raise ValueError(
                    f"Backbone {body.name!r} has no layer(s) {missing}. Received: layers={self.layers!r}"
                )
            chosen = [by_name[name] for name in selection]
        applied, skipped = [], {}
        for layer in chosen:
            reason = _why_not(layer) if _has_kernel(layer) else f"{type(layer).__name__}: has no kernel"
            if reason is None:
                applied.append(layer)
            else:
                skipped[layer.name] = reason
        if not applied:
            what = "every layer with a kernel" if selection is None else f"layers={selection!r}"
            raise ValueError(
                f"No layer of backbone {body.name!r} that LoRA can adapt (Dense, EinsumDense, "
                f"Conv1D/2D/3D) is selected by {what}; skipped: {skipped or 'none'}. "
                f"Received: layers={self.layers!r}"
            )
        return applied, skipped

    def prepare(self, model):
        body = self._body(model)
        applied, skipped = self.select(model)
        alpha = self.alpha if self.alpha is not None else self.rank
        for layer in applied:
            if getattr(layer, "lora_enabled", False):
                if layer.lora_rank != self.rank or not np.isclose(layer.lora_alpha, alpha):
                    raise ValueError(
                        f"Layer {layer.name!r} already has LoRA of rank {layer.lora_rank} "
                        f"(alpha {layer.lora_alpha}); this method is rank {self.rank} (alpha {alpha}). "
                        f"Received: rank={self.rank}, alpha={self.alpha}"
                    )
            else:
                layer.enable_lora(self.rank, lora_alpha=alpha)
        if skipped:
            warnings.warn(
                "LoRA skipped "
                + ", ".join(f"{name} ({reason})" for name, reason in skipped.items())
                + f"; LoRA is on {len(applied)} layer(s).",
                UserWarning,
                stacklevel=2,
            )
        # Layer flags first (setting a layer's flag resets its variables'), through freezing
        # so nested models agree; then, in the LoRA layers, only A and B train.
        freezing.freeze(body)
        freezing.unfreeze(body, layers=[layer.name for layer in applied])
        for layer in applied:
            lora_ids = {id(v) for v in _lora_variables(layer)}
            for variable in layer.weights:
                variable.trainable = id(variable) in lora_ids
        self.report = LoRAReport(
            applied=tuple(layer.name for layer in applied), skipped=dict(skipped), rank=self.rank, alpha=alpha
        )

    def callbacks(self, model):
        return [RestartZeroedLoRA(model)]

    def finalize(self, model):
        return merge_lora(model)

    def get_config(self):
        config = {}
        if self.rank != 8:
            config["rank"] = self.rank
        if self.alpha is not None:
            config["alpha"] = self.alpha
        if self.layers is not None:
            config["layers"] = self.layers
        if self.backbone != "backbone":
            config["backbone"] = self.backbone
        return config


class RestartZeroedLoRA(keras.callbacks.Callback):
    """Restarts the LoRA layers whose `A` and `B` are both zero when training begins.

    A Keras weights file stores a LoRA layer's merged kernel and no `A`/`B`; loading it
    (`BackupAndRestore` resuming a run, `load_weights` of a checkpoint) puts the merged
    kernel into the base kernel and zeroes `A` and `B`, where their gradients are zero
    too: LoRA would train no more. This callback (which `LoRA.callbacks` adds after the
    run's own, so after a restore) draws `A` again (He-uniform, as `enable_lora` does):
    the effective kernel is unchanged and training goes on from it.
    """

    def __init__(self, model):
        super().__init__()
        self.target = model
        self.restarted = []

    def on_train_begin(self, logs=None):
        for path, layer in lora_layers(self.target).items():
            a, b = layer.lora_kernel_a, layer.lora_kernel_b
            if not np.any(a.numpy()) and not np.any(b.numpy()):
                a.assign(keras.initializers.HeUniform()(a.shape, dtype=a.dtype))
                self.restarted.append(path)
                print(f"LoRA: {path} had A = B = 0 (weights loaded from a file); A drawn again.")


def _strip_lora(config):
    """A copy of a serialised model config with every layer's `lora_rank`/`lora_alpha`
    removed (the layers are rebuilt without LoRA)."""
    if isinstance(config, dict):
        return {
            key: _strip_lora(value) for key, value in config.items() if key not in ("lora_rank", "lora_alpha")
        }
    if isinstance(config, list):
        return [_strip_lora(value) for value in config]
    return config


def merge_lora(model):
    """A copy of `model` with every LoRA update merged into its kernel: each LoRA layer
    becomes the plain layer with kernel `W + (alpha / rank) * A @ B`, no LoRA variables;
    all other weights are copied. Predictions equal `model`'s to float round-off. A model
    without LoRA is returned as it is.

    The merge is Keras's own: a LoRA layer's `save_own_variables` (what `.keras` files
    store) writes the merged kernel, which the plain copy loads.

    Example:

    >>> import numpy as np, keras
    >>> from keras_transfer.parameter_efficient import lora
    >>> inputs = keras.Input((4,))
    >>> layer = keras.layers.Dense(3, name="dense")
    >>> model = keras.Model(inputs, layer(inputs))
    >>> layer.enable_lora(2)
    >>> _ = layer.lora_kernel_b.assign(np.ones((2, 3)))
    >>> merged = lora.merge_lora(model)
    >>> [w.path for w in merged.weights]
    ['dense/kernel', 'dense/bias']
    >>> x = np.ones((1, 4))
    >>> bool(np.allclose(merged.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6))
    True
    """
    if not lora_layers(model):
        return model
    config = _strip_lora(keras.saving.serialize_keras_object(model))
    merged = keras.saving.deserialize_keras_object(config)
    sources = keras_internals.flatten_layers(model)
    targets = keras_internals.flatten_layers(merged)
    if [(type(a), a.name) for a in sources] != [(type(b), b.name) for b in targets]:
        raise ValueError(f"Could not rebuild model {model.name!r} layer for layer to merge its LoRA weights.")
    for source, target in zip(sources, targets):
        store = {}
        source.save_own_variables(store)
        if store:
            target.load_own_variables(store)
    return merged


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).endswith(_FILE_SUFFIX):
        raise ValueError(f"A LoRA weights file name ends with {_FILE_SUFFIX!r}. Received: path={path!r}")
    return os.fspath(path)


def save_lora_weights(model, path):
    """Writes only the LoRA weights of `model` (each LoRA layer's `A` and `B`, its rank
    and alpha) to `path` (a `.lora.h5` file), as keras-hub's `save_lora_weights` does:
    a small file, the adapters of one fine-tuning, to load onto the same base model.
    Returns `path`.

    Raises:
        ValueError: `model` has no LoRA layer, or `path` does not end with `.lora.h5`.

    Example:

    >>> import os, tempfile, numpy as np, keras_transfer
    >>> from keras_transfer.parameter_efficient import LoRA, lora
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None)
    >>> LoRA(rank=4).prepare(model)
    >>> path = lora.save_lora_weights(model, os.path.join(tempfile.mkdtemp(), "digits.lora.h5"))
    >>> sorted(lora.load_lora_weights(model, path))
    ['backbone/conv1', 'backbone/conv2', 'backbone/fc1']
    """
    import h5py

    path = _check_path(path)
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no LoRA layer to save (see LoRA / enable_lora).")
    with files.atomic_path(path) as staging:
        with h5py.File(staging, "w") as handle:
            handle.attrs["format"] = _FORMAT
            for name, layer in layers.items():
                group = handle.create_group(name)
                group.attrs["rank"] = int(layer.lora_rank)
                group.attrs["alpha"] = float(layer.lora_alpha)
                group.attrs["class_name"] = type(layer).__name__
                group["lora_kernel_a"] = np.asarray(layer.lora_kernel_a.numpy())
                group["lora_kernel_b"] = np.asarray(layer.lora_kernel_b.numpy())
    return path


def load_lora_weights(model, path):
    """Loads a `save_lora_weights` file into `model`: each layer of the file gets its
    `A` and `B` (LoRA is enabled at the file's rank and alpha on a layer without it).
    Returns `{layer path: rank}` of the layers loaded.

    Raises:
        ValueError: a layer of the file is missing from `model`, has LoRA of another
            rank or alpha, or weights of other shapes; or `model` has LoRA layers the
            file does not cover. Nothing is loaded then.
    """
    import h5py

    path = _check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No LoRA weights file at {path!r}.")
    paths = _layer_paths(model)
    with h5py.File(path, "r") as handle:
        if handle.attrs.get("format") != _FORMAT:
            raise ValueError(f"{path!r} is not a keras_transfer LoRA weights file (format {_FORMAT}).")
        entries = {}

        def collect(name, item):
            if isinstance(item, h5py.Group) and "lora_kernel_a" in item:
                entries[name] = (
                    int(item.attrs["rank"]),
                    float(item.attrs["alpha"]),
                    item["lora_kernel_a"][()],
                    item["lora_kernel_b"][()],
                )

        handle.visititems(collect)
    missing = sorted(name for name in entries if name not in paths)
    if missing:
        raise ValueError(f"Model {model.name!r} has no layer(s) {missing} of the LoRA weights file {path!r}.")
    uncovered = sorted(set(lora_layers(model)) - set(entries))
    if uncovered:
        raise ValueError(
            f"Model {model.name!r} has LoRA on {uncovered}, which the file {path!r} has no weights for."
        )
    for name, (rank, alpha, a, b) in entries.items():
        layer = paths[name]
        if getattr(layer, "lora_enabled", False):
            if layer.lora_rank != rank or not np.isclose(layer.lora_alpha, alpha):
                raise ValueError(
                    f"Layer {name!r} has LoRA of rank {layer.lora_rank} (alpha {layer.lora_alpha}), "
                    f"the file {path!r} rank {rank} (alpha {alpha})."
                )
        else:
            reason = _why_not(layer)
            if reason is not None:
                raise ValueError(f"Layer {name!r} of the LoRA weights file cannot take LoRA: {reason}.")
        if _lora_shapes(layer, rank) != (a.shape, b.shape):
            raise ValueError(
                f"Layer {name!r} takes LoRA weights of shapes {_lora_shapes(layer, rank)}, "
                f"the file {path!r} has {(a.shape, b.shape)}."
            )
    for name, (rank, alpha, a, b) in entries.items():
        layer = paths[name]
        if not getattr(layer, "lora_enabled", False):
            layer.enable_lora(rank, lora_alpha=alpha)
        layer.lora_kernel_a.assign(a)
        layer.lora_kernel_b.assign(b)
    return {name: entry[0] for name, entry in entries.items()}

"""Magnitude pruning for Keras 3 as a transfer method: `Prune`, `strip_pruning`,
`sparsity_report`, `compressed_size`.

TF Model Optimization's `prune_low_magnitude` only works with Keras 2 (tf-keras). Here
the masks live on the kernels themselves: each pruned kernel gets a Keras variable
`constraint` (`PruningMask`) that multiplies it by its 0/1 mask. Keras 3 optimizers apply
`variable.constraint` right after every update, inside the compiled training step, so
the pruned weights stay exactly zero after every step, also with `steps_per_execution >
1` and under XLA. A callback (`UpdateMasks`) raises the masks' sparsity on the schedule
between compiled calls; the layers, their configs and `model.weights` are untouched, so
nothing else in a run (checkpoints, the feature cache, other methods) sees a different
model. `strip_pruning` applies the masks one last time and removes the constraints: a
plain model whose zeros survive `.keras`, SavedModel and TFLite.
"""

import gzip
import io
import math
import os
import tarfile
import warnings
from typing import NamedTuple

import keras
import numpy as np

from keras_transfer.training import method as method_lib
from keras_transfer.utils import checks

SCHEDULES = ("polynomial", "constant")
# The exponent of Zhu & Gupta's schedule (TF-MOT's `PolynomialDecay(power=3)`).
POWER = 3


def _prunable_attributes(layer):
    """The names of the kernels of `layer` that pruning may zero (none for other layers)."""
    if getattr(layer, "lora_enabled", False):
        return ()  # a LoRA kernel is frozen and the adapters are its update: not pruned here
    if isinstance(layer, keras.layers.SeparableConv1D | keras.layers.SeparableConv2D):
        return ("pointwise_kernel",)
    if isinstance(layer, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D):
        return ("depthwise_kernel",)
    if isinstance(
        layer,
        keras.layers.Dense
        | keras.layers.EinsumDense
        | keras.layers.Conv1D
        | keras.layers.Conv2D
        | keras.layers.Conv3D
        | keras.layers.Conv1DTranspose
        | keras.layers.Conv2DTranspose
        | keras.layers.Conv3DTranspose,
    ):
        return ("kernel",)
    return ()


def _named_leaves(model, prefix=""):
    """`[(path, layer)]` of every leaf layer, nested models opened (`"backbone/conv1"`)."""
    if not isinstance(model, keras.Model):
        return [(prefix + model.name, model)]
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_named_leaves(layer, f"{prefix}{layer.name}/"))
        elif not isinstance(layer, keras.layers.InputLayer):
            found.append((prefix + layer.name, layer))
    return found


def prunable_weights(model, layers=None):
    """`[(name, layer, variable)]`: the kernels of the Dense and convolution layers of
    `model` (nested models opened), or of the layers named in `layers` (a leaf's name,
    `"conv1"`, or its path, `"backbone/conv1"`; a nested model's name selects its layers).

    Raises:
        ValueError: a name in `layers` matches no layer, or only layers without a kernel.
    """
    leaves = _named_leaves(model)
    if layers is not None:
        chosen = []
        for name in layers:
            matches = [
                (path, layer)
                for path, layer in leaves
                if path == name or layer.name == name or path.startswith(name + "/")
            ]
            if not matches:
                raise ValueError(
                    f"Model {model.name!r} has no layer named {name!r}. Received: layers={layers!r}"
                )
            if not any(_prunable_attributes(layer) for _, layer in matches):
                kinds = sorted({type(layer).__name__ for _, layer in matches})
                raise ValueError(
                    f"Layer {name!r} ({', '.join(kinds)}) has no kernel to prune (Dense and "
                    f"convolution layers do). Received: layers={layers!r}"
                )
            chosen.extend(m for m in matches if m not in chosen)
        leaves = chosen
    found = []
    for path, layer in leaves:
        for attribute in _prunable_attributes(layer):
            variable = getattr(layer, attribute, None)
            if isinstance(variable, keras.Variable):
                suffix = "" if attribute == "kernel" else f"/{attribute}"
                found.append((path + suffix, layer, variable))
    return found


class PruningMask(keras.constraints.Constraint):
    """The constraint that keeps a pruned kernel's zeros: `inner(w) * mask`.

    `mask` is a non-trainable `keras.Variable` of the kernel's shape (1 keeps a weight, 0
    prunes it) held here, not by the layer: it is not one of `model.weights`, not in the
    layer's config, and never saved (`strip_pruning` removes the constraint before a
    model is shipped). `inner` is the kernel's own constraint, if any, applied first.
    """

    def __init__(self, variable, inner=None):
        self.inner = inner
        self.mask = keras.Variable(
            np.ones(tuple(variable.shape), dtype=keras.backend.standardize_dtype(variable.dtype)),
            dtype=variable.dtype,
            trainable=False,
            name=f"{variable.name}_pruning_mask",
        )

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * keras.ops.cast(self.mask, w.dtype)

    def get_config(self):
        # Never serialised: the layer's config holds its own constraint, not this one.
        return {}


def scheduled_sparsity(step, *, sparsity, begin, end, schedule="polynomial"):
    """The sparsity the schedule asks for after `step` optimizer steps.

    `"polynomial"` (Zhu & Gupta 2017, TF-MOT's `PolynomialDecay`): 0 before `begin`, then
    `sparsity * (1 - (1 - (step - begin) / (end - begin)) ** 3)`, so it rises fast while the
    network has many redundant weights and slowly near the target, which it keeps from
    `end` on. `"constant"` (TF-MOT's `ConstantSparsity`): `sparsity` from `begin` on.

    Example:

    >>> from keras_transfer.compression.pruning import scheduled_sparsity
    >>> [round(scheduled_sparsity(t, sparsity=0.8, begin=0, end=10), 4) for t in (0, 5, 10, 20)]
    [0.0, 0.7, 0.8, 0.8]
    """
    if step < begin:
        return 0.0
    if schedule == "constant" or step >= end:
        return float(sparsity)
    progress = (step - begin) / (end - begin)
    return float(sparsity) * (1.0 - (1.0 - progress) ** POWER)


def _mask_for(weights, mask, sparsity):
    """A 0/1 mask pruning the `floor(sparsity * size)` smallest magnitudes; what `mask`
    already pruned stays pruned (a mask's sparsity never falls)."""
    flat = np.abs(np.asarray(weights, np.float64)).ravel()
    kept = np.asarray(mask).ravel() != 0
    count = max(int(math.floor(sparsity * flat.size + 1e-9)), int((~kept).sum()))
    flat[~kept] = -1.0  # pruned first, whatever their (zero) magnitude ties with
    new = np.ones(flat.size, dtype=np.asarray(mask).dtype)
    new[np.argsort(flat, kind="stable")[:count]] = 0
    return new.reshape(np.shape(mask))


def _apply(variable, constraint):
    variable.assign(variable.numpy() * constraint.mask.numpy())


def _steps(name, value, total):
    """A setting given as steps (int) or as a fraction of the run's `total` steps (float)."""
    if isinstance(value, float):
        if total is None:
            raise ValueError(
                f"{name}={value!r} is a fraction of the run's steps, but the run's length is "
                f"unknown (a dataset of unknown cardinality): give {name} in steps (an integer)."
            )
        return value * total
    return value


class UpdateMasks(keras.callbacks.Callback):
    """Raises the pruning masks' sparsity on the schedule during `fit` (what `Prune`
    adds to a run).

    The step count is the number of optimizer steps of this `fit` call, read from the
    batch index Keras passes: with `steps_per_execution > 1`, `on_train_batch_end`
    comes once per compiled call, so masks change between calls (every `frequency`
    steps or the next call after); inside a call the constraints keep the zeros. At the
    end of the run the masks are applied once more (`EarlyStopping` may have restored
    earlier weights).

    Args:
        targets: list of `(variable, PruningMask)`.
        sparsity, schedule, begin, end, frequency: as `Prune` takes them.
    """

    def __init__(self, targets, *, sparsity, schedule, begin, end, frequency):
        super().__init__()
        self.targets = list(targets)
        self.sparsity = sparsity
        self.schedule = schedule
        self.begin, self.end, self.frequency = begin, end, frequency

    def on_train_begin(self, logs=None):
        self._first_epoch = None
        self._done = 0  # steps of the epochs already finished
        self._last_update = None
        self._final = False
        self._step = 0

    def _resolve(self, epoch):
        steps = self.params.get("steps")
        epochs = self.params.get("epochs")
        total = steps * (epochs - epoch) if steps and epochs else None
        self._begin = _steps("begin", self.begin, total)
        self._end = _steps("end", self.end, total)
        self._every = max(1, round(_steps("frequency", self.frequency, total)))
        if self._end <= self._begin:
            raise ValueError(
                f"Pruning must end after it begins: begin={self.begin!r} is step {self._begin:g}, "
                f"end={self.end!r} is step {self._end:g} of this run."
            )
        self._total = total

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
            self._resolve(epoch)

    def on_train_batch_end(self, batch, logs=None):
        self._step = self._done + batch + 1
        if self._step < self._begin:
            return
        due = self._last_update is None or self._step - self._last_update >= self._every
        final = self._step >= self._end and not self._final
        if due or final:
            self.update(self._step)
            self._last_update = self._step
            self._final = self._final or self._step >= self._end

    def on_epoch_end(self, epoch, logs=None):
        self._done = self._step

    def update(self, step):
        """Sets every mask to the schedule's sparsity at `step` and applies it."""
        target = scheduled_sparsity(
            step, sparsity=self.sparsity, begin=self._begin, end=self._end, schedule=self.schedule
        )
        for variable, constraint in self.targets:
            constraint.mask.assign(_mask_for(variable.numpy(), constraint.mask.numpy(), target))
            _apply(variable, constraint)

    def on_train_end(self, logs=None):
        for variable, constraint in self.targets:
            _apply(variable, constraint)
        if self.targets and self._first_epoch is not None and not self._final:
            warnings.warn(
                f"Pruning did not reach its target sparsity {self.sparsity:g}: the run ended at "
                f"step {self._step}, the schedule ends at step {self._end:g} (end={self.end!r}).",
                stacklevel=2,
            )


def _check_steps(name, value, *, positive=False):
    if isinstance(value, float):
        return checks.fraction(name, value, low_open=positive)
    if positive:
        return checks.positive_int(name, value)
    try:
        return checks.non_negative_int(name, value)
    except ValueError:
        raise ValueError(
            f"{name} must be a step (an integer >= 0) or a fraction of the run's steps (a float in "
            f"[0, 1]). Received: {name}={value!r}"
        ) from None


@method_lib.register_method
class Prune(method_lib.TransferMethod):
    """Magnitude pruning during fine-tuning: the smallest weights of every Dense and
    convolution kernel are set to zero on a schedule, and stay exactly zero.

    Each kernel that trains in a run gets a 0/1 mask (a `PruningMask` constraint, applied
    by the optimizer after every update, also inside compiled multi-step calls and under
    XLA); a callback raises each kernel's sparsity to `sparsity` on the schedule by zeroing
    its smallest magnitudes (pruned weights stay pruned). Frozen kernels are never pruned:
    they would change without training, and a frozen backbone's cached features
    (`FeatureCache`) would go stale. So with `FineTune`, a head stage prunes the head and
    the stage that unfreezes the backbone prunes the kernels it trains (the small-model
    recipe trains every layer in one stage); `prepare` runs again in every stage and keeps
    the masks already reached. Biases, BatchNorm and other weights are not pruned.
    `finalize` is `strip_pruning`: the model to save is plain Keras with its zeros.

    Args:
        sparsity: float in (0, 1). Share of each pruned kernel's weights set to zero.
            Defaults to `0.8`.
        schedule: `"polynomial"` (cubic rise from 0 at `begin` to `sparsity` at `end`,
            Zhu & Gupta) or `"constant"` (`sparsity` from `begin`). Defaults to
            `"polynomial"`.
        begin: float (a fraction of the run's optimizer steps) or int (a step). When
            pruning starts. Defaults to `0.0`.
        end: float or int, as `begin`. When the target is reached; the steps after it
            recover accuracy with the masks fixed. Defaults to `0.7`.
        frequency: float (a fraction of the run's steps) or int (steps). How often the
            masks are updated between `begin` and `end`. Defaults to `0.05`.
        layers: str or list of str. Names of the layers to prune (a leaf layer,
            `"backbone/conv1"`, or a nested model, `"backbone"`). Defaults to `None`:
            every Dense and convolution kernel of the model, head included.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.compression import Prune, sparsity_report
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None)
    >>> x, y = np.random.rand(32, 28, 28, 1) * 255, np.array([0, 1] * 16)
    >>> method = Prune(sparsity=0.5)
    >>> history = keras_transfer.train(model, (x, y), epochs=2, method=method, verbose=0)
    >>> model = method.finalize(model)
    >>> [round(row.sparsity, 2) for row in sparsity_report(model).rows]
    [0.5, 0.5, 0.5, 0.5]

    Reference:
    - [Zhu & Gupta, 2017](https://arxiv.org/abs/1710.01878) (To prune, or not to prune)
    """

    name = "prune"
    summary = "magnitude pruning of Dense/conv kernels to a target sparsity (zeros kept, stripped on export)"

    def __init__(self, sparsity=0.8, schedule="polynomial", begin=0.0, end=0.7, frequency=0.05, layers=None):
        self.sparsity = checks.fraction("sparsity", sparsity, low_open=True, high_open=True)
        self.schedule = checks.one_of("schedule", schedule, SCHEDULES)
        self.begin = _check_steps("begin", begin)
        self.end = _check_steps("end", end, positive=True)
        self.frequency = _check_steps("frequency", frequency, positive=True)
        if type(self.begin) is type(self.end) and self.end <= self.begin:
            raise ValueError(f"end must come after begin. Received: begin={begin!r}, end={end!r}")
        if isinstance(layers, str):
            layers = [layers]
        if layers is not None and (
            not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(n, str) for n in layers)
        ):
            raise ValueError(
                f"layers must be None, a layer name or a list of names. Received: layers={layers!r}"
            )
        self.layers = list(layers) if layers is not None else None

    def _targets(self, model):
        """`(variable, PruningMask)` of every selected kernel that trains in this run."""
        trainable = {id(w) for w in model.trainable_weights}
        return [
            (variable, variable.constraint)
            for _, _, variable in prunable_weights(model, self.layers)
            if id(variable) in trainable and isinstance(variable.constraint, PruningMask)
        ]

    def prepare(self, model):
        trainable = {id(w) for w in model.trainable_weights}
        for _, _, variable in prunable_weights(model, self.layers):
            if id(variable) in trainable and not isinstance(variable.constraint, PruningMask):
                variable.constraint = PruningMask(variable, inner=variable.constraint)

    def callbacks(self, model):
        targets = self._targets(model)
        if not targets:
            return []
        return [
            UpdateMasks(
                targets,
                sparsity=self.sparsity,
                schedule=self.schedule,
                begin=self.begin,
                end=self.end,
                frequency=self.frequency,
            )
        ]

    def finalize(self, model):
        return strip_pruning(model)

    def get_config(self):
        config = {}
        for key, default in (("sparsity", 0.8), ("schedule", "polynomial"), ("begin", 0.0), ("end", 0.7)):
            value = getattr(self, key)
            if value != default or type(value) is not type(default):
                config[key] = value
        if self.frequency != 0.05 or not isinstance(self.frequency, float):
            config["frequency"] = self.frequency
        if self.layers is not None:
            config["layers"] = list(self.layers)
        return config


def strip_pruning(model):
    """Applies every pruning mask to its kernel once more and removes the masks: `model`
    (changed in place and returned) is then plain Keras, its pruned weights exactly zero,
    and it saves (`.keras`), exports (SavedModel, TFLite) and trains like any model. A
    model without masks is returned unchanged.

    Example:

    >>> import keras, numpy as np
    >>> from keras_transfer.compression import strip_pruning
    >>> from keras_transfer.compression.pruning import PruningMask
    >>> layer = keras.layers.Dense(2)
    >>> model = keras.Sequential([keras.Input((2,)), layer])
    >>> _ = layer.kernel.assign(np.ones((2, 2)))
    >>> layer.kernel.constraint = PruningMask(layer.kernel)
    >>> _ = layer.kernel.constraint.mask.assign(np.eye(2))
    >>> model = strip_pruning(model)
    >>> layer.kernel.numpy().tolist(), layer.kernel.constraint
    ([[1.0, 0.0], [0.0, 1.0]], None)
    """
    for variable in model.weights:
        constraint = variable.constraint
        if isinstance(constraint, PruningMask):
            _apply(variable, constraint)
            variable.constraint = constraint.inner
    return model


class LayerSparsity(NamedTuple):
    """One kernel of a `SparsityReport`."""

    name: str
    shape: tuple
    zeros: int
    size: int

    @property
    def sparsity(self):
        return self.zeros / self.size if self.size else 0.0


class SparsityReport(NamedTuple):
    """The zeros of each prunable kernel (`rows`, in layer order) and over all of them."""

    rows: list

    @property
    def zeros(self):
        return sum(row.zeros for row in self.rows)

    @property
    def size(self):
        return sum(row.size for row in self.rows)

    @property
    def sparsity(self):
        """Zeros over all the prunable kernels' weights."""
        return self.zeros / self.size if self.size else 0.0

    def __str__(self):
        total = "all prunable kernels"
        width = max([len(total), *(len(row.name) for row in self.rows)])

        def line(name, shape, zeros, size, sparsity):
            return f"{name:<{width}}  {shape:>18}  {zeros:>10}  {size:>10}  {sparsity:>8}"

        lines = [line("layer", "shape", "zeros", "size", "sparsity")]
        for row in self.rows:
            shape = "x".join(str(d) for d in row.shape)
            lines.append(line(row.name, shape, f"{row.zeros:,}", f"{row.size:,}", f"{row.sparsity:.2%}"))
        lines.append(line(total, "", f"{self.zeros:,}", f"{self.size:,}", f"{self.sparsity:.2%}"))
        return "\n".join(lines)


def sparsity_report(model, layers=None):
    """How sparse each prunable kernel of `model` is (pruned or not: the kernels of its
    Dense and convolution layers, or of `layers`, as `Prune` selects them).

    Args:
        model: `keras.Model`.
        layers: list of str. As `Prune(layers=)`. Defaults to `None` (every kernel).

    Returns:
        `SparsityReport`: `.rows` of `LayerSparsity(name, shape, zeros, size)` with
        `.sparsity`; `.sparsity` over all; `str()` is a table.

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.compression import sparsity_report
    >>> model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    >>> report = sparsity_report(model)
    >>> [row.name for row in report.rows], report.size
    (['backbone/conv1', 'backbone/conv2', 'backbone/fc1', 'predictions'], 484288)
    """
    if isinstance(layers, str):
        layers = [layers]
    rows = []
    for name, _, variable in prunable_weights(model, layers):
        values = variable.numpy()
        rows.append(LayerSparsity(name, tuple(values.shape), int(np.sum(values == 0)), int(values.size)))
    return SparsityReport(rows)


def compressed_size(path):
    """Bytes of `path` after gzip (level 9): a file's contents, or a folder's files in a
    tar archive. For a SavedModel folder (one with `variables/`, e.g. what
    `export_saved_model` writes), only the variables are counted: that is where pruning's
    zeros are (the graph is the same size dense or sparse).

    Example:

    >>> import os, tempfile
    >>> from keras_transfer.compression import compressed_size
    >>> path = os.path.join(tempfile.mkdtemp(), "zeros.bin")
    >>> with open(path, "wb") as handle:
    ...     _ = handle.write(bytes(100_000))
    >>> compressed_size(path) < 1_000
    True
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            return len(gzip.compress(handle.read(), compresslevel=9, mtime=0))
    if not os.path.isdir(path):
        raise ValueError(f"compressed_size takes a file or a folder. Received: path={path!r} (not found)")
    root = os.path.join(path, "variables") if os.path.isdir(os.path.join(path, "variables")) else path
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w") as archive:
            for folder, subfolders, names in os.walk(root):
                subfolders.sort()
                for name in sorted(names):
                    full = os.path.join(folder, name)
                    info = archive.gettarinfo(full, arcname=os.path.relpath(full, root))
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    with open(full, "rb") as handle:
                        archive.addfile(info, handle)
    return len(buffer.getvalue())

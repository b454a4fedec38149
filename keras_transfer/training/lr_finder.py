"""The learning-rate finder: an exponential ramp of the rate, the loss it gives, a suggestion.

`find_learning_rate(model, data)` trains `model` for a bounded number of steps with the
learning rate rising exponentially from `min_lr` to `max_lr` (Smith's LR range test, as
fastai's `lr_find` runs it), records the training loss of every step, smooths it with
fastai's bias-corrected moving average, stops once the smoothed loss exceeds
`diverge_factor` times its best, and suggests the rate where the smoothed loss falls
fastest (fastai's "steepest" rule). Each step is `train`'s own: the same compile
(`compile_classifier`: the toolkit's loss, label smoothing), the same trainable flags,
the same `method`, so the rates are measured on the model as it will train.

Afterwards the model is as it was, bit for bit: every variable (trainable or not,
BatchNorm statistics included), every layer's `trainable` flag, the optimizer object
and its variables (or its absence) and the compile state (loss, metrics, compiled
train function) are restored, also when the run stops early or raises.

Reference: Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017
(the LR range test); fastai `LRFinder` / `SuggestionMethod.Steep`.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_transfer import losses as losses_lib
from keras_transfer.utils import checks
from keras_transfer.utils import keras_internals
from keras_transfer.utils import output


@keras.saving.register_keras_serializable(package="keras_transfer")
class ExponentialRamp(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate rising exponentially from `min_lr` to `max_lr` over `steps` steps.

    Step `i` (from 0) gets `min_lr * (max_lr / min_lr) ** (i / (steps - 1))`; after
    `steps - 1` the rate stays at `max_lr`.

    Args:
        min_lr: float. The first step's rate.
        max_lr: float. The last step's rate.
        steps: int. Steps from `min_lr` to `max_lr` (at least 2).

    Example:

    >>> from keras_transfer.training.lr_finder import ExponentialRamp
    >>> ramp = ExponentialRamp(1e-4, 1e-2, 3)
    >>> [round(float(ramp(i)), 6) for i in range(4)]
    [0.0001, 0.001, 0.01, 0.01]
    """

    def __init__(self, min_lr, max_lr, steps):
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.steps = int(steps)

    def __call__(self, step):
        progress = keras.ops.minimum(keras.ops.cast(step, "float32") / float(self.steps - 1), 1.0)
        return self.min_lr * keras.ops.power(self.max_lr / self.min_lr, progress)

    def get_config(self):
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps}


def ramp_rates(min_lr, max_lr, steps):
    """The rates of `ExponentialRamp(min_lr, max_lr, steps)`, as a float64 array.

    Example:

    >>> from keras_transfer.training.lr_finder import ramp_rates
    >>> ramp_rates(1e-3, 1e-1, 3).round(6).tolist()
    [0.001, 0.01, 0.1]
    """
    return min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))


def smooth_losses(losses, smoothing=0.98):
    """fastai's smoothed loss: an exponential moving average, bias-corrected.

    `avg_i = smoothing * avg_{i-1} + (1 - smoothing) * loss_i` from `avg_{-1} = 0`, and
    the value is `avg_i / (1 - smoothing ** (i + 1))`, so the first value is the first
    loss and early values are not pulled towards zero.

    Example:

    >>> from keras_transfer.training.lr_finder import smooth_losses
    >>> smooth_losses([2.0, 1.0], smoothing=0.5).round(4).tolist()
    [2.0, 1.3333]
    """
    values, average = [], 0.0
    for i, loss in enumerate(losses):
        average = smoothing * average + (1 - smoothing) * float(loss)
        values.append(average / (1 - smoothing ** (i + 1)))
    return np.asarray(values, dtype=np.float64)


def steepest_index(learning_rates, smoothed, *, skip_start=None, skip_end=5):
    """fastai's "steepest" rule: the index of the most negative slope of the smoothed
    loss against `log(lr)`, ignoring the first `skip_start` (a tenth of the steps) and
    the last `skip_end` recorded steps (where the loss turns up). Returns `None` when
    fewer than 3 steps remain.

    Example:

    >>> from keras_transfer.training.lr_finder import steepest_index
    >>> steepest_index([1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.9, 1.0, 0.9], skip_start=0, skip_end=0)
    1
    """
    rates = np.log(np.asarray(learning_rates, dtype=np.float64))
    smoothed = np.asarray(smoothed, dtype=np.float64)
    count = len(smoothed)
    start = count // 10 if skip_start is None else skip_start
    end = count - skip_end
    if end - start < 3:
        start, end = 0, count
    if end - start < 2:
        return None
    slopes = np.diff(smoothed[start:end]) / np.diff(rates[start:end])
    if not np.isfinite(slopes).any():
        return None
    return start + int(np.nanargmin(np.where(np.isfinite(slopes), slopes, np.nan)))


@dataclasses.dataclass
class LRFinderResult:
    """What `find_learning_rate` measured.

    Attributes:
        learning_rates: the rate of each recorded step (float64 array).
        losses: the training loss of each step (before its update).
        smoothed_losses: `smooth_losses(losses, smoothing)`.
        suggestion: the suggested rate (`learning_rates[steepest]`), or `None`.
        steepest: index of the suggestion, or `None`.
        divergence_step: the step whose smoothed loss passed `diverge_factor` times the
            best (the run stopped there), or `None` if it ran all its steps.
        best_loss: the lowest smoothed loss.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggestion: float
    steepest: int
    divergence_step: int
    best_loss: float

    def summary(self):
        """One line: the range, where it stopped and the suggestion."""
        stop = (
            f"diverged at step {self.divergence_step} (lr {self.learning_rates[self.divergence_step]:.2g})"
            if self.divergence_step is not None
            else "no divergence"
        )
        suggestion = "none" if self.suggestion is None else f"{self.suggestion:.2g}"
        return (
            f"LR finder: {len(self.losses)} steps, lr {self.learning_rates[0]:.2g} to "
            f"{self.learning_rates[-1]:.2g}; {stop}; suggested learning rate {suggestion} "
            "(steepest descent of the smoothed loss)"
        )

    def plot(self, path, title=None):
        """Saves the loss (raw and smoothed) against the rate, log scale, with the
        suggestion marked; returns the path."""
        from keras_transfer import evaluation

        plt = evaluation.pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ax.plot(self.learning_rates, self.losses, alpha=0.3, label="loss")
        ax.plot(self.learning_rates, self.smoothed_losses, label="smoothed loss")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="C3", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set_xscale("log")
        finite = self.smoothed_losses[np.isfinite(self.smoothed_losses)]
        if len(finite):
            low = min(finite.min(), np.nanmin(self.losses)) * 0.95
            ax.set_ylim(low, min(finite.max(), 4 * self.best_loss))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(title or "learning-rate finder")
        ax.legend()
        return evaluation.save_figure(fig, path)

    def to_dict(self):
        """Plain floats and lists (for JSON)."""
        return {
            "learning_rates": [float(v) for v in self.learning_rates],
            "losses": [float(v) for v in self.losses],
            "smoothed_losses": [float(v) for v in self.smoothed_losses],
            "suggestion": self.suggestion,
            "steepest": self.steepest,
            "divergence_step": self.divergence_step,
            "best_loss": self.best_loss,
        }


class _Recorder(keras.callbacks.Callback):
    """The loss of each step (from `fit`'s running mean), and the stop at divergence."""

    def __init__(self, steps, smoothing, diverge_factor):
        super().__init__()
        self.steps, self.smoothing, self.diverge_factor = steps, smoothing, diverge_factor
        self.losses, self.means = [], []
        self.average, self.best, self.divergence_step = 0.0, math.inf, None

    def on_train_batch_end(self, batch, logs=None):
        mean = float((logs or {}).get("loss", math.nan))
        # `fit` logs the mean over the epoch's steps (full batches of one size): undo it.
        count = len(self.means)
        loss = mean if count == 0 else (count + 1) * mean - count * self.means[-1]
        self.means.append(mean)
        self.losses.append(loss)
        self.average = self.smoothing * self.average + (1 - self.smoothing) * loss
        smoothed = self.average / (1 - self.smoothing ** (count + 1))
        if not math.isfinite(smoothed) or (count > 0 and smoothed > self.diverge_factor * self.best):
            self.divergence_step = count
            self.model.stop_training = True
        self.best = min(self.best, smoothed) if math.isfinite(smoothed) else self.best
        if count + 1 >= self.steps:
            self.model.stop_training = True


def _snapshot(model):
    layers = keras_internals.flatten_layers(model)
    optimizer = getattr(model, "optimizer", None)
    return {
        "variables": [(v, np.array(v.numpy(), copy=True)) for v in model.variables],
        # A method's `prepare` may set constraints (pruning masks) or variable flags.
        "variable_flags": [(v, v.trainable, v.constraint) for v in model.variables],
        "trainable": [(layer, layer.trainable) for layer in layers],
        "attributes": [(layer, keras_internals.attribute_snapshot(layer)) for layer in layers],
        "optimizer_variables": [(v, np.array(v.numpy(), copy=True)) for v in optimizer.variables]
        if optimizer is not None
        else [],
    }


def _restore(snapshot):
    for layer, attributes in snapshot["attributes"]:
        keras_internals.restore_attributes(layer, attributes)
    for layer, trainable in snapshot["trainable"]:
        if layer.trainable != trainable:
            layer.trainable = trainable
    for variable, trainable, constraint in snapshot["variable_flags"]:
        variable.trainable = trainable
        variable.constraint = constraint
    for variable, value in snapshot["variables"] + snapshot["optimizer_variables"]:
        variable.assign(value)


def _compiled_label_smoothing(model):
    loss = getattr(model, "loss", None)
    if isinstance(loss, losses_lib.WithPenalties):
        loss = loss.loss
    return float(getattr(loss, "label_smoothing", 0.0) or 0.0)


def find_learning_rate(
    model,
    data,
    *,
    min_lr=1e-7,
    max_lr=10.0,
    steps=100,
    batch_size=32,
    smoothing=0.98,
    diverge_factor=4.0,
    label_smoothing=None,
    augment=None,
    method=None,
    seed=0,
    plot=None,
    verbose="auto",
):
    """Runs the learning-rate range test on `model` and restores it afterwards.

    Trains for at most `steps` steps through `train` (its compile, its data pipeline,
    its `method`), with the rate of step `i` at `min_lr * (max_lr / min_lr) ** (i /
    (steps - 1))` (`ExponentialRamp`) and the data repeated as needed. It stops when
    the smoothed loss exceeds `diverge_factor` times its best (or is not finite). The
    suggestion is fastai's "steepest" rule (`steepest_index`): the rate where the
    smoothed loss falls fastest against `log(lr)`, before the divergence point. Pick a
    rate with it on training (or validation) data, never on the test split.

    The model is left exactly as it was: all variables (BatchNorm statistics too),
    trainable flags, the optimizer and its variables, and the compile state, also when
    the run raises.

    Args:
        model: `keras.Model`, a classifier for integer labels.
        data: `(x, y)` arrays or a `tf.data.Dataset` of `(images, labels)` batches
            (validated as `train` validates them).
        min_lr: float > 0. First rate. Defaults to `1e-7`.
        max_lr: float > `min_lr`. Last rate. Defaults to `10.0`.
        steps: int >= 5. Steps of the ramp (the most the run takes). Defaults to `100`.
        batch_size: int. For array input. Defaults to `32`.
        smoothing: float in [0, 1). The moving average's beta (fastai's 0.98).
        diverge_factor: float > 1. Stop once the smoothed loss passes this times its
            best. Defaults to `4.0`.
        label_smoothing: float. Of the loss; `None` takes the model's compiled
            toolkit loss's (0 when not compiled). Defaults to `None`.
        augment: as `train`'s. Defaults to `None`.
        method: a `TransferMethod` (or name) as `train` takes it: the model is
            measured as that method trains it. Defaults to `None`.
        seed: int. Shuffle seed for array input. Defaults to `0`.
        plot: str. Where to save the plot (`LRFinderResult.plot`). Defaults to `None`.
        verbose: `"auto"`, 0, 1 or 2: a summary line when truthy.

    Returns:
        An `LRFinderResult`.

    Raises:
        ValueError: a bad argument (naming it and the value received), or data
            `train` refuses.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> x = np.random.rand(64, 28, 28, 1) * 255
    >>> y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)
    >>> result = keras_transfer.find_learning_rate(model, (x, y), steps=10, verbose=0)
    >>> len(result.losses) <= 10, float(result.learning_rates[0])
    (True, 1e-07)
    >>> getattr(model, "optimizer", None) is None  # restored: still not compiled
    True
    """
    from keras_transfer.training import fit

    if isinstance(min_lr, bool) or not isinstance(min_lr, (int, float)) or not min_lr > 0:
        raise ValueError(f"min_lr must be a positive float. Received: min_lr={min_lr!r}")
    if isinstance(max_lr, bool) or not isinstance(max_lr, (int, float)) or not max_lr > min_lr:
        raise ValueError(f"max_lr must be a float above min_lr={min_lr!r}. Received: max_lr={max_lr!r}")
    steps = checks.positive_int("steps", steps)
    if steps < 5:
        raise ValueError(f"steps must be at least 5. Received: steps={steps!r}")
    smoothing = checks.fraction("smoothing", smoothing, high_open=True)
    bad_factor = isinstance(diverge_factor, bool) or not isinstance(diverge_factor, (int, float))
    if bad_factor or diverge_factor <= 1:
        raise ValueError(
            f"diverge_factor must be a number above 1. Received: diverge_factor={diverge_factor!r}"
        )
    verbose = output.resolve_verbose(verbose)
    if label_smoothing is None:
        label_smoothing = _compiled_label_smoothing(model)

    snapshot = _snapshot(model)
    recorder = _Recorder(steps, smoothing, diverge_factor)
    try:
        fit.train(
            model,
            data,
            epochs=1,
            min_steps=steps,
            learning_rate=ExponentialRamp(min_lr, max_lr, steps),
            batch_size=batch_size,
            jit_compile=False,
            steps_per_execution=1,
            augment=augment,
            feature_cache=False,  # the full step, with equal batches (see `_Recorder`)
            seed=seed,
            verbose=0,
            callbacks=[recorder],
            label_smoothing=label_smoothing,
            recalibrate_batchnorm=False,
            method=method,
        )
    finally:
        _restore(snapshot)

    losses = np.asarray(recorder.losses, dtype=np.float64)
    if len(losses) == 0:
        raise ValueError("The learning-rate finder ran no step: the data gave no batch.")
    rates = ramp_rates(float(min_lr), float(max_lr), steps)[: len(losses)]
    smoothed = smooth_losses(losses, smoothing)
    stop = recorder.divergence_step
    # Before the divergence point: the steps up to (not including) the divergent one.
    usable = len(losses) if stop is None else stop
    steepest = steepest_index(rates[:usable], smoothed[:usable])
    finite = smoothed[np.isfinite(smoothed)]
    result = LRFinderResult(
        learning_rates=rates,
        losses=losses,
        smoothed_losses=smoothed,
        suggestion=None if steepest is None else float(rates[steepest]),
        steepest=steepest,
        divergence_step=stop,
        best_loss=float(finite.min()) if len(finite) else math.nan,
    )
    if plot is not None:
        result.plot(plot)
    if verbose:
        print(result.summary() + (f"; plot {plot}" if plot else ""))
    return result

"""Discriminative learning rates (ULMFiT): each lower block of the backbone at a smaller
rate, through Keras's `MultiOptimizer` and `OptimizerMap`."""

import collections
import re

import keras

from keras_transfer.layerwise import groups as groups_lib
from keras_transfer.training import method as method_lib
from keras_transfer.utils import checks


@keras.saving.register_keras_serializable(package="keras_transfer")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule times a constant factor (the shape of the schedule kept).

    Args:
        schedule: `keras.optimizers.schedules.LearningRateSchedule`.
        factor: float. Multiplies every rate of `schedule`.

    Example:

    >>> import keras
    >>> from keras_transfer.layerwise import ScaledSchedule
    >>> cosine = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=10)
    >>> scaled = ScaledSchedule(cosine, 0.5)
    >>> [round(float(scaled(step)) / float(cosine(step)), 6) for step in (0, 5, 9)]
    [0.5, 0.5, 0.5]
    """

    def __init__(self, schedule, factor):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(f"schedule must be a LearningRateSchedule. Received: schedule={schedule!r}")
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "factor": self.factor}


def scale_learning_rate(learning_rate, factor):
    """`learning_rate` (a float or a schedule) times `factor`; a schedule stays a
    schedule (`ScaledSchedule`)."""
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return learning_rate if factor == 1 else ScaledSchedule(learning_rate, factor)
    return float(learning_rate) * factor


@keras.saving.register_keras_serializable(package="keras_transfer")
class LayerwiseOptimizer(keras.optimizers.MultiOptimizer):
    """`keras.optimizers.MultiOptimizer` that also takes gradients for a subset of the
    variables it was built with, and keeps every inner optimizer's step count equal to
    its own.

    Keras's `MultiOptimizer` wants one gradient for each variable it was built over; a
    run that unfreezes layers as it goes (`GradualUnfreezing`) builds the optimizer over
    everything it will unfreeze and then trains a growing subset. Inner optimizers whose
    variables are all frozen in a step still count the step, so a learning-rate schedule
    (cosine decay) runs on the same clock in every group.

    Args:
        optimizer_map: `keras.optimizers.OptimizerMap` (or a callable: variable ->
            optimizer, which does not serialise).
        loss_scale_factor: float or `None`. As `MultiOptimizer`'s.
        name: str. The optimizer's name.
    """

    def __init__(self, optimizer_map, loss_scale_factor=None, name=None):
        super().__init__(optimizer_map, loss_scale_factor=loss_scale_factor, name=name)
        self.optimizer_map = optimizer_map

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            return super().apply(grads, trainable_variables)
        grads, variables = list(grads), list(trainable_variables)
        if not grads:
            return None
        if not self.built:
            self.build(variables)
            self.built = True
        routed = {id(opt): ([], []) for opt in self.optimizers}
        for grad, variable in zip(grads, variables):
            opt = self.optimizer_map(variable)
            routed[id(opt)][0].append(grad)
            routed[id(opt)][1].append(variable)
        for opt in self.optimizers:
            sub_grads, sub_variables = routed[id(opt)]
            if sub_variables:
                opt.apply(sub_grads, sub_variables)
            elif opt.built:
                opt.iterations.assign_add(1)
        self.iterations.assign_add(1)
        return None


def _merge(groups, count):
    """`groups` merged into `count` runs of consecutive groups, the upper runs one
    group larger when they do not divide evenly."""
    if count is None or count >= len(groups):
        return [list(group.layers) for group in groups]
    size, extra = divmod(len(groups), count)
    runs, start = [], 0
    for index in range(count):
        length = size + (1 if index >= count - extra else 0)
        runs.append([layer for group in groups[start : start + length] for layer in group.layers])
        start += length
    return runs


@method_lib.register_method
class DiscriminativeLR(method_lib.TransferMethod):
    """Each block of the backbone trains at its own learning rate: the new head at the
    run's rate, the backbone's top block at that rate divided by `decay`, the next one
    down divided by `decay` again, and so on (ULMFiT's discriminative fine-tuning).

    The method gives `train` its optimizer (the `optimizer` hook): a
    `LayerwiseOptimizer` (Keras's `MultiOptimizer`) whose `OptimizerMap` sends the
    variables of each block to an Adam at the block's rate. When the run's rate is a
    schedule (`cosine=True`, as in `FineTune`'s recipes) each block gets the same
    schedule scaled by its factor (`ScaledSchedule`). It changes no freezing: what
    trains is what the model (or `FineTune`'s stage) has trainable; compose it with
    `partial` or `gradual_unfreezing` (ULMFiT) to choose that.

    Args:
        decay: float. The ratio of a block's rate to the block below it's, > 1 (1 is
            one rate for all). Defaults to `2.6` (ULMFiT's).
        groups: int or `None`. Merge the backbone's blocks (`layer_groups`) into this
            many runs of consecutive blocks, each one rate: a deep backbone's bottom
            would otherwise get `decay ** depth` times less than the head. `None`: one
            rate per block. Defaults to `None`.
        backbone: str. Name of the backbone layer. Defaults to `"backbone"`.

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.layerwise import DiscriminativeLR
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None)
    >>> optimizer = DiscriminativeLR(decay=2.0).optimizer(model, 1e-3)
    >>> optimizer.build(model.trainable_variables)
    >>> {v.path: round(float(optimizer.optimizer_map(v).learning_rate), 7)
    ...  for v in model.trainable_variables[::2]}  # doctest: +NORMALIZE_WHITESPACE
    {'conv1/kernel': 0.000125, 'conv2/kernel': 0.00025, 'fc1/kernel': 0.0005,
     'predictions/kernel': 0.001}

    Reference:
    - [Howard and Ruder, 2018](https://arxiv.org/abs/1801.06146) (ULMFiT: Universal
      Language Model Fine-tuning for Text Classification)
    """

    name = "discriminative_lr"
    summary = "each lower block of the backbone at a smaller learning rate (ULMFiT)"

    def __init__(self, decay=2.6, groups=None, backbone="backbone"):
        valid = isinstance(decay, (int, float)) and not isinstance(decay, bool) and decay >= 1
        if not valid:
            raise ValueError(f"decay must be a number >= 1. Received: decay={decay!r}")
        self.decay = float(decay)
        self.groups = None if groups is None else checks.positive_int("groups", groups)
        self.backbone = backbone

    def rates(self, model, learning_rate=1.0):
        """`[(layers, rate)]`, top block first: the backbone's blocks (merged into
        `groups` runs) with their rates for the run's `learning_rate`; the head's rate is
        `learning_rate` itself."""
        body = groups_lib.get_backbone(model, self.backbone)
        runs = _merge(groups_lib.layer_groups(body), self.groups)
        return [
            (layers, scale_learning_rate(learning_rate, self.decay**-depth))
            for depth, layers in enumerate(reversed(runs), start=1)
        ]

    def optimizer(self, model, learning_rate):
        optimizer_map = keras.optimizers.OptimizerMap(keras.optimizers.Adam(learning_rate))
        mapped = set()
        for layers, rate in self.rates(model, learning_rate):
            paths = [weight.path for layer in layers for weight in layer.weights]
            if paths:
                mapped.update(paths)
                optimizer_map["|".join(re.escape(path) for path in paths)] = keras.optimizers.Adam(rate)
        counts = collections.Counter(weight.path for weight in model.weights)
        clashes = sorted(path for path in mapped if counts[path] > 1)
        if clashes:
            raise ValueError(
                "Weights of different layers share a path, so the optimizer cannot tell them "
                f"apart; rename the layers. Received: paths {clashes}"
            )
        return LayerwiseOptimizer(optimizer_map, name="discriminative_adam")

    def get_config(self):
        config = {}
        if self.decay != 2.6:
            config["decay"] = self.decay
        if self.groups is not None:
            config["groups"] = self.groups
        if self.backbone != "backbone":
            config["backbone"] = self.backbone
        return config

"""Gradual unfreezing (ULMFiT): the top block first, one more block every few epochs."""

import keras

from keras_transfer.layerwise import groups as groups_lib
from keras_transfer.training import method as method_lib
from keras_transfer.utils import checks


class UnfreezeSchedule(keras.callbacks.Callback):
    """Unfreezes a backbone's blocks during `fit`, from the top: the first epoch trains
    the top block (and the head), each `every` epochs one more block joins.

    Two Keras facts make this work. An optimizer only updates the variables it was built
    with, so it is built at the start of `fit` over every variable the schedule will
    ever unfreeze. And the train step is traced over the variables trainable at trace
    time, so after each unfreezing the train function is made again (and traced anew,
    whatever `steps_per_execution` is).

    The schedule counts epochs from the first epoch this `fit` runs (a stage of
    `FineTune` starts its own schedule). The model must be the one `fit` trains (not a
    cached-feature head: `GradualUnfreezing` trains a block from the first epoch, so the
    feature cache stays off).

    Args:
        backbone_model: the backbone layer (a nested `keras.Model`) of the fitted model.
        groups: list of `LayerGroup` (`layer_groups(backbone_model)`), bottom to top.
        every: int. Epochs between two unfreezings. Defaults to `1`.
        freeze_batchnorm: bool. Keep BatchNorm frozen in unfrozen blocks. Defaults to
            `True`.

    Attributes:
        unfrozen_at: dict. Block name -> the epoch it started training, this run.
    """

    def __init__(self, backbone_model, groups, every=1, freeze_batchnorm=True):
        super().__init__()
        self.backbone_model = backbone_model
        self.groups = list(groups)
        self.every = checks.positive_int("every", every)
        self.freeze_batchnorm = freeze_batchnorm
        self.unfrozen_at = {}
        self._start = None
        self._count = 0

    def blocks_at(self, epoch):
        """How many blocks train `epoch` epochs into the run (0-based)."""
        return min(len(self.groups), 1 + epoch // self.every)

    def _train_top(self, count):
        groups_lib.train_top_groups(
            self.backbone_model, self.groups, count, freeze_batchnorm=self.freeze_batchnorm
        )

    def on_train_begin(self, logs=None):
        self._start, self._count, self.unfrozen_at = None, 0, {}
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            self._train_top(len(self.groups))  # everything the schedule will unfreeze
            everything = list(self.model.trainable_variables)
            self._train_top(1)
            optimizer.build(everything)

    def on_epoch_begin(self, epoch, logs=None):
        if self._start is None:
            self._start = epoch
        count = self.blocks_at(epoch - self._start)
        if count == self._count:
            return
        self._train_top(count)
        for group in self.groups[len(self.groups) - count : len(self.groups) - self._count]:
            self.unfrozen_at[group.name] = epoch
        self._count = count
        self.model.make_train_function(force=True)
        if self.params.get("verbose") and epoch > self._start:
            top = self.groups[len(self.groups) - count]
            print(
                f"Gradual unfreezing: from epoch {epoch + 1}, {count} of {len(self.groups)} "
                f"blocks train (+{top.name})."
            )


@method_lib.register_method
class GradualUnfreezing(method_lib.TransferMethod):
    """Unfreezes the backbone block by block during training: the first epoch trains the
    new head and the backbone's top block, and every `every` epochs the next block down
    joins, until the whole backbone trains (ULMFiT's gradual unfreezing).

    A block is bit-identical until its epoch comes and trains from then on. The blocks
    are `layer_groups(backbone)`. `prepare` freezes all but the top block; the
    `UnfreezeSchedule` callback does the rest, building the optimizer over every block
    first. Composed with `discriminative_lr` it is ULMFiT's recipe (each block also at
    its own rate). Composed with `FineTune` each stage runs its own schedule.

    Args:
        every: int. Epochs between two unfreezings. Defaults to `1`.
        backbone: str. Name of the backbone layer. Defaults to `"backbone"`.
        freeze_batchnorm: bool. Keep BatchNorm layers frozen. Defaults to `True`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None)
    >>> x, y = np.random.rand(16, 28, 28, 1) * 255, np.array([0, 1] * 8)
    >>> conv1 = model.get_layer("backbone").get_layer("conv1").kernel.numpy()
    >>> history = keras_transfer.train(model, (x, y), epochs=2, method="gradual_unfreezing", verbose=0)
    >>> [layer.name for layer in model.get_layer("backbone").layers if layer.trainable_weights]
    ['conv2', 'fc1']
    >>> bool((model.get_layer("backbone").get_layer("conv1").kernel.numpy() == conv1).all())
    True

    Reference:
    - [Howard and Ruder, 2018](https://arxiv.org/abs/1801.06146) (ULMFiT: Universal
      Language Model Fine-tuning for Text Classification)
    """

    name = "gradual_unfreezing"
    summary = "the backbone unfrozen block by block from the top, one more every N epochs (ULMFiT)"

    def __init__(self, every=1, backbone="backbone", freeze_batchnorm=True):
        self.every = checks.positive_int("every", every)
        if not isinstance(freeze_batchnorm, bool):
            raise ValueError(
                f"freeze_batchnorm must be True or False. Received: freeze_batchnorm={freeze_batchnorm!r}"
            )
        self.backbone = backbone
        self.freeze_batchnorm = freeze_batchnorm

    def _groups(self, model):
        body = groups_lib.get_backbone(model, self.backbone)
        return body, groups_lib.layer_groups(body)

    def prepare(self, model):
        body, groups = self._groups(model)
        groups_lib.train_top_groups(body, groups, 1, freeze_batchnorm=self.freeze_batchnorm)

    def callbacks(self, model):
        body, groups = self._groups(model)
        return [UnfreezeSchedule(body, groups, self.every, self.freeze_batchnorm)]

    def get_config(self):
        config = {}
        if self.every != 1:
            config["every"] = self.every
        if self.backbone != "backbone":
            config["backbone"] = self.backbone
        if not self.freeze_batchnorm:
            config["freeze_batchnorm"] = False
        return config

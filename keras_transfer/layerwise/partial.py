"""Partial fine-tuning: the top blocks of the backbone and the head train, the rest stays."""

from keras_transfer.layerwise import groups as groups_lib
from keras_transfer.training import method as method_lib
from keras_transfer.utils import checks


@method_lib.register_method
class PartialFineTune(method_lib.TransferMethod):
    """Trains the top `blocks` blocks of the backbone and the new head; every block below
    stays bit-identical.

    The blocks are `layer_groups(backbone)`: a `keras.applications` model's own blocks
    (`conv5_block3`, `block_16`, `block7a`, ...), otherwise one per layer with weights.
    BatchNorm stays frozen (inference mode) by default, as in `FineTune`'s stage 2. The
    freezing is set in `prepare`, so composed with `FineTune` (the default of
    `train_from_folder` and the CLI) it replaces the `unfreeze_fraction` of every stage.

    Args:
        blocks: int. How many blocks, from the top, train. Defaults to `1`.
        backbone: str. Name of the backbone layer. Defaults to `"backbone"`.
        freeze_batchnorm: bool. Keep BatchNorm layers frozen. Defaults to `True`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None)
    >>> x, y = np.random.rand(16, 28, 28, 1) * 255, np.array([0, 1] * 8)
    >>> conv2 = model.get_layer("backbone").get_layer("conv2").kernel.numpy()
    >>> history = keras_transfer.train(model, (x, y), epochs=1, method="partial:blocks=1", verbose=0)
    >>> [layer.name for layer in model.get_layer("backbone").layers if layer.trainable_weights]
    ['fc1']
    >>> bool((model.get_layer("backbone").get_layer("conv2").kernel.numpy() == conv2).all())
    True

    Reference:
    - [Yosinski et al., 2014](https://arxiv.org/abs/1411.1792) (How transferable are
      features in deep neural networks?)
    """

    name = "partial"
    summary = "the top N blocks of the backbone and the new head only"

    def __init__(self, blocks=1, backbone="backbone", freeze_batchnorm=True):
        self.blocks = checks.positive_int("blocks", blocks)
        if not isinstance(freeze_batchnorm, bool):
            raise ValueError(
                f"freeze_batchnorm must be True or False. Received: freeze_batchnorm={freeze_batchnorm!r}"
            )
        self.backbone = backbone
        self.freeze_batchnorm = freeze_batchnorm

    def prepare(self, model):
        body = groups_lib.get_backbone(model, self.backbone)
        groups = groups_lib.layer_groups(body)
        if self.blocks > len(groups):
            raise ValueError(
                f"blocks must be at most the backbone's {len(groups)} blocks "
                f"({', '.join(g.name for g in groups)}). Received: blocks={self.blocks}"
            )
        groups_lib.train_top_groups(body, groups, self.blocks, freeze_batchnorm=self.freeze_batchnorm)

    def get_config(self):
        config = {}
        if self.blocks != 1:
            config["blocks"] = self.blocks
        if self.backbone != "backbone":
            config["backbone"] = self.backbone
        if not self.freeze_batchnorm:
            config["freeze_batchnorm"] = False
        return config

"""Layer-wise transfer: partial fine-tuning, discriminative learning rates and gradual
unfreezing, over a backbone's blocks (`layer_groups`)."""

from keras_transfer.layerwise.discriminative_lr import DiscriminativeLR
from keras_transfer.layerwise.discriminative_lr import LayerwiseOptimizer
from keras_transfer.layerwise.discriminative_lr import ScaledSchedule
from keras_transfer.layerwise.gradual_unfreezing import GradualUnfreezing
from keras_transfer.layerwise.gradual_unfreezing import UnfreezeSchedule
from keras_transfer.layerwise.groups import LayerGroup
from keras_transfer.layerwise.groups import layer_groups
from keras_transfer.layerwise.partial import PartialFineTune

"""Transfer that keeps the source task: methods that limit forgetting."""

from keras_transfer.forgetting.heads import SourceHeadTrainer
from keras_transfer.forgetting.heads import copy_head
from keras_transfer.forgetting.heads import with_source_head
from keras_transfer.forgetting.lwf import LwF
from keras_transfer.forgetting.lwf import SoftTargetLoss
from keras_transfer.forgetting.lwf import soft_targets
from keras_transfer.forgetting.replay import Replay
from keras_transfer.forgetting.replay import mix_buffer
from keras_transfer.forgetting.replay import replay_buffer

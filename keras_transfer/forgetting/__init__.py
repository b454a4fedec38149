"""Forgetting control: transfer that keeps the source task working.

Regularisers toward the source (`L2SP`, `EWC`, with `fisher_information`), methods that
keep a trained copy of the source head beside the new one (`LwF`, `Replay` with its
`replay_buffer`), the pairing of a target's weights to the source's they came from
(`source_anchors`), and the retention measure (`source_task_model`,
`measure_retention`).
"""

from keras_transfer.forgetting.anchors import Anchor
from keras_transfer.forgetting.anchors import Anchors
from keras_transfer.forgetting.anchors import source_anchors
from keras_transfer.forgetting.ewc import EWC
from keras_transfer.forgetting.ewc import fisher_information
from keras_transfer.forgetting.ewc import load_fisher
from keras_transfer.forgetting.ewc import save_fisher
from keras_transfer.forgetting.heads import SourceHeadTrainer
from keras_transfer.forgetting.heads import copy_head
from keras_transfer.forgetting.heads import with_source_head
from keras_transfer.forgetting.l2_sp import L2SP
from keras_transfer.forgetting.lwf import LwF
from keras_transfer.forgetting.lwf import SoftTargetLoss
from keras_transfer.forgetting.lwf import soft_targets
from keras_transfer.forgetting.replay import Replay
from keras_transfer.forgetting.replay import mix_buffer
from keras_transfer.forgetting.replay import replay_buffer
from keras_transfer.forgetting.retention import Retention
from keras_transfer.forgetting.retention import measure_retention
from keras_transfer.forgetting.retention import source_task_model

"""Training: `train` (the fast exact path: `fit`), two-stage `fine_tune` and its recipes
(`fine_tuning`), BatchNorm re-estimation (`batchnorm`), the feature cache (`feature_cache`), `tf.distribute`
(`distributed`), in-memory arrays (`in_memory`), and
`TransferMethod` (`method`), the extension point every transfer method plugs into."""

from keras_transfer.training.batchnorm import BatchNormRecalibration
from keras_transfer.training.batchnorm import ChanceLevelWarning
from keras_transfer.training.batchnorm import RecalibrateBatchNorm
from keras_transfer.training.batchnorm import batchnorm_layers
from keras_transfer.training.batchnorm import batchnorm_run_is_short
from keras_transfer.training.batchnorm import recalibrate_batchnorm
from keras_transfer.training.distributed import ChiefBackupAndRestore
from keras_transfer.training.distributed import fit_multi_worker
from keras_transfer.training.distributed import resolve_strategy
from keras_transfer.training.feature_cache import FeatureCache
from keras_transfer.training.fine_tuning import RECIPES
from keras_transfer.training.fine_tuning import FineTune
from keras_transfer.training.fine_tuning import Recipe
from keras_transfer.training.fine_tuning import TwoStageHistory
from keras_transfer.training.fine_tuning import backbone_kind
from keras_transfer.training.fine_tuning import fine_tune
from keras_transfer.training.fine_tuning import recipe_for
from keras_transfer.training.fine_tuning import resolve_recipe
from keras_transfer.training.fit import as_dataset
from keras_transfer.training.fit import compile_classifier
from keras_transfer.training.fit import run_length
from keras_transfer.training.fit import train
from keras_transfer.training.fit import training_callbacks
from keras_transfer.training.fused_adam import fuse_adam
from keras_transfer.training.in_memory import ArrayFeed
from keras_transfer.training.in_memory import fit_in_memory
from keras_transfer.training.lr_finder import ExponentialRamp
from keras_transfer.training.lr_finder import LRFinderResult
from keras_transfer.training.lr_finder import find_learning_rate
from keras_transfer.training.method import Compose
from keras_transfer.training.method import FitContext
from keras_transfer.training.method import FitSetup
from keras_transfer.training.method import TransferMethod
from keras_transfer.training.method import get_method
from keras_transfer.training.method import list_methods
from keras_transfer.training.method import method_config
from keras_transfer.training.method import register_method
from keras_transfer.utils.output import default_verbose

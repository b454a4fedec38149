"""keras_transfer: transfer learning for Keras 3 / TensorFlow.

Build a classifier on a pretrained backbone (keras.applications, a TF Hub module or your
own model), copy weights from a source model, freeze and fine-tune, feed it with tf.data
(arrays or image folders), evaluate it and export it for TF Serving and TFLite.

Example:

>>> import keras_transfer
>>> model = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
>>> model.get_layer("predictions").units
5
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

if "tensorflow" not in _sys.modules:
    # Hide TensorFlow's later C++ INFO notices (CPU features); warnings and errors stay.
    # (TF 2.21 prints its first lines, oneDNN and CUDA, before reading this.)
    # A value the user set wins.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from keras_transfer import data
from keras_transfer import image_folder
from keras_transfer import images
from keras_transfer import workflows
from keras_transfer.backbones import BackboneSpec
from keras_transfer.backbones import build_backbone
from keras_transfer.backbones import get_backbone_spec
from keras_transfer.backbones import list_backbones
from keras_transfer.backbones import register_backbone
from keras_transfer.builders import build_classifier
from keras_transfer.errors import WeightsUnavailableError
from keras_transfer.evaluation import Evaluation
from keras_transfer.evaluation import evaluate_classifier
from keras_transfer.evaluation import plot_confusion_matrix
from keras_transfer.evaluation import plot_history
from keras_transfer.export import export_saved_model
from keras_transfer.export import read_labels
from keras_transfer.feature_cache import CachePlan
from keras_transfer.feature_cache import FeatureSplit
from keras_transfer.feature_cache import compute_features
from keras_transfer.feature_cache import plan_feature_cache
from keras_transfer.feature_cache import split_frozen_features
from keras_transfer.freezing import ParameterCount
from keras_transfer.freezing import count_parameters
from keras_transfer.freezing import freeze
from keras_transfer.freezing import unfreeze
from keras_transfer.hub import HubLayer
from keras_transfer.image_folder import image_augmentation
from keras_transfer.image_folder import image_folder_datasets
from keras_transfer.image_folder import load_image_folder
from keras_transfer.image_folder import scan_image_folder
from keras_transfer.losses import SparseCategoricalCrossentropy
from keras_transfer.inference import InferenceModel
from keras_transfer.inference import fold_batch_norm
from keras_transfer.inference import optimize_for_inference
from keras_transfer.performance import auto_steps_per_execution
from keras_transfer.performance import bf16_supported
from keras_transfer.performance import default_jit_compile
from keras_transfer.performance import get_precision
from keras_transfer.performance import has_amx
from keras_transfer.performance import has_gpu
from keras_transfer.performance import model_flops
from keras_transfer.performance import set_precision
from keras_transfer.preprocessing import BackbonePreprocessing
from keras_transfer.tflite import TFLiteClassifier
from keras_transfer.tflite import evaluate_tflite
from keras_transfer.tflite import export_tflite
from keras_transfer.training import TwoStageHistory
from keras_transfer.training import compile_classifier
from keras_transfer.training import fine_tune
from keras_transfer.training import recalibrate_batchnorm
from keras_transfer.training import train
from keras_transfer.training import training_callbacks
from keras_transfer.weight_transfer import TransferReport
from keras_transfer.weight_transfer import transfer_weights
from keras_transfer.weight_transfer import weighted_layers
from keras_transfer.workflows import evaluate_model
from keras_transfer.workflows import export_model
from keras_transfer.workflows import predict_files
from keras_transfer.workflows import train_from_folder

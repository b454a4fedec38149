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
import platform as _platform
import sys as _sys

# What the user set, if anything (`keras-transfer` quiets TensorFlow further when unset).
_USER_TF_CPP_MIN_LOG_LEVEL = _os.environ.get("TF_CPP_MIN_LOG_LEVEL")

# What the user set for oneDNN, if anything (a value the user set always wins).
_USER_TF_ENABLE_ONEDNN_OPTS = _os.environ.get("TF_ENABLE_ONEDNN_OPTS")
# Whether this import turned TensorFlow's oneDNN kernels on (`performance.onednn_choice`).
_ENABLED_ONEDNN = False

if "tensorflow" not in _sys.modules:
    # Hide TensorFlow's later C++ INFO notices (CPU features); warnings and errors stay.
    # (TF 2.21 prints its first lines, oneDNN and CUDA, before reading this.)
    # A value the user set wins.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # oneDNN on x86: TensorFlow turns its oneDNN kernels on by itself only on CPUs with
    # AVX512-VNNI / AVX512-BF16 / AVX-VNNI / AMX; on AVX2-only CPUs it leaves them off,
    # and its own (Eigen) kernels are built for AVX only. oneDNN picks AVX2/FMA code
    # there: measured faster for convolutions, equal for small Dense models, results
    # equal within float round-off (benchmarks/README.md, "oneDNN on AVX2 CPUs").
    if _USER_TF_ENABLE_ONEDNN_OPTS is None and _platform.machine().lower() in ("x86_64", "amd64"):
        _os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
        _ENABLED_ONEDNN = True

import importlib as _importlib  # noqa: E402 (after the log-level setting above)

from keras_transfer.utils import compat as _compat  # noqa: E402

_compat.install()  # keras_transfer.hub, .tflite, ... : modules that moved keep their paths

# Every public name -> the submodule that defines it (or the submodule itself). Nothing
# is imported until first use (PEP 562), so `import keras_transfer` and the
# `keras-transfer --help` command stay fast and free of TensorFlow.
_EXPORTS = {
    # submodules
    "backbones": "keras_transfer.backbones",
    "builders": "keras_transfer.builders",
    "compression": "keras_transfer.compression",
    "data": "keras_transfer.data",
    "distillation": "keras_transfer.distillation",
    "errors": "keras_transfer.utils.errors",
    "evaluation": "keras_transfer.evaluation",
    "export": "keras_transfer.export",
    "feature_cache": "keras_transfer.training.feature_cache",
    "forgetting": "keras_transfer.forgetting",
    "freezing": "keras_transfer.freezing",
    "hub": "keras_transfer.backbones.hub",
    "image_folder": "keras_transfer.data.image_folder",
    "images": "keras_transfer.data.images",
    "inference": "keras_transfer.inference",
    "layerwise": "keras_transfer.layerwise",
    "losses": "keras_transfer.losses",
    "parameter_efficient": "keras_transfer.parameter_efficient",
    "performance": "keras_transfer.performance",
    "preprocessing": "keras_transfer.backbones.preprocessing",
    "tflite": "keras_transfer.export.tflite",
    "training": "keras_transfer.training",
    "saving": "keras_transfer.saving",
    "weight_transfer": "keras_transfer.weight_transfer",
    "workflows": "keras_transfer.workflows",
    # functions and classes
    "BackboneSpec": "keras_transfer.backbones",
    "build_backbone": "keras_transfer.backbones",
    "get_backbone_spec": "keras_transfer.backbones",
    "list_backbones": "keras_transfer.backbones",
    "register_backbone": "keras_transfer.backbones",
    "build_classifier": "keras_transfer.builders",
    "WeightsUnavailableError": "keras_transfer.utils.errors",
    "TrainingDiverged": "keras_transfer.utils.errors",
    "PrescaledPixelsWarning": "keras_transfer.data.validation",
    "Evaluation": "keras_transfer.evaluation",
    "evaluate_classifier": "keras_transfer.evaluation",
    "plot_confusion_matrix": "keras_transfer.evaluation",
    "plot_history": "keras_transfer.evaluation",
    "export_saved_model": "keras_transfer.export",
    "read_labels": "keras_transfer.export",
    "CachePlan": "keras_transfer.training.feature_cache",
    "FeatureSplit": "keras_transfer.training.feature_cache",
    "compute_features": "keras_transfer.training.feature_cache",
    "plan_feature_cache": "keras_transfer.training.feature_cache",
    "split_frozen_features": "keras_transfer.training.feature_cache",
    "ParameterCount": "keras_transfer.freezing",
    "count_parameters": "keras_transfer.freezing",
    "freeze": "keras_transfer.freezing",
    "unfreeze": "keras_transfer.freezing",
    "HubLayer": "keras_transfer.backbones.hub",
    "image_augmentation": "keras_transfer.data.augmentation",
    "image_folder_datasets": "keras_transfer.data.image_folder",
    "load_image_folder": "keras_transfer.data.image_folder",
    "scan_image_folder": "keras_transfer.data.image_folder",
    "SparseCategoricalCrossentropy": "keras_transfer.losses",
    "InferenceModel": "keras_transfer.inference",
    "fold_batch_norm": "keras_transfer.inference",
    "optimize_for_inference": "keras_transfer.inference",
    "auto_steps_per_execution": "keras_transfer.performance",
    "bf16_supported": "keras_transfer.performance",
    "default_jit_compile": "keras_transfer.performance",
    "in_memory_loop_xla": "keras_transfer.performance",
    "get_precision": "keras_transfer.performance",
    "has_amx": "keras_transfer.performance",
    "has_gpu": "keras_transfer.performance",
    "model_flops": "keras_transfer.performance",
    "set_precision": "keras_transfer.performance",
    "BackbonePreprocessing": "keras_transfer.backbones.preprocessing",
    "TFLiteClassifier": "keras_transfer.export.tflite",
    "evaluate_tflite": "keras_transfer.export.tflite",
    "export_tflite": "keras_transfer.export.tflite",
    "BiasOnly": "keras_transfer.parameter_efficient",
    "Distill": "keras_transfer.distillation",
    "Prune": "keras_transfer.compression",
    "compressed_size": "keras_transfer.compression",
    "sparsity_report": "keras_transfer.compression",
    "strip_pruning": "keras_transfer.compression",
    "LoRA": "keras_transfer.parameter_efficient",
    "load_lora_weights": "keras_transfer.parameter_efficient",
    "save_lora_weights": "keras_transfer.parameter_efficient",
    "Adapter": "keras_transfer.parameter_efficient",
    "Adapters": "keras_transfer.parameter_efficient",
    "insert_adapters": "keras_transfer.parameter_efficient",
    "DiscriminativeLR": "keras_transfer.layerwise",
    "GradualUnfreezing": "keras_transfer.layerwise",
    "PartialFineTune": "keras_transfer.layerwise",
    "layer_groups": "keras_transfer.layerwise",
    "FeatureCache": "keras_transfer.training",
    "FineTune": "keras_transfer.training",
    "TransferMethod": "keras_transfer.training",
    "get_method": "keras_transfer.training",
    "list_methods": "keras_transfer.training",
    "register_method": "keras_transfer.training",
    "RECIPES": "keras_transfer.training",
    "Recipe": "keras_transfer.training",
    "TwoStageHistory": "keras_transfer.training",
    "compile_classifier": "keras_transfer.training",
    "recalibrate_batchnorm": "keras_transfer.training",
    "fine_tune": "keras_transfer.training",
    "resolve_strategy": "keras_transfer.training",
    "recipe_for": "keras_transfer.training",
    "train": "keras_transfer.training",
    "training_callbacks": "keras_transfer.training",
    "load_model": "keras_transfer.saving",
    "TransferReport": "keras_transfer.weight_transfer",
    "transfer_weights": "keras_transfer.weight_transfer",
    "weighted_layers": "keras_transfer.weight_transfer",
    "evaluate_model": "keras_transfer.workflows",
    "export_model": "keras_transfer.workflows",
    "predict_files": "keras_transfer.workflows",
    "train_from_folder": "keras_transfer.workflows",
    "LwF": "keras_transfer.forgetting",
    "Replay": "keras_transfer.forgetting",
    "replay_buffer": "keras_transfer.forgetting",
    "L2SP": "keras_transfer.forgetting",
    "EWC": "keras_transfer.forgetting",
    "fisher_information": "keras_transfer.forgetting",
    "measure_retention": "keras_transfer.forgetting",
    "source_task_model": "keras_transfer.forgetting",
    "pair_layers": "keras_transfer.weight_transfer",
    "adaptation": "keras_transfer.adaptation",
    "CORAL": "keras_transfer.adaptation",
    "DANN": "keras_transfer.adaptation",
    "GradientReversal": "keras_transfer.adaptation",
    "coral_loss": "keras_transfer.adaptation",
    "LRFinderResult": "keras_transfer.training",
    "find_learning_rate": "keras_transfer.training",
    "find_learning_rate_from_folder": "keras_transfer.workflows",
    "LearningCurves": "keras_transfer.evaluation",
    "learning_curves": "keras_transfer.evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _importlib.import_module(target)
    value = module if target.rsplit(".", 1)[1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

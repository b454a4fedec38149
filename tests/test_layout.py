"""The package is laid out by capability, and every import path of before still works."""

import importlib

import pytest

import keras_transfer
from keras_transfer.utils import compat


@pytest.mark.parametrize("old, new", sorted(compat.MOVED.items()))
def test_old_module_paths_are_the_moved_modules(old, new):
    module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # its own spec, not the alias's
    assert getattr(keras_transfer, old.rsplit(".", 1)[1]) is module


def test_old_names_import_from_where_they_were():
    from keras_transfer.data import few_shot  # noqa: F401
    from keras_transfer.data import make_dataset  # noqa: F401
    from keras_transfer.evaluation import evaluate_classifier  # noqa: F401
    from keras_transfer.evaluation import plot_history  # noqa: F401
    from keras_transfer.export import export_saved_model  # noqa: F401
    from keras_transfer.export import read_labels  # noqa: F401
    from keras_transfer.feature_cache import ForFullModel  # noqa: F401
    from keras_transfer.feature_cache import split_frozen_features  # noqa: F401
    from keras_transfer.hub import HubLayer
    from keras_transfer.image_folder import image_folder_datasets  # noqa: F401
    from keras_transfer.image_folder import scan_image_folder  # noqa: F401
    from keras_transfer.tflite import TFLiteClassifier  # noqa: F401
    from keras_transfer.tflite import export_tflite  # noqa: F401
    from keras_transfer.training import RECIPES  # noqa: F401
    from keras_transfer.training import Recipe  # noqa: F401
    from keras_transfer.training import fine_tune  # noqa: F401
    from keras_transfer.training import recalibrate_batchnorm  # noqa: F401
    from keras_transfer.training import train  # noqa: F401

    assert HubLayer is keras_transfer.backbones.hub.HubLayer
    assert fine_tune is keras_transfer.training.fine_tuning.fine_tune
    for name in keras_transfer.__all__:
        assert getattr(keras_transfer, name) is not None, name


def test_no_module_imports_another_modules_private_names():
    import ast
    import pathlib

    root = pathlib.Path(keras_transfer.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_transfer"):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not offenders, offenders

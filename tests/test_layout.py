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


def test_the_command_line_and_the_library_accept_the_same_names():
    from keras_transfer import cli
    from keras_transfer import demo
    from keras_transfer import performance
    from keras_transfer import training
    from keras_transfer import workflows
    from keras_transfer.utils import choices

    assert tuple(training.RECIPES) == choices.RECIPE_NAMES
    assert tuple(demo.SETTINGS) == choices.DEMO_RECIPES
    assert performance.PRECISIONS == choices.PRECISIONS and workflows.TFLITE_KINDS == choices.TFLITE_KINDS
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    by_flag = {action.option_strings[0]: action for action in train._actions if action.option_strings}
    assert tuple(by_flag["--precision"].choices) == choices.PRECISIONS
    assert tuple(by_flag["--recipe"].choices) == ("auto", *choices.RECIPE_NAMES)


def test_shared_argument_checks_accept_numpy_integers_and_say_what_they_received():
    import numpy as np

    from keras_transfer.utils import checks

    model = keras_transfer.build_classifier("mnist_mlp", np.int64(3), weights=None)
    assert model.output.shape[-1] == 3
    for bad in (0, True, 2.5, "3"):
        with pytest.raises(
            ValueError, match=f"num_classes must be a positive integer. Received: num_classes={bad!r}"
        ):
            keras_transfer.build_classifier("mnist_mlp", bad, weights=None)
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\)"):
        keras_transfer.build_classifier("mnist_mlp", 3, weights=None, dropout=1.0)
    with pytest.raises(ValueError, match=r"validation_split must be a float in \(0, 1\)"):
        checks.fraction("validation_split", 1.0, low_open=True, high_open=True)
    assert checks.non_negative_int("epochs", np.int32(0)) == 0


def test_a_saved_classifier_loads_in_a_new_process_after_import_keras_transfer(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "model.keras")
    keras_transfer.build_classifier("mnist_cnn", 3, weights=None).save(path)
    code = (
        "import sys, keras_transfer\n"
        f"model = keras_transfer.load_model({path!r})\n"
        "print(model.get_layer('preprocessing').backbone)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("mnist_cnn"), result.stderr[-2000:]


def test_every_module_that_registers_keras_classes_is_listed():
    import pathlib

    from keras_transfer import saving

    root = pathlib.Path(keras_transfer.__file__).parent
    registering = {
        "keras_transfer." + ".".join(path.relative_to(root).with_suffix("").parts)
        for path in root.rglob("*.py")
        if path.name != "__init__.py"
        and (
            "@keras.saving.register_keras_serializable" in path.read_text()
            or "@method_lib.register_method" in path.read_text()
        )
    }
    registering -= {"keras_transfer.saving"}
    assert registering <= set(saving.REGISTERING_MODULES), registering - set(saving.REGISTERING_MODULES)
